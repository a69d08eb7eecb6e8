// Integration tests for MCP governance: the real reference servers and the
// real SDK client from npm (tests/mcp, installed by scripts/install-deps.sh)
// run under guard, the client as the agent and the servers as its children,
// started the ways agents start them. Evidence comes from outside the
// session: marker files a denied tool (or a denied server) would have
// written, and the audit log. What the client prints is used only to check
// what it was told (the tool list, the error codes).
//
// Tags [integration][mcp].
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/testing.h"

namespace guard::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string describe(const Run& r) {
  return "status " + std::to_string(r.status) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
}

std::string guardPath() { return fs::absolute(guardBinary()).string(); }

// fixtures is tests/mcp of the tree the guard under test was built from.
std::string fixtures() {
  return fs::path(guardPath()).parent_path().parent_path().string() + "/tests/mcp";
}

std::string serverJs(const std::string& pkg) {
  return fixtures() + "/node_modules/@modelcontextprotocol/" + pkg + "/dist/index.js";
}

void writeText(const std::string& path, const std::string& text, int mode = 0644) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  REQUIRE(chmod(path.c_str(), static_cast<mode_t>(mode)) == 0);
}

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

// World: one test's project, policy and audit log.
//
//   BASE/policy.yaml audit.jsonl
//   BASE/project/            the working directory (read-write), HOME
//   BASE/project/node_modules -> tests/mcp/node_modules (so `npx NAME` finds
//                            the servers without the network)
//   BASE/project/files/      the filesystem server's directory
class World {
 public:
  World() {
    REQUIRE(exists(fixtures() + "/node_modules/@modelcontextprotocol/sdk"));
    std::string tmpl = "/var/tmp/guard-mcp-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    REQUIRE(mkdtemp(buf.data()) != nullptr);
    base = buf.data();
    REQUIRE(chmod(base.c_str(), 0755) == 0);
    project = base + "/project";
    files = project + "/files";
    policy = base + "/policy.yaml";
    audit = base + "/audit.jsonl";
    fs::create_directories(files);
    fs::create_symlink(fixtures() + "/node_modules", project + "/node_modules");
    writeText(files + "/a.txt", "hello from the host\n");
    writeText(policy,
              "version: 1\n"
              "layer: mcp-test\n"
              "filesystem:\n"
              "  default: hidden\n"
              "  rules:\n"
              "    - read-only: [/usr, /bin, /lib, /lib64, /etc, \"" + fixtures() + "\"]\n"
              "    - read-write: [\"{project}\"]\n"
              "env:\n"
              "  default: deny\n"
              "  rules:\n"
              "    - allow: [PATH, HOME, LANG]\n"
              "mcp:\n"
              "  default: deny\n"
              "  servers:\n"
              "    - name: files\n"
              "      command: [npx, mcp-server-filesystem, \"**\"]\n"
              "      tools: {deny: [write_file, edit_file, move_file]}\n"
              "    - name: everything\n"
              "      command: [node, \"**/server-everything/dist/index.js\", \"**\"]\n"
              "      tools: {allow: [echo, get-sum]}\n"
              "      arguments: full\n"
              "    - name: paged\n"
              "      command: [node, \"**/paged-server.mjs\", \"**\"]\n"
              "      tools: {deny: [tool-2, tool-6]}\n"
              "    - name: shell\n"
              "      command: [\"**/blocked-mcp\", \"**\"]\n"
              "      allow: false\n");
  }
  ~World() {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  // guard runs ARGV in the session, in the project.
  Run guard(const std::vector<std::string>& argv, int timeout_ms = 60000) const {
    std::vector<std::string> full = {guardPath(), "--policy", policy, "--audit", audit, "--"};
    full.insert(full.end(), argv.begin(), argv.end());
    return runProgram(full, project,
                      {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + project, "LANG=C.UTF-8"},
                      timeout_ms);
  }

  // client runs the SDK client in the session against SERVER (stdio) and
  // returns what it printed.
  json client(const json& ops, const std::vector<std::string>& server) const {
    std::vector<std::string> argv = {"node", fixtures() + "/client.mjs", "--ops", ops.dump(),
                                     "--"};
    argv.insert(argv.end(), server.begin(), server.end());
    Run r = guard(argv);
    INFO(describe(r));
    REQUIRE(r.status == 0);
    json out = json::parse(lastLine(r.out), nullptr, false);
    REQUIRE(out.is_object());
    return out;
  }

  // raw sends LINES to SERVER's stdin from inside the session and returns
  // what came back (tests/mcp/raw.mjs).
  json raw(const std::vector<std::string>& lines, const std::vector<std::string>& server,
           int wait_ms = 1500) const {
    std::vector<std::string> argv = {"node", fixtures() + "/raw.mjs", "--wait",
                                     std::to_string(wait_ms)};
    for (const std::string& l : lines) {
      argv.push_back("--line");
      argv.push_back(l);
    }
    argv.push_back("--");
    argv.insert(argv.end(), server.begin(), server.end());
    Run r = guard(argv);
    INFO(describe(r));
    REQUIRE(r.status == 0);
    json out = json::parse(lastLine(r.out), nullptr, false);
    REQUIRE(out.is_object());
    return out;
  }

  // events returns the audit log's MCP events.
  std::vector<json> events() const {
    std::vector<json> out;
    std::ifstream f(audit);
    std::string line;
    while (std::getline(f, line)) {
      json e = json::parse(line, nullptr, false);
      if (e.is_object() && e.value("surface", "") == "mcp") {
        out.push_back(e);
      }
    }
    return out;
  }

  static std::string lastLine(const std::string& s) {
    std::string t = s;
    while (!t.empty() && t.back() == '\n') {
      t.pop_back();
    }
    size_t nl = t.rfind('\n');
    return nl == std::string::npos ? t : t.substr(nl + 1);
  }

  std::string base, project, files, policy, audit;
};

json call(const std::string& name, const json& args) {
  return {{"op", "call"}, {"name", name}, {"args", args}};
}

std::string rpc(int id, const std::string& method, const json& params) {
  return json{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}}.dump();
}

std::string writeCall(int id, const std::string& name, const std::string& path) {
  return rpc(id, "tools/call", {{"name", name}, {"arguments", {{"path", path}, {"content", "x"}}}});
}

const std::string kInit = rpc(0, "initialize",
                              {{"protocolVersion", "2025-06-18"},
                               {"capabilities", json::object()},
                               {"clientInfo", {{"name", "raw"}, {"version", "1"}}}});

// errorCodes maps each response id in OUT's stdout lines to its error code
// (0 for a result).
std::map<int, int> errorCodes(const json& out) {
  std::map<int, int> codes;
  auto one = [&](const json& m) {
    if (m.is_object() && m.contains("id") && m["id"].is_number_integer()) {
      codes[m["id"].get<int>()] = m.contains("error") ? m["error"].value("code", 1) : 0;
    }
  };
  for (const json& m : out["stdout_lines"]) {
    if (m.is_array()) {
      for (const json& x : m) {
        one(x);
      }
    } else {
      one(m);
    }
  }
  return codes;
}

TEST_CASE("mcp: an approved stdio server lists and runs only the tools the policy allows",
          "[integration][mcp]") {
  World w;
  std::string marker = w.files + "/written-by-denied-tool";
  json out = w.client({{{"op", "list"}},
                       call("read_text_file", {{"path", w.files + "/a.txt"}}),
                       call("write_file", {{"path", marker}, {"content", "x"}})},
                      {"npx", "mcp-server-filesystem", w.files});
  INFO(out.dump(2));
  REQUIRE(out["connect"]["ok"] == true);
  const json& list = out["results"][0];
  REQUIRE(list["ok"] == true);
  std::vector<std::string> tools = list["tools"];
  CHECK(std::count(tools.begin(), tools.end(), "read_text_file") == 1);
  CHECK(std::count(tools.begin(), tools.end(), "list_directory") == 1);
  for (const char* denied : {"write_file", "edit_file", "move_file"}) {
    CHECK(std::count(tools.begin(), tools.end(), denied) == 0);
  }
  CHECK(out["results"][1]["ok"] == true);
  CHECK(out["results"][1]["text"] == "hello from the host\n");
  CHECK(out["results"][2]["ok"] == false);
  CHECK(out["results"][2]["code"] == -32001);
  CHECK(contains(out["results"][2].value("error", ""), "mcp-test.mcp.files"));
  CHECK_FALSE(exists(marker));

  // One audit event per call, with the rule; arguments hashed by default.
  int allowed = 0, denied = 0;
  for (const json& e : w.events()) {
    if (e["action"] != "tools/call") {
      continue;
    }
    CHECK(e["rule"]["id"] == "mcp-test.mcp.files");
    CHECK(e["details"]["server"] == "files");
    CHECK(e["details"].contains("arguments_sha256"));
    CHECK_FALSE(e["details"].contains("arguments"));
    CHECK(e["details"]["request_bytes"].get<int>() > 0);
    if (e["target"] == "files/read_text_file" && e["decision"] == "allow") {
      ++allowed;
    }
    if (e["target"] == "files/write_file" && e["decision"] == "deny") {
      ++denied;
    }
  }
  CHECK(allowed == 1);
  CHECK(denied == 1);
}

TEST_CASE("mcp: an allow list holds for server-everything, started by its node path",
          "[integration][mcp]") {
  World w;
  json out = w.client({{{"op", "list"}},
                       call("echo", {{"message", "hi"}}),
                       call("get-env", json::object()),
                       {{"op", "list"}}},
                      {"node", serverJs("server-everything"), "stdio"});
  INFO(out.dump(2));
  REQUIRE(out["connect"]["ok"] == true);
  // server-everything sends notifications/tools/list_changed after
  // initialization; every later list is filtered all the same.
  for (int i : {0, 3}) {
    std::vector<std::string> tools = out["results"][i]["tools"];
    std::sort(tools.begin(), tools.end());
    CHECK(tools == std::vector<std::string>{"echo", "get-sum"});
  }
  CHECK(out["results"][1]["text"] == "Echo: hi");
  CHECK(out["results"][2]["code"] == -32001);
  bool full_args = false;
  for (const json& e : w.events()) {
    if (e["action"] == "tools/call" && e["target"] == "everything/echo") {
      full_args = e["details"]["arguments"] == json{{"message", "hi"}};
    }
  }
  CHECK(full_args);  // arguments: full
}

TEST_CASE("mcp: pagination cursors survive the filter", "[integration][mcp]") {
  World w;
  json out = w.client({{{"op", "list"}}},
                      {"node", fixtures() + "/paged-server.mjs", "--tools", "8", "--page-size", "3"});
  INFO(out.dump(2));
  REQUIRE(out["results"][0]["ok"] == true);
  CHECK(out["results"][0]["pages"] == 3);
  std::vector<std::string> tools = out["results"][0]["tools"];
  CHECK(tools == std::vector<std::string>{"tool-1", "tool-3", "tool-4", "tool-5", "tool-7",
                                          "tool-8"});
}

TEST_CASE("mcp: denied calls are refused however they are sent", "[integration][mcp]") {
  World w;
  std::string m = w.files + "/m";
  json out = w.raw(
      {
          writeCall(1, "write_file", m + "1"),  // before initialize
          "[" + rpc(2, "tools/list", json::object()) + "," + writeCall(3, "write_file", m + "3") +
              "]",                              // in a batch
          kInit,
          json{{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}}.dump(),
          // A JSON escape spells the same name: the filter decodes as the server does.
          R"({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"\u0077rite_file","arguments":{"path":")" +
              m + R"(4","content":"x"}}})",
          writeCall(5, "Write_File", m + "5"),   // the server's names are exact
          writeCall(6, "write_file ", m + "6"),
          "{this is not json",
          rpc(7, "tools/call", {{"name", "read_text_file"}, {"arguments", {{"path", w.files + "/a.txt"}}}}),
      },
      {"npx", "mcp-server-filesystem", w.files});
  INFO(out.dump(2));
  for (int i : {1, 3, 4, 5, 6}) {
    CHECK_FALSE(exists(m + std::to_string(i)));
  }
  std::map<int, int> codes = errorCodes(out);
  CHECK(codes[1] == -32001);
  CHECK(codes[2] == -32001);  // the batch is refused whole
  CHECK(codes[3] == -32001);
  CHECK(codes[4] == -32001);
  CHECK(codes[7] == 0);  // the server still works after all that
  bool parse_error = false;
  for (const json& l : out["stdout_lines"]) {
    parse_error = parse_error || (l.is_object() && l.contains("error") &&
                                  l["error"].value("code", 0) == -32700);
  }
  CHECK(parse_error);
}

TEST_CASE("mcp: an oversized message is refused and the session goes on", "[integration][mcp]") {
  World w;
  std::string big(9u << 20, 'x');
  json out = w.raw({kInit, "{\"pad\":\"" + big + "\"}",
                    rpc(8, "tools/call", {{"name", "echo"}, {"arguments", {{"message", "after"}}}})},
                   {"node", serverJs("server-everything"), "stdio"}, 2500);
  INFO(out.dump().substr(0, 4000));
  std::map<int, int> codes = errorCodes(out);
  CHECK(codes[0] == 0);
  CHECK(codes[8] == 0);
  bool refused = false;
  for (const json& l : out["stdout_lines"]) {
    refused = refused || (l.is_object() && l.contains("error") &&
                          l["error"].value("code", 0) == -32600);
  }
  CHECK(refused);
}

TEST_CASE("mcp: servers the policy does not approve never run, however they are started",
          "[integration][mcp]") {
  World w;
  std::string js = serverJs("server-filesystem");
  writeText(w.project + "/run-server.sh", "#!/bin/sh\nexec node " + js + " \"$@\"\n", 0755);
  struct Way {
    const char* name;
    std::vector<std::string> argv;
  };
  std::vector<Way> ways = {
      {"its node path (the entry names it by npx)", {"node", js, w.files}},
      {"sh -c", {"sh", "-c", "exec node " + js + " " + w.files}},
      {"a wrapper script", {w.project + "/run-server.sh", w.files}},
      {"env -u LD_PRELOAD", {"env", "-u", "LD_PRELOAD", "node", js, w.files}},
      {"a cleared environment", {"env", "-i", "/usr/bin/node", js, w.files}},
  };
  for (const Way& way : ways) {
    SECTION(way.name) {
      std::string marker = w.files + "/unapproved-wrote";
      json out = w.raw({writeCall(1, "write_file", marker), kInit}, way.argv);
      INFO(out.dump(2));
      CHECK_FALSE(exists(marker));
      std::map<int, int> codes = errorCodes(out);
      CHECK(codes[1] == -32001);
      CHECK(codes[0] == -32001);
      CHECK(contains(out.value("stderr", ""), "guard: "));
      CHECK(out["exit"] == 126);
    }
  }
}

TEST_CASE("mcp: a denied server entry never starts and the client is told on initialize",
          "[integration][mcp]") {
  World w;
  std::string started = w.project + "/blocked-started";
  writeText(w.project + "/blocked-mcp", "#!/bin/sh\necho started > " + started + "\nexec cat\n",
            0755);
  json out = w.client({{{"op", "list"}}}, {w.project + "/blocked-mcp"});
  INFO(out.dump(2));
  CHECK(out["connect"]["ok"] == false);
  CHECK(out["connect"]["code"] == -32001);
  CHECK(contains(out["connect"].value("error", ""), "mcp-test.mcp.shell"));
  CHECK_FALSE(exists(started));
  bool audited = false;
  for (const json& e : w.events()) {
    audited = audited || (e["action"] == "start" && e["target"] == "shell" &&
                          e["decision"] == "deny" && e["rule"]["id"] == "mcp-test.mcp.shell");
  }
  CHECK(audited);
}

TEST_CASE("mcp: guard mcp-wrap filters a server outside a session", "[integration][mcp]") {
  World w;
  std::string marker = w.files + "/wrap-marker";
  Run r = runProgram({"node", fixtures() + "/raw.mjs", "--wait", "1500", "--line", kInit,
                      "--line", writeCall(1, "write_file", marker), "--line",
                      rpc(2, "tools/call", {{"name", "list_directory"}, {"arguments", {{"path", w.files}}}}),
                      "--", guardPath(), "mcp-wrap", "--policy", w.policy, "--audit", w.audit,
                      "--", "npx", "mcp-server-filesystem", w.files},
                     w.project, {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + w.project});
  INFO(describe(r));
  json out = json::parse(World::lastLine(r.out), nullptr, false);
  REQUIRE(out.is_object());
  std::map<int, int> codes = errorCodes(out);
  CHECK(codes[0] == 0);
  CHECK(codes[1] == -32001);
  CHECK(codes[2] == 0);
  CHECK_FALSE(exists(marker));

  // An unknown server: the client gets the error, the server never runs.
  r = runProgram({"node", fixtures() + "/raw.mjs", "--wait", "500", "--line", kInit, "--",
                  guardPath(), "mcp-wrap", "--policy", w.policy, "--audit", w.audit, "--", "node",
                  serverJs("server-filesystem"), w.files},
                 w.project, {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + w.project});
  out = json::parse(World::lastLine(r.out), nullptr, false);
  REQUIRE(out.is_object());
  CHECK(errorCodes(out)[0] == -32001);
  CHECK(out["exit"] == 126);
}

}  // namespace
}  // namespace guard::testing
