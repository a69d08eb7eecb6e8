// Compiled matchers: construction, and the lookups that are not templates.
#include "policy/matchers.h"

#include <algorithm>

namespace guard::policy {

const std::string& DomainIndex::own(std::string_view s) { return keys_.emplace_back(s); }

void DomainIndex::addExact(std::string_view name, uint32_t rule) {
  auto it = exact_.find(name);
  if (it == exact_.end()) {
    it = exact_.emplace(own(name), RuleList{}).first;
  }
  it->second.push_back(rule);
}

void DomainIndex::addWildcard(std::string_view suffix, uint32_t rule) {
  auto it = wildcard_.find(suffix);
  if (it == wildcard_.end()) {
    it = wildcard_.emplace(own(suffix), RuleList{}).first;
  }
  it->second.push_back(rule);
}

void DomainIndex::addAny(uint32_t rule) { any_.push_back(rule); }

unsigned __int128 CidrIndex::toKey(const IpAddr& a) {
  unsigned __int128 k = 0;
  int n = a.v4 ? 4 : 16;
  for (int i = 0; i < n; ++i) {
    k = (k << 8) | a.bytes[i];
  }
  return k;
}

unsigned __int128 CidrIndex::mask(unsigned __int128 key, uint8_t prefix, bool v4) {
  int bits = v4 ? 32 : 128;
  if (prefix == 0) {
    return 0;
  }
  if (prefix >= bits) {
    return key;
  }
  unsigned __int128 ones = ~static_cast<unsigned __int128>(0);
  unsigned __int128 m = (ones << (bits - prefix));
  if (v4) {
    m &= 0xffffffffu;
  }
  return key & m;
}

void CidrIndex::add(const IpAddr& net, uint8_t prefix, uint32_t rule) {
  std::vector<Bucket>& buckets = net.v4 ? v4_ : v6_;
  auto it = std::find_if(buckets.begin(), buckets.end(),
                         [&](const Bucket& b) { return b.prefix == prefix; });
  if (it == buckets.end()) {
    buckets.push_back(Bucket{prefix, {}});
    std::sort(buckets.begin(), buckets.end(),
              [](const Bucket& a, const Bucket& b) { return a.prefix > b.prefix; });
    it = std::find_if(buckets.begin(), buckets.end(),
                      [&](const Bucket& b) { return b.prefix == prefix; });
  }
  it->table[mask(toKey(net), prefix, net.v4)].push_back(rule);
}

PathTrie::PathTrie() { nodes_.emplace_back(); }

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
        child = static_cast<uint32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_.back().is_double_star = true;
        nodes_[node].double_star = child;
      }
    } else if (hasGlob(seg)) {
      for (const auto& [g, c] : nodes_[node].globs) {
        if (g == seg) {
          child = c;
        }
      }
      if (child == kNone) {
        child = static_cast<uint32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].globs.emplace_back(keys_.emplace_back(seg), child);
      }
    } else {
      ++literals;
      auto it = nodes_[node].literal.find(seg);
      if (it != nodes_[node].literal.end()) {
        child = it->second;
      } else {
        child = static_cast<uint32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].literal.emplace(keys_.emplace_back(seg), child);
      }
    }
    node = child;
  }
  nodes_[node].terminal.emplace_back(rule, literals);
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
