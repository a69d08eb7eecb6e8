// Renders a merged policy for people: every rule with its layer and source.
#include "policy/show.h"

#include <sstream>

#include "policy/compiled.h"
#include "policy/document.h"

namespace guard::policy {
namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out + "\"";
}

std::string list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    out += (i ? ", " : "") + quote(items[i]);
  }
  return out + "]";
}

std::string where(const Layer& l, const RuleMeta& m) {
  std::string s = "  # " + m.id + "  layer " + l.name + "  " + l.file + ":" +
                  std::to_string(m.loc.line) + ":" + std::to_string(m.loc.col);
  if (m.locked) {
    s += "  LOCKED";
  }
  if (m.mode) {
    s += std::string("  mode ") + modeName(*m.mode);
  }
  return s;
}

template <typename D>
void section(std::ostringstream& o, const Policy& p, const Section<D> Layer::*sec,
             const char* surface, const char* (*name)(D)) {
  const Layer* last = nullptr;
  for (const auto& l : p.layers()) {
    const Section<D>& s = (*l).*sec;
    if (s.default_value) {
      last = l.get();
      o << "  # layer " << l->name << " sets default " << name(*s.default_value) << " at "
        << l->file << ":" << s.default_loc.line << ":" << s.default_loc.col
        << (s.default_locked ? "  LOCKED" : "") << "\n";
    }
  }
  if (last == nullptr) {
    o << "  default: " << (std::is_same_v<D, bool> ? "deny" : "hidden")
      << "  # builtin." << surface << ".default (no layer sets one)\n";
  } else {
    o << "  default: " << name(*((*last).*sec).default_value) << "\n";
  }
}

const char* allowName(bool b) { return b ? "allow" : "deny"; }

}  // namespace

std::string renderPolicy(const Policy& p, const std::vector<LayerFile>& files) {
  std::ostringstream o;
  const Context& ctx = p.context();
  o << "# guard effective policy\n# user " << ctx.user << ", groups [";
  for (size_t i = 0; i < ctx.groups.size(); ++i) {
    o << (i ? ", " : "") << ctx.groups[i];
  }
  o << "], project " << ctx.project << "\n# layers, lowest first:\n";
  for (const LayerFile& f : files) {
    o << "#   " << f.layer << "  " << f.file << "\n";
  }
  Mode mode = Mode::kEnforce;
  for (const auto& l : p.layers()) {
    mode = l->mode.value_or(mode);
  }
  o << "mode: " << modeName(mode) << "\n";

  o << "network:\n";
  section<bool>(o, p, &Layer::network, "network", allowName);
  o << "  rules:\n";
  for (const auto& l : p.layers()) {
    for (const NetRule& r : l->net_rules) {
      std::vector<std::string> t;
      for (const NetTarget& x : r.targets) {
        t.push_back(x.kind == NetTargetKind::kWildcard ? "*." + x.text : x.text);
      }
      o << "    - " << allowName(r.allow) << ": " << list(t) << where(*l, r.meta) << "\n";
      if (!r.ports.empty()) {
        o << "      ports: [";
        for (size_t i = 0; i < r.ports.size(); ++i) {
          o << (i ? ", " : "") << r.ports[i].lo;
          if (r.ports[i].hi != r.ports[i].lo) {
            o << "-" << r.ports[i].hi;
          }
        }
        o << "]\n";
      }
      if (r.allow && r.inspect.value_or(l->network_inspect.value_or(false))) {
        o << "      inspect: true\n";
      }
    }
  }

  o << "filesystem:\n";
  section<Access>(o, p, &Layer::filesystem, "filesystem", accessName);
  o << "  rules:\n";
  for (const auto& l : p.layers()) {
    for (const FsRule& r : l->fs_rules) {
      std::vector<std::string> paths;
      for (const std::string& raw : r.paths) {
        paths.push_back(expandPathPattern(raw, ctx));
      }
      o << "    - " << accessName(r.access) << ": " << list(paths) << where(*l, r.meta) << "\n";
    }
  }

  o << "env:\n";
  section<bool>(o, p, &Layer::env, "env", allowName);
  o << "  rules:\n";
  for (const auto& l : p.layers()) {
    for (const NameRule& r : l->env_rules) {
      o << "    - " << allowName(r.allow) << ": " << list(r.names) << where(*l, r.meta) << "\n";
    }
    for (const auto& [k, v] : l->env_set) {
      o << "  # set " << k << " (layer " << l->name << ")\n";
    }
  }

  o << "credentials:\n";
  for (const auto& l : p.layers()) {
    for (const Credential& c : l->credentials) {
      std::vector<std::string> d;
      for (const NetTarget& x : c.destinations) {
        d.push_back(x.kind == NetTargetKind::kWildcard ? "*." + x.text : x.text);
      }
      const char* kind = c.source.kind == CredentialSource::Kind::kEnv    ? "env"
                         : c.source.kind == CredentialSource::Kind::kFile ? "file"
                                                                          : "command";
      o << "  - name: " << c.name << where(*l, c.meta) << "\n"
        << "    source: {" << kind << ": "
        << (c.source.kind == CredentialSource::Kind::kCommand ? list(c.source.argv)
                                                              : quote(c.source.value))
        << "}\n    variable: " << c.variable << "\n    destinations: " << list(d) << "\n";
      if (!c.header.empty()) {
        o << "    inject: {header: " << c.header << ", template: " << quote(c.header_template)
          << "}\n";
      }
    }
  }

  o << "mcp:\n";
  section<bool>(o, p, &Layer::mcp, "mcp", allowName);
  o << "  servers:\n";
  for (const auto& l : p.layers()) {
    for (const McpServer& s : l->mcp_servers) {
      o << "    - name: " << s.name << where(*l, s.meta) << "\n";
      if (!s.command.empty()) {
        o << "      command: " << list(s.command) << "\n";
      }
      if (!s.url.empty()) {
        o << "      url: " << s.url << "\n";
      }
      if (!s.allow) {
        o << "      allow: false\n";
      }
      o << "      tools: {allow: " << list(s.tools_allow) << ", deny: " << list(s.tools_deny)
        << "}\n";
    }
  }
  return o.str();
}

}  // namespace guard::policy
