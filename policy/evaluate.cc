// Evaluates requests against a compiled Policy: per-layer most specific
// match, then the layering rules (docs/policy.md, "How layers merge").
//
// Nothing here allocates: names are normalised into stack buffers, matchers
// take string views, and a Verdict only points into the Policy.
#include <algorithm>
#include <cstring>

#include "policy/compiled.h"
#include "policy/names.h"

namespace guard::policy {
namespace {

Strictness strictDecision(const RuleInfo& r) {
  if (r.allow) {
    return 0;
  }
  return r.mode == Mode::kAudit ? 1 : 2;
}

// strictAccess orders filesystem rules: by access (hidden strictest), and
// between two rules of the same access an enforced one above an audit one,
// so that no layer's audit-mode rule can soften another's enforced floor.
Strictness strictAccess(const RuleInfo& r) {
  Strictness enforce = r.mode == Mode::kAudit ? 0 : 1;
  switch (r.access) {
    case Access::kReadWrite:
      return 0;
    case Access::kReadOnly:
      return 2 + enforce;
    case Access::kHidden:
      return 4 + enforce;
  }
  return 5;
}

bool portMatches(const RuleInfo& r, uint16_t port) {
  if (r.ports.empty()) {
    return true;
  }
  for (const PortRange& p : r.ports) {
    if (port >= p.lo && port <= p.hi) {
      return true;
    }
  }
  return false;
}

// PortAny marks a DNS evaluation: no port is known yet. A rule limited to
// some ports still lets the name resolve if it allows, but a deny limited
// to some ports does not stop resolution.
constexpr int kPortAny = -1;

bool ruleApplies(const RuleInfo& r, int port) {
  if (port == kPortAny) {
    return r.ports.empty() || r.allow;
  }
  return portMatches(r, static_cast<uint16_t>(port));
}

// pickStrictest returns the strictest rule of LIST that applies to PORT.
uint32_t pickStrictest(const Compiled& c, const RuleList& list, int port) {
  uint32_t best = kNone;
  for (uint32_t r : list) {
    const RuleInfo& info = c.rules[r];
    if (!ruleApplies(info, port)) {
      continue;
    }
    if (best == kNone || strictDecision(info) > strictDecision(c.rules[best])) {
      best = r;
    }
  }
  return best;
}

// Layered merges per-layer hits. HIT(i) returns layer i's most specific rule
// or kNone; DEFAULT_OF(i) its default rule or kNone.
//
//  1. The latest layer with a matching rule decides; if no layer has one, the
//     latest layer's default decides; if none sets one, the built-in
//     fail-closed default.
//  2. A locked rule (or a locked default of a layer with no matching rule)
//     is a floor: the result is never looser than it.
template <typename HitFn, typename DefaultFn, typename StrictFn>
uint32_t layered(const Compiled& c, size_t num_layers, HitFn&& hit, DefaultFn&& default_of,
                 uint32_t builtin, StrictFn&& strict) {
  uint32_t decided = kNone;
  uint32_t dflt = kNone;
  uint32_t floor = kNone;
  for (size_t i = 0; i < num_layers; ++i) {
    uint32_t h = hit(i);
    uint32_t d = default_of(i);
    if (d != kNone) {
      dflt = d;
    }
    uint32_t view = h;
    if (h != kNone) {
      decided = h;
    } else if (d != kNone && c.rules[d].locked) {
      view = d;
    }
    if (view != kNone && c.rules[view].locked &&
        (floor == kNone || strict(c.rules[view]) > strict(c.rules[floor]))) {
      floor = view;
    }
  }
  if (decided == kNone) {
    decided = dflt != kNone ? dflt : builtin;
  }
  if (floor != kNone && strict(c.rules[floor]) > strict(c.rules[decided])) {
    decided = floor;
  }
  return decided;
}

RuleRef refOf(const RuleInfo& r) {
  return RuleRef{r.id, r.layer, r.file, r.loc.line, r.loc.col};
}

Verdict decisionVerdict(const RuleInfo& r) {
  Verdict v;
  v.rule = refOf(r);
  v.reason = r.reason;
  v.locked = r.locked;
  if (r.allow) {
    v.decision = Decision::kAllow;
    v.inspect = r.inspect;
  } else {
    v.decision = r.mode == Mode::kAudit ? Decision::kWouldDeny : Decision::kDeny;
  }
  return v;
}

// domainHit finds layer L's most specific rule for NAME (normalised).
uint32_t domainHit(const Compiled& c, const NetLayer& l, std::string_view name, int port) {
  uint32_t found = kNone;
  l.domains.forEachLevel(name, [&](const RuleList& list) {
    found = pickStrictest(c, list, port);
    return found != kNone;
  });
  return found;
}

// addressHit finds layer L's most specific rule for ADDR: the longest
// prefix, then "*" rules. WITH_ANY false leaves "*" out.
uint32_t addressHit(const Compiled& c, const NetLayer& l, const IpAddr& addr, int port,
                    bool with_any = true) {
  uint32_t found = kNone;
  l.cidrs.forEachLevel(addr, [&](const RuleList& list) {
    found = pickStrictest(c, list, port);
    return found != kNone;
  });
  if (found == kNone && with_any && !l.any.empty()) {
    found = pickStrictest(c, l.any, port);
  }
  return found;
}

// anyLayerNames reports whether some address rule (not "*") names ADDR.
bool anyLayerNames(const Compiled& c, const std::vector<NetLayer>& layers, const IpAddr& addr,
                   int port) {
  for (const NetLayer& l : layers) {
    if (addressHit(c, l, addr, port, false) != kNone) {
      return true;
    }
  }
  return false;
}

bool targetMatches(const NetTarget& t, std::string_view name, const IpAddr* addr) {
  switch (t.kind) {
    case NetTargetKind::kAny:
      return true;
    case NetTargetKind::kDomain:
      return !name.empty() && name == t.text;
    case NetTargetKind::kWildcard:
      return name.size() > t.text.size() + 1 && name.ends_with(t.text) &&
             name[name.size() - t.text.size() - 1] == '.';
    case NetTargetKind::kAddress: {
      if (addr == nullptr || addr->v4 != t.addr.v4) {
        return false;
      }
      int full = t.prefix / 8;
      if (memcmp(addr->bytes, t.addr.bytes, static_cast<size_t>(full)) != 0) {
        return false;
      }
      int rest = t.prefix % 8;
      if (rest == 0) {
        return true;
      }
      uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
      return (addr->bytes[full] & mask) == t.addr.bytes[full];
    }
  }
  return false;
}

Verdict invalidName(const Compiled& c) {
  Verdict v = decisionVerdict(c.rules[c.builtin_net]);
  v.reason = "not a valid domain name";
  return v;
}

}  // namespace

const char* decisionName(Decision d) {
  switch (d) {
    case Decision::kAllow:
      return "allow";
    case Decision::kDeny:
      return "deny";
    case Decision::kWouldDeny:
      return "would_deny";
  }
  return "deny";
}

const char* accessName(Access a) {
  switch (a) {
    case Access::kHidden:
      return "hidden";
    case Access::kReadOnly:
      return "read-only";
    case Access::kReadWrite:
      return "read-write";
  }
  return "hidden";
}

const char* modeName(Mode m) { return m == Mode::kAudit ? "audit" : "enforce"; }

std::string RuleRef::source() const {
  return std::string(file) + ":" + std::to_string(line) + ":" + std::to_string(col);
}

Policy::Policy() = default;
Policy::~Policy() = default;
Policy::Policy(Policy&&) noexcept = default;
Policy& Policy::operator=(Policy&&) noexcept = default;

const std::vector<std::shared_ptr<const Layer>>& Policy::layers() const { return c_->layers; }
const Context& Policy::context() const { return c_->ctx; }

Verdict Policy::connect(std::string_view name, const IpAddr* addr, uint16_t port) const {
  const Compiled& c = *c_;
  char buf[kMaxDomainLen + 1];
  size_t n = 0;
  if (!name.empty()) {
    n = normaliseDomain(name, buf);
    if (n == 0) {
      return invalidName(c);
    }
  }
  std::string_view norm(buf, n);
  auto by_default = [&](size_t i) { return c.net[i].default_rule; };
  uint32_t by_name = kNone;
  if (n != 0) {
    by_name = layered(
        c, c.net.size(), [&](size_t i) { return domainHit(c, c.net[i], norm, port); }, by_default,
        c.builtin_net, [](const RuleInfo& r) { return strictDecision(r); });
  }
  // The address counts when some rule names it: "connect by IP" has no
  // name, and an allowed name whose address lies in a denied network is
  // denied (the stricter wins). An address no rule names adds nothing.
  if (addr != nullptr && (n == 0 || anyLayerNames(c, c.net, *addr, port))) {
    uint32_t by_addr = layered(
        c, c.net.size(), [&](size_t i) { return addressHit(c, c.net[i], *addr, port); },
        by_default, c.builtin_net, [](const RuleInfo& r) { return strictDecision(r); });
    if (by_name == kNone || strictDecision(c.rules[by_addr]) > strictDecision(c.rules[by_name])) {
      by_name = by_addr;
    }
  }
  if (by_name == kNone) {
    by_name = layered(
        c, c.net.size(), [](size_t) { return kNone; }, by_default, c.builtin_net,
        [](const RuleInfo& r) { return strictDecision(r); });
  }
  return decisionVerdict(c.rules[by_name]);
}

Verdict Policy::host(std::string_view h, uint16_t port) const {
  IpAddr addr;
  if (IpAddr::parse(h, &addr)) {
    return connect("", &addr, port);
  }
  return connect(h, nullptr, port);
}

Verdict Policy::dns(std::string_view name) const {
  const Compiled& c = *c_;
  char buf[kMaxDomainLen + 1];
  size_t n = normaliseDomain(name, buf);
  if (n == 0) {
    return invalidName(c);
  }
  std::string_view norm(buf, n);
  uint32_t r = layered(
      c, c.net.size(), [&](size_t i) { return domainHit(c, c.net[i], norm, kPortAny); },
      [&](size_t i) { return c.net[i].default_rule; }, c.builtin_net,
      [](const RuleInfo& x) { return strictDecision(x); });
  return decisionVerdict(c.rules[r]);
}

Verdict Policy::file(std::string_view path, FileOp op) const {
  const Compiled& c = *c_;
  char buf[kMaxPathLen + 1];
  size_t n = normalisePath(path, buf);
  Verdict v;
  if (n == 0) {
    v = decisionVerdict(c.rules[c.builtin_fs]);
    v.access = Access::kHidden;
    v.decision = Decision::kDeny;
    v.reason = "not an absolute path";
    return v;
  }
  std::string_view norm(buf, n);
  bool overflow = false;
  uint32_t r = layered(
      c, c.fs.size(),
      [&](size_t i) {
        PathTrie::Match m;
        if (!c.fs[i].paths.best(
                norm,
                [&](uint32_t a, uint32_t b) {
                  return strictAccess(c.rules[a]) > strictAccess(c.rules[b]);
                },
                &m)) {
          overflow = true;
        }
        return m.rule;
      },
      [&](size_t i) { return c.fs[i].default_rule; }, c.builtin_fs,
      [](const RuleInfo& x) { return strictAccess(x); });
  if (overflow) {
    r = c.builtin_fs;  // fail closed: too many patterns at once to be sure
  }
  const RuleInfo& info = c.rules[r];
  v.rule = refOf(info);
  if (overflow) {
    v.reason = "path matched too many patterns to decide";
  } else {
    v.reason = info.reason;
  }
  v.locked = info.locked;
  v.access = info.access;
  bool denied = info.access == Access::kHidden ||
                (op == FileOp::kWrite && info.access == Access::kReadOnly);
  if (!denied) {
    v.decision = Decision::kAllow;
  } else {
    v.decision = info.mode == Mode::kAudit && !overflow ? Decision::kWouldDeny : Decision::kDeny;
  }
  return v;
}

namespace {

// under reports whether PATH lies strictly below directory BASE.
bool under(std::string_view path, std::string_view base) {
  if (base == "/") {
    return path.size() > 1;
  }
  return path.size() > base.size() && path.starts_with(base) && path[base.size()] == '/';
}

bool underOrAt(std::string_view path, std::string_view base) {
  return path == base || under(path, base);
}

}  // namespace

bool Policy::revealsBelow(std::string_view dir) const {
  const Compiled& c = *c_;
  if (c.visible_default) {
    return true;
  }
  char buf[kMaxPathLen + 1];
  size_t n = normalisePath(dir, buf);
  if (n == 0) {
    return false;
  }
  std::string_view d(buf, n);
  for (const PathPrefix& v : c.prefixes) {
    if (v.access == Access::kHidden) {
      continue;
    }
    if (under(v.prefix, d)) {
      return true;  // a visible pattern lies below DIR
    }
    if (v.glob && underOrAt(d, v.prefix)) {
      return true;  // a glob below DIR's ancestor may match under DIR
    }
  }
  return false;
}

Policy::Subtree Policy::subtree(std::string_view dir) const {
  char buf[kMaxPathLen + 1];
  size_t n = normalisePath(dir, buf);
  if (n == 0) {
    return Subtree::kMixed;
  }
  std::string_view d(buf, n);
  Subtree out = Subtree::kUniform;
  for (const PathPrefix& v : c_->prefixes) {
    if (v.glob && underOrAt(d, v.prefix)) {
      return Subtree::kMixed;  // "P/**/x" or "P/*.pem" with P at or above DIR
    }
    if (under(v.prefix, d)) {
      out = Subtree::kSplit;  // a pattern, literal or glob, starts below DIR
    }
  }
  return out;
}

bool Policy::renameKeepsDecisions(std::string_view from, std::string_view to) const {
  char fb[kMaxPathLen + 1];
  char tb[kMaxPathLen + 1];
  size_t fn = normalisePath(from, fb);
  size_t tn = normalisePath(to, tb);
  if (fn == 0 || tn == 0) {
    return false;
  }
  std::string_view f(fb, fn);
  std::string_view t(tb, tn);
  for (const PathPrefix& v : c_->prefixes) {
    if (v.access == Access::kReadWrite) {
      continue;
    }
    // A protected literal path inside the moved tree, or inside the tree it
    // would replace, would change its name and so its rule.
    if (under(v.prefix, f) || under(v.prefix, t)) {
      return false;
    }
    if (!v.glob) {
      continue;
    }
    if (v.double_star) {
      // "P/**/tail" matches the same files anywhere below P: a move that
      // stays inside (or outside) P keeps them matched.
      if (underOrAt(f, v.prefix) != underOrAt(t, v.prefix)) {
        return false;
      }
    } else if (underOrAt(f, v.prefix) || underOrAt(t, v.prefix)) {
      return false;  // "P/*/x": which directory names the file matters
    }
  }
  return true;
}

std::vector<std::pair<std::string, std::string>> Policy::envSet() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& l : c_->layers) {
    for (const auto& set : l->env_set) {
      auto it = std::find_if(out.begin(), out.end(),
                             [&](const auto& kv) { return kv.first == set.first; });
      if (it != out.end()) {
        it->second = set.second;
      } else {
        out.push_back(set);
      }
    }
  }
  return out;
}

std::vector<std::pair<const Layer*, const Credential*>> effectiveCredentials(
    const std::vector<std::shared_ptr<const Layer>>& layers) {
  std::vector<std::pair<const Layer*, const Credential*>> out;
  for (const auto& l : layers) {
    for (const Credential& cr : l->credentials) {
      auto it = std::find_if(out.begin(), out.end(),
                             [&](const auto& x) { return x.second->name == cr.name; });
      if (it == out.end()) {
        out.emplace_back(l.get(), &cr);
      } else if (!it->second->meta.locked) {
        *it = {l.get(), &cr};  // a later layer redefines it, unless the earlier one is locked
      }
    }
  }
  return out;
}

std::vector<const Credential*> Policy::credentials() const {
  std::vector<const Credential*> out;
  for (const auto& [layer, cred] : effectiveCredentials(c_->layers)) {
    out.push_back(cred);
  }
  return out;
}

const std::vector<Policy::PathPrefix>& Policy::pathPrefixes() const { return c_->prefixes; }

Verdict Policy::env(std::string_view name) const {
  const Compiled& c = *c_;
  uint32_t r = layered(
      c, c.env.size(),
      [&](size_t i) {
        uint32_t found = kNone;
        c.env[i].names.forEachLevel(name, [&](const RuleList& list) {
          uint32_t p = pickStrictest(c, list, kPortAny);
          if (p != kNone &&
              (found == kNone || strictDecision(c.rules[p]) > strictDecision(c.rules[found]))) {
            found = p;
          }
          return p != kNone;
        });
        return found;
      },
      [&](size_t i) { return c.env[i].default_rule; }, c.builtin_env,
      [](const RuleInfo& x) { return strictDecision(x); });
  return decisionVerdict(c.rules[r]);
}

Verdict Policy::credential(std::string_view name, std::string_view host_name) const {
  const Compiled& c = *c_;
  char buf[kMaxDomainLen + 1];
  IpAddr addr;
  bool is_ip = IpAddr::parse(host_name, &addr);
  size_t n = is_ip ? 0 : normaliseDomain(host_name, buf);
  if (!is_ip && n == 0) {
    return invalidName(c);
  }
  std::string_view norm(buf, n);
  uint32_t r = layered(
      c, c.cred.size(),
      [&](size_t i) {
        auto it = c.cred[i].by_name.find(name);
        if (it == c.cred[i].by_name.end()) {
          return kNone;
        }
        for (const NetTarget& t : it->second.cred->destinations) {
          if (targetMatches(t, norm, is_ip ? &addr : nullptr)) {
            return it->second.allow_rule;
          }
        }
        return it->second.deny_rule;
      },
      [](size_t) { return kNone; }, c.builtin_cred,
      [](const RuleInfo& x) { return strictDecision(x); });
  return decisionVerdict(c.rules[r]);
}

Verdict Policy::mcpTool(std::string_view server, std::string_view tool) const {
  const Compiled& c = *c_;
  uint32_t r = layered(
      c, c.mcp.size(),
      [&](size_t i) {
        auto it = c.mcp[i].by_name.find(server);
        if (it == c.mcp[i].by_name.end()) {
          return kNone;
        }
        const McpServer& s = *it->second.server;
        if (!s.allow) {
          return it->second.deny_rule;
        }
        for (const std::string& d : s.tools_deny) {
          if (globMatch(d, tool)) {
            return it->second.deny_rule;
          }
        }
        for (const std::string& a : s.tools_allow) {
          if (globMatch(a, tool)) {
            return it->second.allow_rule;
          }
        }
        return it->second.deny_rule;
      },
      [&](size_t i) { return c.mcp[i].default_rule; }, c.builtin_mcp,
      [](const RuleInfo& x) { return strictDecision(x); });
  return decisionVerdict(c.rules[r]);
}

Verdict Policy::mcpServer(std::string_view server) const {
  const Compiled& c = *c_;
  uint32_t r = layered(
      c, c.mcp.size(),
      [&](size_t i) {
        auto it = c.mcp[i].by_name.find(server);
        if (it == c.mcp[i].by_name.end()) {
          return kNone;
        }
        return it->second.server->allow ? it->second.allow_rule : it->second.deny_rule;
      },
      [&](size_t i) { return c.mcp[i].default_rule; }, c.builtin_mcp,
      [](const RuleInfo& x) { return strictDecision(x); });
  return decisionVerdict(c.rules[r]);
}

namespace {

std::string_view lastComponent(std::string_view s) {
  size_t slash = s.rfind('/');
  return slash == std::string_view::npos ? s : s.substr(slash + 1);
}

}  // namespace

std::string_view Policy::mcpServerForCommand(std::span<const std::string> argv) const {
  if (argv.empty()) {
    return {};
  }
  // The latest layer's entry for a name is the one that counts, so search
  // from the top layer down.
  for (size_t i = c_->layers.size(); i-- > 0;) {
    for (const McpServer& s : c_->layers[i]->mcp_servers) {
      if (s.command.empty()) {
        continue;
      }
      std::span<const std::string> pattern(s.command);
      bool named = pattern[0] != "**" && pattern[0].find('/') == std::string::npos;
      bool match = named ? globMatch(pattern[0], lastComponent(argv[0])) &&
                               argvMatch(pattern.subspan(1), argv.subspan(1))
                         : argvMatch(pattern, argv);
      if (match) {
        return s.name;
      }
    }
  }
  return {};
}

std::vector<std::string> Policy::mcpCommandNames() const {
  std::vector<std::string> names;
  for (const auto& layer : c_->layers) {
    for (const McpServer& s : layer->mcp_servers) {
      if (s.command.empty()) {
        continue;
      }
      std::string_view first = lastComponent(s.command[0]);
      bool glob = first.empty() || first.find_first_of("*?[{\\") != std::string_view::npos;
      std::string name = glob ? "*" : std::string(first);
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        names.push_back(name);
      }
    }
  }
  return names;
}

const McpServer* Policy::mcpEntry(std::string_view server) const {
  for (size_t i = c_->layers.size(); i-- > 0;) {
    for (const McpServer& s : c_->layers[i]->mcp_servers) {
      if (s.name == server) {
        return &s;
      }
    }
  }
  return nullptr;
}

std::string_view Policy::mcpServerForUrl(std::string_view url) const {
  auto trim = [](std::string_view u) {
    while (!u.empty() && u.back() == '/') {
      u.remove_suffix(1);
    }
    return u;
  };
  for (size_t i = c_->layers.size(); i-- > 0;) {
    for (const McpServer& s : c_->layers[i]->mcp_servers) {
      if (!s.url.empty() && trim(s.url) == trim(url)) {
        return s.name;
      }
    }
  }
  return {};
}

}  // namespace guard::policy
