// The compiled form of a merged policy: flat rule table plus per-layer
// matchers. Internal to policy/.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "policy/document.h"
#include "policy/matchers.h"

namespace guard::policy {

// Strictness orders outcomes: a higher value is stricter. Network, env, MCP
// and credentials use allow(0) < would_deny(1) < deny(2); the filesystem uses
// read-write(0) < read-only(1) < hidden(2).
using Strictness = int;

// RuleInfo is one decision-making entry: a rule, or a layer's default.
struct RuleInfo {
  std::string id;
  std::string layer;
  std::string file;
  Loc loc;
  bool locked = false;
  Mode mode = Mode::kEnforce;  // effective, after layering
  std::string reason;
  bool allow = false;          // network, env, credentials, MCP
  Access access = Access::kHidden;
  bool inspect = false;
  std::vector<PortRange> ports;  // empty: every port
};

struct NetLayer {
  DomainIndex domains;
  CidrIndex cidrs;
  RuleList any;  // "*" rules: every name and every address, least specific
  uint32_t default_rule = kNone;  // this layer's default, if it sets one
};

struct FsLayer {
  PathTrie paths;
  uint32_t default_rule = kNone;
};

struct EnvLayer {
  NameIndex names;
  uint32_t default_rule = kNone;
};

struct CredLayer {
  // name -> (credential, allow rule, deny rule)
  struct Entry {
    const Credential* cred;
    uint32_t allow_rule;
    uint32_t deny_rule;
  };
  std::unordered_map<std::string_view, Entry> by_name;
};

struct McpLayer {
  struct Entry {
    const McpServer* server;
    uint32_t allow_rule;
    uint32_t deny_rule;
  };
  std::unordered_map<std::string_view, Entry> by_name;
  uint32_t default_rule = kNone;
};

class Compiled {
 public:
  std::vector<std::shared_ptr<const Layer>> layers;
  Context ctx;
  Mode mode = Mode::kEnforce;

  std::vector<RuleInfo> rules;
  std::vector<NetLayer> net;
  std::vector<FsLayer> fs;
  std::vector<EnvLayer> env;
  std::vector<CredLayer> cred;
  std::vector<McpLayer> mcp;

  // Built-in fail-closed defaults for surfaces no layer gives a default.
  uint32_t builtin_net = kNone;
  uint32_t builtin_fs = kNone;
  uint32_t builtin_env = kNone;
  uint32_t builtin_mcp = kNone;
  uint32_t builtin_cred = kNone;

  // Literal prefixes of every filesystem pattern (see revealsBelow).
  std::vector<Policy::PathPrefix> prefixes;
  bool visible_default = false;  // some layer's filesystem default is not hidden

  // Each rule's expanded filesystem patterns, for `policy show`.
  std::vector<std::vector<std::string>> fs_patterns;  // indexed like rules
};

// effectiveCredentials lists each credential name once, as the last layer
// that defines it says, unless an earlier definition is locked; with the
// layer of the definition that holds.
std::vector<std::pair<const Layer*, const Credential*>> effectiveCredentials(
    const std::vector<std::shared_ptr<const Layer>>& layers);

// expandPathPattern turns a policy path (with ~, {project}, bare globs) into
// the absolute normalised pattern the trie stores; "" when it cannot.
std::string expandPathPattern(std::string_view pattern, const Context& ctx);

}  // namespace guard::policy
