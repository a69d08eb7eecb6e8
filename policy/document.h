// The parsed form of one policy document (a layer), before merging.
//
// Grammar (YAML; every key optional; unknown keys are errors):
//
//   version: 1
//   layer: NAME                    # name used in rule ids (files given by --policy)
//   mode: enforce | audit          # policy-wide default for unlocked rules
//   network:
//     default: allow | deny        # for names/addresses no rule matches
//     default_locked: BOOL         # later layers may not loosen the default
//     inspect: BOOL                # default TLS interception for allow rules
//     rules:
//       - allow | deny: TARGET | [TARGET...]   # example.com, "*.example.com",
//                                               # "*", 10.0.0.0/8, ::1, 2001:db8::/32
//         ports: [443, "8000-8100"]             # default: every port
//         inspect: BOOL                         # allow rules only
//         id: STRING, reason: STRING, locked: BOOL, mode: enforce | audit
//   filesystem:
//     default: hidden | read-only | read-write
//     default_locked: BOOL
//     rules:
//       - hidden | read-only | read-write: PATH | [PATH...]
//                 # "/usr", "~/.ssh", "{project}/.git/hooks", "**/.env", "*.pem"
//         id, reason, locked, mode
//   env:
//     default: allow | deny
//     default_locked: BOOL
//     set: {NAME: VALUE}           # variables set inside the session
//     rules:
//       - allow | deny: NAME | [NAME...]        # globs: "LC_*"
//         id, reason, locked, mode
//   credentials:
//     - name: github
//       source: {env: GITHUB_TOKEN} | {file: PATH} | {command: [ARGV...]}
//       variable: GITHUB_TOKEN     # what the agent sees (a placeholder)
//       destinations: [api.github.com, "*.githubusercontent.com"]
//       inject: {header: Authorization, template: "Bearer {value}"}
//       required: BOOL             # refuse to start when the source is missing
//       id, reason, locked, mode
//   mcp:
//     default: allow | deny        # for servers no entry names
//     default_locked: BOOL
//     servers:
//       - name: files
//         command: [npx, "-y", "@modelcontextprotocol/server-filesystem", "**"]
//         url: https://mcp.example.com/mcp      # instead of command
//         allow: BOOL              # false blocks the server outright
//         tools: {allow: ["read_*"], deny: [write_file]}
//         arguments: hash | redact | full   # in tools/call audit events
//         id, reason, locked, mode
//
// Example:
//
//   version: 1
//   network:
//     default: deny
//     rules:
//       - allow: ["registry.npmjs.org", "*.github.com"]
//         ports: [443]
//       - deny: 169.254.0.0/16
//         locked: true
//   filesystem:
//     default: hidden
//     rules:
//       - read-only: [/usr, /etc]
//       - read-write: "{project}"
//       - hidden: ["~/.ssh", "**/.env"]
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "policy/policy.h"

namespace guard::policy {

// Loc is a 1-based position in a policy file.
struct Loc {
  uint32_t line = 0;
  uint32_t col = 0;
};

// Limits that keep a hostile document from exhausting memory or stack.
inline constexpr size_t kMaxDocumentBytes = 1 << 20;
inline constexpr size_t kMaxNodes = 200000;
inline constexpr int kMaxNesting = 32;

struct PortRange {
  uint16_t lo = 1;
  uint16_t hi = 65535;
};

enum class NetTargetKind { kAny, kDomain, kWildcard, kAddress };

// NetTarget is one normalised network pattern.
struct NetTarget {
  NetTargetKind kind = NetTargetKind::kDomain;
  std::string text;   // normalised: lowercase ASCII domain, or the CIDR text
  IpAddr addr;        // kAddress: network address (host bits zero)
  uint8_t prefix = 0; // kAddress: prefix length (32/128 for a single address)
  Loc loc;
};

// RuleMeta is what every rule carries regardless of surface.
struct RuleMeta {
  std::string id;
  Loc loc;
  bool locked = false;
  std::optional<Mode> mode;
  std::string reason;
};

struct NetRule {
  RuleMeta meta;
  bool allow = false;
  std::vector<NetTarget> targets;
  std::vector<PortRange> ports;  // empty: every port
  std::optional<bool> inspect;
};

struct FsRule {
  RuleMeta meta;
  Access access = Access::kHidden;
  std::vector<std::string> paths;  // as written; expanded at compile time
  std::vector<Loc> path_locs;
};

struct NameRule {
  RuleMeta meta;
  bool allow = false;
  std::vector<std::string> names;  // exact names or globs (* ?)
};

struct CredentialSource {
  enum class Kind { kEnv, kFile, kCommand };
  Kind kind = Kind::kEnv;
  std::string value;               // env var name or file path
  std::vector<std::string> argv;   // kCommand
};

struct Credential {
  RuleMeta meta;
  std::string name;
  CredentialSource source;
  std::string variable;
  std::vector<NetTarget> destinations;
  std::string header;              // empty: no header injection
  std::string header_template = "{value}";
  bool required = false;
};

struct McpServer {
  RuleMeta meta;
  std::string name;
  bool allow = true;
  std::vector<std::string> command;  // argv globs; "**" spans any arguments
  std::string url;
  std::vector<std::string> tools_allow = {"*"};
  std::vector<std::string> tools_deny;
  // arguments says how a tools/call's arguments appear in its audit event:
  // "hash" (SHA-256 of their JSON text), "redact" (size only) or "full".
  std::string arguments = "hash";
};

// Section is the part every surface shares: an optional default and its lock.
template <typename D>
struct Section {
  std::optional<D> default_value;
  bool default_locked = false;
  Loc default_loc;
};

// Layer is one parsed policy document.
struct Layer {
  std::string name;  // "org", "group:eng", "user", "project", "default", or file stem
  std::string file;
  std::optional<Mode> mode;

  Section<bool> network;  // default_value: true = allow
  std::optional<bool> network_inspect;
  std::vector<NetRule> net_rules;

  Section<Access> filesystem;
  std::vector<FsRule> fs_rules;

  Section<bool> env;
  std::vector<NameRule> env_rules;
  std::vector<std::pair<std::string, std::string>> env_set;

  std::vector<Credential> credentials;

  Section<bool> mcp;
  std::vector<McpServer> mcp_servers;
};

}  // namespace guard::policy
