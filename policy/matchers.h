// Compiled matchers: domain suffix table, CIDR prefix tables, path trie with
// globs and name globs. Built once per layer; lookups never allocate.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "policy/names.h"
#include "policy/policy.h"

namespace guard::policy {

inline constexpr uint32_t kNone = UINT32_MAX;

// Candidates is a run of rule indices that matched at one specificity level.
using RuleList = std::vector<uint32_t>;

// DomainIndex answers which rules name a domain, most specific level first:
// the exact name, then "*.suffix" wildcards from the longest suffix to the
// shortest, then "*". Keys are views into strings the index owns.
class DomainIndex {
 public:
  // Keys are views into strings this index owns: a copy would point into
  // the original, so indices only move.
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
    if (auto it = exact_.find(name); it != exact_.end() && fn(it->second)) {
      return true;
    }
    if (!wildcard_.empty()) {
      for (size_t dot = name.find('.'); dot != std::string_view::npos;
           dot = name.find('.', dot + 1)) {
        if (auto it = wildcard_.find(name.substr(dot + 1)); it != wildcard_.end() &&
                                                            fn(it->second)) {
          return true;
        }
      }
    }
    return !any_.empty() && fn(any_);
  }

 private:
  const std::string& own(std::string_view s);
  std::deque<std::string> keys_;
  std::unordered_map<std::string_view, RuleList> exact_;
  std::unordered_map<std::string_view, RuleList> wildcard_;
  RuleList any_;
};

// CidrIndex holds one hash table per prefix length, probed longest first.
class CidrIndex {
 public:
  void add(const IpAddr& net, uint8_t prefix, uint32_t rule);

  // forEachLevel calls FN(rules) for each prefix that contains ADDR, longest
  // first, until FN returns true.
  template <typename Fn>
  bool forEachLevel(const IpAddr& addr, Fn&& fn) const {
    const std::vector<Bucket>& buckets = addr.v4 ? v4_ : v6_;
    unsigned __int128 key = toKey(addr);
    for (const Bucket& b : buckets) {
      unsigned __int128 masked = mask(key, b.prefix, addr.v4);
      if (auto it = b.table.find(masked); it != b.table.end() && fn(it->second)) {
        return true;
      }
    }
    return false;
  }

 private:
  struct KeyHash {
    size_t operator()(unsigned __int128 k) const {
      uint64_t lo = static_cast<uint64_t>(k);
      uint64_t hi = static_cast<uint64_t>(k >> 64);
      return std::hash<uint64_t>()(lo ^ (hi * 0x9e3779b97f4a7c15ULL));
    }
  };
  struct Bucket {
    uint8_t prefix;
    std::unordered_map<unsigned __int128, RuleList, KeyHash> table;
  };
  static unsigned __int128 toKey(const IpAddr& a);
  static unsigned __int128 mask(unsigned __int128 key, uint8_t prefix, bool v4);
  std::vector<Bucket> v4_;  // sorted by prefix, longest first
  std::vector<Bucket> v6_;
};

// PathTrie matches normalised absolute paths against patterns whose segments
// are literals, globs (`*`, `?` within a segment) or `**` (any number of
// segments). A pattern names a subtree: it matches a path when it matches
// the path or one of its ancestors.
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
  // shortest ancestor the pattern matched, LITERALS the pattern's literal
  // segments. Deeper beats shallower; then more literals.
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
  struct Node {
    std::unordered_map<std::string_view, uint32_t> literal;
    std::vector<std::pair<std::string_view, uint32_t>> globs;
    uint32_t double_star = kNone;
    bool is_double_star = false;
    std::vector<std::pair<uint32_t, uint32_t>> terminal;  // rule, literal segments
  };
  static constexpr size_t kMaxActive = 64;
  struct Active {
    uint32_t node;
    bool fresh;
  };
  template <typename Fn>
  bool walk(std::string_view path, Fn&& fn) const;

  std::deque<std::string> keys_;
  std::vector<Node> nodes_;
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
  Active cur[kMaxActive];
  Active next[kMaxActive];
  size_t num_cur = 0;
  // A node reached by consuming a segment (literal or glob step) is fresh:
  // its rules match at this depth. A `**` node that only stays active by
  // consuming another segment is not: its rules matched where it began.
  // The closure into a `**` child inherits freshness from its source.
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
      uint32_t ds = nodes_[set[i].node].double_star;
      if (ds != kNone && !push(set, n, ds, set[i].fresh)) {
        return false;
      }
    }
    return true;
  };
  auto emit = [&](const Active* set, size_t n, uint32_t depth) {
    for (size_t i = 0; i < n; ++i) {
      if (!set[i].fresh) {
        continue;
      }
      for (const auto& [rule, literals] : nodes_[set[i].node].terminal) {
        fn(Match{rule, depth, literals});
      }
    }
  };
  cur[num_cur++] = {0, true};
  if (!closure(cur, &num_cur)) {
    return false;
  }
  emit(cur, num_cur, 0);
  uint32_t depth = 0;
  size_t i = 1;  // path[0] is '/'
  while (i < path.size() && num_cur > 0) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) {
      j = path.size();
    }
    std::string_view seg = path.substr(i, j - i);
    i = j + 1;
    ++depth;
    size_t num_next = 0;
    for (size_t a = 0; a < num_cur; ++a) {
      const Node& n = nodes_[cur[a].node];
      if (n.is_double_star && !push(next, &num_next, cur[a].node, false)) {
        return false;
      }
      if (!n.literal.empty()) {
        if (auto it = n.literal.find(seg);
            it != n.literal.end() && !push(next, &num_next, it->second, true)) {
          return false;
        }
      }
      for (const auto& [glob, child] : n.globs) {
        if (globMatch(glob, seg) && !push(next, &num_next, child, true)) {
          return false;
        }
      }
    }
    if (!closure(next, &num_next)) {
      return false;
    }
    emit(next, num_next, depth);
    for (size_t a = 0; a < num_next; ++a) {
      cur[a] = next[a];
    }
    num_cur = num_next;
  }
  return true;
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
