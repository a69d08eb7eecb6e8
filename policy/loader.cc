// Finds and loads the policy layers that apply to a session.
#include "policy/loader.h"

#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "policy/document.h"
#include "policy/trust.h"

namespace guard::policy {
namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// checkTrusted refuses a system path anyone but root could have changed.
Error checkTrusted(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    int e = errno;
    return Error(ErrorCode::kIo, path + ": error: " + strerror(e), e);
  }
  if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Error(ErrorCode::kPolicyInvalid,
                 path + ": error: refusing an org policy path that is not root-owned or is "
                        "group/world-writable (owner uid " + std::to_string(st.st_uid) +
                     ")\n  hint: chown root:root and chmod go-w it");
  }
  return Error();
}

std::string userConfigDir() {
  if (const char* x = getenv("XDG_CONFIG_HOME"); x != nullptr && x[0] == '/') {
    return std::string(x) + "/guard";
  }
  if (const char* h = getenv("HOME"); h != nullptr && h[0] == '/') {
    return std::string(h) + "/.config/guard";
  }
  return "";
}

}  // namespace

Result<Context> contextFromEnvironment() {
  Context ctx;
  // The passwd entry, not $HOME, says where the user's secrets live: a
  // changed HOME must not move "~/.ssh" away from the real keys.
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[16384];
  if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    ctx.user = pw.pw_name;
    ctx.home = pw.pw_dir;
  } else {
    ctx.user = std::to_string(geteuid());
    if (const char* h = getenv("HOME"); h != nullptr) {
      ctx.home = h;
    }
  }
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof(cwd)) == nullptr) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("error: cannot read the working directory: ") +
                                     strerror(e), e);
  }
  ctx.project = cwd;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) {
    ctx.host = host;
  }
  return ctx;
}

Result<std::vector<std::string>> groupsFromMapping(const std::string& file,
                                                   const std::string& user) {
  std::vector<std::string> groups;
  if (!exists(file)) {
    return groups;
  }
  auto where = [&](const YAML::Node& n) {
    YAML::Mark m = n.Mark();
    return file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": ";
  };
  YAML::Node root;
  try {
    root = YAML::LoadFile(file);
  } catch (const YAML::Exception& e) {
    return Error(ErrorCode::kPolicySyntax, file + ":" + std::to_string(e.mark.line + 1) + ":" +
                                               std::to_string(e.mark.column + 1) +
                                               ": error: " + e.msg);
  }
  if (root.IsNull()) {
    return groups;
  }
  if (!root.IsMap() || root.size() != 1 || !root["users"] || !root["users"].IsMap()) {
    return Error(ErrorCode::kPolicyInvalid,
                 where(root) + "error: group mapping must be `users: {NAME: [GROUP...]}`");
  }
  for (const auto& kv : root["users"]) {
    const auto* it = &kv;
    if (!it->first.IsScalar() || it->first.Scalar() != user) {
      continue;
    }
    if (!it->second.IsSequence()) {
      return Error(ErrorCode::kPolicyInvalid,
                   where(it->second) + "error: groups of '" + user + "' must be a list");
    }
    for (const YAML::Node& g : it->second) {
      if (!g.IsScalar() || g.Scalar().empty() ||
          g.Scalar().find_first_of("/. \t") != std::string::npos) {
        return Error(ErrorCode::kPolicyInvalid,
                     where(g) + "error: a group name is one word without '/', '.' or spaces");
      }
      groups.push_back(g.Scalar());
    }
  }
  return groups;
}

Result<Loaded> loadPolicyLayers(Context* ctx, const LoadOptions& options) {
  Loaded out;
  std::string sys = options.system_dir;
  if (sys.empty()) {
    const char* env = getenv("GUARD_SYSTEM_DIR");
    sys = env != nullptr && env[0] != '\0' ? env : "/etc/guard";
  }
  auto add = [&](const std::string& file, const std::string& layer) -> Error {
    auto l = loadLayerFile(file, layer);
    if (!l.ok()) {
      return l.error();
    }
    out.files.push_back({l.value()->name, file});
    out.layers.push_back(std::move(l.value()));
    return Error();
  };

  bool have_org = false;
  if (exists(sys)) {
    if (Error e = checkTrusted(sys); !e.ok()) {
      return e;
    }
    std::string org = sys + "/org.yaml";
    if (exists(org)) {
      if (Error e = checkTrusted(org); !e.ok()) {
        return e;
      }
      if (Error e = add(org, "org"); !e.ok()) {
        return e;
      }
      have_org = true;
    }
    std::string mapping = sys + "/groups.yaml";
    if (exists(mapping)) {
      if (Error e = checkTrusted(mapping); !e.ok()) {
        return e;
      }
    }
    auto groups = groupsFromMapping(mapping, ctx->user);
    if (!groups.ok()) {
      return groups.error();
    }
    ctx->groups = groups.value();
    // A writable groups/ directory would let anyone delete a group's layer.
    if (std::string gdir = sys + "/groups"; exists(gdir)) {
      if (Error e = checkTrusted(gdir); !e.ok()) {
        return e;
      }
    }
    for (const std::string& g : ctx->groups) {
      std::string file = sys + "/groups/" + g + ".yaml";
      if (!exists(file)) {
        continue;
      }
      if (Error e = checkTrusted(file); !e.ok()) {
        return e;
      }
      if (Error e = add(file, "group:" + g); !e.ok()) {
        return e;
      }
    }
  }

  if (!options.explicit_files.empty()) {
    for (const std::string& f : options.explicit_files) {
      if (Error e = add(f, ""); !e.ok()) {
        return e;
      }
    }
    return out;
  }

  std::vector<std::pair<std::string, std::string>> rest;
  std::string udir = options.user_dir.empty() ? userConfigDir() : options.user_dir;
  if (!udir.empty() && exists(udir + "/policy.yaml")) {
    rest.emplace_back(udir + "/policy.yaml", "user");
  }
  if (!ctx->project.empty() && exists(ctx->project + "/.guard.yaml")) {
    rest.emplace_back(ctx->project + "/.guard.yaml", "project");
  }
  if (!have_org) {
    // Without an org layer the embedded default is the base, so a project
    // file adjusts it rather than replacing it wholesale.
    auto d = parseLayer(defaultPolicyText(), "<default>", "default");
    if (!d.ok()) {
      return d.error();
    }
    out.files.push_back({"default", "<default>"});
    out.layers.push_back(std::move(d.value()));
  }
  for (const auto& [file, layer] : rest) {
    if (Error e = add(file, layer); !e.ok()) {
      return e;
    }
    if (layer != "project") {
      continue;
    }
    // The project file travels with the repository, and the agent may edit
    // it: apply it only in the exact form the user approved.
    std::ifstream f(file, std::ios::binary);
    std::stringstream text;
    text << f.rdbuf();
    std::string hash = sha256Hex(text.str());
    if (!isTrusted(file, hash)) {
      return Error(ErrorCode::kPolicyInvalid,
                   file + ": error: this project policy is not trusted yet (sha256 " +
                       hash.substr(0, 16) + "...)\n  hint: review it, then run `guard policy "
                       "trust` in " + ctx->project + "; guard asks again whenever it changes");
    }
  }
  return out;
}

Result<Policy> loadPolicy(Context* ctx, const LoadOptions& options, Loaded* out_loaded) {
  auto loaded = loadPolicyLayers(ctx, options);
  if (!loaded.ok()) {
    return loaded.error();
  }
  auto p = compile(loaded.value().layers, *ctx);
  if (p.ok() && out_loaded != nullptr) {
    *out_loaded = std::move(loaded.value());
  }
  return p;
}

}  // namespace guard::policy

namespace guard::policy {
extern const char kDefaultPolicyYaml[];
std::string_view defaultPolicyText() { return kDefaultPolicyYaml; }
}  // namespace guard::policy
