// Unit tests for the embedded default policy (policy/default.yaml, printed by
// `guard policy default`): it parses, compiles and decides as documented.
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "policy/policy.h"

namespace guard::policy {
namespace {

constexpr const char* kHome = "/home/alice";
constexpr const char* kProject = "/work/proj";

Context contextWith(const std::string& project) {
  Context c;
  c.user = "alice";
  c.home = kHome;
  c.project = project;
  c.host = "test-host";
  return c;
}

Policy defaultPolicy(const std::string& project = kProject) {
  auto layer = parseLayer(defaultPolicyText(), "<default>", "default");
  INFO((layer.ok() ? std::string() : layer.error().message()));
  REQUIRE(layer.ok());
  auto p = compile({layer.value()}, contextWith(project));
  INFO((p.ok() ? std::string() : p.error().message()));
  REQUIRE(p.ok());
  return std::move(p.value());
}

std::string dec(const Verdict& v) { return decisionName(v.decision); }
std::string acc(const Verdict& v) { return accessName(v.access); }
std::string id(const Verdict& v) { return std::string(v.rule.id); }

std::string home(const std::string& rest) { return std::string(kHome) + rest; }
std::string proj(const std::string& rest) { return std::string(kProject) + rest; }

// expectAccess checks PATH's mode and what reads and writes get.
void expectAccess(const Policy& p, const std::string& path, const std::string& want) {
  INFO(path);
  Verdict r = p.file(path, FileOp::kRead);
  Verdict w = p.file(path, FileOp::kWrite);
  CHECK(acc(r) == want);
  CHECK(acc(w) == want);
  CHECK(dec(r) == (want == "hidden" ? "deny" : "allow"));
  CHECK(dec(w) == (want == "read-write" ? "allow" : "deny"));
  CHECK(std::string(r.rule.layer) == "default");
  CHECK(std::string(r.rule.file) == "<default>");
}

TEST_CASE("default policy: parses, compiles and names its layer", "[unit][policy][default]") {
  std::string_view text = defaultPolicyText();
  REQUIRE_FALSE(text.empty());
  CHECK(text.find("version: 1") != std::string_view::npos);
  auto layer = parseLayer(text, "<default>", "default");
  INFO((layer.ok() ? std::string() : layer.error().message()));
  REQUIRE(layer.ok());
  // As an explicit file (empty role) its own `layer:` key names it "default".
  auto as_file = parseLayer(text, "default.yaml", "");
  REQUIRE(as_file.ok());
  auto p = compile({as_file.value()}, contextWith(kProject));
  REQUIRE(p.ok());
  Verdict v = p.value().host("evil.example.com", 443);
  CHECK(std::string(v.rule.layer) == "default");
  CHECK(id(v) == "default.network.default");
  CHECK(std::string(v.rule.file) == "default.yaml");
}

TEST_CASE("default policy: the project is read-write, the system read-only",
          "[unit][policy][default]") {
  Policy p = defaultPolicy();
  expectAccess(p, proj(""), "read-write");
  expectAccess(p, proj("/src/main.cc"), "read-write");
  expectAccess(p, proj("/.git/objects/ab/cdef"), "read-write");
  CHECK(id(p.file(proj("/src/main.cc"), FileOp::kWrite)) == "default.filesystem.work");
  expectAccess(p, "/usr/bin/cc", "read-only");
  expectAccess(p, "/usr", "read-only");
  expectAccess(p, "/etc/passwd", "read-only");
  CHECK(id(p.file("/etc/passwd", FileOp::kWrite)) == "default.filesystem.system");
  expectAccess(p, "/tmp/scratch", "read-write");
  // Paths no rule names fall to the default: hidden.
  expectAccess(p, "/root/x", "hidden");
  expectAccess(p, "/mnt/data", "hidden");
  CHECK(id(p.file("/mnt/data", FileOp::kRead)) == "default.filesystem.default");
  // Lexical normalisation cannot walk out of a read-only tree.
  expectAccess(p, proj("/../../usr/bin/cc"), "read-only");
}

TEST_CASE("default policy: home is read-only, secrets hidden", "[unit][policy][default]") {
  Policy p = defaultPolicy();
  expectAccess(p, home(""), "read-only");
  expectAccess(p, home("/notes.txt"), "read-only");
  CHECK(id(p.file(home("/notes.txt"), FileOp::kWrite)) == "default.filesystem.home");
  for (const char* s : {"/.ssh", "/.ssh/id_ed25519", "/.aws/credentials", "/.config/gcloud",
                        "/.config/gcloud/application_default_credentials.json", "/.kube/config",
                        "/.docker/config.json", "/.netrc", "/.gnupg", "/.gnupg/private-keys-v1.d/x",
                        "/.env"}) {
    expectAccess(p, home(s), "hidden");
    CHECK(id(p.file(home(s), FileOp::kRead)) == "default.filesystem.secrets");
  }
  // Only config.json of ~/.docker is a secret.
  expectAccess(p, home("/.docker/buildx"), "read-only");
  // ~/.cache is a work directory.
  expectAccess(p, home("/.cache/pip/x"), "read-write");
}

TEST_CASE("default policy: .env is hidden at any depth, also inside the project",
          "[unit][policy][default]") {
  Policy p = defaultPolicy();
  for (const char* s : {"/.env", "/app/.env", "/a/b/c/.env", "/.env.local", "/app/.env.production"}) {
    expectAccess(p, proj(s), "hidden");
    CHECK(id(p.file(proj(s), FileOp::kRead)) == "default.filesystem.secrets");
  }
  expectAccess(p, "/srv/site/.env", "hidden");
  // Not a .env file: stays in the project's read-write tree.
  expectAccess(p, proj("/.envrc.example"), "read-write");
  expectAccess(p, proj("/env/x"), "read-write");
}

TEST_CASE("default policy: persistence places in the project are read-only",
          "[unit][policy][default]") {
  Policy p = defaultPolicy();
  for (const char* s : {"/.git/hooks", "/.git/hooks/pre-commit", "/.git/config", "/.claude",
                        "/.claude/settings.json", "/.mcp.json", "/.vscode", "/.vscode/tasks.json"}) {
    expectAccess(p, proj(s), "read-only");
    Verdict w = p.file(proj(s), FileOp::kWrite);
    CHECK(id(w) == "default.filesystem.persistence");
    CHECK(std::string(w.reason) == "places where code plants itself to run later");
  }
  // Next to them, the project stays read-write.
  expectAccess(p, proj("/.git/HEAD"), "read-write");
}

TEST_CASE("default policy: shell and git start-up files in home are read-only",
          "[unit][policy][default]") {
  Policy p = defaultPolicy();
  for (const char* s : {"/.bashrc", "/.gitconfig", "/.profile", "/.zshrc"}) {
    expectAccess(p, home(s), "read-only");
    CHECK(id(p.file(home(s), FileOp::kWrite)) == "default.filesystem.persistence");
  }
  // Inside the read-write ~/.claude, its settings and hooks stay read-only.
  expectAccess(p, home("/.claude/projects/x.jsonl"), "read-write");
  expectAccess(p, home("/.claude/settings.json"), "read-only");
  expectAccess(p, home("/.claude/hooks/pre.sh"), "read-only");
}

TEST_CASE("default policy: a project inside home is read-write, its secrets hidden",
          "[unit][policy][default]") {
  Policy p = defaultPolicy(home("/src/app"));
  expectAccess(p, home("/src/app/main.py"), "read-write");
  expectAccess(p, home("/src/app/.env"), "hidden");
  expectAccess(p, home("/src/app/.git/hooks/post-checkout"), "read-only");
  expectAccess(p, home("/src/other/x"), "read-only");
  expectAccess(p, home("/.ssh/id_rsa"), "hidden");
}

TEST_CASE("default policy: registries and agent APIs are reachable, nothing else",
          "[unit][policy][default]") {
  Policy p = defaultPolicy();
  for (const char* h : {"registry.npmjs.org", "pypi.org", "files.pythonhosted.org", "github.com",
                        "codeload.github.com", "raw.githubusercontent.com", "crates.io"}) {
    INFO(h);
    Verdict v = p.host(h, 443);
    CHECK(dec(v) == "allow");
    CHECK(id(v) == "default.network.registries");
    CHECK_FALSE(v.inspect);
    CHECK(dec(p.dns(h)) == "allow");
  }
  CHECK(dec(p.host("registry.npmjs.org", 80)) == "allow");
  // Other ports are not part of the allow.
  Verdict ssh = p.host("github.com", 22);
  CHECK(dec(ssh) == "deny");
  CHECK(id(ssh) == "default.network.default");

  for (const char* h : {"api.anthropic.com", "api.openai.com", "api.github.com"}) {
    INFO(h);
    Verdict v = p.host(h, 443);
    CHECK(dec(v) == "allow");
    CHECK(v.inspect);
    CHECK(id(v) == "default.network.agent-apis");
  }
  CHECK(dec(p.host("api.anthropic.com", 80)) == "deny");

  for (const char* h : {"evil.example.com", "example.org", "npmjs.org", "pypi.org.evil.example"}) {
    INFO(h);
    Verdict v = p.host(h, 443);
    CHECK(dec(v) == "deny");
    CHECK(id(v) == "default.network.default");
    CHECK(std::string(v.rule.layer) == "default");
    CHECK(dec(p.dns(h)) == "deny");
  }
}

TEST_CASE("default policy: internal networks and cloud metadata are denied",
          "[unit][policy][default]") {
  Policy p = defaultPolicy();
  for (const char* a : {"169.254.169.254", "10.0.0.1", "10.255.255.255", "127.0.0.1",
                        "192.168.1.1", "172.16.0.1", "100.64.0.1", "::1", "fd00::1",
                        "fe80::1", "::ffff:10.1.2.3", "2130706433"}) {
    INFO(a);
    Verdict v = p.host(a, 443);
    CHECK(dec(v) == "deny");
    CHECK(id(v) == "default.network.internal");
    CHECK(std::string(v.reason).find("cloud metadata") != std::string::npos);
  }
  // A public address no rule names falls to the default deny.
  Verdict pub = p.host("203.0.113.7", 443);
  CHECK(dec(pub) == "deny");
  CHECK(id(pub) == "default.network.default");

  SECTION("a registry name resolving into 10/8 is denied") {
    IpAddr internal;
    REQUIRE(IpAddr::parse("10.1.2.3", &internal));
    Verdict v = p.connect("registry.npmjs.org", &internal, 443);
    CHECK(dec(v) == "deny");
    CHECK(id(v) == "default.network.internal");
    IpAddr metadata;
    REQUIRE(IpAddr::parse("169.254.169.254", &metadata));
    CHECK(dec(p.connect("api.anthropic.com", &metadata, 443)) == "deny");
    IpAddr pub_addr;
    REQUIRE(IpAddr::parse("104.16.0.35", &pub_addr));
    Verdict ok = p.connect("registry.npmjs.org", &pub_addr, 443);
    CHECK(dec(ok) == "allow");
    CHECK(id(ok) == "default.network.registries");
  }
}

TEST_CASE("default policy: environment variables", "[unit][policy][default]") {
  Policy p = defaultPolicy();
  for (const char* n : {"PATH", "HOME", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "EDITOR"}) {
    INFO(n);
    Verdict v = p.env(n);
    CHECK(dec(v) == "allow");
    CHECK(id(v) == "default.env.basics");
  }
  for (const char* n : {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "GITHUB_TOKEN",
                        "ANTHROPIC_API_KEY", "SSH_AUTH_SOCK", "LD_PRELOAD", "path"}) {
    INFO(n);
    Verdict v = p.env(n);
    CHECK(dec(v) == "deny");
    CHECK(id(v) == "default.env.default");
  }
}

TEST_CASE("default policy: MCP servers are denied by default", "[unit][policy][default]") {
  Policy p = defaultPolicy();
  Verdict v = p.mcpTool("files", "read_file");
  CHECK(dec(v) == "deny");
  CHECK(id(v) == "default.mcp.default");
  CHECK(std::string(v.rule.layer) == "default");
  std::vector<std::string> argv = {"npx", "-y", "@modelcontextprotocol/server-filesystem", "/"};
  CHECK(p.mcpServerForCommand(argv).empty());
}

TEST_CASE("default policy: credentials travel only to their own hosts",
          "[unit][policy][default]") {
  Policy p = defaultPolicy();
  Verdict a = p.credential("anthropic", "api.anthropic.com");
  CHECK(dec(a) == "allow");
  CHECK(id(a) == "default.credentials.anthropic");
  CHECK(dec(p.credential("anthropic", "evil.example.com")) == "deny");
  CHECK(dec(p.credential("anthropic", "api.openai.com")) == "deny");
  CHECK(dec(p.credential("openai", "api.openai.com")) == "allow");
  CHECK(dec(p.credential("github", "api.github.com")) == "allow");
  CHECK(dec(p.credential("github", "github.com")) == "allow");
  CHECK(dec(p.credential("github", "gist.github.com")) == "deny");
  Verdict unknown = p.credential("aws", "api.anthropic.com");
  CHECK(dec(unknown) == "deny");
  CHECK(id(unknown) == "builtin.credentials.default");
}

}  // namespace
}  // namespace guard::policy
