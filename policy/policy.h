// The policy engine's entry points: load layered policy documents, compile
// them, and answer "is this allowed, and by which rule?" for every surface.
//
// The language itself (with a complete example) is documented at the top of
// policy/document.h and in docs/policy.md.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "policy/error.h"

namespace guard::policy {

// Decision is the outcome of one evaluation. WouldDeny is a deny from a rule
// in audit mode: the request proceeds and the audit event records it.
enum class Decision { kAllow, kDeny, kWouldDeny };

// Access is the filesystem mode of a path, from strictest to loosest.
enum class Access { kHidden, kReadOnly, kReadWrite };

// Mode says whether a rule bites (enforce) or only records (audit).
enum class Mode { kEnforce, kAudit };

// FileOp is what a filesystem request wants to do with a path.
enum class FileOp { kRead, kWrite };

const char* decisionName(Decision d);  // "allow", "deny", "would_deny"
const char* accessName(Access a);      // "hidden", "read-only", "read-write"
const char* modeName(Mode m);          // "enforce", "audit"

// RuleRef names the rule behind a decision. The views point into the Policy
// that produced them and stay valid as long as it lives.
struct RuleRef {
  std::string_view id;     // e.g. "org.network.3" or a user-chosen id
  std::string_view layer;  // e.g. "org", "group:eng", "user", "project", "default"
  std::string_view file;   // file the rule came from ("<default>" for embedded)
  uint32_t line = 0;       // 1-based; 0 for built-in fallbacks
  uint32_t col = 0;

  // source returns "file:line:col".
  std::string source() const;
};

// Verdict is what every evaluation returns. It never owns memory, so
// evaluating allocates nothing.
struct Verdict {
  Decision decision = Decision::kDeny;
  RuleRef rule;
  std::string_view reason;         // the rule's `reason:` text, may be empty
  bool inspect = false;            // network allow: intercept TLS for this name
  Access access = Access::kHidden; // filesystem evaluations: the path's mode
  bool locked = false;             // the deciding rule is a locked floor

  // allowed is true when the request may proceed (allow or would_deny).
  bool allowed() const { return decision != Decision::kDeny; }
};

// IpAddr is an IPv4 or IPv6 address; IPv4-mapped IPv6 is stored as IPv4.
struct IpAddr {
  uint8_t bytes[16] = {};
  bool v4 = false;

  // parse accepts IPv6 text, and IPv4 in every form inet_aton(3) accepts
  // (dotted, decimal "2130706433", hex "0x7f000001", octal), since those are
  // the forms a hostile program will try. Returns false on anything else.
  static bool parse(std::string_view text, IpAddr* out);
  std::string toString() const;
};

// Context is what path and group expansion needs to know about the session.
struct Context {
  std::string user;                 // OS user name (or verified identity)
  std::vector<std::string> groups;  // from the identity mapping
  std::string home;                 // for `~`
  std::string project;              // the working directory, for `{project}`
  std::string host;                 // machine name, for audit events
};

// Context::fromEnvironment fills user, home, project (getcwd) and host from the
// running process; groups stay empty (see loader.h).
Result<Context> contextFromEnvironment();

struct Layer;       // a parsed document; see document.h
struct Credential;  // a credential definition; see document.h
struct CredentialSource;
struct McpServer;   // an MCP server entry; see document.h
class Compiled;

// Policy is the immutable, compiled, merged result of all layers. It is cheap
// to share across threads: evaluation is const and lock-free.
class Policy {
 public:
  Policy();
  ~Policy();
  Policy(Policy&&) noexcept;
  Policy& operator=(Policy&&) noexcept;

  // connect decides a TCP connection. `name` is the domain the agent asked
  // for (may be empty), `addr` the address it reaches (may be null), `port`
  // the destination port. A name allowed by a rule is still denied when its
  // address falls in a denied network (the stricter of the two wins).
  Verdict connect(std::string_view name, const IpAddr* addr, uint16_t port) const;

  // host decides "HOST" where HOST is a domain or an IP literal.
  Verdict host(std::string_view host, uint16_t port) const;

  // dns decides whether NAME may be resolved at all: it is allowed when some
  // rule could allow a connection to it on some port.
  Verdict dns(std::string_view name) const;

  // file decides OP on an absolute PATH (normalised lexically: `//`, `.`,
  // `..` collapse). verdict.access carries the path's mode.
  Verdict file(std::string_view path, FileOp op) const;

  // revealsBelow reports whether some path strictly below directory DIR
  // (absolute) could be visible: a non-hidden rule names something under it,
  // or a non-hidden default applies. The filesystem view shows a hidden
  // directory for which this holds as a bare, traverse-only directory, so
  // that /home stays reachable on the way to a visible /home/alice/project.
  bool revealsBelow(std::string_view dir) const;

  // Subtree says how the rules decide the paths at and below a directory.
  enum class Subtree {
    kUniform,  // one rule decides DIR and everything below it
    kSplit,    // literal patterns name paths below DIR; its children may be uniform
    kMixed,    // a glob may match at any depth below DIR
  };

  // subtree classifies absolute directory DIR. The view serves a uniform
  // tree by a bind mount of the host directory instead of answering each
  // request (fusefs planBinds).
  Subtree subtree(std::string_view dir) const;

  // PathPrefix is the literal leading directories of one filesystem pattern
  // (every segment before the first glob), whether a glob follows, whether
  // that glob starts with `**`, and the pattern's access.
  struct PathPrefix {
    std::string prefix;
    bool glob = false;
    bool double_star = false;
    Access access = Access::kHidden;
  };

  // pathPrefixes lists the PathPrefix of every filesystem pattern of every
  // layer (Landlock's writable paths, the view's scan for hidden files).
  const std::vector<PathPrefix>& pathPrefixes() const;

  // renameKeepsDecisions reports whether moving directory FROM to TO (both
  // absolute) leaves every hidden and read-only rule deciding the moved
  // files as before. Rules judge paths, so renaming a directory that holds
  // a protected path would carry it out from under its rule; the view then
  // refuses the rename with EXDEV and tools fall back to copying file by
  // file, each file checked on its own.
  bool renameKeepsDecisions(std::string_view from, std::string_view to) const;

  // envSet returns the variables the policy sets inside the session
  // (`env.set`), merged over layers: a later layer's value wins.
  std::vector<std::pair<std::string, std::string>> envSet() const;

  // credentials returns each credential the layers define, once per name:
  // the latest layer's definition, unless an earlier layer locked its own.
  // The pointers live as long as the Policy.
  std::vector<const Credential*> credentials() const;

  // env decides whether host variable NAME passes into the session.
  Verdict env(std::string_view name) const;

  // credential decides whether credential NAME may be sent to HOST.
  Verdict credential(std::string_view name, std::string_view host) const;

  // mcpTool decides whether tool TOOL of MCP server SERVER may be listed/run.
  Verdict mcpTool(std::string_view server, std::string_view tool) const;

  // mcpServer decides whether server SERVER may start at all: its entry's
  // allow, or the MCP default for a name no entry defines (an unknown server).
  Verdict mcpServer(std::string_view server) const;

  // mcpServerForCommand returns the name of the first server entry whose
  // command pattern matches ARGV, or empty when none does. A pattern whose
  // first element has no '/' compares it with the last path component of
  // argv[0], so [npx, ...] matches "/usr/bin/npx ..." too.
  std::string_view mcpServerForCommand(std::span<const std::string> argv) const;

  // mcpCommandNames returns the program names a stdio server pattern can
  // start with (the last path component of each pattern's first element),
  // "*" when one of them is a glob that could match any program. A program
  // whose name is not in the list matches no entry, so the preload shim
  // asks about it no further.
  std::vector<std::string> mcpCommandNames() const;

  // mcpEntry returns the entry that defines server SERVER (the latest
  // layer's), or null. It lives as long as the Policy.
  const McpServer* mcpEntry(std::string_view server) const;

  // mcpServerForUrl returns the name of the server entry with URL, or empty.
  std::string_view mcpServerForUrl(std::string_view url) const;

  // layers returns the parsed documents in merge order (for `policy show`).
  const std::vector<std::shared_ptr<const Layer>>& layers() const;
  const Context& context() const;

 private:
  friend Result<Policy> compile(std::vector<std::shared_ptr<const Layer>>, const Context&);
  std::unique_ptr<Compiled> c_;
};

// parseLayer parses one YAML document. FILE names it in errors ("file:line:
// col: error: ..."); LAYER is the layer name its rules are reported under.
// On error nothing is returned: a document is loaded whole or not at all.
Result<std::shared_ptr<const Layer>> parseLayer(std::string_view text, std::string_view file,
                                                std::string_view layer);

// loadLayerFile reads and parses FILE (refusing files over 1 MiB).
Result<std::shared_ptr<const Layer>> loadLayerFile(const std::string& file,
                                                   std::string_view layer);

// compile merges LAYERS (first = lowest, e.g. org) and builds the matchers.
// Returns kPolicyInvalid when a path cannot be expanded (no home or working
// directory), kPolicyLimit for more than 64 layers or 64 credentials (the
// proxy's secret scan tracks each credential in one bit of a 64-bit mask).
Result<Policy> compile(std::vector<std::shared_ptr<const Layer>> layers, const Context& ctx);

// credentialFile is the file a `file:` credential source names, "~/" taken
// from CTX's home; "" when it needs a home and there is none. guard reads
// the credential from this path, and the policy hides it from the agent.
std::string credentialFile(const CredentialSource& source, const Context& ctx);

// defaultPolicyText is the embedded default policy (YAML).
std::string_view defaultPolicyText();

}  // namespace guard::policy
