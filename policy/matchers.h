// Compiled matchers: domain suffix table, CIDR prefix tables, path trie with
// globs and name globs. Built once per layer; lookups never allocate.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "policy/names.h"
#include "policy/policy.h"

namespace guard::policy {

inline constexpr uint32_t kNone = UINT32_MAX;

// Candidates is a run of rule indices that matched at one specificity level.
using RuleList = std::vector<uint32_t>;

namespace detail {

// The word-at-a-time helpers below read bytes into little-endian words.
static_assert(std::endian::native == std::endian::little,
              "policy/matchers.h assumes a little-endian target");

inline uint64_t load64(const char* p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

inline uint64_t load32(const char* p) {
  uint32_t w;
  memcpy(&w, p, 4);
  return w;
}

// loadUpTo8 returns the min(8, N) bytes at P as a little-endian word,
// without touching any byte past P + N (its loads may overlap).
inline uint64_t loadUpTo8(const char* p, size_t n) {
  if (n >= 8) {
    return load64(p);
  }
  if (n >= 4) {
    return load32(p) | (load32(p + n - 4) << ((n - 4) * 8));
  }
  if (n == 0) {
    return 0;
  }
  auto b = [](char c) { return uint64_t{static_cast<unsigned char>(c)}; };
  return b(p[0]) | (b(p[n / 2]) << (n / 2 * 8)) | (b(p[n - 1]) << ((n - 1) * 8));
}

// hashBytes hashes the N bytes at P, whose first 8 are HEAD (as loadUpTo8
// reads them), a word at a time. The last word's load may overlap the one
// before; with the length mixed in, every byte still counts.
inline uint64_t hashBytes(const char* p, size_t n, uint64_t head) {
  constexpr uint64_t kMul = 0x9fb21c651e98df25ULL;
  uint64_t h = (n + 1) * 0x9e3779b97f4a7c15ULL;
  h = (h ^ head) * kMul;
  if (n > 8) [[unlikely]] {
    h ^= h >> 28;
    const char* last = p + n - 8;
    for (const char* q = p + 8; q < last; q += 8) {
      h = (h ^ load64(q)) * kMul;
      h ^= h >> 28;
    }
    h = (h ^ load64(last)) * kMul;
  }
  h ^= h >> 32;
  h *= kMul;
  return h ^ (h >> 29);
}

// sameAfter8 compares N > 8 bytes at A and B from byte 8 on.
inline bool sameAfter8(const char* a, const char* b, size_t n) {
  for (size_t i = 8; i + 8 < n; i += 8) {
    if (load64(a + i) != load64(b + i)) {
      return false;
    }
  }
  return load64(a + n - 8) == load64(b + n - 8);
}

// StringTable maps strings to values: open addressing with linear probing,
// no deletion, at most half full. A slot holds a 32-bit tag of the key's
// hash (never 0: 0 marks a free slot); a tag match is confirmed against the
// key's bytes. Lookups do not allocate.
class StringTable {
 public:
  bool empty() const { return entries_.empty(); }

  // find returns KEY's value, or kNone.
  uint32_t find(std::string_view key) const {
    if (entries_.empty()) {
      return kNone;
    }
    const uint64_t head = loadUpTo8(key.data(), key.size());
    const uint64_t h = hashBytes(key.data(), key.size(), head);
    const uint32_t tag = static_cast<uint32_t>(h >> 32) | 1;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.tag == 0) {
        return kNone;
      }
      if (s.tag == tag) {
        const Entry& e = entries_[s.entry];
        if (e.len == key.size() && e.head == head &&
            (key.size() <= 8 || sameAfter8(chars_.data() + e.off, key.data(), key.size()))) {
          return e.value;
        }
      }
    }
  }

  // insert returns KEY's value, first adding KEY with VALUE if it is new.
  uint32_t insert(std::string_view key, uint32_t value);

 private:
  struct Slot {
    uint32_t tag = 0;
    uint32_t entry = 0;
  };
  struct Entry {
    uint64_t head;  // the key's first 8 bytes, as loadUpTo8 reads them
    uint32_t off;   // the key, in chars_
    uint32_t len;
    uint32_t value;
  };
  void place(uint64_t hash, uint32_t entry);
  std::vector<Slot> slots_;
  std::vector<Entry> entries_;
  std::string chars_;
  size_t mask_ = 0;
};

}  // namespace detail

// DomainIndex answers which rules name a domain, most specific level first:
// the exact name, then "*.suffix" wildcards from the longest suffix to the
// shortest, then "*". Names and suffixes are keys of flat hash tables whose
// values index lists_.
class DomainIndex {
 public:
  DomainIndex() = default;
  DomainIndex(const DomainIndex&) = delete;
  DomainIndex& operator=(const DomainIndex&) = delete;
  DomainIndex(DomainIndex&&) = default;
  DomainIndex& operator=(DomainIndex&&) = default;

  void addExact(std::string_view name, uint32_t rule);
  void addWildcard(std::string_view suffix, uint32_t rule);
  void addAny(uint32_t rule);
  bool empty() const { return exact_.empty() && wildcard_.empty() && any_.empty(); }

  // forEachLevel calls FN(rules) for each level that has rules for NAME (a
  // normalised domain), most specific first, until FN returns true.
  template <typename Fn>
  bool forEachLevel(std::string_view name, Fn&& fn) const {
    if (uint32_t l = exact_.find(name); l != kNone && fn(static_cast<const RuleList&>(lists_[l]))) {
      return true;
    }
    if (!wildcard_.empty()) {
      for (size_t dot = name.find('.'); dot != std::string_view::npos;
           dot = name.find('.', dot + 1)) {
        if (uint32_t l = wildcard_.find(name.substr(dot + 1));
            l != kNone && fn(static_cast<const RuleList&>(lists_[l]))) {
          return true;
        }
      }
    }
    return !any_.empty() && fn(static_cast<const RuleList&>(any_));
  }

 private:
  detail::StringTable exact_;
  detail::StringTable wildcard_;
  std::vector<RuleList> lists_;
  RuleList any_;
};

// CidrIndex keeps, per address family, the distinct prefixes sorted by
// their first address, each linked to the next shorter prefix that contains
// it. A lookup is one binary search (the last prefix starting at or before
// the address) and a short climb to the deepest prefix that contains it;
// the shorter ones follow by the parent links. add() keeps the structure
// complete after every call (a sorted insert: linear in the number of
// prefixes), so there is no separate build step, and lookups are const,
// allocation-free and safe to run concurrently.
class CidrIndex {
 public:
  void add(const IpAddr& net, uint8_t prefix, uint32_t rule);

  // forEachLevel calls FN(rules) for each prefix that contains ADDR, longest
  // first, until FN returns true.
  template <typename Fn>
  bool forEachLevel(const IpAddr& addr, Fn&& fn) const {
    if (addr.v4) {
      uint32_t k = (uint32_t{addr.bytes[0]} << 24) | (uint32_t{addr.bytes[1]} << 16) |
                   (uint32_t{addr.bytes[2]} << 8) | uint32_t{addr.bytes[3]};
      return v4_.forEachLevel(k, fn);
    }
    return v6_.forEachLevel(key128(addr), fn);
  }

 private:
  // Family is one address family's prefixes, K the address as an integer.
  template <typename K>
  class Family {
   public:
    void add(K net, unsigned prefix, unsigned bits, uint32_t rule);

    template <typename Fn>
    bool forEachLevel(K key, Fn& fn) const {
      size_t len = starts_.size();
      if (len == 0 || key < starts_[0]) {
        return false;
      }
      // The last entry <= KEY; among equal starts the longest prefix, which
      // sorts last.
      const K* base = starts_.data();
      while (len > 1) {
        size_t half = len / 2;
        base = base[half] <= key ? base + half : base;
        len -= half;
      }
      uint32_t id = order_[static_cast<size_t>(base - starts_.data())];
      // That prefix, or one of its ancestors, is the deepest containing KEY.
      while (id != kNone && nodes_[id].last < key) {
        id = nodes_[id].parent;
      }
      for (; id != kNone; id = nodes_[id].parent) {
        if (fn(static_cast<const RuleList&>(nodes_[id].rules))) {
          return true;
        }
      }
      return false;
    }

   private:
    struct Node {
      K first;
      K last;
      uint32_t parent = kNone;  // the next shorter prefix containing this one
      uint8_t prefix;
      RuleList rules;
    };
    std::vector<K> starts_;        // nodes_[order_[i]].first, ascending
    std::vector<uint32_t> order_;  // node ids by (first, prefix)
    std::vector<Node> nodes_;      // in order of creation
  };

  static unsigned __int128 key128(const IpAddr& a) {
    unsigned __int128 k = 0;
    for (int i = 0; i < 16; ++i) {
      k = (k << 8) | a.bytes[i];
    }
    return k;
  }
  Family<uint32_t> v4_;
  Family<unsigned __int128> v6_;
};

// PathTrie matches normalised absolute paths against patterns whose segments
// are literals, globs (`*`, `?` within a segment) or `**` (any number of
// segments). A pattern names a subtree: it matches a path when it matches
// the path or one of its ancestors.
//
// Layout for the walk: the literal children of every node live in one
// open-addressing table keyed by (node, segment), so each path segment is
// split and hashed once per step whatever the number of active nodes. A
// node with many glob children indexes them by a few literal bytes at one
// end (GlobSet), so a segment is compared with the globs that share them,
// usually none. Each candidate is checked against its literal head and tail
// as words before globMatch runs on the part between them (not at all when
// that part is only stars). Nodes are 32-byte records; the walk keeps its
// active states in two fixed arrays, so a lookup never allocates.
class PathTrie {
 public:
  PathTrie();
  PathTrie(const PathTrie&) = delete;
  PathTrie& operator=(const PathTrie&) = delete;
  PathTrie(PathTrie&&) = default;
  PathTrie& operator=(PathTrie&&) = default;

  // add inserts PATTERN (normalised, absolute) for RULE.
  void add(std::string_view pattern, uint32_t rule);

  // Match is one matching rule: DEPTH is the number of path segments of the
  // deepest ancestor (or the path itself) the pattern matched, where a
  // trailing `/**` counts where its prefix matched (`/x/**` ranks like
  // `/x`); LITERALS is the pattern's number of literal segments. Deeper
  // beats shallower; then more literals.
  struct Match {
    uint32_t rule = kNone;
    uint32_t depth = 0;
    uint32_t literals = 0;
  };

  // best finds the most specific rule matching normalised PATH, using
  // STRICTER(a, b) to break ties. Returns false (fail closed: treat the path
  // as hidden) when the walk needs more active states than its fixed bound.
  template <typename Stricter>
  bool best(std::string_view path, Stricter&& stricter, Match* out) const;

 private:
  // Node is one cache-aligned 32-byte record. A literal child also holds
  // its edge (parent and segment), which the literal table's lookup checks:
  // that load brings in the node the walk needs at the next step. The
  // first rule ending at a node is stored in it; further ones are in
  // more_rules_[more_index_[node]], in the order they were added.
  static constexpr uint32_t kDoubleStar = 1u << 24;  // this node is a `**` segment
  static constexpr uint32_t kHasLiteral = 2u << 24;  // it has children in literal_
  static constexpr uint32_t kHasGlobs = 4u << 24;    // glob_index_ names its glob set
  static constexpr uint32_t kMoreRules = 8u << 24;   // more_index_ holds its other rules
  static constexpr uint32_t kHasFilter = 16u << 24;  // filter_index_ names its filter
  static constexpr uint32_t kLiteralsMask = (1u << 24) - 1;
  struct alignas(32) Node {
    uint64_t head = 0;             // literal child: its segment's first 8 bytes
    uint32_t parent = kNone;       // literal child: its parent; else kNone
    uint32_t off = 0;              // literal child: its segment, in chars_
    uint32_t len = 0;
    uint32_t double_star = kNone;  // the `**` child
    uint32_t rule = kNone;         // the first rule ending here
    uint32_t bits = 0;             // that rule's literal segments, and the flags
  };
  using Terminal = std::vector<std::pair<uint32_t, uint32_t>>;  // rule, literal segments
  // Segment is one path segment with what the lookups compare against,
  // computed once per step: its first and last (up to) 8 bytes as
  // little-endian words, and its hash.
  struct Segment {
    const char* data;
    size_t size;
    uint64_t head;  // bytes [0, min(8, size)), zero-extended
    uint64_t tail;  // bytes [size - min(8, size), size)
    uint32_t hash;
  };
  static uint64_t load64(const char* p) { return detail::load64(p); }
  static uint64_t loadUpTo8(const char* p, size_t n) { return detail::loadUpTo8(p, n); }
  static uint32_t hashSegment(const char* p, size_t n, uint64_t head) {
    return static_cast<uint32_t>(detail::hashBytes(p, n, head) >> 32);
  }
  static bool sameAfter8(const char* a, const char* b, size_t n) {
    return detail::sameAfter8(a, b, n);
  }
  // Slashes yields the positions of the '/' bytes of a path in order, from
  // a bit mask per block of the path (16 bytes with SSE2, else 8).
  class Slashes {
   public:
    Slashes(const char* s, size_t n) : s_(s), n_(n) { bits_ = n == 0 ? 0 : block(0); }
    // next returns the position of the next '/' after the ones returned
    // before, or the path's length.
    size_t next() {
      while (bits_ == 0) {
        base_ += kBlock;
        if (base_ >= n_) {
          base_ = n_;
          return n_;
        }
        bits_ = block(base_);
      }
      size_t pos = base_ + static_cast<size_t>(__builtin_ctzll(bits_));
      bits_ &= bits_ - 1;
      return pos;
    }
    // skipFirstByte drops a '/' at position 0 from the ones next returns.
    void skipFirstByte() { bits_ &= ~uint64_t{1}; }

   private:
#if defined(__SSE2__)
    static constexpr size_t kBlock = 16;
    uint64_t block(size_t at) const {
      __m128i v;
      unsigned shift = 0;
      if (n_ - at >= 16) {
        v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s_ + at));
      } else if (n_ >= 16) {
        v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s_ + n_ - 16));
        shift = static_cast<unsigned>(16 - (n_ - at));
      } else {
        alignas(16) char tmp[16] = {};
        memcpy(tmp, s_, n_);
        v = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
      }
      return static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('/')))) >>
             shift;
    }
#else
    static constexpr size_t kBlock = 8;
    uint64_t block(size_t at) const {
      uint64_t w = 0;
      memcpy(&w, s_ + at, n_ - at >= 8 ? 8 : n_ - at);
      uint64_t bits = 0;
      for (unsigned i = 0; i < 8; ++i) {
        bits |= uint64_t{((w >> (i * 8)) & 0xff) == '/'} << i;
      }
      return bits & (n_ - at >= 8 ? 0xff : (uint64_t{1} << (n_ - at)) - 1);
    }
#endif
    const char* s_;
    size_t n_;
    size_t base_ = 0;
    uint64_t bits_ = 0;
  };
  static Segment segment(const char* p, size_t n) {
    Segment s{p, n, loadUpTo8(p, n), 0, 0};
    s.tail = n >= 8 ? load64(p + n - 8) : s.head;
    s.hash = hashSegment(p, n, s.head);
    return s;
  }

  // The literal children of all nodes, in one table: buckets of eight
  // slots (a cache line), linear probing over buckets. A slot holds a
  // 32-bit TAG of (parent, segment), never 0 (0 marks a free slot), and the
  // child. Slots fill in order, so a bucket whose last slot is free ends a
  // probe. A tag match is confirmed against the child's edge: its parent
  // and its segment's bytes.
  struct alignas(64) LiteralBucket {
    uint32_t tag[8] = {};
    uint32_t child[8] = {};
  };
  // Glob is one glob child: pattern chars_[off, off + len) is HEAD literal
  // bytes, a middle that starts and ends with `*` or `?`, and TAIL literal
  // bytes. HEAD_WORD/HEAD_MASK and TAIL_WORD hold up to 8 bytes of each for
  // a compare without memcmp. STARS: the middle is only `*`, so head and
  // tail decide alone.
  struct Glob {
    uint64_t head_word;
    uint64_t head_mask;
    uint64_t tail_word;
    uint32_t child;
    uint32_t off;
    uint32_t len;
    uint32_t head;
    uint32_t tail;
    uint8_t tail_bytes;  // min(8, tail)
    bool stars;
  };
  // GlobSet is one node's glob children in insertion order, and, once
  // there are more than a few, an index of their positions. Most globs are
  // keyed by up to 4 literal bytes at one end: CLASS 0-2 by the last 2, 3
  // or 4 bytes of a tail of 2, 3 or 4+ bytes; class 3-5 (no tail) by the
  // first 2, 3 or 4 bytes of the head. Bucket C * 1024 + keyOf(word) holds
  // class C's globs with that word. The rest (one literal byte at an end,
  // or wildcards at both) are in buckets kTail1 + byte, kHead1 + byte and
  // kRest. Bucket B is items[start[B], start[B + 1]), positions ascending.
  // NONEMPTY has a bit per keyed bucket: a segment whose keyed buckets are
  // all empty is rejected without a call (mayMatch).
  static constexpr size_t kClasses = 6;
  static constexpr size_t kTail1 = kClasses * 1024;
  static constexpr size_t kHead1 = kTail1 + 256;
  static constexpr size_t kRest = kHead1 + 256;
  static size_t keyOf(uint64_t word) {
    return (static_cast<uint32_t>(word) * 0x9e3779b1u) >> 22;
  }
  // classWords stores SEG's word for each class C in W[C]: its last (C < 3)
  // or first 2 + C % 3 bytes. A segment shorter than that cannot match the
  // class's globs; its word is then some value that at worst costs a look
  // at a bucket.
  static void classWords(const Segment& seg, uint64_t* w) {
    // LAST4: the last 4 bytes as a little-endian word; of a shorter
    // segment, all of it in the top bytes (so that the last 2 and 3 bytes
    // are right whenever there are that many).
    size_t have = seg.size < 8 ? seg.size : 8;  // bytes in seg.tail
    uint64_t last4 =
        (have >= 4 ? seg.tail >> ((have - 4) * 8) : seg.tail << ((4 - have) * 8)) & 0xffffffffu;
    w[0] = last4 >> 16;
    w[1] = last4 >> 8;
    w[2] = last4;
    w[3] = seg.head & 0xffffu;
    w[4] = seg.head & 0xffffffu;
    w[5] = seg.head & 0xffffffffu;
  }
  struct GlobSet {
    std::vector<Glob> globs;
    bool indexed = false;
    bool short_globs = false;          // some glob is outside the keyed classes
    uint8_t num_classes = 0;
    uint8_t classes[kClasses] = {};    // the classes in use
    std::vector<uint64_t> nonempty;    // kClasses * 1024 bits when indexed
    std::vector<uint32_t> start;       // kRest + 2 entries when indexed
    std::vector<uint32_t> items;
  };
  static constexpr size_t kMaxActive = 64;
  static constexpr size_t kIndexGlobsAbove = 4;
  struct Active {
    uint32_t node;
    bool fresh;
  };

  // probeOf returns the (bucket, tag) pair for NODE's child SEGMENT_HASH.
  std::pair<size_t, uint32_t> probeOf(uint32_t node, uint32_t segment_hash) const {
    uint64_t key = (uint64_t{node} << 32) | segment_hash;
    size_t bucket = static_cast<size_t>((key * 0x9e3779b97f4a7c15ULL) >> literal_shift_);
    uint32_t tag = static_cast<uint32_t>((key * 0xd6e8feb86659fd93ULL) >> 32) | 1;
    return {bucket, tag};
  }
  // tagMatches returns a bit per slot of B whose tag is TAG.
  static unsigned tagMatches(const LiteralBucket& b, uint32_t tag) {
#if defined(__SSE2__)
    __m128i t = _mm_set1_epi32(static_cast<int>(tag));
    __m128i lo = _mm_cmpeq_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(b.tag)), t);
    __m128i hi = _mm_cmpeq_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(b.tag + 4)), t);
    return static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(lo))) |
           (static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(hi))) << 4);
#else
    unsigned m = 0;
    for (unsigned i = 0; i < 8; ++i) {
      m |= unsigned{b.tag[i] == tag} << i;
    }
    return m;
#endif
  }
  // A node with many literal children (the root's `**` collects every
  // "**/name" and bare-name pattern) is probed at every segment and mostly
  // misses. Its Filter has a bit per child's segment hash, checked first.
  static constexpr size_t kFilterAbove = 16;  // literal children
  struct Filter {
    uint64_t bits[8] = {};
  };
  static size_t filterBit(uint32_t hash) { return (hash >> 7) & 511; }
  bool mayHaveLiteral(uint32_t node, const Segment& seg) const {
    size_t b = filterBit(seg.hash);
    return (filters_[filter_index_[node]].bits[b >> 6] >> (b & 63)) & 1;
  }
  uint32_t findLiteral(uint32_t node, const Segment& seg) const {
    auto [b, tag] = probeOf(node, seg.hash);
    for (;; b = (b + 1) & literal_mask_) {
      const LiteralBucket& bucket = literal_[b];
      for (unsigned m = tagMatches(bucket, tag); m != 0; m &= m - 1) {
        uint32_t child = bucket.child[__builtin_ctz(m)];
        const Node& e = nodes_[child];
        if (e.parent == node && e.len == seg.size && e.head == seg.head &&
            (seg.size <= 8 || sameAfter8(chars_.data() + e.off, seg.data, seg.size))) {
          return child;
        }
      }
      if (bucket.tag[7] == 0) {
        return kNone;
      }
    }
  }
  bool globMatches(const Glob& g, const Segment& seg) const {
    if (seg.size < size_t{g.head} + g.tail || (seg.head & g.head_mask) != g.head_word) {
      return false;
    }
    if (g.tail_bytes != 0) {
      size_t have = seg.size < 8 ? seg.size : 8;  // bytes in seg.tail
      if ((seg.tail >> ((have - g.tail_bytes) * 8)) != g.tail_word) {
        return false;
      }
    }
    const char* p = chars_.data() + g.off;
    if ((g.head > 8 && memcmp(seg.data + 8, p + 8, g.head - 8) != 0) ||
        (g.tail > 8 &&
         memcmp(seg.data + seg.size - g.tail, p + g.len - g.tail, g.tail - 8) != 0)) {
      return false;
    }
    return g.stars ||
           globMatch(std::string_view(p + g.head, g.len - g.head - g.tail),
                     std::string_view(seg.data + g.head, seg.size - g.head - g.tail));
  }
  // mayMatch is a quick test, without a call: false when no glob of SET
  // can match SEG (the segment's keyed buckets are empty).
  static bool mayMatch(const GlobSet& set, const Segment& seg) {
    if (set.short_globs) {
      return true;
    }
    uint64_t w[kClasses];
    classWords(seg, w);
    uint64_t any = 0;
    for (size_t i = 0; i < set.num_classes; ++i) {
      size_t c = set.classes[i];
      size_t b = c * 1024 + keyOf(w[c]);
      any |= set.nonempty[b >> 6] >> (b & 63);
    }
    return (any & 1) != 0;
  }
  // matchGlobs stores in OUT, ascending, the positions of SET's globs that
  // match SEG, and returns how many; more than kMaxActive means overflow.
  size_t matchGlobs(const GlobSet& set, const Segment& seg, uint32_t* out) const;

  uint32_t newNode();
  uint32_t addLiteral(uint32_t node, std::string_view seg);
  uint32_t addGlob(uint32_t node, std::string_view seg);
  void indexGlobs(GlobSet& set);

  template <typename Fn>
  bool walk(std::string_view path, Fn&& fn) const;

  std::string chars_;                  // literal and glob segment bytes
  std::vector<Node> nodes_;
  std::vector<Terminal> more_rules_;
  std::vector<uint32_t> more_index_;   // per node: kNone unless kMoreRules
  std::vector<uint32_t> glob_index_;   // per node: index into glob_sets_ if kHasGlobs
  std::vector<uint32_t> filter_index_; // per node: literal children, or index into filters_
  std::vector<Filter> filters_;
  std::vector<LiteralBucket> literal_;  // power-of-two size, slots at most half full
  size_t literal_count_ = 0;
  size_t literal_mask_ = 0;
  unsigned literal_shift_ = 64;
  std::vector<GlobSet> glob_sets_;
};

// NameIndex matches names (environment variables, tools) against exact
// names and globs: exact first, then globs with the most literal bytes.
class NameIndex {
 public:
  // Keys are views into strings this index owns: a copy would point into
  // the original, so indices only move.
  NameIndex() = default;
  NameIndex(const NameIndex&) = delete;
  NameIndex& operator=(const NameIndex&) = delete;
  NameIndex(NameIndex&&) = default;
  NameIndex& operator=(NameIndex&&) = default;

  void add(std::string_view pattern, uint32_t rule);
  bool empty() const { return exact_.empty() && globs_.empty(); }

  template <typename Fn>
  bool forEachLevel(std::string_view name, Fn&& fn) const;

 private:
  std::deque<std::string> keys_;
  std::unordered_map<std::string_view, RuleList> exact_;
  struct Glob {
    std::string_view pattern;
    size_t literals;
    RuleList rules;
  };
  std::vector<Glob> globs_;  // sorted by literals, most first
};

// argvMatch reports whether ARGV matches PATTERN element by element, where a
// "**" element spans any number of arguments and other elements are globs.
bool argvMatch(std::span<const std::string> pattern, std::span<const std::string> argv);

// ---- template definitions -------------------------------------------------

template <typename Fn>
bool PathTrie::walk(std::string_view path, Fn&& fn) const {
  const Node* const nodes = nodes_.data();
  Active set_a[kMaxActive];
  Active set_b[kMaxActive];
  Active* cur = set_a;
  Active* next = set_b;
  uint32_t matched[kMaxActive + 1];
  size_t num_cur = 0;
  // A node reached by consuming a segment (literal or glob step) is fresh:
  // its rules match at this depth. A `**` node that only stays active by
  // consuming another segment is not: its rules matched where it began.
  // The closure into a `**` child inherits freshness from its source; a
  // node reached twice is fresh if either way is.
  // The trie is a tree: a node has one parent edge, and a parent is active
  // once, so a segment step reaches each node at most once. Only the
  // closure can meet a `**` node that its own self-loop already added.
  auto push = [](Active* set, size_t* n, uint32_t node, bool fresh) {
    for (size_t i = 0; i < *n; ++i) {
      if (set[i].node == node) {
        set[i].fresh = set[i].fresh || fresh;
        return true;
      }
    }
    if (*n == kMaxActive) {
      return false;
    }
    set[(*n)++] = {node, fresh};
    return true;
  };
  auto closure = [&](Active* set, size_t* n) {
    for (size_t i = 0; i < *n; ++i) {
      uint32_t ds = nodes[set[i].node].double_star;
      if (ds != kNone && !push(set, n, ds, set[i].fresh)) {
        return false;
      }
    }
    return true;
  };
  auto emit = [&](const Active* set, size_t n, uint32_t depth) {
    for (size_t i = 0; i < n; ++i) {
      const Node& node = nodes[set[i].node];
      if (!set[i].fresh) {
        continue;
      }
      if (node.rule != kNone) {
        fn(Match{node.rule, depth, node.bits & kLiteralsMask});
      }
      if ((node.bits & kMoreRules) != 0) {
        for (const auto& [rule, literals] : more_rules_[more_index_[set[i].node]]) {
          fn(Match{rule, depth, literals});
        }
      }
    }
  };
  // Depth 0 is the root and its closure; each further depth consumes one
  // segment. Closure and emit have one call site each, so they inline.
  size_t num_next = 0;
  next[num_next++] = {0, true};
  uint32_t depth = 0;
  Slashes slashes(path.data(), path.size());
  slashes.skipFirstByte();         // path[0] is '/'
  size_t p = 1;                    // where the next segment starts
  for (;;) {
    if (!closure(next, &num_next)) {
      return false;
    }
    emit(next, num_next, depth);
    std::swap(cur, next);
    num_cur = num_next;
    if (p >= path.size() || num_cur == 0) {
      return true;
    }
    size_t seg_end = slashes.next();
    const Segment seg = segment(path.data() + p, seg_end - p);
    p = seg_end + 1;
    ++depth;
    num_next = 0;
    for (size_t a = 0; a < num_cur; ++a) {
      const uint32_t node = cur[a].node;
      const Node& n = nodes[node];
      if ((n.bits & kDoubleStar) != 0) {
        if (num_next == kMaxActive) {
          return false;
        }
        next[num_next++] = {node, false};
      }
      if ((n.bits & kHasLiteral) != 0 &&
          ((n.bits & kHasFilter) == 0 || mayHaveLiteral(node, seg))) {
        uint32_t child = findLiteral(node, seg);
        if (child != kNone) {
          if (num_next == kMaxActive) {
            return false;
          }
          next[num_next++] = {child, true};
        }
      }
      if ((n.bits & kHasGlobs) != 0) {
        const GlobSet& set = glob_sets_[glob_index_[node]];
        if (!set.indexed) {
          // A few globs: check each here, in order.
          for (const Glob& g : set.globs) {
            if (globMatches(g, seg)) {
              if (num_next == kMaxActive) {
                return false;
              }
              next[num_next++] = {g.child, true};
            }
          }
        } else if (mayMatch(set, seg)) {
          size_t k = matchGlobs(set, seg, matched);
          if (num_next + k > kMaxActive) {
            return false;  // that many distinct nodes cannot all be active
          }
          for (size_t m = 0; m < k; ++m) {
            next[num_next++] = {set.globs[matched[m]].child, true};
          }
        }
      }
    }
  }
}

template <typename Stricter>
bool PathTrie::best(std::string_view path, Stricter&& stricter, Match* out) const {
  Match b;
  bool ok = walk(path, [&](const Match& m) {
    if (b.rule == kNone || m.depth > b.depth ||
        (m.depth == b.depth &&
         (m.literals > b.literals || (m.literals == b.literals && stricter(m.rule, b.rule))))) {
      b = m;
    }
  });
  *out = b;
  return ok;
}

template <typename Fn>
bool NameIndex::forEachLevel(std::string_view name, Fn&& fn) const {
  if (auto it = exact_.find(name); it != exact_.end() && fn(it->second)) {
    return true;
  }
  // Globs with equally many literal bytes form one level: FN sees all of
  // them before the walk stops.
  size_t level = SIZE_MAX;
  for (const Glob& g : globs_) {
    if (level != SIZE_MAX && g.literals < level) {
      break;
    }
    if (globMatch(g.pattern, name) && fn(g.rules)) {
      level = g.literals;
    }
  }
  return level != SIZE_MAX;
}

}  // namespace guard::policy
