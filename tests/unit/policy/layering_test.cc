// Unit tests for policy layering: one test case per row of the "How layers
// merge" table in docs/policy.md, then audit mode, group layer order, where
// defaults come from, the built-in fallback and how layers are named.
//
// Every YAML text below starts on line 1, so the line numbers the checks
// expect can be read off the literal: "- deny: x" on the third line is a rule
// at 3:7 (the column of its first key).
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "policy/policy.h"

namespace guard::policy {
namespace {

using LayerPtr = std::shared_ptr<const Layer>;

Context testContext() {
  Context c;
  c.user = "alice";
  c.home = "/home/alice";
  c.project = "/work/proj";
  c.host = "test-host";
  return c;
}

LayerPtr parseOk(const std::string& text, const std::string& file, const std::string& name) {
  auto r = parseLayer(text, file, name);
  INFO(file << " failed to parse: " << (r.ok() ? std::string() : r.error().message()));
  REQUIRE(r.ok());
  return r.value();
}

LayerPtr orgLayer(const std::string& text) { return parseOk(text, "org.yaml", "org"); }
LayerPtr projectLayer(const std::string& text) {
  return parseOk(text, "project.yaml", "project");
}

Policy compileOk(std::vector<LayerPtr> layers) {
  auto p = compile(std::move(layers), testContext());
  INFO("compile failed: " << (p.ok() ? std::string() : p.error().message()));
  REQUIRE(p.ok());
  return std::move(p.value());
}

std::string dec(const Verdict& v) { return decisionName(v.decision); }
std::string acc(const Verdict& v) { return accessName(v.access); }

// CHECK_RULE checks which rule a verdict reports: id, layer, file and line.
#define CHECK_RULE(v, want_id, want_layer, want_file, want_line)       \
  do {                                                                 \
    CHECK(std::string((v).rule.id) == (want_id));                      \
    CHECK(std::string((v).rule.layer) == (want_layer));                \
    CHECK(std::string((v).rule.file) == (want_file));                  \
    CHECK((v).rule.line == static_cast<uint32_t>(want_line));          \
  } while (0)

// ---------------------------------------------------------------------------
// The 16 rows of the table.
// ---------------------------------------------------------------------------

TEST_CASE("layering row 1: allow X then deny X is deny (narrowing)", "[unit][policy][layering]") {
  SECTION("network name") {
    Policy p = compileOk({orgLayer("network:\n  rules:\n    - allow: x.example.com\n"),
                          projectLayer("network:\n  rules:\n    - deny: x.example.com\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "deny");
    CHECK_FALSE(v.allowed());
    CHECK_RULE(v, "project.network.1", "project", "project.yaml", 3);
    CHECK(v.rule.col == 7u);
    CHECK(v.rule.source() == "project.yaml:3:7");
    CHECK(dec(p.dns("x.example.com")) == "deny");
  }
  SECTION("network address") {
    Policy p = compileOk({orgLayer("network:\n  rules:\n    - allow: 192.0.2.10\n"),
                          projectLayer("network:\n  rules:\n    - deny: 192.0.2.0/24\n")});
    Verdict v = p.host("192.0.2.10", 22);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "project.network.1", "project", "project.yaml", 3);
  }
  SECTION("env") {
    Policy p = compileOk({orgLayer("env:\n  rules:\n    - allow: [FOO, PATH]\n"),
                          projectLayer("env:\n  rules:\n    - deny: FOO\n")});
    Verdict v = p.env("FOO");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "project.env.1", "project", "project.yaml", 3);
    Verdict path = p.env("PATH");
    CHECK(dec(path) == "allow");
    CHECK_RULE(path, "org.env.1", "org", "org.yaml", 3);
  }
  SECTION("mcp server") {
    Policy p = compileOk(
        {orgLayer("mcp:\n  servers:\n    - name: files\n      command: [mcp-files]\n"),
         projectLayer("mcp:\n  servers:\n    - name: files\n      allow: false\n")});
    Verdict v = p.mcpTool("files", "read_file");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "project.mcp.files", "project", "project.yaml", 3);
  }
}

TEST_CASE("layering row 2: deny X then allow X is allow (unlocked rules can be loosened)",
          "[unit][policy][layering]") {
  SECTION("network name") {
    Policy p = compileOk({orgLayer("network:\n  rules:\n    - deny: x.example.com\n"),
                          projectLayer("network:\n  rules:\n    - allow: x.example.com\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "allow");
    CHECK(v.allowed());
    CHECK_FALSE(v.locked);
    CHECK_RULE(v, "project.network.1", "project", "project.yaml", 3);
    CHECK(dec(p.dns("x.example.com")) == "allow");
  }
  SECTION("env") {
    Policy p = compileOk({orgLayer("env:\n  rules:\n    - deny: FOO\n"),
                          projectLayer("env:\n  rules:\n    - allow: FOO\n")});
    Verdict v = p.env("FOO");
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "project.env.1", "project", "project.yaml", 3);
  }
  SECTION("mcp server") {
    Policy p = compileOk(
        {orgLayer("mcp:\n  servers:\n    - name: files\n      allow: false\n"),
         projectLayer("mcp:\n  servers:\n    - name: files\n      command: [mcp-files]\n")});
    Verdict v = p.mcpTool("files", "read_file");
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "project.mcp.files", "project", "project.yaml", 3);
  }
}

TEST_CASE("layering row 3: locked deny X then allow X is deny, reported as the locked rule",
          "[unit][policy][layering]") {
  SECTION("network name") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: x.example.com\n      locked: true\n"
                  "      reason: no x\n"),
         projectLayer("network:\n  rules:\n    - allow: x.example.com\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "deny");
    CHECK(v.locked);
    CHECK(std::string(v.reason) == "no x");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
    Verdict d = p.dns("x.example.com");
    CHECK(dec(d) == "deny");
    CHECK_RULE(d, "org.network.1", "org", "org.yaml", 3);
  }
  SECTION("network address") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: 169.254.169.254\n      locked: true\n"),
         projectLayer("network:\n  rules:\n    - allow: 169.254.169.254\n")});
    Verdict v = p.host("169.254.169.254", 80);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
  }
  SECTION("env") {
    Policy p = compileOk({orgLayer("env:\n  rules:\n    - deny: FOO\n      locked: true\n"),
                          projectLayer("env:\n  rules:\n    - allow: FOO\n")});
    Verdict v = p.env("FOO");
    CHECK(dec(v) == "deny");
    CHECK(v.locked);
    CHECK_RULE(v, "org.env.1", "org", "org.yaml", 3);
  }
  SECTION("mcp server") {
    Policy p = compileOk(
        {orgLayer("mcp:\n  servers:\n    - name: shell\n      allow: false\n      locked: true\n"),
         projectLayer("mcp:\n  servers:\n    - name: shell\n      command: [mcp-shell]\n")});
    Verdict v = p.mcpTool("shell", "run");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.mcp.shell", "org", "org.yaml", 3);
  }
}

TEST_CASE("layering row 4: a locked wildcard deny holds against a more specific later allow",
          "[unit][policy][layering]") {
  SECTION("network wildcard") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: \"*.x.com\"\n      locked: true\n"),
         projectLayer("network:\n  rules:\n    - allow: a.x.com\n")});
    Verdict v = p.host("a.x.com", 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
    CHECK(dec(p.dns("a.x.com")) == "deny");
  }
  SECTION("network CIDR against a single address") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: 10.0.0.0/8\n      locked: true\n"),
         projectLayer("network:\n  rules:\n    - allow: 10.1.2.3\n")});
    Verdict v = p.host("10.1.2.3", 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
  }
  SECTION("an allowed name resolving into a locked denied network") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: 10.0.0.0/8\n      locked: true\n"),
         projectLayer("network:\n  rules:\n    - allow: git.corp.example\n")});
    IpAddr a;
    REQUIRE(IpAddr::parse("10.9.8.7", &a));
    Verdict v = p.connect("git.corp.example", &a, 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
    IpAddr pub;
    REQUIRE(IpAddr::parse("192.0.2.1", &pub));
    CHECK(dec(p.connect("git.corp.example", &pub, 443)) == "allow");
  }
  SECTION("env glob against an exact name") {
    Policy p = compileOk(
        {orgLayer("env:\n  rules:\n    - deny: \"AWS_*\"\n      locked: true\n"),
         projectLayer("env:\n  rules:\n    - allow: AWS_REGION\n")});
    Verdict v = p.env("AWS_REGION");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.env.1", "org", "org.yaml", 3);
  }
}

TEST_CASE("layering row 5: a locked default deny is the org's allow-list",
          "[unit][policy][layering]") {
  SECTION("network") {
    Policy p = compileOk(
        {orgLayer("network:\n  default: deny\n  default_locked: true\n"),
         projectLayer("network:\n  default: allow\n  rules:\n    - allow: x.example.com\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "deny");
    CHECK(v.locked);
    CHECK_RULE(v, "org.network.default", "org", "org.yaml", 2);
    CHECK(v.rule.col == 12u);
    // The project's own default does not loosen it either.
    Verdict other = p.host("other.example.com", 443);
    CHECK(dec(other) == "deny");
    CHECK_RULE(other, "org.network.default", "org", "org.yaml", 2);
    CHECK(dec(p.dns("x.example.com")) == "deny");
  }
  SECTION("env") {
    Policy p = compileOk({orgLayer("env:\n  default: deny\n  default_locked: true\n"),
                          projectLayer("env:\n  rules:\n    - allow: FOO\n")});
    Verdict v = p.env("FOO");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.env.default", "org", "org.yaml", 2);
  }
  SECTION("mcp") {
    Policy p = compileOk(
        {orgLayer("mcp:\n  default: deny\n  default_locked: true\n"),
         projectLayer("mcp:\n  servers:\n    - name: files\n      command: [mcp-files]\n")});
    Verdict v = p.mcpTool("files", "read_file");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.mcp.default", "org", "org.yaml", 2);
  }
  SECTION("filesystem") {
    Policy p = compileOk({orgLayer("filesystem:\n  default: hidden\n  default_locked: true\n"),
                          projectLayer("filesystem:\n  rules:\n    - read-write: /data\n")});
    Verdict v = p.file("/data/f", FileOp::kRead);
    CHECK(dec(v) == "deny");
    CHECK(acc(v) == "hidden");
    CHECK_RULE(v, "org.filesystem.default", "org", "org.yaml", 2);
  }
}

TEST_CASE("layering row 6: locked default deny with allow X, later deny X is deny",
          "[unit][policy][layering]") {
  SECTION("network") {
    Policy p = compileOk(
        {orgLayer("network:\n  default: deny\n  default_locked: true\n  rules:\n"
                  "    - allow: x.example.com\n"),
         projectLayer("network:\n  rules:\n    - deny: x.example.com\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "project.network.1", "project", "project.yaml", 3);
  }
  SECTION("env") {
    Policy p = compileOk(
        {orgLayer("env:\n  default: deny\n  default_locked: true\n  rules:\n    - allow: FOO\n"),
         projectLayer("env:\n  rules:\n    - deny: FOO\n")});
    Verdict v = p.env("FOO");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "project.env.1", "project", "project.yaml", 3);
  }
}

TEST_CASE("layering row 7: locked default deny with allow X, later allow Y: Y denied, X allowed",
          "[unit][policy][layering]") {
  SECTION("network") {
    Policy p = compileOk(
        {orgLayer("network:\n  default: deny\n  default_locked: true\n  rules:\n"
                  "    - allow: x.example.com\n"),
         projectLayer("network:\n  rules:\n    - allow: y.example.com\n")});
    Verdict y = p.host("y.example.com", 443);
    CHECK(dec(y) == "deny");
    CHECK_RULE(y, "org.network.default", "org", "org.yaml", 2);
    Verdict x = p.host("x.example.com", 443);
    CHECK(dec(x) == "allow");
    CHECK_RULE(x, "org.network.1", "org", "org.yaml", 5);
    CHECK(dec(p.dns("y.example.com")) == "deny");
    CHECK(dec(p.dns("x.example.com")) == "allow");
  }
  SECTION("env") {
    Policy p = compileOk(
        {orgLayer("env:\n  default: deny\n  default_locked: true\n  rules:\n    - allow: X\n"),
         projectLayer("env:\n  rules:\n    - allow: Y\n")});
    Verdict y = p.env("Y");
    CHECK(dec(y) == "deny");
    CHECK_RULE(y, "org.env.default", "org", "org.yaml", 2);
    Verdict x = p.env("X");
    CHECK(dec(x) == "allow");
    CHECK_RULE(x, "org.env.1", "org", "org.yaml", 5);
  }
}

TEST_CASE("layering row 8: locked read-only P then read-write P stays read-only",
          "[unit][policy][layering]") {
  SECTION("same path") {
    Policy p = compileOk(
        {orgLayer("filesystem:\n  rules:\n    - read-only: /data\n      locked: true\n"),
         projectLayer("filesystem:\n  rules:\n    - read-write: /data\n")});
    Verdict w = p.file("/data/f.txt", FileOp::kWrite);
    CHECK(dec(w) == "deny");
    CHECK(acc(w) == "read-only");
    CHECK(w.locked);
    CHECK_RULE(w, "org.filesystem.1", "org", "org.yaml", 3);
    Verdict r = p.file("/data/f.txt", FileOp::kRead);
    CHECK(dec(r) == "allow");
    CHECK(acc(r) == "read-only");
  }
  SECTION("a deeper later read-write does not escape the locked floor") {
    Policy p = compileOk(
        {orgLayer("filesystem:\n  rules:\n    - read-only: \"{project}/.git\"\n      locked: true\n"),
         projectLayer("filesystem:\n  rules:\n    - read-write: \"{project}/.git/objects\"\n")});
    Verdict w = p.file("/work/proj/.git/objects/ab/cdef", FileOp::kWrite);
    CHECK(dec(w) == "deny");
    CHECK(acc(w) == "read-only");
    CHECK_RULE(w, "org.filesystem.1", "org", "org.yaml", 3);
  }
}

TEST_CASE("layering row 9: locked read-only P then hidden P is hidden (narrowing)",
          "[unit][policy][layering]") {
  Policy p = compileOk(
      {orgLayer("filesystem:\n  rules:\n    - read-only: /data\n      locked: true\n"),
       projectLayer("filesystem:\n  rules:\n    - hidden: /data\n")});
  Verdict r = p.file("/data/f.txt", FileOp::kRead);
  CHECK(dec(r) == "deny");
  CHECK(acc(r) == "hidden");
  CHECK_RULE(r, "project.filesystem.1", "project", "project.yaml", 3);
}

TEST_CASE("layering row 10: unlocked hidden P then read-write P is read-write",
          "[unit][policy][layering]") {
  Policy p = compileOk({orgLayer("filesystem:\n  rules:\n    - hidden: /data\n"),
                        projectLayer("filesystem:\n  rules:\n    - read-write: /data\n")});
  Verdict w = p.file("/data/f.txt", FileOp::kWrite);
  CHECK(dec(w) == "allow");
  CHECK(acc(w) == "read-write");
  CHECK_RULE(w, "project.filesystem.1", "project", "project.yaml", 3);
}

TEST_CASE("layering row 11: the later default wins where no rule matches",
          "[unit][policy][layering]") {
  SECTION("network") {
    Policy p = compileOk({orgLayer("network:\n  default: deny\n"),
                          projectLayer("network:\n  default: allow\n")});
    Verdict v = p.host("anything.example", 443);
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "project.network.default", "project", "project.yaml", 2);
    Verdict a = p.host("203.0.113.9", 443);
    CHECK(dec(a) == "allow");
    CHECK_RULE(a, "project.network.default", "project", "project.yaml", 2);
  }
  SECTION("network, the other way round") {
    Policy p = compileOk({orgLayer("network:\n  default: allow\n"),
                          projectLayer("network:\n  default: deny\n")});
    Verdict v = p.host("anything.example", 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "project.network.default", "project", "project.yaml", 2);
  }
  SECTION("filesystem") {
    Policy p = compileOk({orgLayer("filesystem:\n  default: hidden\n"),
                          projectLayer("filesystem:\n  default: read-only\n")});
    Verdict v = p.file("/srv/x", FileOp::kRead);
    CHECK(dec(v) == "allow");
    CHECK(acc(v) == "read-only");
    CHECK_RULE(v, "project.filesystem.default", "project", "project.yaml", 2);
  }
  SECTION("env") {
    Policy p = compileOk(
        {orgLayer("env:\n  default: deny\n"), projectLayer("env:\n  default: allow\n")});
    Verdict v = p.env("ANYTHING");
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "project.env.default", "project", "project.yaml", 2);
  }
  SECTION("mcp") {
    Policy p = compileOk(
        {orgLayer("mcp:\n  default: deny\n"), projectLayer("mcp:\n  default: allow\n")});
    Verdict v = p.mcpTool("unknown", "tool");
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "project.mcp.default", "project", "project.yaml", 2);
  }
}

TEST_CASE("layering row 12: rules beat defaults in any layer", "[unit][policy][layering]") {
  SECTION("network") {
    Policy p = compileOk({orgLayer("network:\n  rules:\n    - allow: x.example.com\n"),
                          projectLayer("network:\n  default: deny\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
    Verdict y = p.host("y.example.com", 443);
    CHECK(dec(y) == "deny");
    CHECK_RULE(y, "project.network.default", "project", "project.yaml", 2);
  }
  SECTION("env") {
    Policy p = compileOk({orgLayer("env:\n  rules:\n    - allow: FOO\n"),
                          projectLayer("env:\n  default: deny\n")});
    Verdict v = p.env("FOO");
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "org.env.1", "org", "org.yaml", 3);
  }
  SECTION("filesystem") {
    Policy p = compileOk({orgLayer("filesystem:\n  rules:\n    - read-only: /data\n"),
                          projectLayer("filesystem:\n  default: read-write\n")});
    Verdict v = p.file("/data/x", FileOp::kWrite);
    CHECK(dec(v) == "deny");
    CHECK(acc(v) == "read-only");
    CHECK_RULE(v, "org.filesystem.1", "org", "org.yaml", 3);
  }
}

TEST_CASE("layering row 13: a locked deny in mode audit against a later allow is would_deny",
          "[unit][policy][layering][audit]") {
  SECTION("network") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: x.example.com\n      locked: true\n"
                  "      mode: audit\n"),
         projectLayer("network:\n  rules:\n    - allow: x.example.com\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "would_deny");
    CHECK(v.allowed());
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
  }
  SECTION("filesystem") {
    Policy p = compileOk(
        {orgLayer("filesystem:\n  rules:\n    - hidden: /data\n      locked: true\n"
                  "      mode: audit\n"),
         projectLayer("filesystem:\n  rules:\n    - read-write: /data\n")});
    Verdict v = p.file("/data/x", FileOp::kRead);
    CHECK(dec(v) == "would_deny");
    CHECK(acc(v) == "hidden");
    CHECK_RULE(v, "org.filesystem.1", "org", "org.yaml", 3);
  }
  SECTION("env") {
    Policy p = compileOk(
        {orgLayer("env:\n  rules:\n    - deny: FOO\n      locked: true\n      mode: audit\n"),
         projectLayer("env:\n  rules:\n    - allow: FOO\n")});
    Verdict v = p.env("FOO");
    CHECK(dec(v) == "would_deny");
    CHECK_RULE(v, "org.env.1", "org", "org.yaml", 3);
  }
  SECTION("a later enforced deny narrows the audited floor") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: x.example.com\n      locked: true\n"
                  "      mode: audit\n"),
         projectLayer("network:\n  rules:\n    - deny: x.example.com\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "project.network.1", "project", "project.yaml", 3);
  }
}

TEST_CASE("layering row 14: a locked deny keeps its own layer's mode under a policy-wide audit",
          "[unit][policy][layering][audit]") {
  SECTION("network") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: x.example.com\n      locked: true\n"
                  "    - deny: y.example.com\n"),
         projectLayer("mode: audit\nnetwork:\n  rules:\n    - deny: z.example.com\n")});
    Verdict x = p.host("x.example.com", 443);
    CHECK(dec(x) == "deny");
    CHECK_RULE(x, "org.network.1", "org", "org.yaml", 3);
    // Unlocked rules of every layer follow the policy-wide mode.
    Verdict y = p.host("y.example.com", 443);
    CHECK(dec(y) == "would_deny");
    CHECK_RULE(y, "org.network.2", "org", "org.yaml", 5);
    Verdict z = p.host("z.example.com", 443);
    CHECK(dec(z) == "would_deny");
    CHECK_RULE(z, "project.network.1", "project", "project.yaml", 4);
  }
  SECTION("filesystem") {
    Policy p = compileOk(
        {orgLayer("filesystem:\n  rules:\n    - hidden: /secret\n      locked: true\n"),
         projectLayer("mode: audit\n")});
    Verdict v = p.file("/secret/key", FileOp::kRead);
    CHECK(dec(v) == "deny");
    CHECK(acc(v) == "hidden");
    CHECK_RULE(v, "org.filesystem.1", "org", "org.yaml", 3);
  }
  SECTION("env") {
    Policy p = compileOk({orgLayer("env:\n  rules:\n    - deny: FOO\n      locked: true\n"),
                          projectLayer("mode: audit\nenv:\n  rules:\n    - allow: FOO\n")});
    Verdict v = p.env("FOO");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.env.1", "org", "org.yaml", 3);
  }
  SECTION("a locked default") {
    Policy p = compileOk({orgLayer("network:\n  default: deny\n  default_locked: true\n"),
                          projectLayer("mode: audit\nnetwork:\n  default: allow\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.network.default", "org", "org.yaml", 2);
  }
}

TEST_CASE("layering row 15: a locked MCP tool deny holds against a later tools allow",
          "[unit][policy][layering]") {
  Policy p = compileOk(
      {orgLayer("mcp:\n  servers:\n    - name: files\n      command: [mcp-files]\n"
                "      tools:\n        deny: [write_file]\n      locked: true\n"),
       projectLayer("mcp:\n  servers:\n    - name: files\n      command: [mcp-files]\n"
                    "      tools:\n        allow: [write_file, read_file]\n")});
  Verdict w = p.mcpTool("files", "write_file");
  CHECK(dec(w) == "deny");
  CHECK(w.locked);
  CHECK_RULE(w, "org.mcp.files", "org", "org.yaml", 3);
  Verdict r = p.mcpTool("files", "read_file");
  CHECK(dec(r) == "allow");
  CHECK_RULE(r, "project.mcp.files", "project", "project.yaml", 3);
  // The project's list is the latest word for tools the org did not deny.
  Verdict other = p.mcpTool("files", "delete_file");
  CHECK(dec(other) == "deny");
  CHECK_RULE(other, "project.mcp.files", "project", "project.yaml", 3);
  // Tool names are compared byte for byte.
  CHECK(dec(p.mcpTool("files", "Write_File")) == "deny");
}

TEST_CASE("layering row 16: a locked credential's destinations can only narrow",
          "[unit][policy][layering]") {
  const std::string org_text =
      "credentials:\n"
      "  - name: gh\n"
      "    source: {env: GH_TOKEN}\n"
      "    destinations: [api.github.com, uploads.github.com]\n"
      "    locked: true\n";
  SECTION("a destination removed by the later layer is denied") {
    Policy p = compileOk({orgLayer(org_text),
                          projectLayer("credentials:\n  - name: gh\n    source: {env: GH_TOKEN}\n"
                                       "    destinations: [api.github.com]\n")});
    Verdict removed = p.credential("gh", "uploads.github.com");
    CHECK(dec(removed) == "deny");
    CHECK_RULE(removed, "project.credentials.gh", "project", "project.yaml", 2);
    Verdict kept = p.credential("gh", "api.github.com");
    CHECK(dec(kept) == "allow");
    CHECK_RULE(kept, "project.credentials.gh", "project", "project.yaml", 2);
  }
  SECTION("a destination added by the later layer is denied by the locked entry") {
    Policy p = compileOk({orgLayer(org_text),
                          projectLayer("credentials:\n  - name: gh\n    source: {env: GH_TOKEN}\n"
                                       "    destinations: [api.github.com, evil.example.com]\n")});
    Verdict added = p.credential("gh", "evil.example.com");
    CHECK(dec(added) == "deny");
    CHECK_RULE(added, "org.credentials.gh", "org", "org.yaml", 2);
  }
  SECTION("a credential no layer defines is denied") {
    Policy p = compileOk({orgLayer(org_text)});
    Verdict v = p.credential("aws", "api.github.com");
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "builtin.credentials.default", "builtin", "<builtin>", 0);
    CHECK(dec(p.credential("gh", "github.com")) == "deny");
    CHECK(dec(p.credential("gh", "api.github.com")) == "allow");
  }
}

TEST_CASE("layering: ports, DNS and address spellings under a locked floor",
          "[unit][policy][layering]") {
  SECTION("a locked deny limited to some ports binds only those ports") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: x.example.com\n      ports: [22]\n"
                  "      locked: true\n"),
         projectLayer("network:\n  rules:\n    - allow: x.example.com\n")});
    Verdict ssh = p.host("x.example.com", 22);
    CHECK(dec(ssh) == "deny");
    CHECK_RULE(ssh, "org.network.1", "org", "org.yaml", 3);
    Verdict https = p.host("x.example.com", 443);
    CHECK(dec(https) == "allow");
    CHECK_RULE(https, "project.network.1", "project", "project.yaml", 3);
    // A deny limited to some ports does not stop resolution.
    Verdict d = p.dns("x.example.com");
    CHECK(dec(d) == "allow");
    CHECK_RULE(d, "project.network.1", "project", "project.yaml", 3);
  }
  SECTION("request spellings of a locked denied address") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: 127.0.0.0/8\n      locked: true\n"),
         projectLayer("network:\n  default: allow\n  rules:\n    - allow: 127.0.0.1\n")});
    for (const char* spelling : {"127.0.0.1", "2130706433", "0x7f000001", "127.1", "::ffff:127.0.0.1"}) {
      INFO(spelling);
      Verdict v = p.host(spelling, 8080);
      CHECK(dec(v) == "deny");
      CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
    }
  }
  SECTION("names are normalised before the layers are asked") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: x.example.com\n      locked: true\n"),
         projectLayer("network:\n  default: allow\n")});
    for (const char* spelling : {"X.Example.COM", "x.example.com."}) {
      INFO(spelling);
      Verdict v = p.host(spelling, 443);
      CHECK(dec(v) == "deny");
      CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
    }
  }
  SECTION("env globs: more literal characters win, ties go to deny") {
    Policy p = compileOk({projectLayer(
        "env:\n  rules:\n    - allow: \"AWS_*\"\n    - deny: \"AWS_SECRET_*\"\n"
        "    - allow: \"*_X\"\n    - deny: \"Y_*\"\n")});
    Verdict secret = p.env("AWS_SECRET_ACCESS_KEY");
    CHECK(dec(secret) == "deny");
    CHECK_RULE(secret, "project.env.2", "project", "project.yaml", 4);
    CHECK(dec(p.env("AWS_REGION")) == "allow");
    Verdict tie = p.env("Y_X");
    CHECK(dec(tie) == "deny");
    CHECK_RULE(tie, "project.env.4", "project", "project.yaml", 6);
  }
}

// Real policies name hosts, variables and directories longer than the
// 15 bytes a std::string keeps inline; the rows above use short names. These
// cases repeat rows 3, 4, 8 and 12 with long names and more than one layer,
// so an earlier layer's matchers must survive the later layers' compilation.
TEST_CASE("layering: earlier layers' rules with long names still match after later layers",
          "[unit][policy][layering]") {
  LayerPtr org = orgLayer(
      "network:\n"
      "  rules:\n"
      "    - deny: telemetry.evil.example.com\n"          // 3
      "      locked: true\n"
      "    - deny: \"*.tracking.analytics.example\"\n"   // 5
      "      locked: true\n"
      "    - allow: registry.npmjs.org\n"                  // 7
      "filesystem:\n"
      "  rules:\n"
      "    - read-only: /srv/confidential-documents\n"     // 10
      "      locked: true\n"
      "env:\n"
      "  rules:\n"
      "    - deny: AWS_SECRET_ACCESS_KEY\n"               // 14
      "      locked: true\n"
      "    - allow: VERY_LONG_VARIABLE_NAME\n");           // 16
  LayerPtr group = parseOk("network:\n  rules:\n    - allow: some.other.long.host.example\n",
                           "groups/eng.yaml", "group:eng");
  LayerPtr project = projectLayer(
      "network:\n"
      "  rules:\n"
      "    - allow: [telemetry.evil.example.com, pixel.tracking.analytics.example]\n"
      "    - allow: yet.another.long.host.example\n"
      "filesystem:\n"
      "  rules:\n"
      "    - read-write: /srv/confidential-documents\n"
      "env:\n"
      "  rules:\n"
      "    - allow: AWS_SECRET_ACCESS_KEY\n");
  Policy p = compileOk({org, group, project});

  Verdict exact = p.host("telemetry.evil.example.com", 443);
  CHECK(dec(exact) == "deny");
  CHECK_RULE(exact, "org.network.1", "org", "org.yaml", 3);
  Verdict wildcard = p.host("pixel.tracking.analytics.example", 443);
  CHECK(dec(wildcard) == "deny");
  CHECK_RULE(wildcard, "org.network.2", "org", "org.yaml", 5);
  Verdict registry = p.host("registry.npmjs.org", 443);
  CHECK(dec(registry) == "allow");
  CHECK_RULE(registry, "org.network.3", "org", "org.yaml", 7);
  CHECK(dec(p.dns("telemetry.evil.example.com")) == "deny");
  CHECK(dec(p.host("some.other.long.host.example", 443)) == "allow");
  CHECK(dec(p.host("yet.another.long.host.example", 443)) == "allow");

  Verdict docs = p.file("/srv/confidential-documents/plan.txt", FileOp::kWrite);
  CHECK(dec(docs) == "deny");
  CHECK(acc(docs) == "read-only");
  CHECK_RULE(docs, "org.filesystem.1", "org", "org.yaml", 10);

  Verdict key = p.env("AWS_SECRET_ACCESS_KEY");
  CHECK(dec(key) == "deny");
  CHECK_RULE(key, "org.env.1", "org", "org.yaml", 14);
  Verdict var = p.env("VERY_LONG_VARIABLE_NAME");
  CHECK(dec(var) == "allow");
  CHECK_RULE(var, "org.env.2", "org", "org.yaml", 16);
}

// ---------------------------------------------------------------------------
// Audit mode.
// ---------------------------------------------------------------------------

TEST_CASE("audit: a policy-wide mode audit records denies as would_deny",
          "[unit][policy][layering][audit]") {
  Policy p = compileOk({projectLayer(
      "mode: audit\n"
      "network:\n"
      "  default: deny\n"
      "  rules:\n"
      "    - deny: x.example.com\n"
      "filesystem:\n"
      "  rules:\n"
      "    - hidden: /secret\n"
      "    - read-only: /usr\n"
      "env:\n"
      "  rules:\n"
      "    - deny: FOO\n"
      "mcp:\n"
      "  servers:\n"
      "    - name: shell\n"
      "      allow: false\n")});
  Verdict x = p.host("x.example.com", 443);
  CHECK(dec(x) == "would_deny");
  CHECK(x.allowed());
  CHECK_RULE(x, "project.network.1", "project", "project.yaml", 5);
  Verdict other = p.host("other.example.com", 443);
  CHECK(dec(other) == "would_deny");
  CHECK_RULE(other, "project.network.default", "project", "project.yaml", 3);
  // Hidden paths stay hidden in explain, with decision would_deny.
  Verdict hidden = p.file("/secret/key", FileOp::kRead);
  CHECK(dec(hidden) == "would_deny");
  CHECK(acc(hidden) == "hidden");
  CHECK_RULE(hidden, "project.filesystem.1", "project", "project.yaml", 8);
  Verdict ro = p.file("/usr/bin/cc", FileOp::kWrite);
  CHECK(dec(ro) == "would_deny");
  CHECK(acc(ro) == "read-only");
  CHECK(dec(p.file("/usr/bin/cc", FileOp::kRead)) == "allow");
  CHECK(dec(p.env("FOO")) == "would_deny");
  CHECK(dec(p.mcpTool("shell", "run")) == "would_deny");
}

TEST_CASE("audit: the latest layer that sets mode sets it for the whole policy",
          "[unit][policy][layering][audit]") {
  SECTION("org enforce, project audit") {
    Policy p = compileOk({orgLayer("mode: enforce\nnetwork:\n  rules:\n    - deny: x.example.com\n"),
                          projectLayer("mode: audit\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "would_deny");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 4);
  }
  SECTION("org audit, project enforce") {
    Policy p = compileOk({orgLayer("mode: audit\nnetwork:\n  rules:\n    - deny: x.example.com\n"),
                          projectLayer("mode: enforce\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 4);
  }
  SECTION("a layer without mode does not reset it") {
    Policy p = compileOk({orgLayer("mode: audit\nnetwork:\n  rules:\n    - deny: x.example.com\n"),
                          projectLayer("network:\n  rules:\n    - allow: y.example.com\n")});
    CHECK(dec(p.host("x.example.com", 443)) == "would_deny");
  }
}

TEST_CASE("audit: a locked rule without its own mode keeps its own layer's mode",
          "[unit][policy][layering][audit]") {
  SECTION("locked rule in an enforce layer under a later audit layer") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: x.example.com\n      locked: true\n"),
         projectLayer("mode: audit\n")});
    CHECK(dec(p.host("x.example.com", 443)) == "deny");
  }
  SECTION("locked rule in an audit layer under a later enforce layer") {
    Policy p = compileOk(
        {orgLayer("mode: audit\nnetwork:\n  rules:\n    - deny: x.example.com\n      locked: true\n"),
         projectLayer("mode: enforce\nnetwork:\n  rules:\n    - allow: x.example.com\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "would_deny");
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 4);
  }
}

TEST_CASE("audit: a rule's own mode always wins", "[unit][policy][layering][audit]") {
  SECTION("mode: audit on one rule of an enforcing policy") {
    Policy p = compileOk({projectLayer(
        "network:\n  rules:\n    - deny: x.example.com\n      mode: audit\n"
        "    - deny: y.example.com\n")});
    Verdict x = p.host("x.example.com", 443);
    CHECK(dec(x) == "would_deny");
    CHECK_RULE(x, "project.network.1", "project", "project.yaml", 3);
    CHECK(dec(p.host("y.example.com", 443)) == "deny");
  }
  SECTION("mode: enforce on one rule of an auditing policy") {
    Policy p = compileOk({projectLayer(
        "mode: audit\nnetwork:\n  rules:\n    - deny: x.example.com\n      mode: enforce\n"
        "    - deny: y.example.com\n")});
    CHECK(dec(p.host("x.example.com", 443)) == "deny");
    CHECK(dec(p.host("y.example.com", 443)) == "would_deny");
  }
  SECTION("mode: enforce on an org rule beats a later policy-wide audit") {
    Policy p = compileOk({orgLayer("network:\n  rules:\n    - deny: x.example.com\n      mode: enforce\n"),
                          projectLayer("mode: audit\n")});
    CHECK(dec(p.host("x.example.com", 443)) == "deny");
  }
  SECTION("mode: audit on a locked rule itself") {
    Policy p = compileOk(
        {orgLayer("network:\n  rules:\n    - deny: x.example.com\n      locked: true\n"
                  "      mode: audit\n"),
         projectLayer("mode: enforce\n")});
    Verdict v = p.host("x.example.com", 443);
    CHECK(dec(v) == "would_deny");
    CHECK(v.allowed());
    CHECK_RULE(v, "org.network.1", "org", "org.yaml", 3);
  }
}

// ---------------------------------------------------------------------------
// Group layers, defaults, the built-in fallback and layer names.
// ---------------------------------------------------------------------------

TEST_CASE("layering: group layers merge in order between org and project",
          "[unit][policy][layering]") {
  LayerPtr org = orgLayer("network:\n  rules:\n    - allow: a.example.com\n");
  LayerPtr eng = parseOk("network:\n  rules:\n    - deny: a.example.com\n    - allow: b.example.com\n",
                         "groups/eng.yaml", "group:eng");
  LayerPtr sre = parseOk("network:\n  rules:\n    - allow: a.example.com\n    - deny: b.example.com\n",
                         "groups/sre.yaml", "group:sre");
  SECTION("eng then sre") {
    Policy p = compileOk({org, eng, sre});
    Verdict a = p.host("a.example.com", 443);
    CHECK(dec(a) == "allow");
    CHECK_RULE(a, "group:sre.network.1", "group:sre", "groups/sre.yaml", 3);
    Verdict b = p.host("b.example.com", 443);
    CHECK(dec(b) == "deny");
    CHECK_RULE(b, "group:sre.network.2", "group:sre", "groups/sre.yaml", 4);
  }
  SECTION("sre then eng") {
    Policy p = compileOk({org, sre, eng});
    Verdict a = p.host("a.example.com", 443);
    CHECK(dec(a) == "deny");
    CHECK_RULE(a, "group:eng.network.1", "group:eng", "groups/eng.yaml", 3);
    Verdict b = p.host("b.example.com", 443);
    CHECK(dec(b) == "allow");
    CHECK_RULE(b, "group:eng.network.2", "group:eng", "groups/eng.yaml", 4);
  }
  SECTION("the project layer comes last") {
    Policy p = compileOk({org, eng, sre, projectLayer("network:\n  rules:\n    - deny: a.example.com\n")});
    Verdict a = p.host("a.example.com", 443);
    CHECK(dec(a) == "deny");
    CHECK_RULE(a, "project.network.1", "project", "project.yaml", 3);
  }
  SECTION("a locked group deny binds the project") {
    LayerPtr locked = parseOk("network:\n  rules:\n    - deny: c.example.com\n      locked: true\n",
                              "groups/sec.yaml", "group:sec");
    Policy p = compileOk({org, locked, projectLayer("network:\n  rules:\n    - allow: c.example.com\n")});
    Verdict c = p.host("c.example.com", 443);
    CHECK(dec(c) == "deny");
    CHECK_RULE(c, "group:sec.network.1", "group:sec", "groups/sec.yaml", 3);
  }
}

TEST_CASE("layering: the default comes from the latest layer that sets one",
          "[unit][policy][layering]") {
  SECTION("a later layer without a default does not reset it") {
    Policy p = compileOk({orgLayer("network:\n  default: allow\n"),
                          parseOk("network:\n  default: deny\n", "groups/eng.yaml", "group:eng"),
                          projectLayer("network:\n  rules:\n    - allow: x.example.com\n")});
    Verdict v = p.host("y.example.com", 443);
    CHECK(dec(v) == "deny");
    CHECK_RULE(v, "group:eng.network.default", "group:eng", "groups/eng.yaml", 2);
  }
  SECTION("the org default when nothing later sets one") {
    Policy p = compileOk({orgLayer("env:\n  default: allow\n"),
                          projectLayer("env:\n  rules:\n    - deny: SECRET\n")});
    Verdict v = p.env("ANYTHING");
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "org.env.default", "org", "org.yaml", 2);
  }
  SECTION("a later default allow under an unlocked earlier default deny") {
    Policy p = compileOk({orgLayer("filesystem:\n  default: hidden\n"),
                          parseOk("filesystem:\n  default: read-write\n", "groups/eng.yaml",
                                  "group:eng"),
                          projectLayer("filesystem:\n  rules:\n    - hidden: /x\n")});
    Verdict v = p.file("/srv/data", FileOp::kWrite);
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "group:eng.filesystem.default", "group:eng", "groups/eng.yaml", 2);
  }
  SECTION("a locked earlier default stays a floor under a later default") {
    Policy p = compileOk({orgLayer("filesystem:\n  default: read-only\n  default_locked: true\n"),
                          projectLayer("filesystem:\n  default: read-write\n")});
    Verdict v = p.file("/srv/data", FileOp::kWrite);
    CHECK(dec(v) == "deny");
    CHECK(acc(v) == "read-only");
    CHECK_RULE(v, "org.filesystem.default", "org", "org.yaml", 2);
  }
}

TEST_CASE("layering: with no layer setting a default, the built-in default fails closed",
          "[unit][policy][layering]") {
  Policy p = compileOk({orgLayer("network:\n  rules:\n    - allow: x.example.com\n"),
                        projectLayer("env:\n  rules:\n    - allow: PATH\n")});
  Verdict net = p.host("y.example.com", 443);
  CHECK(dec(net) == "deny");
  CHECK_RULE(net, "builtin.network.default", "builtin", "<builtin>", 0);
  Verdict addr = p.host("203.0.113.5", 443);
  CHECK(dec(addr) == "deny");
  CHECK_RULE(addr, "builtin.network.default", "builtin", "<builtin>", 0);
  Verdict dns = p.dns("y.example.com");
  CHECK(dec(dns) == "deny");
  CHECK_RULE(dns, "builtin.network.default", "builtin", "<builtin>", 0);
  Verdict fs = p.file("/etc/passwd", FileOp::kRead);
  CHECK(dec(fs) == "deny");
  CHECK(acc(fs) == "hidden");
  CHECK_RULE(fs, "builtin.filesystem.default", "builtin", "<builtin>", 0);
  Verdict env = p.env("HOME");
  CHECK(dec(env) == "deny");
  CHECK_RULE(env, "builtin.env.default", "builtin", "<builtin>", 0);
  Verdict mcp = p.mcpTool("files", "read_file");
  CHECK(dec(mcp) == "deny");
  CHECK_RULE(mcp, "builtin.mcp.default", "builtin", "<builtin>", 0);

  SECTION("also with no layers at all") {
    Policy empty = compileOk({});
    CHECK_RULE(empty.host("x.example.com", 443), "builtin.network.default", "builtin",
               "<builtin>", 0);
    CHECK(dec(empty.host("x.example.com", 443)) == "deny");
  }
  SECTION("and under a policy-wide audit it still denies") {
    Policy audited = compileOk({projectLayer("mode: audit\n")});
    Verdict v = audited.host("x.example.com", 443);
    CHECK_RULE(v, "builtin.network.default", "builtin", "<builtin>", 0);
    CHECK(dec(v) == "deny");
  }
}

TEST_CASE("layering: rule ids, user-chosen ids and the layer key", "[unit][policy][layering]") {
  const std::string text =
      "layer: team-web\n"
      "network:\n"
      "  rules:\n"
      "    - allow: x.example.com\n"
      "    - deny: y.example.com\n"
      "      id: no-y\n"
      "      reason: y is out\n";
  SECTION("an explicit file is named by its layer key") {
    Policy p = compileOk({parseOk(text, "/etc/custom/team.yaml", "")});
    Verdict x = p.host("x.example.com", 443);
    CHECK_RULE(x, "team-web.network.1", "team-web", "/etc/custom/team.yaml", 4);
    Verdict y = p.host("y.example.com", 443);
    CHECK(dec(y) == "deny");
    CHECK(std::string(y.reason) == "y is out");
    CHECK_RULE(y, "no-y", "team-web", "/etc/custom/team.yaml", 5);
  }
  SECTION("an explicit file without a layer key is named by its file stem") {
    Policy p = compileOk(
        {parseOk("network:\n  rules:\n    - allow: x.example.com\n", "/tmp/strict.policy.yaml", "")});
    Verdict x = p.host("x.example.com", 443);
    CHECK_RULE(x, "strict.network.1", "strict", "/tmp/strict.policy.yaml", 3);
  }
  SECTION("a role layer ignores the layer key") {
    Policy p = compileOk({parseOk(text, "project.yaml", "project")});
    Verdict x = p.host("x.example.com", 443);
    CHECK_RULE(x, "project.network.1", "project", "project.yaml", 4);
  }
  SECTION("two explicit files layer in the order given") {
    LayerPtr a = parseOk("layer: base\nnetwork:\n  rules:\n    - deny: x.example.com\n", "a.yaml", "");
    LayerPtr b = parseOk("layer: team\nnetwork:\n  rules:\n    - allow: x.example.com\n", "b.yaml", "");
    Policy ab = compileOk({a, b});
    Verdict v = ab.host("x.example.com", 443);
    CHECK(dec(v) == "allow");
    CHECK_RULE(v, "team.network.1", "team", "b.yaml", 4);
    Policy ba = compileOk({b, a});
    Verdict w = ba.host("x.example.com", 443);
    CHECK(dec(w) == "deny");
    CHECK_RULE(w, "base.network.1", "base", "a.yaml", 4);
  }
  SECTION("n counts from 1 per surface list") {
    Policy p = compileOk({projectLayer(
        "network:\n  rules:\n    - allow: a.example.com\n    - allow: b.example.com\n"
        "filesystem:\n  rules:\n    - read-only: /a\n    - read-write: /b\n"
        "env:\n  rules:\n    - allow: A\n    - allow: B\n")});
    CHECK(std::string(p.host("b.example.com", 443).rule.id) == "project.network.2");
    CHECK(std::string(p.file("/a/x", FileOp::kRead).rule.id) == "project.filesystem.1");
    CHECK(std::string(p.file("/b/x", FileOp::kRead).rule.id) == "project.filesystem.2");
    CHECK(std::string(p.env("B").rule.id) == "project.env.2");
  }
  SECTION("a bad layer key is an error") {
    auto r = parseLayer("layer: \"two words\"\n", "team.yaml", "");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message().find("team.yaml:1:8: error:") != std::string::npos);
  }
}

TEST_CASE("layering: locking what cannot loosen anything is an error", "[unit][policy][layering]") {
  auto expectError = [](const std::string& text, const std::string& where) {
    auto r = parseLayer(text, "org.yaml", "org");
    INFO(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == ErrorCode::kPolicyInvalid);
    // An empty WHERE accepts any position in the file.
    CHECK(r.error().message().find(where.empty() ? std::string("org.yaml:")
                                                 : "org.yaml:" + where + ": error:") !=
          std::string::npos);
  };
  SECTION("locked allow rule") {
    expectError("network:\n  rules:\n    - allow: x.example.com\n      locked: true\n", "3:7");
  }
  SECTION("locked read-write rule") {
    expectError("filesystem:\n  rules:\n    - read-write: /x\n      locked: true\n", "3:7");
  }
  SECTION("locked env allow rule") {
    expectError("env:\n  rules:\n    - allow: FOO\n      locked: true\n", "3:7");
  }
  SECTION("default_locked on an allow default, default written first") {
    expectError("network:\n  default: allow\n  default_locked: true\n", "3:3");
  }
  SECTION("default_locked on an allow default, default_locked written first") {
    expectError("network:\n  default_locked: true\n  default: allow\n", "");
  }
  SECTION("default_locked on a read-write filesystem default, default_locked written first") {
    expectError("filesystem:\n  default_locked: true\n  default: read-write\n", "");
  }
}

// Found by the policy fuzzer: a later layer's locked audit-mode rule on the
// same path used to win over the org's locked enforced one (equal access,
// so the later one was kept), turning the org's floor into would_deny.
TEST_CASE("a later locked audit-mode rule does not soften an enforced locked floor",
          "[unit][policy][layering]") {
  Policy p = compileOk(
      {orgLayer("filesystem:\n  rules:\n    - hidden: \"/home/u/.ssh\"\n      locked: true\n"),
       projectLayer("filesystem:\n  rules:\n    - hidden: \"/home/u/.ssh\"\n      locked: true\n"
                    "      mode: audit\n")});
  for (FileOp op : {FileOp::kRead, FileOp::kWrite}) {
    Verdict v = p.file("/home/u/.ssh/id_rsa", op);
    CHECK(dec(v) == "deny");
    CHECK(v.access == Access::kHidden);
    CHECK(v.rule.layer == "org");
  }
}

TEST_CASE("a credential's source file is hidden over any rule, in audit mode too",
          "[unit][policy][layering]") {
  Policy p = compileOk(
      {orgLayer("filesystem:\n  default: read-write\n  rules:\n    - read-write: [\"~/keys/gh\"]\n"),
       projectLayer("mode: audit\ncredentials:\n  - name: gh\n    source: {file: ~/keys/gh}\n"
                    "    variable: GH_TOKEN\n    destinations: [api.github.com]\n")});
  for (const char* path : {"/home/alice/keys/gh", "/home/alice/keys/gh/", "/home/alice/keys/gh/x",
                           "/home/alice/keys/../keys/gh"}) {
    INFO(path);
    Verdict v = p.file(path, FileOp::kRead);
    CHECK(dec(v) == "deny");
    CHECK(v.access == Access::kHidden);
    CHECK_RULE(v, "project.credentials.gh.source", "project", "project.yaml", 3);
  }
  CHECK(dec(p.file("/home/alice/keys/gh2", FileOp::kWrite)) == "allow");
  CHECK(dec(p.file("/home/alice/keys", FileOp::kWrite)) == "allow");
  // The view and the binds learn of it as of any hidden path.
  bool listed = false;
  for (const Policy::PathPrefix& pp : p.pathPrefixes()) {
    listed |= pp.prefix == "/home/alice/keys/gh" && pp.access == Access::kHidden && !pp.glob;
  }
  CHECK(listed);
  CHECK(p.subtree("/home/alice/keys") == Policy::Subtree::kSplit);
}

TEST_CASE("more than 64 credentials are refused: the proxy scans for at most 64",
          "[unit][policy][layering]") {
  auto layerWith = [](int n) {
    std::string y = "credentials:\n";
    for (int i = 0; i < n; ++i) {
      y += "  - name: c" + std::to_string(i) + "\n    source: {env: V" + std::to_string(i) +
           "}\n    variable: V" + std::to_string(i) + "\n    destinations: [a.example]\n";
    }
    return y;
  };
  CHECK(compile({projectLayer(layerWith(64))}, testContext()).ok());
  auto r = compile({projectLayer(layerWith(65))}, testContext());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
  CHECK(r.error().message().find("65 credentials") != std::string::npos);
}

TEST_CASE("a locked env glob floors names that hold glob characters themselves",
          "[unit][policy][layering]") {
  // Found by tests/fuzz/policy_fuzz.cc: "SECRET_*r" was allowed by a later
  // layer's "SECRET_*" although the org layer denies "SECRET_*", locked.
  Policy p = compileOk({orgLayer("env:\n  rules:\n    - id: org.floor.secret\n"
                                 "      deny: \"SECRET_*\"\n      locked: true\n"),
                        projectLayer("mode: audit\nenv:\n  default: allow\n  rules:\n"
                                     "    - allow: [SECRET_KEY, \"SECRET_*\", \"*\"]\n")});
  for (const char* name : {"SECRET_KEY", "SECRET_*r", "SECRET_*", "SECRET_?", "SECRET_x"}) {
    INFO(name);
    Verdict v = p.env(name);
    CHECK(dec(v) == "deny");
    CHECK(std::string(v.rule.id) == "org.floor.secret");
  }
  CHECK(dec(p.env("OTHER")) == "allow");
}

}  // namespace
}  // namespace guard::policy
