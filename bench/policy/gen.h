// Deterministic generator for the policy benchmark: a 10,000-rule policy
// (one YAML layer) and the query sets that exercise it. Everything derives
// from one seed, so every run measures the same rules and the same queries.
//
//   ~4,000 domain rules   exact names and "*.suffix" wildcards, ~20% with ports
//   ~3,000 CIDR rules     IPv4 /8-/32 and IPv6 /32-/128, nested, ~10% with ports
//   ~3,000 path rules     literal paths at depth 2-6 (~90%) and globs (~10%):
//                         "**/name", "*.ext", "/a/*/c", "/x/**/y"
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "policy/policy.h"

namespace bench {

using guard::policy::Access;
using guard::policy::IpAddr;

// Rng is splitmix64: tiny, fast and the same on every platform.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  bool chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
};

using PortList = std::vector<std::pair<uint16_t, uint16_t>>;  // inclusive ranges

enum class NetKind { kExact, kWildcard, kCidr };

// GenNetRule is one network rule as generated (one target per rule).
struct GenNetRule {
  NetKind kind = NetKind::kExact;
  std::string text;  // exact name, wildcard suffix (without "*."), or CIDR text
  IpAddr addr;       // kCidr: network address
  int prefix = 0;    // kCidr
  bool allow = true;
  PortList ports;  // empty: every port
};

// GenFsRule is one filesystem rule as generated (one path per rule).
struct GenFsRule {
  std::string raw;       // as written in the YAML ("~/x", "{project}/y", "*.pem", ...)
  std::string expanded;  // absolute pattern ("/home/u/x", "/**/*.pem", ...)
  bool glob = false;
  Access access = Access::kHidden;
};

struct DomainQuery {
  std::string name;
  uint16_t port;
  int cat;  // kDomExact, kDomWild, kDomMiss
};
struct CidrQuery {
  std::string text;  // as given to IpAddr::parse
  IpAddr addr;
  uint16_t port;
  int cat;  // kCidrV4Hit ...
};
struct PathQuery {
  std::string path;
  int cat;  // kPathLiteral ...
};

enum { kDomExact, kDomWild, kDomMiss, kDomCats };
enum { kCidrV4Hit, kCidrV4Miss, kCidrV6Hit, kCidrV6Miss, kCidrCats };
enum { kPathLiteral, kPathGlob, kPathMiss, kPathDeep, kPathCats };

inline const char* kDomCatName[] = {"exact-hit", "wildcard-hit", "miss"};
inline const char* kCidrCatName[] = {"v4-hit", "v4-miss", "v6-hit", "v6-miss"};
inline const char* kPathCatName[] = {"literal-hit", "glob-hit", "miss", "deep"};

inline constexpr const char* kHome = "/home/u";
inline constexpr const char* kProject = "/work/p";

struct Generated {
  std::vector<GenNetRule> net;  // YAML order: rule i is id "bench.network.<i+1>"
  std::vector<GenFsRule> fs;    // rule i is id "bench.filesystem.<i+1>"
  std::string yaml;
  size_t domain_rules = 0, wildcard_rules = 0, v4_rules = 0, v6_rules = 0;
  size_t fs_literal = 0, fs_glob = 0;
  std::vector<DomainQuery> domains;
  std::vector<CidrQuery> cidrs;
  std::vector<PathQuery> paths;
};

namespace gen_detail {

inline std::string word(Rng& r) {
  static const std::vector<std::string> syl = {
      "ka",  "lo",  "mi",  "ne",  "ra",  "to",  "zu",  "pe",  "fi",  "go",  "sha", "ban", "cor",
      "del", "vex", "qui", "tra", "mon", "lux", "ber", "dan", "eli", "orn", "ust", "wyn", "hal"};
  std::string w;
  size_t n = 2 + r.below(2);
  for (size_t i = 0; i < n; ++i) {
    w += r.pick(syl);
  }
  if (r.chance(0.5)) {
    w += std::to_string(r.below(100));
  }
  return w;
}

inline std::string portsYaml(const PortList& p) {
  std::string s = "[";
  for (size_t i = 0; i < p.size(); ++i) {
    if (i) {
      s += ", ";
    }
    if (p[i].first == p[i].second) {
      s += std::to_string(p[i].first);
    } else {
      s += "\"" + std::to_string(p[i].first) + "-" + std::to_string(p[i].second) + "\"";
    }
  }
  return s + "]";
}

inline PortList randomPorts(Rng& r) {
  switch (r.below(4)) {
    case 0:
      return {{443, 443}};
    case 1:
      return {{80, 80}, {443, 443}};
    case 2:
      return {{8000, 8100}};
    default:
      return {{22, 22}};
  }
}

inline IpAddr maskAddr(IpAddr a, int prefix) {
  int bytes = a.v4 ? 4 : 16;
  for (int i = 0; i < bytes; ++i) {
    int keep = prefix - i * 8;
    uint8_t m = keep >= 8 ? 0xff : keep <= 0 ? 0 : static_cast<uint8_t>(0xff << (8 - keep));
    a.bytes[i] &= m;
  }
  return a;
}

// randomBelow fills the bits after PREFIX with random bits.
inline IpAddr randomBelow(Rng& r, IpAddr a, int prefix) {
  int bytes = a.v4 ? 4 : 16;
  for (int i = 0; i < bytes; ++i) {
    int keep = prefix - i * 8;
    uint8_t m = keep >= 8 ? 0xff : keep <= 0 ? 0 : static_cast<uint8_t>(0xff << (8 - keep));
    a.bytes[i] = static_cast<uint8_t>((a.bytes[i] & m) | (static_cast<uint8_t>(r.next()) & ~m));
  }
  return a;
}

inline std::string expand(const std::string& raw) {
  if (raw.rfind("{project}", 0) == 0) {
    return kProject + raw.substr(9);
  }
  if (raw.rfind("~", 0) == 0) {
    return kHome + raw.substr(1);
  }
  if (raw[0] == '/') {
    return raw;
  }
  if (raw.rfind("**/", 0) == 0) {
    return "/" + raw;
  }
  return "/**/" + raw;
}

// yamlQuote double-quotes S (our strings never need escapes).
inline std::string q(const std::string& s) { return "\"" + s + "\""; }

inline std::string randomCase(Rng& r, std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z' && r.chance(0.4)) {
      c = static_cast<char>(c - 'a' + 'A');
    }
  }
  return s;
}

}  // namespace gen_detail

// generate builds the policy and the query sets. QUERIES is the size of each
// surface's query set.
inline Generated generate(uint64_t seed, size_t queries) {
  using namespace gen_detail;
  Rng r(seed);
  Generated g;

  // ---- domains --------------------------------------------------------------
  static const std::vector<std::string> tlds = {"com", "net",   "org",   "io", "dev",
                                                "app", "co.uk", "cloud", "ai", "de"};
  static const std::vector<std::string> subs = {
      "api",    "www", "cdn",       "static",    "auth",     "login",   "git",  "registry",
      "mirror", "s3",  "eu-west-1", "us-east-1", "download", "upload",  "docs", "status",
      "mail",   "img", "assets",    "ws",        "grpc",     "metrics", "v2",   "edge"};
  std::vector<std::string> bases;
  std::set<std::string> base_set;
  while (bases.size() < 1400) {
    std::string b = word(r) + "." + r.pick(tlds);
    if (base_set.insert(b).second) {
      bases.push_back(b);
    }
  }
  std::vector<GenNetRule> domains;
  std::set<std::string> seen;
  // A few broad wildcards, so misses in those zones walk every suffix level.
  for (const char* broad : {"internal", "corp", "lan", "test", "localdomain"}) {
    GenNetRule n;
    n.kind = NetKind::kWildcard;
    n.text = broad;
    n.allow = false;
    domains.push_back(n);
    seen.insert(std::string("*.") + broad);
  }
  while (domains.size() < 4000) {
    GenNetRule n;
    const std::string& b = r.pick(bases);
    bool wild = r.chance(0.30);
    n.kind = wild ? NetKind::kWildcard : NetKind::kExact;
    size_t shape = r.below(100);
    if (wild) {
      n.text = shape < 60 ? b : r.pick(subs) + "." + b;
    } else if (shape < 25) {
      n.text = b;
    } else if (shape < 75) {
      n.text = r.pick(subs) + "." + b;
    } else {
      n.text = r.pick(subs) + "." + r.pick(subs) + "." + b;
    }
    // Mostly distinct targets; ~2% repeat one on purpose (ties: deny wins).
    std::string key = (wild ? "*." : "") + n.text;
    if (!seen.insert(key).second && !r.chance(0.02)) {
      continue;
    }
    n.allow = !r.chance(0.25);
    if (r.chance(0.20)) {
      n.ports = randomPorts(r);
    }
    domains.push_back(n);
  }

  // ---- CIDRs ----------------------------------------------------------------
  std::vector<uint8_t> v4_pool;  // first octets in use; the rest is free for misses
  std::vector<uint8_t> v4_free;
  for (int o = 1; o < 224; ++o) {
    if (o == 127) {
      continue;
    }
    (r.chance(0.15) ? v4_pool : v4_free).push_back(static_cast<uint8_t>(o));
  }
  std::vector<std::pair<uint8_t, uint8_t>> v6_pool;  // 2xxx:xxxx::/32 allocations
  for (int i = 0; i < 24; ++i) {
    uint16_t hi = static_cast<uint16_t>(0x2000 | r.below(0x1000));
    v6_pool.push_back({static_cast<uint8_t>(hi >> 8), static_cast<uint8_t>(hi & 0xff)});
  }
  std::vector<GenNetRule> cidrs;
  std::set<std::string> cidr_seen;
  while (cidrs.size() < 3000) {
    GenNetRule n;
    n.kind = NetKind::kCidr;
    bool v4 = cidrs.size() < 1800;
    IpAddr a;
    a.v4 = v4;
    // 30%: nest under an earlier rule of the same family with a longer prefix.
    const GenNetRule* parent = nullptr;
    if (!cidrs.empty() && r.chance(0.30)) {
      const GenNetRule& p = cidrs[r.below(cidrs.size())];
      if (p.addr.v4 == v4 && p.prefix < (v4 ? 32 : 128)) {
        parent = &p;
      }
    }
    int prefix;
    if (parent) {
      prefix = parent->prefix + 1 +
               static_cast<int>(
                   r.below(static_cast<size_t>(std::min(16, (v4 ? 32 : 128) - parent->prefix))));
      a = randomBelow(r, parent->addr, parent->prefix);
    } else if (v4) {
      static const std::vector<int> common = {8, 16, 24, 32};
      prefix = r.chance(0.5) ? r.pick(common) : 8 + static_cast<int>(r.below(25));
      a.bytes[0] = r.pick(v4_pool);
      a = randomBelow(r, a, 8);
    } else {
      static const std::vector<int> common = {32, 48, 56, 64, 128};
      prefix = r.chance(0.5) ? r.pick(common) : 32 + static_cast<int>(r.below(97));
      auto [b0, b1] = r.pick(v6_pool);
      a.bytes[0] = b0;
      a.bytes[1] = b1;
      a = randomBelow(r, a, 16);
    }
    a = maskAddr(a, prefix);
    n.addr = a;
    n.prefix = prefix;
    n.text = a.toString() + "/" + std::to_string(prefix);
    if (!cidr_seen.insert(n.text).second) {
      continue;
    }
    n.allow = !r.chance(0.35);
    if (r.chance(0.10)) {
      n.ports = randomPorts(r);
    }
    cidrs.push_back(n);
  }

  // Network rules in YAML order: shuffled, so ids interleave kinds.
  g.net = domains;
  g.net.insert(g.net.end(), cidrs.begin(), cidrs.end());
  for (size_t i = g.net.size(); i > 1; --i) {
    std::swap(g.net[i - 1], g.net[r.below(i)]);
  }

  // ---- filesystem -----------------------------------------------------------
  static const std::vector<std::string> roots = {"/usr",  "/etc", "/opt",      "/var", "/srv",
                                                 "/data", "~",    "{project}", "/mnt", "/nix"};
  static const std::vector<std::string> dirs = {
      "bin",     "lib",    "share",    "local",   "include",      "config",  "cache",
      "logs",    "src",    "build",    "docs",    "node_modules", ".git",    "hooks",
      "private", "public", "tmp",      "run",     "www",          "backups", "keys",
      "certs",   "models", "datasets", ".config", ".local",       "projects"};
  auto dirName = [&](Rng& rr) { return rr.chance(0.5) ? rr.pick(dirs) : word(rr); };
  // Names the "**/name" globs use; some literal rules end in them too, so a
  // glob and a literal rule compete for the same directories.
  static const std::vector<std::string> names = {
      ".env",    ".env.local",       ".npmrc", ".netrc", "id_rsa",      "id_ed25519",
      "secrets", "credentials.json", ".aws",   ".kube",  "__pycache__", "target",
      "dist",    ".terraform",       ".ssh",   ".gnupg", ".docker",     "kubeconfig",
      "token",   ".pypirc"};
  std::vector<GenFsRule> lit;
  std::set<std::string> fs_seen;
  while (lit.size() < 2700) {
    std::string raw;
    if (!lit.empty() && r.chance(0.40)) {
      const GenFsRule& p = lit[r.below(lit.size())];
      raw = p.raw;
      size_t depth = static_cast<size_t>(std::count(p.expanded.begin(), p.expanded.end(), '/'));
      size_t add = 1 + r.below(2);
      if (depth + add > 6) {
        continue;
      }
      for (size_t i = 0; i < add; ++i) {
        raw += "/" + dirName(r);
      }
    } else {
      raw = r.pick(roots);
      size_t depth = 1 + r.below(5);  // 2-6 segments counting the root
      for (size_t i = 0; i < depth; ++i) {
        raw += "/" + dirName(r);
      }
    }
    if (r.chance(0.05)) {
      raw = raw.substr(0, raw.rfind('/') + 1) + r.pick(names);
    }
    if (!fs_seen.insert(raw).second) {
      continue;
    }
    GenFsRule f;
    f.raw = raw;
    f.expanded = expand(raw);
    size_t a = r.below(100);
    f.access = a < 40 ? Access::kReadOnly : a < 75 ? Access::kReadWrite : Access::kHidden;
    lit.push_back(f);
  }
  static const std::vector<std::string> exts = {"pem", "key", "p12", "pfx", "kdbx",     "sqlite",
                                                "bak", "swp", "der", "jks", "keystore", "gpg"};
  std::vector<GenFsRule> globs;
  auto addGlob = [&](std::string raw) {
    if (!fs_seen.insert(raw).second) {
      return;
    }
    GenFsRule f;
    f.raw = raw;
    f.expanded = expand(raw);
    f.glob = true;
    size_t a = r.below(100);
    f.access = a < 50 ? Access::kHidden : a < 80 ? Access::kReadOnly : Access::kReadWrite;
    globs.push_back(f);
  };
  while (globs.size() < 80) {  // "**/name"
    addGlob("**/" + (r.chance(0.25) ? r.pick(names) : "cache-" + word(r)));
  }
  while (globs.size() < 150) {  // "*.ext" (and a few "name.*", "?" forms)
    size_t k = r.below(10);
    if (k < 7) {
      addGlob("*." + (r.chance(0.15) ? r.pick(exts) : "x" + word(r)));
    } else if (k < 9) {
      addGlob(word(r) + ".*");
    } else {
      addGlob("*.b?" + word(r));
    }
  }
  auto litDir = [&](size_t max_depth) {
    for (;;) {
      const GenFsRule& p = r.pick(lit);
      size_t depth = static_cast<size_t>(std::count(p.expanded.begin(), p.expanded.end(), '/'));
      if (depth <= max_depth) {
        return p.raw;
      }
    }
  };
  while (globs.size() < 225) {  // "/a/*/c"
    static const std::vector<std::string> mid = {"*", "*", "*", "*-prod", "app?", "v*"};
    addGlob(litDir(4) + "/" + r.pick(mid) + "/" + (r.chance(0.3) ? r.pick(names) : dirName(r)));
  }
  while (globs.size() < 300) {  // "/x/**/y" (and a few "/x/**")
    if (r.chance(0.1)) {
      addGlob(litDir(3) + "/**");
      continue;
    }
    std::string last =
        r.chance(0.2) ? "*." + r.pick(exts) : (r.chance(0.3) ? r.pick(names) : dirName(r));
    addGlob(litDir(3) + "/**/" + last);
  }
  g.fs = lit;
  g.fs.insert(g.fs.end(), globs.begin(), globs.end());
  for (size_t i = g.fs.size(); i > 1; --i) {
    std::swap(g.fs[i - 1], g.fs[r.below(i)]);
  }

  // ---- YAML -----------------------------------------------------------------
  std::string& y = g.yaml;
  y += "version: 1\nnetwork:\n  default: deny\n  rules:\n";
  for (const GenNetRule& n : g.net) {
    y += n.allow ? "    - allow: " : "    - deny: ";
    y += n.kind == NetKind::kWildcard ? q("*." + n.text) : q(n.text);
    y += "\n";
    if (!n.ports.empty()) {
      y += "      ports: " + portsYaml(n.ports) + "\n";
    }
    switch (n.kind) {
      case NetKind::kExact:
        ++g.domain_rules;
        break;
      case NetKind::kWildcard:
        ++g.wildcard_rules;
        break;
      case NetKind::kCidr:
        ++(n.addr.v4 ? g.v4_rules : g.v6_rules);
        break;
    }
  }
  y += "filesystem:\n  default: hidden\n  rules:\n";
  for (const GenFsRule& f : g.fs) {
    y += "    - ";
    y += guard::policy::accessName(f.access);
    y += ": " + q(f.raw) + "\n";
    ++(f.glob ? g.fs_glob : g.fs_literal);
  }

  // ---- queries ----------------------------------------------------------------
  std::vector<const GenNetRule*> exact, wild, v4r, v6r;
  for (const GenNetRule& n : g.net) {
    switch (n.kind) {
      case NetKind::kExact:
        exact.push_back(&n);
        break;
      case NetKind::kWildcard:
        wild.push_back(&n);
        break;
      case NetKind::kCidr:
        (n.addr.v4 ? v4r : v6r).push_back(&n);
        break;
    }
  }
  auto port = [&]() -> uint16_t {
    size_t k = r.below(10);
    return k < 7 ? 443 : k == 7 ? 80 : k == 8 ? 22 : 8080;
  };
  for (size_t i = 0; i < queries; ++i) {
    DomainQuery d;
    d.port = port();
    size_t k = r.below(100);
    if (k < 35) {
      d.cat = kDomExact;
      d.name = exact[r.below(exact.size())]->text;
    } else if (k < 70) {
      d.cat = kDomWild;
      d.name = word(r) + "." + wild[r.below(wild.size())]->text;
      if (r.chance(0.3)) {
        d.name = r.pick(subs) + "." + d.name;
      }
    } else {
      d.cat = kDomMiss;
      std::string b;
      do {
        b = word(r) + "x." + r.pick(tlds);
      } while (base_set.count(b));
      d.name = b;
      size_t extra = r.below(4);
      for (size_t e = 0; e < extra; ++e) {
        d.name = (r.chance(0.5) ? r.pick(subs) : word(r)) + "." + d.name;
      }
    }
    if (r.chance(0.3)) {
      d.name = randomCase(r, d.name);
    }
    if (r.chance(0.15)) {
      d.name += ".";
    }
    g.domains.push_back(d);
  }
  for (size_t i = 0; i < queries; ++i) {
    CidrQuery c;
    c.port = port();
    size_t k = r.below(100);
    IpAddr a;
    if (k < 35) {
      c.cat = kCidrV4Hit;
      const GenNetRule* n = v4r[r.below(v4r.size())];
      a = randomBelow(r, n->addr, n->prefix);
    } else if (k < 50) {
      c.cat = kCidrV4Miss;
      a.v4 = true;
      a.bytes[0] = r.pick(v4_free);
      a = randomBelow(r, a, 8);
    } else if (k < 85) {
      c.cat = kCidrV6Hit;
      const GenNetRule* n = v6r[r.below(v6r.size())];
      a = randomBelow(r, n->addr, n->prefix);
    } else {
      c.cat = kCidrV6Miss;
      a.v4 = false;
      a.bytes[0] = static_cast<uint8_t>(0x30 | r.below(16));  // 3xxx::, no rule there
      a = randomBelow(r, a, 8);
    }
    c.text = a.toString();
    if (a.v4 && r.chance(0.1)) {
      c.text = "::ffff:" + c.text;  // IPv4-mapped spelling
    }
    if (!IpAddr::parse(c.text, &c.addr)) {
      fprintf(stderr, "bench: generated address '%s' does not parse\n", c.text.c_str());
      abort();
    }
    g.cidrs.push_back(c);
  }
  std::vector<const GenFsRule*> lits, gl;
  for (const GenFsRule& f : g.fs) {
    (f.glob ? gl : lits).push_back(&f);
  }
  auto file = [&]() { return word(r) + (r.chance(0.5) ? ".txt" : ".dat"); };
  // globPath writes a path matching expanded glob pattern PAT.
  // The segment after a "**" is sometimes written twice ("/p/.env/.env"):
  // the pattern then matches two consecutive ancestors.
  auto globPath = [&](const std::string& pat) {
    std::string out;
    bool after_ds = false;
    size_t i = 1;
    while (i <= pat.size()) {
      size_t j = pat.find('/', i);
      if (j == std::string::npos) {
        j = pat.size();
      }
      std::string seg = pat.substr(i, j - i);
      i = j + 1;
      if (seg.empty()) {
        continue;
      }
      if (seg == "**") {
        size_t n = r.below(4);
        if (out.empty() && n == 0) {
          n = 1 + r.below(3);  // a root-level "**": start somewhere real
        }
        for (size_t e = 0; e < n; ++e) {
          out += "/" + (e == 0 && out.empty() ? r.pick(lits)->expanded.substr(1) : dirName(r));
        }
        after_ds = true;
        continue;
      }
      std::string s;
      for (char ch : seg) {
        if (ch == '*') {
          s += r.chance(0.7) ? word(r) : "";
        } else if (ch == '?') {
          s += static_cast<char>('a' + r.below(26));
        } else {
          s += ch;
        }
      }
      out += "/" + s;
      if (after_ds && r.chance(0.25)) {
        out += "/" + s;
      }
      after_ds = false;
    }
    return out;
  };
  for (size_t i = 0; i < queries; ++i) {
    PathQuery p;
    size_t k = r.below(100);
    if (k < 30) {
      p.cat = kPathLiteral;
      p.path = r.pick(lits)->expanded;
      std::string last = p.path.substr(p.path.rfind('/') + 1);
      size_t extra = r.below(3);
      if (std::find(names.begin(), names.end(), last) != names.end()) {
        // A literal rule for ".../.env" and a "**/.env" glob meet at
        // ".../.env/.env": the glob matches one level deeper.
        p.path += "/" + last;
        extra = 0;
      }
      for (size_t e = 0; e < extra; ++e) {
        p.path += "/" + dirName(r);
      }
      if (r.chance(0.1)) {
        std::string n = r.pick(names);
        p.path += "/" + n + (r.chance(0.5) ? "/" + n : "");
      }
      if (r.chance(0.6)) {
        p.path += "/" + file();
      }
    } else if (k < 55) {
      p.cat = kPathGlob;
      p.path = globPath(r.pick(gl)->expanded);
      if (r.chance(0.3)) {
        p.path += "/" + file();
      }
    } else if (k < 80) {
      p.cat = kPathMiss;
      static const std::vector<std::string> none = {"/proc",       "/sys", "/boot", "/root",
                                                    "/lost+found", "/usr", "/etc",  "/home"};
      p.path = r.pick(none) + "/zz" + word(r);
      size_t extra = r.below(4);
      for (size_t e = 0; e < extra; ++e) {
        p.path += "/" + word(r);
      }
      p.path += "/" + file();
    } else {
      p.cat = kPathDeep;
      p.path = r.pick(lits)->expanded;
      size_t extra = 6 + r.below(9);
      for (size_t e = 0; e < extra; ++e) {
        p.path += "/" + (r.chance(0.1) ? r.pick(names) : dirName(r));
      }
      p.path += "/" + (r.chance(0.2) ? word(r) + "." + r.pick(exts) : file());
    }
    // A few spellings that need lexical normalisation.
    if (r.chance(0.05)) {
      size_t slash = p.path.find('/', 1);
      if (slash != std::string::npos) {
        static const std::vector<std::string> junk = {"/", "/.", "/./", "/zz/.."};
        p.path.insert(slash, r.pick(junk));
      }
    }
    g.paths.push_back(p);
  }
  return g;
}

}  // namespace bench
