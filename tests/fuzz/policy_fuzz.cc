// Fuzz target for the policy parser, compiler and evaluator (policy/policy.h).
//
// Properties checked on every input:
//  * parseLayer never crashes; a failure carries a policy error code and a
//    message "fuzz.yaml:LINE:COL: error: ...", and parsing (of inputs up to
//    4 KiB) is deterministic;
//  * a parsed layer either compiles or fails with a message containing "error: ";
//  * every evaluation (connect/host/dns/file/env/credential/mcpTool, the MCP
//    server lookups) on names taken from the input is deterministic, and a
//    file verdict's decision agrees with its access mode;
//  * merged above an org layer with locked floors, the fuzzed layer can never
//    loosen those floors (docs/policy.md "How layers merge", rows 3-5, 8, 14-16).
// renderPolicy is exercised for crashes only: its output is commented YAML for
// people, not a policy that parses back to the same rules.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "policy/loader.h"
#include "policy/names.h"
#include "policy/policy.h"
#include "policy/show.h"

namespace guard::policy {
namespace {

// FUZZ_CHECK aborts with a message when a property fails: libFuzzer reports
// the abort as a crash, the replay driver exits non-zero.
#define FUZZ_CHECK(cond, what)                                                        \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "policy_fuzz: property failed: %s (%s:%d): %s\n", #cond,   \
                   __FILE__, __LINE__, std::string(what).c_str());                    \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

constexpr size_t kMaxNames = 12;
constexpr size_t kMaxNameLen = 300;
constexpr size_t kMaxRecheckLen = 4096;

// kOrgFloors is an org layer whose locked rules no later layer may loosen.
constexpr std::string_view kOrgFloors = R"(version: 1
network:
  rules:
    - id: org.floor.metadata
      deny: [169.254.0.0/16, "fd00::/8"]
      locked: true
filesystem:
  rules:
    - id: org.floor.ssh
      hidden: "~/.ssh"
      locked: true
    - id: org.floor.etc
      read-only: /etc
      locked: true
env:
  rules:
    - id: org.floor.secret
      deny: "SECRET_*"
      locked: true
credentials:
  - name: vault
    source: {env: VAULT_TOKEN}
    destinations: [vault.example]
    locked: true
mcp:
  servers:
    - name: shell
      command: ["**/mcp-shell", "**"]
      allow: false
      locked: true
)";

const Context& fuzzContext() {
  static const Context* ctx = [] {
    auto* c = new Context;
    c->user = "u";
    c->home = "/home/u";
    c->project = "/p";
    c->host = "fuzz";
    return c;
  }();
  return *ctx;
}

// baseLayer parses TEXT once; a failure here is a bug in the fixture or the
// parser, so it aborts.
std::shared_ptr<const Layer> baseLayer(std::string_view text, const char* file,
                                       const char* layer) {
  auto r = parseLayer(text, file, layer);
  FUZZ_CHECK(r.ok(), r.ok() ? "" : r.error().message());
  return r.value();
}

const std::shared_ptr<const Layer>& defaultLayer() {
  static const auto* l =
      new std::shared_ptr<const Layer>(baseLayer(defaultPolicyText(), "<default>", "default"));
  return *l;
}

const std::shared_ptr<const Layer>& orgLayer() {
  static const auto* l = new std::shared_ptr<const Layer>(baseLayer(kOrgFloors, "org.yaml", "org"));
  return *l;
}

bool sameVerdict(const Verdict& a, const Verdict& b) {
  return a.decision == b.decision && a.rule.id == b.rule.id && a.rule.layer == b.rule.layer &&
         a.rule.file == b.rule.file && a.rule.line == b.rule.line && a.rule.col == b.rule.col &&
         a.reason == b.reason && a.inspect == b.inspect && a.access == b.access &&
         a.locked == b.locked;
}

std::string describe(std::string_view what, std::string_view name, const Verdict& v) {
  return std::string(what) + "(" + std::string(name) + ") = " + decisionName(v.decision) +
         " by " + std::string(v.rule.id) + " [" + std::string(v.rule.layer) + "] " +
         v.rule.source();
}

// names splits the input into words at YAML punctuation and whitespace, so
// that the names a policy mentions are also the names it is asked about.
std::vector<std::string> names(std::string_view text) {
  std::vector<std::string> out;
  auto isSep = [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == '[' ||
           c == ']' || c == '{' || c == '}' || c == '"' || c == '\'' || c == ':' || c == '#';
  };
  size_t i = 0;
  while (i < text.size() && out.size() < kMaxNames) {
    while (i < text.size() && isSep(text[i])) {
      ++i;
    }
    size_t start = i;
    while (i < text.size() && !isSep(text[i])) {
      ++i;
    }
    if (i > start) {
      std::string w(text.substr(start, std::min(i - start, kMaxNameLen)));
      bool dup = false;
      for (const std::string& o : out) {
        dup = dup || o == w;
      }
      if (!dup) {
        out.push_back(std::move(w));
      }
    }
  }
  // Names every policy cares about, so short inputs still hit the defaults.
  for (const char* fixed : {"github.com", "api.anthropic.com", "169.254.169.254", "HOME"}) {
    out.emplace_back(fixed);
  }
  return out;
}

uint16_t portOf(std::string_view name) {
  unsigned v = 0;
  for (char c : name) {
    if (c < '0' || c > '9') {
      return 443;
    }
    v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > 65535) {
      return 443;
    }
  }
  return name.empty() ? 443 : static_cast<uint16_t>(v);
}

// pathSegment turns NAME into one path segment that cannot climb out of its
// directory, so floor checks below stay inside the floored subtree.
std::string pathSegment(std::string_view name) {
  std::string s;
  for (char c : name) {
    s.push_back(c == '/' || c == '\0' ? '_' : c);
  }
  if (s.empty() || s == "." || s == "..") {
    s = "id_rsa";
  }
  return s;
}

bool fileDenies(Access a, FileOp op) {
  return a == Access::kHidden || (op == FileOp::kWrite && a == Access::kReadOnly);
}

// evaluateAll runs every kind of evaluation on NAME twice and checks that the
// answers agree and are consistent.
void evaluateAll(const Policy& p, const std::string& name) {
  auto twice = [&](std::string_view what, auto&& eval) {
    Verdict a = eval();
    Verdict b = eval();
    FUZZ_CHECK(sameVerdict(a, b), describe(what, name, a) + " vs " + describe(what, name, b));
    return a;
  };
  const uint16_t port = portOf(name);
  twice("connect", [&] { return p.connect(name, nullptr, port); });
  twice("host", [&] { return p.host(name, port); });
  twice("dns", [&] { return p.dns(name); });
  IpAddr addr;
  if (IpAddr::parse(name, &addr)) {
    twice("connect-ip", [&] { return p.connect("", &addr, 80); });
    twice("connect-name-ip", [&] { return p.connect("example.com", &addr, 443); });
    (void)addr.toString();
  }
  twice("env", [&] { return p.env(name); });
  twice("credential", [&] { return p.credential(name, name); });
  twice("credential-github", [&] { return p.credential(name, "api.github.com"); });
  twice("mcpTool", [&] { return p.mcpTool(name, name); });
  twice("mcpTool-files", [&] { return p.mcpTool("files", name); });
  const std::string seg = pathSegment(name);
  for (const std::string& path :
       {"/" + name, "/home/u/" + seg, "/p/" + seg, "/p/.git/hooks/" + seg, name}) {
    for (FileOp op : {FileOp::kRead, FileOp::kWrite}) {
      Verdict v = twice("file", [&] { return p.file(path, op); });
      FUZZ_CHECK((v.decision == Decision::kAllow) == !fileDenies(v.access, op),
                 describe("file", path, v) + " access " + accessName(v.access));
    }
  }
  std::vector<std::string> argv = {name, "-y", name};
  (void)p.mcpServerForCommand(argv);
  (void)p.mcpServerForUrl(name);
}

// checkFloors asserts that the org layer's locked rules hold above any layer.
void checkFloors(const Policy& p, const std::vector<std::string>& words) {
  IpAddr meta;
  FUZZ_CHECK(IpAddr::parse("169.254.169.254", &meta), "169.254.169.254");
  for (const std::string& w : words) {
    Verdict v = p.connect("", &meta, portOf(w));
    FUZZ_CHECK(v.decision == Decision::kDeny, describe("floor connect-ip", w, v));
    v = p.connect(w, &meta, 443);
    FUZZ_CHECK(v.decision == Decision::kDeny || w.empty(), describe("floor connect-name", w, v));
    const std::string seg = pathSegment(w);
    for (FileOp op : {FileOp::kRead, FileOp::kWrite}) {
      v = p.file("/home/u/.ssh/" + seg, op);
      FUZZ_CHECK(v.decision == Decision::kDeny && v.access == Access::kHidden,
                 describe("floor file ~/.ssh", seg, v));
    }
    v = p.file("/etc/" + seg, FileOp::kWrite);
    FUZZ_CHECK(v.decision == Decision::kDeny, describe("floor file write /etc", seg, v));
    v = p.env("SECRET_" + w);
    FUZZ_CHECK(v.decision == Decision::kDeny, describe("floor env", "SECRET_" + w, v));
    v = p.mcpTool("shell", w);
    FUZZ_CHECK(v.decision == Decision::kDeny, describe("floor mcp shell", w, v));
    v = p.credential("vault", w);
    FUZZ_CHECK(v.decision == Decision::kDeny || normaliseDomain(w) == "vault.example",
               describe("floor credential vault", w, v));
  }
}

}  // namespace
}  // namespace guard::policy

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace guard::policy;
  using guard::ErrorCode;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto parsed = parseLayer(text, "fuzz.yaml", "fuzz");
  if (size <= kMaxRecheckLen) {
    // Parsing dominates the cost of an input, so only small ones are parsed twice.
    auto again = parseLayer(text, "fuzz.yaml", "fuzz");
    FUZZ_CHECK(parsed.ok() == again.ok(), "parse is not deterministic");
    FUZZ_CHECK(parsed.ok() || (again.error().message() == parsed.error().message() &&
                               again.error().code() == parsed.error().code()),
               parsed.error().message() + " vs " + again.error().message());
  }
  if (!parsed.ok()) {
    const std::string& m = parsed.error().message();
    FUZZ_CHECK(m.starts_with("fuzz.yaml:") && m.find(": error: ") != std::string::npos, m);
    const ErrorCode code = parsed.error().code();
    FUZZ_CHECK(code == ErrorCode::kPolicySyntax || code == ErrorCode::kPolicyInvalid ||
                   code == ErrorCode::kPolicyLimit,
               m);
    return 0;
  }

  const Context& ctx = fuzzContext();
  const std::vector<std::string> words = names(text);
  const std::vector<std::vector<std::shared_ptr<const Layer>>> stacks = {
      {parsed.value()},
      {defaultLayer(), parsed.value()},
      {orgLayer(), parsed.value()},
  };
  for (size_t s = 0; s < stacks.size(); ++s) {
    auto policy = compile(stacks[s], ctx);
    if (!policy.ok()) {
      const std::string& m = policy.error().message();
      FUZZ_CHECK(m.find("error: ") != std::string::npos, m);
      FUZZ_CHECK(policy.error().code() != ErrorCode::kOk, m);
      continue;
    }
    const Policy& p = policy.value();
    for (const std::string& w : words) {
      evaluateAll(p, w);
    }
    if (s == 2) {
      checkFloors(p, words);
    }
    if (s == 0) {
      (void)renderPolicy(p, {LayerFile{"fuzz", "fuzz.yaml"}});
    }
  }
  return 0;
}
