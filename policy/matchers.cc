// Compiled matchers: construction, and the lookups that are not templates.
#include "policy/matchers.h"

#include <algorithm>
#include <cstring>

namespace guard::policy {

// ---- StringTable / DomainIndex ---------------------------------------------

namespace detail {

void StringTable::place(uint64_t hash, uint32_t entry) {
  size_t i = hash & mask_;
  while (slots_[i].tag != 0) {
    i = (i + 1) & mask_;
  }
  slots_[i] = Slot{static_cast<uint32_t>(hash >> 32) | 1, entry};
}

uint32_t StringTable::insert(std::string_view key, uint32_t value) {
  if (uint32_t v = find(key); v != kNone) {
    return v;
  }
  if ((entries_.size() + 1) * 2 > slots_.size()) {
    slots_.assign(std::max<size_t>(16, slots_.size() * 2), Slot{});
    mask_ = slots_.size() - 1;
    for (uint32_t i = 0; i < entries_.size(); ++i) {
      const Entry& e = entries_[i];
      place(hashBytes(chars_.data() + e.off, e.len, e.head), i);
    }
  }
  uint64_t head = loadUpTo8(key.data(), key.size());
  entries_.push_back(Entry{head, static_cast<uint32_t>(chars_.size()),
                           static_cast<uint32_t>(key.size()), value});
  chars_.append(key);
  place(hashBytes(key.data(), key.size(), head), static_cast<uint32_t>(entries_.size() - 1));
  return value;
}

}  // namespace detail

void DomainIndex::addExact(std::string_view name, uint32_t rule) {
  uint32_t l = exact_.insert(name, static_cast<uint32_t>(lists_.size()));
  if (l == lists_.size()) {
    lists_.emplace_back();
  }
  lists_[l].push_back(rule);
}

void DomainIndex::addWildcard(std::string_view suffix, uint32_t rule) {
  uint32_t l = wildcard_.insert(suffix, static_cast<uint32_t>(lists_.size()));
  if (l == lists_.size()) {
    lists_.emplace_back();
  }
  lists_[l].push_back(rule);
}

void DomainIndex::addAny(uint32_t rule) { any_.push_back(rule); }

// ---- CidrIndex ---------------------------------------------------------------

template <typename K>
void CidrIndex::Family<K>::add(K net, unsigned prefix, unsigned bits, uint32_t rule) {
  // HOST: the bits below the prefix. Shifts by the full width are undefined,
  // so /0 is spelled out. A prefix longer than the address (/33 for IPv4)
  // covers one address like the full length, but stays a level of its
  // own, longer than it, as with one table per prefix length.
  unsigned len = prefix < bits ? prefix : bits;
  K ones = static_cast<K>(~K{0});
  if (bits < sizeof(K) * 8) {
    ones = static_cast<K>(ones >> (sizeof(K) * 8 - bits));
  }
  K host = len == 0 ? ones : static_cast<K>((K{1} << (bits - len)) - 1);
  K first = static_cast<K>(net & ~host & ones);
  K last = static_cast<K>(first | host);

  // POS: where (first, prefix) sorts; an equal entry there is this prefix.
  auto less = [&](uint32_t id) {
    const Node& n = nodes_[id];
    return n.first < first || (n.first == first && n.prefix < prefix);
  };
  size_t lo = static_cast<size_t>(std::lower_bound(starts_.begin(), starts_.end(), first) -
                                  starts_.begin());
  size_t pos = lo;
  while (pos < order_.size() && starts_[pos] == first && less(order_[pos])) {
    ++pos;
  }
  if (pos < order_.size() && starts_[pos] == first && nodes_[order_[pos]].prefix == prefix) {
    nodes_[order_[pos]].rules.push_back(rule);
    return;
  }

  // The parent: the deepest existing prefix containing this one. It is the
  // last entry sorting before POS or one of that entry's ancestors.
  uint32_t parent = kNone;
  if (pos > 0) {
    parent = order_[pos - 1];
    while (parent != kNone && nodes_[parent].last < last) {
      parent = nodes_[parent].parent;
    }
  }
  uint32_t id = static_cast<uint32_t>(nodes_.size());
  nodes_.push_back(Node{first, last, parent, static_cast<uint8_t>(prefix), RuleList{rule}});

  // Prefixes inside this one whose parent was PARENT are now its children.
  // They all sort after POS, before the first entry past LAST.
  for (size_t i = pos; i < order_.size() && starts_[i] <= last; ++i) {
    Node& n = nodes_[order_[i]];
    if (n.parent == parent) {
      n.parent = id;
    }
  }
  starts_.insert(starts_.begin() + static_cast<std::ptrdiff_t>(pos), first);
  order_.insert(order_.begin() + static_cast<std::ptrdiff_t>(pos), id);
}

template class CidrIndex::Family<uint32_t>;
template class CidrIndex::Family<unsigned __int128>;

void CidrIndex::add(const IpAddr& net, uint8_t prefix, uint32_t rule) {
  if (net.v4) {
    uint32_t k = (uint32_t{net.bytes[0]} << 24) | (uint32_t{net.bytes[1]} << 16) |
                 (uint32_t{net.bytes[2]} << 8) | uint32_t{net.bytes[3]};
    v4_.add(k, prefix, 32, rule);
  } else {
    v6_.add(key128(net), prefix, 128, rule);
  }
}

// ---- PathTrie ----------------------------------------------------------------

PathTrie::PathTrie() {
  nodes_.emplace_back();
  more_index_.push_back(kNone);
  glob_index_.push_back(kNone);
  filter_index_.push_back(0);
  literal_.resize(2);
  literal_mask_ = 1;
  literal_shift_ = 64 - 1;
}

uint32_t PathTrie::newNode() {
  nodes_.emplace_back();
  more_index_.push_back(kNone);
  glob_index_.push_back(kNone);
  filter_index_.push_back(0);
  return static_cast<uint32_t>(nodes_.size() - 1);
}

uint32_t PathTrie::addLiteral(uint32_t node, std::string_view text) {
  const Segment seg = segment(text.data(), text.size());
  if (uint32_t child = findLiteral(node, seg); child != kNone) {
    return child;
  }
  // PLACE puts CHILD, under its parent and segment hash, in the first free
  // slot from its bucket on.
  auto place = [&](uint32_t parent, uint32_t hash, uint32_t child) {
    auto [b, tag] = probeOf(parent, hash);
    for (;; b = (b + 1) & literal_mask_) {
      LiteralBucket& bucket = literal_[b];
      for (size_t i = 0; i < 8; ++i) {
        if (bucket.tag[i] == 0) {
          bucket.tag[i] = tag;
          bucket.child[i] = child;
          return;
        }
      }
    }
  };
  if ((literal_count_ + 1) * 2 > literal_.size() * 8) {
    std::vector<LiteralBucket> old(literal_.size() * 2);
    old.swap(literal_);
    literal_mask_ = literal_.size() - 1;
    --literal_shift_;
    for (const LiteralBucket& bucket : old) {
      for (size_t i = 0; i < 8 && bucket.tag[i] != 0; ++i) {
        uint32_t c = bucket.child[i];
        const Node& n = nodes_[c];
        place(n.parent, segment(chars_.data() + n.off, n.len).hash, c);
      }
    }
  }
  uint32_t child = newNode();
  nodes_[child].head = seg.head;
  nodes_[child].parent = node;
  nodes_[child].off = static_cast<uint32_t>(chars_.size());
  nodes_[child].len = static_cast<uint32_t>(text.size());
  chars_.append(text);
  place(node, seg.hash, child);
  ++literal_count_;
  nodes_[node].bits |= kHasLiteral;
  // FILTER_INDEX_ counts a node's literal children until it gets a filter.
  auto setBit = [&](Filter& f, uint32_t hash) {
    size_t b = filterBit(hash);
    f.bits[b >> 6] |= uint64_t{1} << (b & 63);
  };
  if ((nodes_[node].bits & kHasFilter) != 0) {
    setBit(filters_[filter_index_[node]], seg.hash);
  } else if (++filter_index_[node] > kFilterAbove) {
    Filter f;
    for (uint32_t c = 0; c < nodes_.size(); ++c) {
      if (nodes_[c].parent == node) {
        setBit(f, segment(chars_.data() + nodes_[c].off, nodes_[c].len).hash);
      }
    }
    filter_index_[node] = static_cast<uint32_t>(filters_.size());
    filters_.push_back(f);
    nodes_[node].bits |= kHasFilter;
  }
  return child;
}

uint32_t PathTrie::addGlob(uint32_t node, std::string_view seg) {
  if ((nodes_[node].bits & kHasGlobs) == 0) {
    nodes_[node].bits |= kHasGlobs;
    glob_index_[node] = static_cast<uint32_t>(glob_sets_.size());
    glob_sets_.emplace_back();
  }
  GlobSet* set = &glob_sets_[glob_index_[node]];
  for (const Glob& g : set->globs) {
    if (std::string_view(chars_.data() + g.off, g.len) == seg) {
      return g.child;
    }
  }
  uint32_t child = newNode();
  set = &glob_sets_[glob_index_[node]];
  size_t head = seg.find_first_of("*?");
  size_t tail = seg.size() - 1 - seg.find_last_of("*?");
  std::string_view middle = seg.substr(head, seg.size() - head - tail);
  size_t head_bytes = std::min<size_t>(head, 8);
  size_t tail_bytes = std::min<size_t>(tail, 8);
  Glob g{loadUpTo8(seg.data(), head_bytes),
         head_bytes == 8 ? ~uint64_t{0} : (uint64_t{1} << (head_bytes * 8)) - 1,
         loadUpTo8(seg.data() + seg.size() - tail_bytes, tail_bytes),
         child,
         static_cast<uint32_t>(chars_.size()),
         static_cast<uint32_t>(seg.size()),
         static_cast<uint32_t>(head),
         static_cast<uint32_t>(tail),
         static_cast<uint8_t>(tail_bytes),
         middle.find_first_not_of('*') == std::string_view::npos};
  chars_.append(seg);
  set->globs.push_back(g);
  if (set->globs.size() > kIndexGlobsAbove) {
    indexGlobs(*set);
  }
  return child;
}

void PathTrie::indexGlobs(GlobSet& set) {
  auto word = [&](uint32_t at, size_t len) {
    uint64_t w = 0;
    for (size_t i = 0; i < len; ++i) {
      w |= uint64_t{static_cast<unsigned char>(chars_[at + i])} << (i * 8);
    }
    return w;
  };
  auto bucketOf = [&](const Glob& g) -> size_t {
    uint32_t end = g.off + g.len;
    if (g.tail >= 2) {
      size_t len = std::min<size_t>(g.tail, 4);
      return (len - 2) * 1024 + keyOf(word(end - static_cast<uint32_t>(len), len));
    }
    if (g.tail == 1) {
      return kTail1 + static_cast<unsigned char>(chars_[end - 1]);
    }
    if (g.head >= 2) {
      size_t len = std::min<size_t>(g.head, 4);
      return (len + 1) * 1024 + keyOf(word(g.off, len));
    }
    if (g.head == 1) {
      return kHead1 + static_cast<unsigned char>(chars_[g.off]);
    }
    return kRest;
  };
  // Counting sort: positions stay ascending within each bucket.
  set.indexed = true;
  set.short_globs = false;
  set.start.assign(kRest + 2, 0);
  bool used[kClasses] = {};
  for (const Glob& g : set.globs) {
    size_t b = bucketOf(g);
    if (b < kTail1) {
      used[b / 1024] = true;
    } else {
      set.short_globs = true;
    }
    ++set.start[b + 1];
  }
  set.num_classes = 0;
  for (size_t c = 0; c < kClasses; ++c) {
    if (used[c]) {
      set.classes[set.num_classes++] = static_cast<uint8_t>(c);
    }
  }
  for (size_t b = 0; b <= kRest; ++b) {
    set.start[b + 1] += set.start[b];
  }
  set.nonempty.assign(kTail1 / 64, 0);
  for (size_t b = 0; b < kTail1; ++b) {
    if (set.start[b] != set.start[b + 1]) {
      set.nonempty[b >> 6] |= uint64_t{1} << (b & 63);
    }
  }
  set.items.resize(set.globs.size());
  std::vector<uint32_t> fill(set.start.begin(), set.start.end() - 1);
  for (uint32_t i = 0; i < set.globs.size(); ++i) {
    set.items[fill[bucketOf(set.globs[i])]++] = i;
  }
}

size_t PathTrie::matchGlobs(const GlobSet& set, const Segment& seg, uint32_t* out) const {
  const Glob* globs = set.globs.data();
  size_t k = 0;
  if (!set.indexed) {
    for (uint32_t i = 0; i < set.globs.size(); ++i) {
      if (globMatches(globs[i], seg)) {
        out[k++] = i;  // at most kIndexGlobsAbove
      }
    }
    return k;
  }
  // The segment's buckets: one per class in use, and the short ones. Each
  // is an ascending run; they are merged below when more than one glob
  // matches, so children are visited in the order they were added.
  size_t buckets[kClasses + 3];
  size_t num_buckets = 0;
  uint64_t w[kClasses];
  classWords(seg, w);
  for (size_t i = 0; i < set.num_classes; ++i) {
    size_t c = set.classes[i];
    buckets[num_buckets++] = c * 1024 + keyOf(w[c]);
  }
  if (set.short_globs) {
    if (seg.size >= 1) {
      buckets[num_buckets++] = kTail1 + static_cast<unsigned char>(seg.data[seg.size - 1]);
      buckets[num_buckets++] = kHead1 + static_cast<unsigned char>(seg.data[0]);
    }
    buckets[num_buckets++] = kRest;
  }
  const uint32_t* start = set.start.data();
  const uint32_t* items = set.items.data();
  for (size_t b = 0; b < num_buckets; ++b) {
    for (size_t i = start[buckets[b]], to = start[buckets[b] + 1]; i < to; ++i) {
      if (globMatches(globs[items[i]], seg)) {
        if (k == kMaxActive) {
          return kMaxActive + 1;
        }
        out[k++] = items[i];
      }
    }
  }
  for (size_t i = 1; i < k; ++i) {
    uint32_t v = out[i];
    size_t j = i;
    for (; j > 0 && out[j - 1] > v; --j) {
      out[j] = out[j - 1];
    }
    out[j] = v;
  }
  return k;
}

void PathTrie::add(std::string_view pattern, uint32_t rule) {
  uint32_t node = 0;
  uint32_t literals = 0;
  size_t i = 1;
  while (i < pattern.size()) {
    size_t j = pattern.find('/', i);
    if (j == std::string_view::npos) {
      j = pattern.size();
    }
    std::string_view seg = pattern.substr(i, j - i);
    i = j + 1;
    uint32_t child = kNone;
    if (seg == "**") {
      child = nodes_[node].double_star;
      if (child == kNone) {
        child = newNode();
        nodes_[child].bits |= kDoubleStar;
        nodes_[node].double_star = child;
      }
    } else if (hasGlob(seg)) {
      child = addGlob(node, seg);
    } else {
      ++literals;
      child = addLiteral(node, seg);
    }
    node = child;
  }
  Node& n = nodes_[node];
  // The rule in the node is always the first one added there.
  if (n.rule == kNone && (n.bits & kMoreRules) == 0 && literals <= kLiteralsMask) {
    n.rule = rule;
    n.bits |= literals;
    return;
  }
  if ((n.bits & kMoreRules) == 0) {
    n.bits |= kMoreRules;
    more_index_[node] = static_cast<uint32_t>(more_rules_.size());
    more_rules_.emplace_back();
  }
  more_rules_[more_index_[node]].emplace_back(rule, literals);
}

void NameIndex::add(std::string_view pattern, uint32_t rule) {
  if (!hasGlob(pattern)) {
    auto it = exact_.find(pattern);
    if (it == exact_.end()) {
      it = exact_.emplace(keys_.emplace_back(pattern), RuleList{}).first;
    }
    it->second.push_back(rule);
    return;
  }
  for (Glob& g : globs_) {
    if (g.pattern == pattern) {
      g.rules.push_back(rule);
      return;
    }
  }
  size_t literals = static_cast<size_t>(
      std::count_if(pattern.begin(), pattern.end(), [](char c) { return c != '*' && c != '?'; }));
  globs_.push_back(Glob{keys_.emplace_back(pattern), literals, {rule}});
  std::stable_sort(globs_.begin(), globs_.end(),
                   [](const Glob& a, const Glob& b) { return a.literals > b.literals; });
}

bool argvMatch(std::span<const std::string> pattern, std::span<const std::string> argv) {
  // Backtracking on the last "**", like globMatch on whole arguments.
  size_t p = 0;
  size_t a = 0;
  size_t star = SIZE_MAX;
  size_t resume = 0;
  while (a < argv.size()) {
    if (p < pattern.size() && pattern[p] != "**" && globMatch(pattern[p], argv[a])) {
      ++p;
      ++a;
    } else if (p < pattern.size() && pattern[p] == "**") {
      star = p++;
      resume = a;
    } else if (star != SIZE_MAX) {
      p = star + 1;
      a = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == "**") {
    ++p;
  }
  return p == pattern.size();
}

}  // namespace guard::policy
