// Integration tests for the guard command line: runs the real binary
// (guard::testing::guardBinary()) in temporary directories with a controlled
// environment, so no /etc/guard, user or project policy of the machine leaks
// in. Covers help, `policy check|default|explain|show`, layer discovery, the
// trust checks on the system directory, `guard -- CMD`, and which TLS library
// the binary loads.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "policy/policy.h"
#include "tests/testing.h"

namespace guard::testing {
namespace {

std::string guardPath() {
  std::string b = guardBinary();
  if (!b.empty() && b[0] != '/') {
    b = std::filesystem::absolute(b).string();
  }
  return b;
}

std::string currentUser() {
  struct passwd* pw = getpwuid(geteuid());
  return pw != nullptr ? pw->pw_name : std::to_string(geteuid());
}

// Sandbox is one test's world: a project directory (the cwd), a system
// directory (GUARD_SYSTEM_DIR, created only on request), an XDG config home
// and a HOME, all inside one TempDir.
class Sandbox {
 public:
  Sandbox() {
    project = dir.path() + "/project";
    sys = dir.path() + "/etc-guard";
    xdg = dir.path() + "/xdg";
    home = dir.path() + "/home";
    std::filesystem::create_directories(project);
    std::filesystem::create_directories(xdg);
    std::filesystem::create_directories(home);
  }

  // makeSystemDir creates GUARD_SYSTEM_DIR with mode 0755.
  void makeSystemDir() {
    std::filesystem::create_directories(sys);
    REQUIRE(chmod(sys.c_str(), 0755) == 0);
  }

  std::vector<std::string> env() const {
    const char* path = getenv("PATH");
    return {"PATH=" + std::string(path != nullptr ? path : "/usr/bin:/bin"), "HOME=" + home,
            "GUARD_SYSTEM_DIR=" + sys, "XDG_CONFIG_HOME=" + xdg, "LANG=C"};
  }

  // write puts TEXT at PATH (absolute), creating parents.
  static std::string writeAt(const std::string& path, const std::string& text, int mode = 0644) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    REQUIRE(chmod(path.c_str(), static_cast<mode_t>(mode)) == 0);
    return path;
  }

  // trustProject approves the project's .guard.yaml as a user would.
  void trustProject() const {
    Run r = guard({"policy", "trust"});
    INFO(r.err);
    REQUIRE(r.status == 0);
  }

  Run guard(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {guardPath()};
    argv.insert(argv.end(), args.begin(), args.end());
    return runProgram(argv, project, env());
  }

  TempDir dir;
  std::string project;
  std::string sys;
  std::string xdg;
  std::string home;
};

// layerLines returns the "#   LAYER  FILE" lines of `policy show`, in order.
std::vector<std::string> layerLines(const std::string& show) {
  std::vector<std::string> out;
  std::istringstream in(show);
  std::string line;
  bool in_block = false;
  while (std::getline(in, line)) {
    if (line == "# layers, lowest first:") {
      in_block = true;
      continue;
    }
    if (in_block) {
      if (line.rfind("#   ", 0) != 0) {
        break;
      }
      out.push_back(line.substr(4));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Help.
// ---------------------------------------------------------------------------

TEST_CASE("cli: guard --help and guard policy --help teach the commands", "[integration][cli]") {
  Sandbox s;
  Run top = s.guard({"--help"});
  INFO(describe(top));
  CHECK(top.status == 0);
  CHECK(contains(top.out, "explain"));
  CHECK(contains(top.out, "show"));
  CHECK(contains(top.out, "--policy"));
  CHECK(contains(top.out, "guard -- "));

  Run pol = s.guard({"policy", "--help"});
  INFO(describe(pol));
  CHECK(pol.status == 0);
  for (const char* sub : {"check", "show", "default", "explain"}) {
    CHECK(contains(pol.out, sub));
  }

  Run exp = s.guard({"policy", "explain", "--help"});
  INFO(describe(exp));
  CHECK(exp.status == 0);
  CHECK(contains(exp.out, "net HOST[:PORT]"));
  CHECK(contains(exp.out, "exit 0 allow, 3 deny"));

  SECTION("no arguments at all is a usage error that still teaches") {
    Run none = s.guard({});
    INFO(describe(none));
    CHECK(none.status == 2);
    CHECK(contains(none.out + none.err, "explain"));
  }
  SECTION("an unknown sub-command is a usage error") {
    Run bad = s.guard({"policy", "frobnicate"});
    INFO(describe(bad));
    CHECK(bad.status == 2);
  }
}

// ---------------------------------------------------------------------------
// policy check and policy default.
// ---------------------------------------------------------------------------

TEST_CASE("cli: policy check accepts a good file and reports file:line:col for a bad one",
          "[integration][cli]") {
  Sandbox s;
  Sandbox::writeAt(s.project + "/good.yaml",
                   "version: 1\n"
                   "network:\n"
                   "  default: deny\n"
                   "  rules:\n"
                   "    - allow: [registry.npmjs.org, \"*.github.com\"]\n"
                   "      ports: [443]\n"
                   "filesystem:\n"
                   "  rules:\n"
                   "    - read-write: \"{project}\"\n"
                   "    - hidden: [\"~/.ssh\", \"**/.env\"]\n");
  Sandbox::writeAt(s.project + "/bad.yaml",
                   "network:\n"
                   "  rules:\n"
                   "    - allow: x.example.com\n"
                   "      prots: [443]\n");
  Sandbox::writeAt(s.project + "/syntax.yaml", "network:\n  rules: [\n");
  Sandbox::writeAt(s.project + "/locked.yaml",
                   "network:\n  rules:\n    - allow: x.example.com\n      locked: true\n");

  SECTION("good") {
    Run r = s.guard({"policy", "check", "good.yaml"});
    INFO(describe(r));
    CHECK(r.status == 0);
    CHECK(contains(r.out, "good.yaml: ok"));
    CHECK(r.err.empty());
  }
  SECTION("bad: unknown key") {
    Run r = s.guard({"policy", "check", "bad.yaml"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(r.err.rfind("bad.yaml:4:7: error:", 0) == 0);
    CHECK(contains(r.err, "prots"));
    CHECK(contains(r.err, "hint:"));
    CHECK_FALSE(contains(r.out, "ok"));
  }
  SECTION("bad: YAML syntax") {
    Run r = s.guard({"policy", "check", "syntax.yaml"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(r.err.rfind("syntax.yaml:", 0) == 0);
    CHECK(contains(r.err, ": error:"));
  }
  SECTION("bad: a locked allow rule") {
    Run r = s.guard({"policy", "check", "locked.yaml"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(contains(r.err, "locked.yaml:3:7: error:"));
  }
  SECTION("several files: every one is checked, any error fails") {
    Run r = s.guard({"policy", "check", "good.yaml", "bad.yaml"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(contains(r.out, "good.yaml: ok"));
    CHECK(contains(r.err, "bad.yaml:4:7: error:"));
  }
  SECTION("a missing file") {
    Run r = s.guard({"policy", "check", "missing.yaml"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(contains(r.err, "missing.yaml"));
  }
  SECTION("no file is a usage error") {
    Run r = s.guard({"policy", "check"});
    INFO(describe(r));
    CHECK(r.status == 2);
  }
}

TEST_CASE("cli: policy default prints YAML that policy check accepts", "[integration][cli]") {
  Sandbox s;
  Run d = s.guard({"policy", "default"});
  INFO(describe(d));
  REQUIRE(d.status == 0);
  CHECK(d.out == std::string(guard::policy::defaultPolicyText()));
  CHECK(contains(d.out, "network:"));
  CHECK(contains(d.out, "filesystem:"));
  Sandbox::writeAt(s.project + "/start.yaml", d.out);
  Run c = s.guard({"policy", "check", "start.yaml"});
  INFO(describe(c));
  CHECK(c.status == 0);
  CHECK(contains(c.out, "start.yaml: ok"));
}

// ---------------------------------------------------------------------------
// policy explain.
// ---------------------------------------------------------------------------

const char* kTeamPolicy =
    "layer: team\n"                          // 1
    "network:\n"                             // 2
    "  default: deny\n"                      // 3
    "  rules:\n"                             // 4
    "    - allow: allowed.example.com\n"     // 5
    "      id: team-allow\n"                 // 6
    "      reason: the team's host\n"        // 7
    "    - deny: 10.0.0.0/8\n"               // 8
    "filesystem:\n"                          // 9
    "  default: hidden\n"                    // 10
    "  rules:\n"                             // 11
    "    - read-write: \"{project}\"\n"      // 12
    "    - read-only: /usr\n"                // 13
    "env:\n"                                 // 14
    "  default: deny\n"                      // 15
    "  rules:\n"                             // 16
    "    - allow: PATH\n"                    // 17
    "credentials:\n"                         // 18
    "  - name: gh\n"                         // 19
    "    source: {env: GH_TOKEN}\n"          // 20
    "    destinations: [api.github.com]\n"   // 21
    "mcp:\n"                                 // 22
    "  default: deny\n"                      // 23
    "  servers:\n"                           // 24
    "    - name: files\n"                    // 25
    "      command: [mcp-files]\n"           // 26
    "      tools:\n"                         // 27
    "        allow: [\"read_*\"]\n"          // 28
    "        deny: [read_secret]\n";         // 29

struct ExplainCase {
  std::vector<std::string> request;
  int status;
  std::string rule;    // expected "rule:" value
  std::string source;  // expected suffix of "source:" (":line:col"), or ""
};

TEST_CASE("cli: policy explain exits 0 on allow and 3 on deny, naming rule, layer and source",
          "[integration][cli]") {
  Sandbox s;
  std::string team = Sandbox::writeAt(s.project + "/team.yaml", kTeamPolicy);
  const std::vector<ExplainCase> cases = {
      {{"net", "allowed.example.com"}, 0, "team-allow", ":5:7"},
      {{"net", "allowed.example.com:8443"}, 0, "team-allow", ":5:7"},
      {{"net", "evil.example.com"}, 3, "team.network.default", ":3:12"},
      {{"net", "10.1.2.3:22"}, 3, "team.network.2", ":8:7"},
      {{"net", "[::1]:80"}, 3, "team.network.default", ":3:12"},
      {{"dns", "allowed.example.com"}, 0, "team-allow", ":5:7"},
      {{"dns", "evil.example.com"}, 3, "team.network.default", ":3:12"},
      {{"file", "read", "notes.txt"}, 0, "team.filesystem.1", ":12:7"},
      {{"file", "write", s.project + "/src/a.c"}, 0, "team.filesystem.1", ":12:7"},
      {{"file", "read", "/usr/bin/cc"}, 0, "team.filesystem.2", ":13:7"},
      {{"file", "write", "/usr/bin/cc"}, 3, "team.filesystem.2", ":13:7"},
      {{"file", "read", "/etc/shadow"}, 3, "team.filesystem.default", ":10:12"},
      {{"mcp", "files", "read_file"}, 0, "team.mcp.files", ":25:7"},
      {{"mcp", "files", "read_secret"}, 3, "team.mcp.files", ":25:7"},
      {{"mcp", "shell", "run"}, 3, "team.mcp.default", ":23:12"},
      {{"cred", "gh", "api.github.com"}, 0, "team.credentials.gh", ":19:5"},
      {{"cred", "gh", "evil.example.com"}, 3, "team.credentials.gh", ":19:5"},
      {{"cred", "aws", "api.github.com"}, 3, "builtin.credentials.default", ""},
      {{"env", "PATH"}, 0, "team.env.1", ":17:7"},
      {{"env", "AWS_SECRET_ACCESS_KEY"}, 3, "team.env.default", ":15:12"},
  };
  for (const ExplainCase& c : cases) {
    // The request first, then --policy: see the next test for the other order.
    std::vector<std::string> args = {"policy", "explain"};
    args.insert(args.end(), c.request.begin(), c.request.end());
    args.insert(args.end(), {"--policy", "team.yaml"});
    Run r = s.guard(args);
    INFO(describe(r));
    CHECK(r.status == c.status);
    CHECK(r.out.rfind(c.status == 0 ? "allow: " : "deny: ", 0) == 0);
    CHECK(contains(r.out, "  rule:   " + c.rule));
    if (c.rule.rfind("builtin.", 0) == 0) {
      CHECK(contains(r.out, "  layer:  builtin"));
    } else {
      CHECK(contains(r.out, "  layer:  team\n"));
      CHECK(contains(r.out, "  source: team.yaml" + c.source + "\n"));
    }
  }

  SECTION("the reason is printed") {
    Run r = s.guard({"policy", "explain", "net", "allowed.example.com", "--policy", "team.yaml"});
    INFO(describe(r));
    CHECK(contains(r.out, "  reason: the team's host"));
    CHECK(contains(r.out, "connect allowed.example.com:443"));
  }
  SECTION("file access is shown") {
    Run r = s.guard({"policy", "explain", "file", "write", "/usr/bin/cc", "--policy", "team.yaml"});
    INFO(describe(r));
    CHECK(contains(r.out, "(read-only)"));
  }
}

TEST_CASE("cli: policy explain --policy FILE before the request", "[integration][cli]") {
  // The natural order, as in `guard policy explain --policy team.yaml net HOST`:
  // --policy takes one file per occurrence and the rest is the request.
  Sandbox s;
  std::string a = Sandbox::writeAt(s.project + "/a.yaml",
                                   "network:\n  rules:\n    - deny: allowed.example.com\n");
  Sandbox::writeAt(s.project + "/team.yaml", kTeamPolicy);
  Run one = s.guard({"policy", "explain", "--policy", "team.yaml", "net", "allowed.example.com"});
  INFO(describe(one));
  CHECK(one.status == 0);
  CHECK(contains(one.out, "  rule:   team-allow"));
  Run two = s.guard({"policy", "explain", "--policy", "a.yaml", "--policy", "team.yaml", "env",
                     "PATH"});
  INFO(describe(two));
  CHECK(two.status == 0);
  CHECK(contains(two.out, "  rule:   team.env.1"));
  Run top = s.guard({"--policy", "team.yaml", "policy", "explain", "env", "PATH"});
  INFO(describe(top));
  CHECK(top.status == 0);
  CHECK(contains(top.out, "  layer:  team\n"));
}

TEST_CASE("cli: policy explain exits 2 on usage errors", "[integration][cli]") {
  Sandbox s;
  Sandbox::writeAt(s.project + "/team.yaml", kTeamPolicy);
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"bogus", "x"},
      {"net"},
      {"net", "a.example.com", "b.example.com"},
      {"net", "a.example.com:99999"},
      {"net", "a.example.com:0"},
      {"net", "a.example.com:http"},
      {"dns"},
      {"file", "delete", "/x"},
      {"file", "read"},
      {"mcp", "files"},
      {"cred", "gh"},
      {"env"},
      {"env", "A", "B"},
  };
  for (const auto& req : bad) {
    std::vector<std::string> args = {"policy", "explain"};
    args.insert(args.end(), req.begin(), req.end());
    args.insert(args.end(), {"--policy", "team.yaml"});
    Run r = s.guard(args);
    INFO(describe(r));
    CHECK(r.status == 2);
    CHECK_FALSE(r.err.empty());
    CHECK(r.out.rfind("allow", 0) != 0);
  }
  SECTION("a --policy file that does not exist") {
    Run r = s.guard({"policy", "explain", "net", "x.example.com", "--policy", "missing.yaml"});
    INFO(describe(r));
    CHECK(r.status == 2);
  }
  SECTION("an invalid --policy file is a policy error, not a decision") {
    Sandbox::writeAt(s.project + "/broken.yaml", "network:\n  bogus: 1\n");
    Run r = s.guard({"policy", "explain", "net", "x.example.com", "--policy", "broken.yaml"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(contains(r.err, "broken.yaml:2:3: error:"));
  }
}

TEST_CASE("cli: policy explain without any layer uses the embedded default",
          "[integration][cli]") {
  Sandbox s;  // no system dir, no user or project policy
  Run ok = s.guard({"policy", "explain", "net", "registry.npmjs.org"});
  INFO(describe(ok));
  CHECK(ok.status == 0);
  CHECK(contains(ok.out, "  rule:   default.network.registries"));
  CHECK(contains(ok.out, "  layer:  default\n"));
  CHECK(contains(ok.out, "  source: <default>:"));
  Run no = s.guard({"policy", "explain", "net", "169.254.169.254:80"});
  INFO(describe(no));
  CHECK(no.status == 3);
  CHECK(contains(no.out, "default.network.internal"));
  Run env = s.guard({"policy", "explain", "env", "AWS_SECRET_ACCESS_KEY"});
  CHECK(env.status == 3);
  Run dotenv = s.guard({"policy", "explain", "file", "read", ".env"});
  INFO(describe(dotenv));
  CHECK(dotenv.status == 3);
  CHECK(contains(dotenv.out, "(hidden)"));
}

// ---------------------------------------------------------------------------
// policy show and layer discovery.
// ---------------------------------------------------------------------------

TEST_CASE("cli: policy show with two --policy files names both and each rule's source",
          "[integration][cli]") {
  Sandbox s;
  std::string a = Sandbox::writeAt(s.project + "/a.yaml",
                                   "network:\n  rules:\n    - deny: x.example.com\n");
  std::string b = Sandbox::writeAt(s.project + "/b.yaml",
                                   "layer: team\nnetwork:\n  rules:\n    - allow: y.example.com\n"
                                   "env:\n  rules:\n    - allow: PATH\n");
  Run r = s.guard({"policy", "show", "--policy", a, "--policy", b});
  INFO(describe(r));
  REQUIRE(r.status == 0);
  std::vector<std::string> layers = layerLines(r.out);
  REQUIRE(layers.size() == 2);
  CHECK(layers[0] == "a  " + a);
  CHECK(layers[1] == "team  " + b);
  CHECK(contains(r.out, "# a.network.1  layer a  " + a + ":3:7"));
  CHECK(contains(r.out, "# team.network.1  layer team  " + b + ":4:7"));
  CHECK(contains(r.out, "# team.env.1  layer team  " + b + ":7:7"));
  // --policy replaces user and project; the embedded default is not added.
  CHECK_FALSE(contains(r.out, "<default>"));
  // The rules appear lowest layer first.
  CHECK(r.out.find("a.network.1") < r.out.find("team.network.1"));
}

TEST_CASE("cli: a project policy applies only in the form the user trusted",
          "[integration][cli]") {
  Sandbox s;
  std::string prj = Sandbox::writeAt(s.project + "/.guard.yaml",
                                     "network:\n  rules:\n    - allow: extra.example.com\n");
  Run before = s.guard({"policy", "explain", "net", "extra.example.com"});
  CHECK(before.status == 1);
  CHECK(contains(before.err, prj + ": error: this project policy is not trusted yet"));
  CHECK(contains(before.err, "guard policy trust"));
  Run cmd = s.guard({"--", "true"});
  CHECK(cmd.status == 1);
  CHECK(contains(cmd.err, "not trusted"));

  s.trustProject();
  Run after = s.guard({"policy", "explain", "net", "extra.example.com"});
  INFO(describe(after));
  CHECK(after.status == 0);
  CHECK(contains(after.out, "project.network.1"));

  // Any change, by the agent or anyone else, needs a new approval.
  Sandbox::writeAt(prj, "network:\n  rules:\n    - allow: \"*\"\n");
  Run changed = s.guard({"policy", "explain", "net", "anything.example"});
  CHECK(changed.status == 1);
  CHECK(contains(changed.err, "not trusted"));
}

TEST_CASE("cli: discovery layers org, groups, user and project in that order",
          "[integration][cli]") {
  if (geteuid() != 0) {
    GUARD_SKIP("needs root: the system directory must be root-owned");
  }
  Sandbox s;
  s.makeSystemDir();
  std::string user = currentUser();
  std::string org = Sandbox::writeAt(s.sys + "/org.yaml",
                                     "network:\n  rules:\n    - deny: evil.example.com\n"
                                     "      locked: true\n      reason: org says no\n");
  Sandbox::writeAt(s.sys + "/groups.yaml",
                   "users:\n  someone-else: [ops]\n  " + user + ": [sre, eng]\n");
  std::string sre = Sandbox::writeAt(s.sys + "/groups/sre.yaml",
                                     "network:\n  rules:\n    - allow: sre.example.com\n");
  std::string eng = Sandbox::writeAt(s.sys + "/groups/eng.yaml",
                                     "network:\n  rules:\n    - allow: eng.example.com\n");
  Sandbox::writeAt(s.sys + "/groups/ops.yaml",
                   "network:\n  rules:\n    - allow: ops.example.com\n");
  REQUIRE(chmod((s.sys + "/groups").c_str(), 0755) == 0);
  std::string usr = Sandbox::writeAt(s.xdg + "/guard/policy.yaml",
                                     "env:\n  rules:\n    - allow: PATH\n");
  std::string prj = Sandbox::writeAt(s.project + "/.guard.yaml",
                                     "network:\n  rules:\n    - allow: evil.example.com\n");
  s.trustProject();

  Run r = s.guard({"policy", "show"});
  INFO(describe(r));
  REQUIRE(r.status == 0);
  std::vector<std::string> layers = layerLines(r.out);
  std::vector<std::string> want = {"org  " + org, "group:sre  " + sre, "group:eng  " + eng,
                                   "user  " + usr, "project  " + prj};
  CHECK(layers == want);
  CHECK(contains(r.out, "# user " + user + ", groups [sre, eng]"));
  CHECK(contains(r.out, "# group:sre.network.1  layer group:sre  " + sre + ":3:7"));
  CHECK(contains(r.out, "# project.network.1  layer project  " + prj + ":3:7"));
  // With an org layer the embedded default is not the base.
  CHECK_FALSE(contains(r.out, "<default>"));
  CHECK_FALSE(contains(r.out, "ops.example.com"));

  SECTION("the locked org deny holds against the project's allow") {
    Run e = s.guard({"policy", "explain", "net", "evil.example.com"});
    INFO(describe(e));
    CHECK(e.status == 3);
    CHECK(contains(e.out, "  rule:   org.network.1 (locked)"));
    CHECK(contains(e.out, "  layer:  org\n"));
    CHECK(contains(e.out, "  source: " + org + ":3:7"));
    CHECK(contains(e.out, "  reason: org says no"));
  }
  SECTION("--policy replaces user and project, but org and groups still apply") {
    std::string loose = Sandbox::writeAt(s.project + "/loose.yaml",
                                         "network:\n  default: allow\n  rules:\n"
                                         "    - allow: evil.example.com\n");
    Run show = s.guard({"policy", "show", "--policy", loose});
    INFO(describe(show));
    REQUIRE(show.status == 0);
    std::vector<std::string> want_explicit = {"org  " + org, "group:sre  " + sre,
                                              "group:eng  " + eng, "loose  " + loose};
    CHECK(layerLines(show.out) == want_explicit);
    Run e = s.guard({"policy", "explain", "net", "evil.example.com", "--policy", loose});
    INFO(describe(e));
    CHECK(e.status == 3);
    CHECK(contains(e.out, "org.network.1"));
    Run g = s.guard({"policy", "explain", "net", "eng.example.com", "--policy", loose});
    CHECK(g.status == 0);
    // A rule (in group:eng) beats the explicit file's default.
    CHECK(contains(g.out, "  layer:  group:eng\n"));
  }
}

TEST_CASE("cli: a locked org deny cannot be loosened by the project layer",
          "[integration][cli]") {
  if (geteuid() != 0) {
    GUARD_SKIP("needs root: the system directory must be root-owned");
  }
  Sandbox s;
  s.makeSystemDir();
  std::string org = Sandbox::writeAt(
      s.sys + "/org.yaml",
      "network:\n  default: allow\n  rules:\n    - deny: 169.254.0.0/16\n      locked: true\n"
      "    - deny: telemetry.evil.example\n      locked: true\n"
      "filesystem:\n  default: read-write\n  rules:\n    - hidden: \"~/.ssh\"\n      locked: true\n");
  Sandbox::writeAt(s.project + "/.guard.yaml",
                   "network:\n  rules:\n    - allow: 169.254.169.254\n"
                   "    - allow: telemetry.evil.example\n"
                   "filesystem:\n  rules:\n    - read-write: \"~/.ssh\"\n");
  s.trustProject();
  Run name = s.guard({"policy", "explain", "net", "telemetry.evil.example"});
  INFO(describe(name));
  CHECK(name.status == 3);
  CHECK(contains(name.out, "  rule:   org.network.2 (locked)"));
  CHECK(contains(name.out, "  layer:  org\n"));
  CHECK(contains(name.out, "  source: " + org + ":6:7"));

  Run net = s.guard({"policy", "explain", "net", "169.254.169.254:80"});
  INFO(describe(net));
  CHECK(net.status == 3);
  CHECK(contains(net.out, "  rule:   org.network.1 (locked)"));
  CHECK(contains(net.out, "  layer:  org\n"));
  CHECK(contains(net.out, "  source: " + org + ":4:7"));

  struct passwd* pw = getpwuid(geteuid());
  REQUIRE(pw != nullptr);
  Run file = s.guard({"policy", "explain", "file", "read", std::string(pw->pw_dir) + "/.ssh/id_rsa"});
  INFO(describe(file));
  CHECK(file.status == 3);
  CHECK(contains(file.out, "  rule:   org.filesystem.1 (locked)"));
  CHECK(contains(file.out, "(hidden)"));
}

TEST_CASE("cli: with no layers at all the embedded default is used", "[integration][cli]") {
  Sandbox s;
  Run r = s.guard({"policy", "show"});
  INFO(describe(r));
  REQUIRE(r.status == 0);
  std::vector<std::string> want = {"default  <default>"};
  CHECK(layerLines(r.out) == want);
  CHECK(contains(r.out, "default.network.registries  layer default  <default>:"));

  SECTION("without an org layer, user and project layer over the default") {
    std::string usr = Sandbox::writeAt(s.xdg + "/guard/policy.yaml", "mode: enforce\n");
    std::string prj = Sandbox::writeAt(s.project + "/.guard.yaml",
                                       "network:\n  rules:\n    - allow: example.org\n");
    s.trustProject();
    Run r2 = s.guard({"policy", "show"});
    INFO(describe(r2));
    REQUIRE(r2.status == 0);
    std::vector<std::string> want2 = {"default  <default>", "user  " + usr, "project  " + prj};
    CHECK(layerLines(r2.out) == want2);
    // The project adjusts the default rather than replacing it.
    Run e = s.guard({"policy", "explain", "net", "example.org"});
    CHECK(e.status == 0);
    Run d = s.guard({"policy", "explain", "net", "registry.npmjs.org"});
    CHECK(d.status == 0);
    CHECK(contains(d.out, "default.network.registries"));
  }
}

TEST_CASE("cli: an untrusted system directory makes guard refuse", "[integration][cli]") {
  if (geteuid() != 0) {
    GUARD_SKIP("needs root: the system directory must be root-owned");
  }
  Sandbox s;
  s.makeSystemDir();
  Sandbox::writeAt(s.sys + "/org.yaml", "network:\n  default: deny\n");
  Sandbox::writeAt(s.sys + "/groups.yaml", "users:\n  " + currentUser() + ": [eng]\n");
  Sandbox::writeAt(s.sys + "/groups/eng.yaml", "network:\n  rules:\n    - deny: x.example.com\n");
  REQUIRE(chmod((s.sys + "/groups").c_str(), 0755) == 0);
  // Sanity: as set up, it is trusted.
  Run ok = s.guard({"policy", "show"});
  INFO(describe(ok));
  REQUIRE(ok.status == 0);

  auto expectRefusal = [&](const std::string& path) {
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"policy", "show"},
          std::vector<std::string>{"policy", "explain", "net", "x.example.com"},
          std::vector<std::string>{"--", "true"}}) {
      Run r = s.guard(args);
      INFO(describe(r));
      CHECK(r.status == 1);
      CHECK(contains(r.err, path));
      CHECK(contains(r.err, "group/world-writable"));
      CHECK(contains(r.err, "hint:"));
    }
  };
  SECTION("world-writable system directory") {
    REQUIRE(chmod(s.sys.c_str(), 0777) == 0);
    expectRefusal(s.sys);
  }
  SECTION("group-writable system directory") {
    REQUIRE(chmod(s.sys.c_str(), 0775) == 0);
    expectRefusal(s.sys);
  }
  SECTION("world-writable org.yaml") {
    REQUIRE(chmod((s.sys + "/org.yaml").c_str(), 0666) == 0);
    expectRefusal(s.sys + "/org.yaml");
  }
  SECTION("group-writable groups.yaml") {
    REQUIRE(chmod((s.sys + "/groups.yaml").c_str(), 0664) == 0);
    expectRefusal(s.sys + "/groups.yaml");
  }
  SECTION("world-writable group layer") {
    REQUIRE(chmod((s.sys + "/groups/eng.yaml").c_str(), 0666) == 0);
    expectRefusal(s.sys + "/groups/eng.yaml");
  }
  SECTION("world-writable groups directory (anyone could delete a group layer)") {
    REQUIRE(chmod((s.sys + "/groups").c_str(), 0777) == 0);
    expectRefusal(s.sys + "/groups");
  }
  SECTION("a system directory not owned by root") {
    REQUIRE(chown(s.sys.c_str(), 65534, 65534) == 0);
    Run r = s.guard({"policy", "show"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(contains(r.err, s.sys));
    CHECK(contains(r.err, "not root-owned"));
  }
}

// ---------------------------------------------------------------------------
// guard -- CMD.
// ---------------------------------------------------------------------------

TEST_CASE("cli: guard -- CMD refuses clearly and never runs the command unconfined",
          "[integration][cli]") {
  Sandbox s;
  std::string marker = s.project + "/ran";
  SECTION("a valid policy: the command runs confined, or guard refuses clearly") {
    // Before host mode existed guard refused every command; since host mode
    // (namespaces + filesystem view) it runs them, unless the machine lacks
    // what confinement needs. Either way it never fails silently.
    Run r = s.guard({"--", "true"});
    INFO(describe(r));
    if (r.status != 0) {
      CHECK(contains(r.err, "guard: "));
    }
  }
  SECTION("an invalid project .guard.yaml exits 1 naming file:line:col") {
    std::string prj = Sandbox::writeAt(s.project + "/.guard.yaml",
                                       "network:\n  rules:\n    - allow: x.example.com\n"
                                       "      bogus: 1\n");
    Run r = s.guard({"--", "true"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(contains(r.err, prj + ":4:7: error:"));
    CHECK(contains(r.err, "refusing to run"));
    Run t = s.guard({"--", "touch", marker});
    CHECK(t.status == 1);
    CHECK_FALSE(std::filesystem::exists(marker));
  }
  SECTION("an invalid user policy is refused the same way") {
    std::string usr = Sandbox::writeAt(s.xdg + "/guard/policy.yaml", "mode: sometimes\n");
    Run r = s.guard({"--", "true"});
    INFO(describe(r));
    CHECK(r.status == 1);
    CHECK(contains(r.err, usr + ":1:7: error:"));
  }
  SECTION("nothing after -- is a usage error") {
    Run r = s.guard({"--"});
    INFO(describe(r));
    CHECK(r.status == 2);
  }
}

// ---------------------------------------------------------------------------
// The TLS library.
// ---------------------------------------------------------------------------

TEST_CASE("cli: guard loads BoringSSL's libcrypto from the android directory, never OpenSSL",
          "[integration][cli][tls]") {
  const std::string bin = guardPath();
  const std::string android = "/usr/lib/x86_64-linux-gnu/android/";
  Run ldd = runProgram({"ldd", bin});
  if (ldd.status == 127) {
    GUARD_SKIP("ldd is not installed");
  }
  INFO(describe(ldd));
  REQUIRE(ldd.status == 0);
  CHECK_FALSE(contains(ldd.out, "libssl.so.3"));
  CHECK_FALSE(contains(ldd.out, "libcrypto.so.3"));
  CHECK_FALSE(contains(ldd.out, "not found"));
  std::istringstream in(ldd.out);
  std::string line;
  int crypto = 0;
  while (std::getline(in, line)) {
    if (contains(line, "libcrypto") || contains(line, "libssl")) {
      INFO(line);
      CHECK(contains(line, "=> " + android));
      crypto += contains(line, "libcrypto") ? 1 : 0;
    }
  }
  CHECK(crypto == 1);

  Run elf = runProgram({"readelf", "-d", bin});
  if (elf.status == 127) {
    return;
  }
  INFO(describe(elf));
  bool needs_crypto = false;
  bool runpath_android = false;
  std::istringstream dyn(elf.out);
  while (std::getline(dyn, line)) {
    needs_crypto = needs_crypto ||
                   (contains(line, "(NEEDED)") && contains(line, "[libcrypto.so"));
    runpath_android = runpath_android ||
                      ((contains(line, "(RUNPATH)") || contains(line, "(RPATH)")) &&
                       contains(line, android.substr(0, android.size() - 1)));
    CHECK_FALSE((contains(line, "(NEEDED)") &&
                 (contains(line, "[libssl.so.3]") || contains(line, "[libcrypto.so.3]"))));
  }
  CHECK(needs_crypto);
  CHECK(runpath_android);
}

}  // namespace
}  // namespace guard::testing
