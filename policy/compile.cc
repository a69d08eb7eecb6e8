// Merges parsed layers into one Policy and builds its matchers.
#include <climits>
#include <cstdlib>
#include <cstring>

#include "policy/compiled.h"
#include "policy/names.h"

namespace guard::policy {

namespace {

constexpr size_t kMaxLayers = 64;

std::string locText(const Layer& l, Loc loc) {
  return l.file + ":" + std::to_string(loc.line) + ":" + std::to_string(loc.col);
}

class Compiler {
 public:
  Compiler(Compiled* c) : c_(c) {}

  Error run() {
    if (c_->layers.size() > kMaxLayers) {
      return Error(ErrorCode::kPolicyLimit,
                   "error: more than " + std::to_string(kMaxLayers) + " policy layers");
    }
    // The policy-wide mode is the last layer's that sets one.
    for (const auto& l : c_->layers) {
      if (l->mode) {
        c_->mode = *l->mode;
      }
    }
    builtins();
    size_t n = c_->layers.size();
    c_->net.reserve(n);
    c_->fs.reserve(n);
    c_->env.reserve(n);
    c_->cred.reserve(n);
    c_->mcp.reserve(n);
    for (const auto& l : c_->layers) {
      Error e = layer(*l);
      if (!e.ok()) {
        return e;
      }
    }
    constexpr size_t kMaxCredentials = 64;
    if (size_t creds = effectiveCredentials(c_->layers).size(); creds > kMaxCredentials) {
      return Error(ErrorCode::kPolicyLimit,
                   "error: " + std::to_string(creds) + " credentials; at most " +
                       std::to_string(kMaxCredentials) +
                       " (the proxy scans for each in requests to other destinations)");
    }
    credentialSources();
    return Error();
  }

 private:
  Mode effectiveMode(const Layer& l, const RuleMeta& m) const {
    if (m.mode) {
      return *m.mode;
    }
    // Locked rules keep their own layer's mode: a later `mode: audit` cannot
    // switch an org guardrail off.
    if (m.locked) {
      return l.mode.value_or(Mode::kEnforce);
    }
    return c_->mode;
  }

  uint32_t addRule(const Layer& l, const RuleMeta& m) {
    RuleInfo r;
    r.id = m.id;
    r.layer = l.name;
    r.file = l.file;
    r.loc = m.loc;
    r.locked = m.locked;
    r.mode = effectiveMode(l, m);
    r.reason = m.reason;
    c_->rules.push_back(std::move(r));
    c_->fs_patterns.emplace_back();
    return static_cast<uint32_t>(c_->rules.size() - 1);
  }

  uint32_t addBuiltin(const char* surface, bool allow, Access access) {
    RuleInfo r;
    r.id = std::string("builtin.") + surface + ".default";
    r.layer = "builtin";
    r.file = "<builtin>";
    r.allow = allow;
    r.access = access;
    r.mode = Mode::kEnforce;
    c_->rules.push_back(std::move(r));
    c_->fs_patterns.emplace_back();
    return static_cast<uint32_t>(c_->rules.size() - 1);
  }

  void builtins() {
    c_->builtin_net = addBuiltin("network", false, Access::kHidden);
    c_->builtin_fs = addBuiltin("filesystem", false, Access::kHidden);
    c_->builtin_env = addBuiltin("env", false, Access::kHidden);
    c_->builtin_mcp = addBuiltin("mcp", false, Access::kHidden);
    c_->builtin_cred = addBuiltin("credentials", false, Access::kHidden);
  }

  template <typename D>
  uint32_t addDefault(const Layer& l, const Section<D>& s, const char* surface) {
    if (!s.default_value) {
      return kNone;
    }
    RuleMeta m;
    m.id = l.name + "." + surface + ".default";
    m.loc = s.default_loc;
    m.locked = s.default_locked;
    uint32_t r = addRule(l, m);
    if constexpr (std::is_same_v<D, bool>) {
      c_->rules[r].allow = *s.default_value;
    } else {
      c_->rules[r].access = *s.default_value;
    }
    return r;
  }

  Error layer(const Layer& l) {
    NetLayer net;
    net.default_rule = addDefault(l, l.network, "network");
    for (const NetRule& nr : l.net_rules) {
      uint32_t r = addRule(l, nr.meta);
      RuleInfo& info = c_->rules[r];
      info.allow = nr.allow;
      info.ports = nr.ports;
      info.inspect = nr.allow && nr.inspect.value_or(l.network_inspect.value_or(false));
      for (const NetTarget& t : nr.targets) {
        switch (t.kind) {
          case NetTargetKind::kAny:
            net.domains.addAny(r);
            net.any.push_back(r);
            break;
          case NetTargetKind::kDomain:
            net.domains.addExact(t.text, r);
            break;
          case NetTargetKind::kWildcard:
            net.domains.addWildcard(t.text, r);
            break;
          case NetTargetKind::kAddress:
            net.cidrs.add(t.addr, t.prefix, r);
            break;
        }
      }
    }
    c_->net.push_back(std::move(net));

    FsLayer fs;
    fs.default_rule = addDefault(l, l.filesystem, "filesystem");
    if (l.filesystem.default_value && *l.filesystem.default_value != Access::kHidden) {
      c_->visible_default = true;
    }
    for (const FsRule& fr : l.fs_rules) {
      uint32_t r = addRule(l, fr.meta);
      c_->rules[r].access = fr.access;
      for (size_t i = 0; i < fr.paths.size(); ++i) {
        std::string p = expandPathPattern(fr.paths[i], c_->ctx);
        if (p.empty()) {
          Loc loc = i < fr.path_locs.size() ? fr.path_locs[i] : fr.meta.loc;
          return Error(ErrorCode::kPolicyInvalid,
                       locText(l, loc) + ": error: cannot expand '" + fr.paths[i] +
                           "'\n  hint: '~' needs a home directory and '{project}' a working "
                           "directory");
        }
        fs.paths.add(p, r);
        addPrefix(p, fr.access);
        c_->fs_patterns[r].push_back(std::move(p));
      }
    }
    c_->fs.push_back(std::move(fs));

    EnvLayer env;
    env.default_rule = addDefault(l, l.env, "env");
    for (const NameRule& er : l.env_rules) {
      uint32_t r = addRule(l, er.meta);
      c_->rules[r].allow = er.allow;
      for (const std::string& n : er.names) {
        env.names.add(n, r);
      }
    }
    c_->env.push_back(std::move(env));

    CredLayer cred;
    for (const Credential& cr : l.credentials) {
      uint32_t a = addRule(l, cr.meta);
      c_->rules[a].allow = true;
      uint32_t d = addRule(l, cr.meta);
      c_->rules[d].allow = false;
      cred.by_name.emplace(cr.name, CredLayer::Entry{&cr, a, d});
    }
    c_->cred.push_back(std::move(cred));

    McpLayer mcp;
    mcp.default_rule = addDefault(l, l.mcp, "mcp");
    for (const McpServer& s : l.mcp_servers) {
      uint32_t a = addRule(l, s.meta);
      c_->rules[a].allow = true;
      uint32_t d = addRule(l, s.meta);
      c_->rules[d].allow = false;
      mcp.by_name.emplace(s.name, McpLayer::Entry{&s, a, d});
    }
    c_->mcp.push_back(std::move(mcp));
    return Error();
  }

  // credentialSources hides the file each credential is read from, and the
  // file a symbolic link there names: a source lying in a readable tree
  // would give the agent the value its variable only holds a placeholder
  // for. A locked, enforced hidden rule in the defining layer's trie: the
  // layering's floor keeps later layers from loosening it, audit mode
  // included, and no earlier layer is more specific than the file itself.
  // Listed among the prefixes, so the view records the file's other names
  // (hard links) and no bind skips the view above it.
  void credentialSources() {
    for (const auto& [l, cr] : effectiveCredentials(c_->layers)) {
      size_t index = 0;
      while (c_->layers[index].get() != l) {
        ++index;
      }
      if (cr->source.kind != CredentialSource::Kind::kFile || cr->source.value.empty()) {
        continue;
      }
      std::string file = credentialFile(cr->source, c_->ctx);
      if (file.empty()) {
        continue;  // no home to expand "~" with: guard does not read it either
      }
      // The path as written, normalised as the view sees lookups, and the
      // file the kernel reaches through it (symbolic links in any part,
      // ".." after one).
      char norm[kMaxPathLen + 1];
      std::vector<std::string> paths = {std::string(norm, normalisePath(file, norm))};
      char real[PATH_MAX];
      if (realpath(file.c_str(), real) != nullptr && paths[0] != real) {
        paths.emplace_back(real);
      }
      RuleMeta m = cr->meta;
      m.id += ".source";
      m.locked = true;
      m.mode = Mode::kEnforce;
      m.reason = "the source of credential " + cr->name + ": only guard reads it";
      uint32_t r = addRule(*l, m);
      c_->rules[r].access = Access::kHidden;
      for (std::string& p : paths) {
        if (p.empty()) {
          continue;
        }
        // First, so that the view's budgeted walks of hidden paths reach it
        // before any tree.
        Policy::PathPrefix pp;
        pp.prefix = p;
        pp.access = Access::kHidden;
        c_->prefixes.insert(c_->prefixes.begin(), std::move(pp));
        c_->fs[index].paths.add(p, r);
        c_->fs_patterns[r].push_back(std::move(p));
      }
    }
  }

  void addPrefix(const std::string& pattern, Access access) {
    Policy::PathPrefix pp;
    pp.access = access;
    size_t i = 1;
    while (i <= pattern.size()) {
      size_t j = pattern.find('/', i);
      if (j == std::string::npos) {
        j = pattern.size();
      }
      std::string_view seg = std::string_view(pattern).substr(i, j - i);
      if (seg.empty()) {
        break;
      }
      if (hasGlob(seg)) {
        pp.glob = true;
        pp.double_star = seg == "**";
        break;
      }
      pp.prefix += "/";
      pp.prefix += seg;
      i = j + 1;
    }
    if (pp.prefix.empty()) {
      pp.prefix = "/";
    }
    c_->prefixes.push_back(std::move(pp));
  }

  Compiled* c_;
};

}  // namespace

std::string credentialFile(const CredentialSource& source, const Context& ctx) {
  if (source.value.rfind("~/", 0) == 0) {
    return ctx.home.empty() ? std::string() : ctx.home + source.value.substr(1);
  }
  return source.value;
}

std::string expandPathPattern(std::string_view pattern, const Context& ctx) {
  std::string p;
  if (pattern.rfind("{project}", 0) == 0) {
    if (ctx.project.empty() || ctx.project[0] != '/') {
      return "";
    }
    p = ctx.project + std::string(pattern.substr(9));
  } else if (pattern.rfind("~", 0) == 0) {
    if (ctx.home.empty() || ctx.home[0] != '/') {
      return "";
    }
    p = ctx.home + std::string(pattern.substr(1));
  } else if (pattern[0] == '/') {
    p = pattern;
  } else if (pattern.rfind("**/", 0) == 0) {
    p = "/" + std::string(pattern);
  } else {
    p = "/**/" + std::string(pattern);  // a bare name matches at any depth
  }
  char buf[kMaxPathLen + 1];
  size_t n = normalisePath(p, buf);
  return std::string(buf, n);
}

Result<Policy> compile(std::vector<std::shared_ptr<const Layer>> layers, const Context& ctx) {
  Policy p;
  p.c_ = std::make_unique<Compiled>();
  p.c_->layers = std::move(layers);
  p.c_->ctx = ctx;
  Compiler compiler(p.c_.get());
  Error e = compiler.run();
  if (!e.ok()) {
    return e;
  }
  return p;
}

}  // namespace guard::policy
