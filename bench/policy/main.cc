// Policy engine benchmark: decisions per second of the compiled matchers
// (domain suffix table, CIDR prefix tables, path trie) on a 10,000-rule
// policy, each against a naive linear scan over the same rules with the same
// semantics, plus the startup cost of parsing and compiling that policy.
//
// Before anything is timed, every query of every set is decided both ways
// and the two must agree (decision, file access, and the deciding rule up
// to ties of equal rank); any disagreement aborts the run with the details.
//
//   build/bench/policy                              full run (bench/RESULTS.md)
//   build/bench/policy --benchmark_min_time=0.01    CI smoke (make bench-smoke)
//   build/bench/policy --benchmark_filter=path/     one surface
//
// bench/README.md explains each benchmark.
#include <benchmark/benchmark.h>
#include <fnmatch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/policy/gen.h"
#include "policy/policy.h"

namespace {

using guard::policy::Access;
using guard::policy::Decision;
using guard::policy::FileOp;
using guard::policy::IpAddr;
using guard::policy::Policy;
using guard::policy::Verdict;

constexpr uint64_t kSeed = 0x5eed2024c0ffeeULL;
constexpr size_t kQueries = 2048;  // per surface
constexpr double kNetTarget = 5e6;
constexpr double kPathTarget = 2e6;

// ---- naive linear scans ------------------------------------------------------
//
// Each scan walks every rule of its kind, computes the rule's rank for the
// query (or "no match"), and keeps the best: higher rank wins, then the
// stricter rule (deny > allow; hidden > read-only > read-write), then the
// earlier rule. No rule matching means the layer default (deny / hidden).

bool portOk(const bench::PortList& ports, uint16_t port) {
  if (ports.empty()) {
    return true;
  }
  for (const auto& [lo, hi] : ports) {
    if (port >= lo && port <= hi) {
      return true;
    }
  }
  return false;
}

int strictNet(bool allow) { return allow ? 0 : 2; }

int strictFs(Access a) {
  switch (a) {
    case Access::kReadWrite:
      return 0;
    case Access::kReadOnly:
      return 1;
    case Access::kHidden:
      return 2;
  }
  return 2;
}

// Rank is (specificity, strictness); kNoMatch when the rule does not apply.
struct Rank {
  long spec = -1;
  int strict = -1;
  bool matched() const { return spec >= 0; }
  bool operator>(const Rank& o) const {
    return spec > o.spec || (spec == o.spec && strict > o.strict);
  }
  bool operator==(const Rank& o) const { return spec == o.spec && strict == o.strict; }
};

struct NaiveResult {
  int rule = -1;  // index into the generated rules; -1: the default decided
  Rank rank;
};

// Domains: exact beats every wildcard; a longer wildcard suffix beats a
// shorter one.
struct NaiveDomains {
  struct R {
    bool wild;
    std::string text;
    bool allow;
    bench::PortList ports;
    int index;
  };
  std::vector<R> rules;

  // normalise writes NAME lowercased, without one trailing dot, into OUT
  // (capacity kMaxName + 1; generated names are far shorter).
  static constexpr size_t kMaxName = 1024;
  static size_t normalise(std::string_view name, char* out) {
    if (!name.empty() && name.back() == '.') {
      name.remove_suffix(1);
    }
    if (name.size() > kMaxName) {
      name = name.substr(0, kMaxName);
    }
    for (size_t i = 0; i < name.size(); ++i) {
      char c = name[i];
      out[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    }
    return name.size();
  }
  static Rank rank(const R& r, std::string_view name, uint16_t port) {
    if (!portOk(r.ports, port)) {
      return {};
    }
    if (!r.wild) {
      if (name != r.text) {
        return {};
      }
      return {1 << 20, strictNet(r.allow)};
    }
    if (name.size() > r.text.size() + 1 && name.ends_with(r.text) &&
        name[name.size() - r.text.size() - 1] == '.') {
      return {static_cast<long>(r.text.size()), strictNet(r.allow)};
    }
    return {};
  }
  NaiveResult decide(std::string_view raw, uint16_t port) const {
    char buf[NaiveDomains::kMaxName + 1];
    std::string_view name(buf, normalise(raw, buf));
    NaiveResult best;
    for (const R& r : rules) {
      Rank k = rank(r, name, port);
      if (k.matched() && k > best.rank) {
        best = {r.index, k};
      }
    }
    return best;
  }
};

// CIDRs: the longest prefix that contains the address.
struct NaiveCidrs {
  struct R {
    IpAddr addr;
    int prefix;
    bool allow;
    bench::PortList ports;
    int index;
  };
  std::vector<R> rules;

  static Rank rank(const R& r, const IpAddr& a, uint16_t port) {
    if (r.addr.v4 != a.v4 || !portOk(r.ports, port)) {
      return {};
    }
    int full = r.prefix / 8;
    if (memcmp(a.bytes, r.addr.bytes, static_cast<size_t>(full)) != 0) {
      return {};
    }
    int rest = r.prefix % 8;
    if (rest != 0) {
      uint8_t m = static_cast<uint8_t>(0xff << (8 - rest));
      if ((a.bytes[full] & m) != r.addr.bytes[full]) {
        return {};
      }
    }
    return {r.prefix, strictNet(r.allow)};
  }
  NaiveResult decide(const IpAddr& a, uint16_t port) const {
    NaiveResult best;
    for (const R& r : rules) {
      Rank k = rank(r, a, port);
      if (k.matched() && k > best.rank) {
        best = {r.index, k};
      }
    }
    return best;
  }
};

// Paths: every pattern is matched (fnmatch per segment, "**" spanning any
// number of segments) against the path and each of its ancestors, and counts
// at the deepest ancestor it matches (docs/policy.md: "the rule matching the
// deepest ancestor of the path"). A pattern ending in "/**" names the subtree
// at its prefix, so it counts where that prefix matches: "/x/**" ranks like
// "/x", not like the full path. Then more literal segments, then the stricter
// mode.
//
// Semantics::kRunStart and kShortest are other readings, evaluated only as a
// diagnostic, never timed: kRunStart is the engine's behaviour at commit
// a89e858 (a run of consecutive matching ancestors counted at its first, so
// "**/.env" matched /p/.env/.env at depth 2, not 3); kShortest is the
// shallowest matching ancestor.
enum class Semantics { kDeepest, kRunStart, kShortest };

struct NaivePaths {
  struct R {
    std::vector<std::string> segs;
    size_t core;  // segs[0, core): the pattern without trailing "**" segments
    int literals;
    Access access;
    int index;
  };
  std::vector<R> rules;

  static std::vector<std::string> split(std::string_view path) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < path.size()) {
      size_t j = path.find('/', i);
      if (j == std::string_view::npos) {
        j = path.size();
      }
      std::string_view seg = path.substr(i, j - i);
      i = j + 1;
      if (seg.empty() || seg == ".") {
        continue;
      }
      if (seg == "..") {
        if (!out.empty()) {
          out.pop_back();
        }
        continue;
      }
      out.emplace_back(seg);
    }
    return out;
  }

  // match reports whether pattern segments P[pi..pe) match path segments S[si..d).
  static bool match(const std::vector<std::string>& p, size_t pi, size_t pe,
                    const std::vector<std::string>& s, size_t si, size_t d) {
    if (pi == pe) {
      return si == d;
    }
    if (p[pi] == "**") {
      for (size_t k = si; k <= d; ++k) {
        if (match(p, pi + 1, pe, s, k, d)) {
          return true;
        }
      }
      return false;
    }
    if (si == d || fnmatch(p[pi].c_str(), s[si].c_str(), 0) != 0) {
      return false;
    }
    return match(p, pi + 1, pe, s, si + 1, d);
  }

  static Rank rank(const R& r, const std::vector<std::string>& s, Semantics sem) {
    long depth = -1;
    bool prev = false;
    for (size_t d = 0; d <= s.size(); ++d) {
      bool m = sem == Semantics::kDeepest ? match(r.segs, 0, r.core, s, 0, d)
                                          : match(r.segs, 0, r.segs.size(), s, 0, d);
      if (m) {
        if (sem == Semantics::kDeepest || (sem == Semantics::kRunStart && !prev)) {
          depth = static_cast<long>(d);
        } else if (sem == Semantics::kShortest && depth < 0) {
          depth = static_cast<long>(d);
        }
      }
      prev = m;
    }
    if (depth < 0) {
      return {};
    }
    // Depth first, then literal segments: fold both into one number.
    return {depth * 1000 + r.literals, strictFs(r.access)};
  }

  NaiveResult decide(std::string_view path, Semantics sem = Semantics::kDeepest) const {
    std::vector<std::string> s = split(path);
    NaiveResult best;
    for (const R& r : rules) {
      Rank k = rank(r, s, sem);
      if (k.matched() && k > best.rank) {
        best = {r.index, k};
      }
    }
    return best;
  }
};

// ---- the fixture ---------------------------------------------------------------

struct World {
  bench::Generated gen;
  guard::policy::Context ctx;
  std::shared_ptr<const guard::policy::Layer> layer;
  Policy policy;
  double cold_parse_ms = 0;
  double cold_compile_ms = 0;
  NaiveDomains ndom;
  NaiveCidrs ncidr;
  NaivePaths npath;
};

int ruleIndex(std::string_view id, std::string_view surface) {
  std::string prefix = "bench." + std::string(surface) + ".";
  if (id.rfind(prefix, 0) != 0) {
    return -2;  // not one of ours (builtin?)
  }
  std::string_view rest = id.substr(prefix.size());
  if (rest == "default") {
    return -1;
  }
  return atoi(std::string(rest).c_str()) - 1;
}

[[noreturn]] void die(const std::string& msg) {
  fprintf(stderr, "bench/policy: %s\n", msg.c_str());
  exit(2);
}

void build(World* w) {
  w->gen = bench::generate(kSeed, kQueries);
  w->ctx.user = "u";
  w->ctx.home = bench::kHome;
  w->ctx.project = bench::kProject;
  w->ctx.host = "bench";
  auto t0 = std::chrono::steady_clock::now();
  auto parsed = guard::policy::parseLayer(w->gen.yaml, "bench.yaml", "bench");
  auto t1 = std::chrono::steady_clock::now();
  if (!parsed.ok()) {
    die("parseLayer failed:\n" + parsed.error().message());
  }
  w->layer = parsed.value();
  auto compiled = guard::policy::compile({w->layer}, w->ctx);
  auto t2 = std::chrono::steady_clock::now();
  if (!compiled.ok()) {
    die("compile failed:\n" + compiled.error().message());
  }
  w->policy = std::move(compiled.value());
  w->cold_parse_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  w->cold_compile_ms = std::chrono::duration<double, std::milli>(t2 - t1).count();

  for (size_t i = 0; i < w->gen.net.size(); ++i) {
    const bench::GenNetRule& n = w->gen.net[i];
    if (n.kind == bench::NetKind::kCidr) {
      w->ncidr.rules.push_back({n.addr, n.prefix, n.allow, n.ports, static_cast<int>(i)});
    } else {
      w->ndom.rules.push_back(
          {n.kind == bench::NetKind::kWildcard, n.text, n.allow, n.ports, static_cast<int>(i)});
    }
  }
  for (size_t i = 0; i < w->gen.fs.size(); ++i) {
    const bench::GenFsRule& f = w->gen.fs[i];
    NaivePaths::R r;
    r.segs = NaivePaths::split(f.expanded);
    r.core = r.segs.size();
    while (r.core > 0 && r.segs[r.core - 1] == "**") {
      --r.core;
    }
    r.literals = 0;
    for (const std::string& s : r.segs) {
      if (s != "**" && s.find_first_of("*?") == std::string::npos) {
        ++r.literals;
      }
    }
    r.access = f.access;
    r.index = static_cast<int>(i);
    w->npath.rules.push_back(std::move(r));
  }
}

// ---- verification ----------------------------------------------------------------

struct Mismatches {
  size_t count = 0;
  void report(const std::string& what) {
    if (++count <= 12) {
      fprintf(stderr, "MISMATCH %s\n", what.c_str());
    }
  }
};

std::string describeNet(const World& w, int idx) {
  if (idx < 0) {
    return "<default deny>";
  }
  const bench::GenNetRule& n = w.gen.net[static_cast<size_t>(idx)];
  std::string s = "bench.network." + std::to_string(idx + 1) + " " +
                  (n.allow ? "allow " : "deny ") +
                  (n.kind == bench::NetKind::kWildcard ? "*." : "") + n.text;
  if (!n.ports.empty()) {
    s += " ports " + bench::gen_detail::portsYaml(n.ports);
  }
  return s;
}

std::string describeFs(const World& w, int idx) {
  if (idx < 0) {
    return "<default hidden>";
  }
  const bench::GenFsRule& f = w.gen.fs[static_cast<size_t>(idx)];
  return "bench.filesystem." + std::to_string(idx + 1) + " " + guard::policy::accessName(f.access) +
         " " + f.raw + " (" + f.expanded + ")";
}

// verify decides every query both ways. Returns the number of mismatches.
size_t verify(const World& w) {
  Mismatches mm;
  size_t hits[3][4] = {};  // surface x category: queries a rule decided
  size_t totals[3][4] = {};
  for (const bench::DomainQuery& q : w.gen.domains) {
    Verdict v = w.policy.connect(q.name, nullptr, q.port);
    NaiveResult n = w.ndom.decide(q.name, q.port);
    bool n_allow = n.rule >= 0 && w.gen.net[static_cast<size_t>(n.rule)].allow;
    int c_idx = ruleIndex(v.rule.id, "network");
    ++totals[0][q.cat];
    hits[0][q.cat] += n.rule >= 0;
    bool same = (v.decision == Decision::kAllow) == n_allow && v.decision != Decision::kWouldDeny;
    // The deciding rule must rank equal to the naive best (ties are legal).
    if (same && c_idx != n.rule) {
      char buf[NaiveDomains::kMaxName + 1];
      std::string_view norm(buf, NaiveDomains::normalise(q.name, buf));
      Rank ck;
      for (const NaiveDomains::R& r : w.ndom.rules) {
        if (r.index == c_idx) {
          ck = NaiveDomains::rank(r, norm, q.port);
        }
      }
      same = c_idx >= 0 && n.rule >= 0 && ck == n.rank;
    }
    if (!same) {
      mm.report("domain '" + q.name + "' port " + std::to_string(q.port) + ": guard " +
                guard::policy::decisionName(v.decision) + " by " + std::string(v.rule.id) + " [" +
                describeNet(w, c_idx) + "], naive " + (n_allow ? "allow" : "deny") + " by [" +
                describeNet(w, n.rule) + "]");
    }
  }
  for (const bench::CidrQuery& q : w.gen.cidrs) {
    Verdict v = w.policy.connect("", &q.addr, q.port);
    NaiveResult n = w.ncidr.decide(q.addr, q.port);
    bool n_allow = n.rule >= 0 && w.gen.net[static_cast<size_t>(n.rule)].allow;
    int c_idx = ruleIndex(v.rule.id, "network");
    ++totals[1][q.cat];
    hits[1][q.cat] += n.rule >= 0;
    bool same = (v.decision == Decision::kAllow) == n_allow && v.decision != Decision::kWouldDeny;
    if (same && c_idx != n.rule) {
      Rank ck;
      for (const NaiveCidrs::R& r : w.ncidr.rules) {
        if (r.index == c_idx) {
          ck = NaiveCidrs::rank(r, q.addr, q.port);
        }
      }
      same = c_idx >= 0 && n.rule >= 0 && ck == n.rank;
    }
    if (!same) {
      mm.report("address " + q.text + " port " + std::to_string(q.port) + ": guard " +
                guard::policy::decisionName(v.decision) + " by " + std::string(v.rule.id) + " [" +
                describeNet(w, c_idx) + "], naive " + (n_allow ? "allow" : "deny") + " by [" +
                describeNet(w, n.rule) + "]");
    }
  }
  size_t alt_runstart = 0, alt_shortest = 0;
  for (const bench::PathQuery& q : w.gen.paths) {
    Verdict v = w.policy.file(q.path, FileOp::kRead);
    NaiveResult n = w.npath.decide(q.path);
    Access n_access = n.rule >= 0 ? w.gen.fs[static_cast<size_t>(n.rule)].access : Access::kHidden;
    bool n_allow = n_access != Access::kHidden;
    int c_idx = ruleIndex(v.rule.id, "filesystem");
    ++totals[2][q.cat];
    hits[2][q.cat] += n.rule >= 0;
    bool same = v.access == n_access && (v.decision == Decision::kAllow) == n_allow &&
                v.decision != Decision::kWouldDeny;
    if (same && c_idx != n.rule) {
      std::vector<std::string> segs = NaivePaths::split(q.path);
      Rank ck;
      for (const NaivePaths::R& r : w.npath.rules) {
        if (r.index == c_idx) {
          ck = NaivePaths::rank(r, segs, Semantics::kDeepest);
        }
      }
      same = c_idx >= 0 && n.rule >= 0 && ck == n.rank;
    }
    if (!same) {
      mm.report("path '" + q.path + "' read: guard " + guard::policy::decisionName(v.decision) +
                "/" + guard::policy::accessName(v.access) + " by " + std::string(v.rule.id) + " [" +
                describeFs(w, c_idx) + "] reason '" + std::string(v.reason) + "', naive " +
                guard::policy::accessName(n_access) + " by [" + describeFs(w, n.rule) + "]");
    }
    // Diagnostic only: how often would the other readings of "depth" decide
    // differently from the engine?
    auto accessOf = [&](const NaiveResult& r) {
      return r.rule >= 0 ? w.gen.fs[static_cast<size_t>(r.rule)].access : Access::kHidden;
    };
    alt_runstart += accessOf(w.npath.decide(q.path, Semantics::kRunStart)) != v.access;
    alt_shortest += accessOf(w.npath.decide(q.path, Semantics::kShortest)) != v.access;
  }
  printf(
      "verification: %zu domain, %zu address, %zu path queries decided by guard and by the "
      "naive scan: %zu disagreements\n",
      w.gen.domains.size(), w.gen.cidrs.size(), w.gen.paths.size(), mm.count);
  const char* const* names[3] = {bench::kDomCatName, bench::kCidrCatName, bench::kPathCatName};
  const char* surf[3] = {"domain", "cidr", "path"};
  int ncat[3] = {bench::kDomCats, bench::kCidrCats, bench::kPathCats};
  for (int s = 0; s < 3; ++s) {
    printf("  %-6s", surf[s]);
    for (int c = 0; c < ncat[s]; ++c) {
      printf("  %s %zu (%zu decided by a rule)", names[s][c], totals[s][c], hits[s][c]);
    }
    printf("\n");
  }
  double segs[bench::kPathCats] = {};
  for (const bench::PathQuery& q : w.gen.paths) {
    segs[q.cat] += static_cast<double>(NaivePaths::split(q.path).size());
  }
  printf("  path segments per query:");
  for (int c = 0; c < bench::kPathCats; ++c) {
    printf(" %s %.1f", bench::kPathCatName[c],
           totals[2][c] ? segs[c] / static_cast<double>(totals[2][c]) : 0.0);
  }
  printf("\n");
  printf(
      "  other path-depth readings (diagnostic): 'first of a run of matching ancestors' (the "
      "engine at a89e858) would change %zu of %zu path decisions, 'shortest matching "
      "ancestor' %zu\n",
      alt_runstart, w.gen.paths.size(), alt_shortest);
  return mm.count;
}

// ---- benchmarks --------------------------------------------------------------------

template <typename Q, typename F>
void runLoop(benchmark::State& st, const std::vector<Q>& qs, F&& f) {
  size_t i = 0;
  const size_t n = qs.size();
  for (auto _ : st) {
    f(qs[i]);
    if (++i == n) {
      i = 0;
    }
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
}

template <typename Q>
std::vector<Q> ofCategory(const std::vector<Q>& all, int cat) {
  std::vector<Q> out;
  for (const Q& q : all) {
    if (cat < 0 || q.cat == cat) {
      out.push_back(q);
    }
  }
  return out;
}

void registerAll(World* w) {
  auto reg = [](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn);
  };
  for (int cat = -1; cat < bench::kDomCats; ++cat) {
    auto qs = std::make_shared<std::vector<bench::DomainQuery>>(ofCategory(w->gen.domains, cat));
    std::string set = cat < 0 ? "mix" : bench::kDomCatName[cat];
    reg("domain/guard/" + set, [w, qs](benchmark::State& st) {
      runLoop(st, *qs, [w](const bench::DomainQuery& q) {
        Verdict v = w->policy.connect(q.name, nullptr, q.port);
        benchmark::DoNotOptimize(v);
      });
    });
    reg("domain/naive/" + set, [w, qs](benchmark::State& st) {
      runLoop(st, *qs, [w](const bench::DomainQuery& q) {
        NaiveResult r = w->ndom.decide(q.name, q.port);
        benchmark::DoNotOptimize(r);
      });
    });
  }
  for (int cat = -1; cat < bench::kCidrCats; ++cat) {
    auto qs = std::make_shared<std::vector<bench::CidrQuery>>(ofCategory(w->gen.cidrs, cat));
    std::string set = cat < 0 ? "mix" : bench::kCidrCatName[cat];
    reg("cidr/guard/" + set, [w, qs](benchmark::State& st) {
      runLoop(st, *qs, [w](const bench::CidrQuery& q) {
        Verdict v = w->policy.connect("", &q.addr, q.port);
        benchmark::DoNotOptimize(v);
      });
    });
    reg("cidr/naive/" + set, [w, qs](benchmark::State& st) {
      runLoop(st, *qs, [w](const bench::CidrQuery& q) {
        NaiveResult r = w->ncidr.decide(q.addr, q.port);
        benchmark::DoNotOptimize(r);
      });
    });
  }
  for (int cat = -1; cat < bench::kPathCats; ++cat) {
    auto qs = std::make_shared<std::vector<bench::PathQuery>>(ofCategory(w->gen.paths, cat));
    std::string set = cat < 0 ? "mix" : bench::kPathCatName[cat];
    reg("path/guard/" + set, [w, qs](benchmark::State& st) {
      runLoop(st, *qs, [w](const bench::PathQuery& q) {
        Verdict v = w->policy.file(q.path, FileOp::kRead);
        benchmark::DoNotOptimize(v);
      });
    });
    reg("path/naive/" + set, [w, qs](benchmark::State& st) {
      runLoop(st, *qs, [w](const bench::PathQuery& q) {
        NaiveResult r = w->npath.decide(q.path);
        benchmark::DoNotOptimize(r);
      });
    });
  }
  benchmark::RegisterBenchmark("startup/parse+compile", [w](benchmark::State& st) {
    for (auto _ : st) {
      auto l = guard::policy::parseLayer(w->gen.yaml, "bench.yaml", "bench");
      auto p = guard::policy::compile({l.value()}, w->ctx);
      benchmark::DoNotOptimize(p);
    }
  })->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("startup/parse", [w](benchmark::State& st) {
    for (auto _ : st) {
      auto l = guard::policy::parseLayer(w->gen.yaml, "bench.yaml", "bench");
      benchmark::DoNotOptimize(l);
    }
  })->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("startup/compile", [w](benchmark::State& st) {
    for (auto _ : st) {
      auto p = guard::policy::compile({w->layer}, w->ctx);
      benchmark::DoNotOptimize(p);
    }
  })->Unit(benchmark::kMillisecond);
}

// Collector prints as the console reporter does and keeps each benchmark's
// items/s (and time per iteration) for the summary.
class Collector : public benchmark::ConsoleReporter {
 public:
  Collector() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_Color : OO_None) {}
  struct Result {
    double items_per_second = 0;
    double ms_per_iter = 0;
  };
  std::map<std::string, Result> results;

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) {
        continue;
      }
      bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      if (run.run_type != Run::RT_Iteration && !median) {
        continue;
      }
      std::string name = run.run_name.function_name;
      if (median) {
        median_seen_[name] = true;
      } else if (median_seen_.count(name)) {
        continue;
      }
      Result r;
      if (auto it = run.counters.find("items_per_second"); it != run.counters.end()) {
        r.items_per_second = it->second.value;
      }
      // CPU time, as items/s uses: on a shared machine wall time also
      // counts the time other processes held the core.
      double secs =
          run.cpu_accumulated_time / static_cast<double>(std::max<int64_t>(run.iterations, 1));
      r.ms_per_iter = secs * 1e3;
      results[name] = r;
    }
    ConsoleReporter::ReportRuns(runs);
  }

 private:
  std::map<std::string, bool> median_seen_;
};

std::string rate(double v) {
  char buf[32];
  if (v <= 0) {
    return "-";
  }
  if (v >= 1e6) {
    snprintf(buf, sizeof buf, "%.2f M/s", v / 1e6);
  } else if (v >= 1e3) {
    snprintf(buf, sizeof buf, "%.1f k/s", v / 1e3);
  } else {
    snprintf(buf, sizeof buf, "%.0f /s", v);
  }
  return buf;
}

void summary(const World& w, const Collector& c) {
  auto get = [&](const std::string& name) {
    auto it = c.results.find(name);
    return it == c.results.end() ? 0.0 : it->second.items_per_second;
  };
  printf(
      "\nSummary: one layer, %zu rules (%zu exact + %zu wildcard domains, %zu IPv4 + %zu IPv6 "
      "CIDRs, %zu literal + %zu glob paths), %.0f KiB of YAML\n",
      w.gen.net.size() + w.gen.fs.size(), w.gen.domain_rules, w.gen.wildcard_rules, w.gen.v4_rules,
      w.gen.v6_rules, w.gen.fs_literal, w.gen.fs_glob,
      static_cast<double>(w.gen.yaml.size()) / 1024.0);
  printf(
      "\n| surface | query set | guard decisions/s | naive decisions/s | guard/naive | target | "
      "met |\n");
  printf("|---|---|---:|---:|---:|---:|---|\n");
  struct Surface {
    const char* name;
    const char* const* cats;
    int ncats;
    double target;
  };
  const Surface surfaces[] = {{"domain", bench::kDomCatName, bench::kDomCats, kNetTarget},
                              {"cidr", bench::kCidrCatName, bench::kCidrCats, kNetTarget},
                              {"path", bench::kPathCatName, bench::kPathCats, kPathTarget}};
  std::vector<std::string> verdicts;
  for (const Surface& s : surfaces) {
    for (int cat = -1; cat < s.ncats; ++cat) {
      std::string set = cat < 0 ? "mix" : s.cats[cat];
      double g = get(std::string(s.name) + "/guard/" + set);
      double n = get(std::string(s.name) + "/naive/" + set);
      if (g == 0 && n == 0) {
        continue;
      }
      char ratio[32] = "-";
      if (g > 0 && n > 0) {
        snprintf(ratio, sizeof ratio, "%.0fx", g / n);
      }
      const char* met = g <= 0 ? "-" : g >= s.target ? "yes" : "NO";
      printf("| %s | %s | %s | %s | %s | %s | %s |\n", s.name, set.c_str(), rate(g).c_str(),
             rate(n).c_str(), ratio, rate(s.target).c_str(), met);
      if (cat < 0 && g > 0) {
        verdicts.push_back(std::string(s.name) + " (mix): " + rate(g) +
                           (g >= s.target ? " >= " : " < ") + rate(s.target) +
                           (g >= s.target ? "  target met" : "  TARGET MISSED"));
      }
    }
  }
  auto ms = [&](const std::string& name) {
    auto it = c.results.find(name);
    return it == c.results.end() ? -1.0 : it->second.ms_per_iter;
  };
  printf("\nStartup (10,000 rules): first parse %.1f ms + compile %.1f ms = %.1f ms",
         w.cold_parse_ms, w.cold_compile_ms, w.cold_parse_ms + w.cold_compile_ms);
  if (ms("startup/parse+compile") > 0) {
    printf("; repeated (CPU time): parse %.1f ms, compile %.1f ms, parse+compile %.1f ms",
           ms("startup/parse"), ms("startup/compile"), ms("startup/parse+compile"));
  }
  printf("\n\nTargets (guard, mixed query set, one core):\n");
  for (const std::string& v : verdicts) {
    printf("  %s\n", v.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  static World world;
  build(&world);
  printf(
      "policy: %zu network + %zu filesystem rules, %zu bytes of YAML; parse %.1f ms, compile "
      "%.1f ms\n",
      world.gen.net.size(), world.gen.fs.size(), world.gen.yaml.size(), world.cold_parse_ms,
      world.cold_compile_ms);
  size_t bad = verify(world);
  if (bad != 0) {
    fprintf(stderr,
            "bench/policy: guard and the naive scan disagree on %zu queries (first ones above); "
            "one of them has a bug. Not timing.\n",
            bad);
    return 2;
  }
  fflush(stdout);
  registerAll(&world);
  Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);
  summary(world, collector);
  benchmark::Shutdown();
  return 0;
}
