// Finds and loads the policy layers that apply to a session: org, groups,
// user and project (or explicit --policy files), in merge order.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "policy/error.h"
#include "policy/policy.h"

namespace guard::policy {

// LoadOptions says where to look. Empty strings mean the standard places.
struct LoadOptions {
  std::string system_dir;                   // default /etc/guard (GUARD_SYSTEM_DIR)
  std::string user_dir;                     // default $XDG_CONFIG_HOME/guard
  std::vector<std::string> explicit_files;  // --policy FILE...: replace user + project
};

// LayerFile records one layer that was used and where it came from.
struct LayerFile {
  std::string layer;  // "org", "group:eng", "user", "project", "default", or a file's name
  std::string file;   // path, or "<default>" for the embedded policy
};

struct Loaded {
  std::vector<std::shared_ptr<const Layer>> layers;
  std::vector<LayerFile> files;
};

// GroupSource is the seam where group membership comes from. Today it is a
// mapping file next to the org layer; an identity-provider sync writes the
// same file (or replaces this function) without touching anything else.
//
// groupsFromMapping reads FILE (`users: {alice: [eng, sre]}`) and returns
// USER's groups in the order listed; an absent FILE means no groups.
Result<std::vector<std::string>> groupsFromMapping(const std::string& file,
                                                   const std::string& user);

// loadPolicyLayers finds every layer for CTX, fills ctx->groups from the
// mapping, and parses each file. Order: org, group layers in mapping order,
// then either the explicit files or user and project. When there is no org
// layer and no explicit file, the embedded default is the base layer.
//
// The system directory and its files must be owned by root and not group-
// or world-writable, or loading fails: a guardrail anyone can edit is none.
Result<Loaded> loadPolicyLayers(Context* ctx, const LoadOptions& options);

// loadPolicy is loadPolicyLayers followed by compile.
Result<Policy> loadPolicy(Context* ctx, const LoadOptions& options, Loaded* out_loaded);

}  // namespace guard::policy
