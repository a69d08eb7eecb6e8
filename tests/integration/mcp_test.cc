// Integration tests for MCP governance: the real reference servers and the
// real SDK client from npm (tests/mcp, installed by scripts/install-deps.sh)
// run under guard, the client as the agent and the servers as its children,
// started the ways agents start them. Evidence comes from outside the
// session: marker files a denied tool (or a denied server) would have
// written, and the audit log. What the client prints is used only to check
// what it was told (the tool list, the error codes).
//
// Tags [integration][mcp].
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/testing.h"

namespace guard::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string guardPath() { return fs::absolute(guardBinary()).string(); }

// fixtures is tests/mcp of the tree this test program was built in
// (build/guard-tests or build-san/guard-tests).
std::string fixtures() {
  return fs::read_symlink("/proc/self/exe").parent_path().parent_path().string() + "/tests/mcp";
}

std::string serverJs(const std::string& pkg) {
  return fixtures() + "/node_modules/@modelcontextprotocol/" + pkg + "/dist/index.js";
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
              "      allow: false\n"
              "    - name: dying\n"
              "      command: [\"**/dying-mcp\"]\n");
  }
  ~World() {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  // guard runs ARGV in the session, in the project.
  Run guard(const std::vector<std::string>& argv, int timeout_ms = 60000) const {
    std::vector<std::string> full = {guardPath()};
    full.insert(full.end(), flags.begin(), flags.end());
    for (const std::string& a :
         {std::string("--policy"), policy, std::string("--audit"), audit, std::string("--")}) {
      full.push_back(a);
    }
    full.insert(full.end(), argv.begin(), argv.end());
    if (!flags.empty()) {
      timeout_ms = std::max(timeout_ms, 240000);  // a VM under TCG emulation
    }
    return runProgram(full, project,
                      {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + project, "LANG=C.UTF-8"},
                      timeout_ms);
  }

  // client runs the SDK client in the session against SERVER (stdio) and
  // returns what it printed.
  json client(const json& ops, const std::vector<std::string>& server) const {
    std::vector<std::string> argv = {"node", fixtures() + "/client.mjs", "--ops", ops.dump()};
    if (!flags.empty()) {
      // Under TCG emulation node and npx take seconds to start a server.
      argv.insert(argv.end(), {"--timeout", "90000"});
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

  // writePy writes a script into the project.
  void writePy(const std::string& name, const std::string& text) const {
    writeText(project + "/" + name, text);
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
  std::vector<std::string> flags;  // guard options before --policy ({"--vm", ...})
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

TEST_CASE("cli: the command after -- reaches the agent verbatim", "[integration][cli]") {
  World w;
  // JSON arguments are what MCP clients are given; brackets once turned
  // into lists on their way through guard's own option parser.
  Run r = w.guard({"/bin/echo", "[1,2]", "[{\"op\":\"list\"}]", "--", "-x", "--policy"});
  INFO(describe(r));
  CHECK(r.status == 0);
  CHECK(r.out == "[1,2] [{\"op\":\"list\"}] -- -x --policy\n");
}

// checkApprovedServerFiltered runs mcp-server-filesystem, approved with
// write tools denied, under W's flags (host or VM mode): the client sees
// and runs only the allowed tools, the denied write never reaches the
// server (its file is absent on the host), and each call is one audit
// event of MODE.
void checkApprovedServerFiltered(const World& w, const std::string& mode) {
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
    CHECK(e["details"].value("mode", "") == mode);
  }
  CHECK(allowed == 1);
  CHECK(denied == 1);
}

TEST_CASE("mcp: an approved stdio server lists and runs only the tools the policy allows",
          "[integration][mcp]") {
  World w;
  checkApprovedServerFiltered(w, "host");
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
  // 9 MiB without a newline, then its newline: one message over the limit.
  std::vector<std::string> argv = {"node", fixtures() + "/raw.mjs", "--wait", "2500", "--line",
                                   kInit, "--bytes", std::to_string(9u << 20), "--line", "",
                                   "--line",
                                   rpc(8, "tools/call",
                                       {{"name", "echo"}, {"arguments", {{"message", "after"}}}}),
                                   "--", "node", serverJs("server-everything"), "stdio"};
  Run r = w.guard(argv);
  INFO(describe(r).substr(0, 4000));
  REQUIRE(r.status == 0);
  json out = json::parse(World::lastLine(r.out), nullptr, false);
  REQUIRE(out.is_object());
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

TEST_CASE("mcp: a message split across reads is still judged; a language server is left alone",
          "[integration][mcp]") {
  World w;
  std::string marker = w.files + "/split-wrote";
  // The client writes one tools/call in two pieces: only the first says
  // "jsonrpc", only the second names the method.
  w.writePy("split.py",
            "import subprocess, sys, time\n"
            "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE,\n"
            "                     stderr=subprocess.PIPE)\n"
            "p.stderr.readline()  # the server is up and reading\n"
            "p.stdin.write(b'{\"jsonrpc\":\"2.0\",\"id\":1,'); p.stdin.flush(); time.sleep(0.5)\n"
            "p.stdin.write(b'\"method\":\"tools/call\",\"params\":{\"name\":\"write_file\",'\n"
            "              b'\"arguments\":{\"path\":\"" + marker + "\",\"content\":\"x\"}}}\\n')\n"
            "p.stdin.flush(); time.sleep(1.5); p.stdin.close()\n"
            "print(p.wait())\n");
  Run r = w.guard({"python3", w.project + "/split.py", "node", serverJs("server-filesystem"),
                   w.files});
  INFO(describe(r));
  CHECK_FALSE(exists(marker));
  CHECK(contains(r.out, "126"));

  // A language server speaks JSON-RPC with Content-Length framing and an
  // initialize without MCP's protocolVersion: it must run undisturbed.
  w.writePy("lsp.py",
            "import os, sys\n"
            "data = b''\n"
            "while b'exit' not in data:\n"
            "    chunk = os.read(0, 4096)\n"
            "    if not chunk: break\n"
            "    data += chunk\n"
            "open(sys.argv[1], 'w').write('lsp read %d bytes' % len(data))\n");
  w.writePy("lsp_client.py",
            "import subprocess, sys, json\n"
            "def frame(m):\n"
            "    b = json.dumps(m).encode()\n"
            "    return b'Content-Length: %d\\r\\n\\r\\n' % len(b) + b\n"
            "p = subprocess.Popen([sys.executable, sys.argv[1], sys.argv[2]], stdin=subprocess.PIPE)\n"
            "p.stdin.write(frame({'jsonrpc': '2.0', 'id': 0, 'method': 'initialize',\n"
            "                     'params': {'processId': 1, 'rootUri': None, 'capabilities': {}}}))\n"
            "p.stdin.write(frame({'jsonrpc': '2.0', 'method': 'exit'}))\n"
            "p.stdin.close()\n"
            "print(p.wait())\n");
  std::string out = w.project + "/lsp.out";
  r = w.guard({"python3", w.project + "/lsp_client.py", w.project + "/lsp.py", out});
  INFO(describe(r));
  CHECK(contains(r.out, "0"));
  CHECK(contains(readFile(out), "lsp read"));
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

// checkDyingServer: a wrapped server that exits mid-conversation ends it
// (the client sees its exit, nothing hangs), and a second server in the
// same session is wrapped and filtered as the first was.
void checkDyingServer(const World& w) {
  writeText(w.project + "/dying-mcp", "#!/bin/sh\nread line\nexit 3\n", 0755);
  // Both in one session: the supervisor outlives the first server.
  std::string raw = "node " + fixtures() + "/raw.mjs --wait 1000 --line '" + kInit + "' -- " +
                    w.project + "/dying-mcp";
  std::string client = "node " + fixtures() + "/client.mjs --ops '[{\"op\":\"list\"}]'" +
                       (w.flags.empty() ? "" : " --timeout 90000") + " -- node " +
                       serverJs("server-everything") + " stdio";
  Run r = w.guard({"sh", "-c", raw + " && echo ---- && " + client});
  INFO(describe(r));
  REQUIRE(r.status == 0);
  size_t sep = r.out.find("----\n");
  REQUIRE(sep != std::string::npos);
  json first = json::parse(World::lastLine(r.out.substr(0, sep)), nullptr, false);
  json second = json::parse(World::lastLine(r.out.substr(sep + 5)), nullptr, false);
  REQUIRE(first.is_object());
  CHECK(first["exit"] == 3);  // the client sees the server's end, nothing hangs
  REQUIRE(second.is_object());
  CHECK(second["connect"]["ok"] == true);
  CHECK(second["results"][0]["tools"].size() == 2);
}

TEST_CASE("mcp: a wrapped server that dies ends its conversation, and the next one works",
          "[integration][mcp]") {
  World w;
  checkDyingServer(w);
}

TEST_CASE("mcp: inside a VM a wrapped server that dies ends its conversation, and the next one "
          "works",
          "[integration][mcp][vm]") {
  GUARD_VM_REQUIRE();
  World w;
  w.flags = {"--vm", "--vm-memory", "512"};
  checkDyingServer(w);
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

namespace guard::testing {
namespace {

// Background is a process the test starts and kills (its whole group).
class Background {
 public:
  Background(const std::vector<std::string>& argv, const std::vector<std::string>& env,
             const std::string& log) {
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      setpgid(0, 0);
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> a;
      for (const std::string& s : argv) {
        a.push_back(const_cast<char*>(s.c_str()));
      }
      a.push_back(nullptr);
      std::vector<char*> e;
      for (const std::string& s : env) {
        e.push_back(const_cast<char*>(s.c_str()));
      }
      e.push_back(nullptr);
      execvpe(a[0], a.data(), e.data());
      _exit(127);
    }
  }
  ~Background() {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

 private:
  pid_t pid_ = -1;
};

int freePort() {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  close(s);
  return ntohs(a.sin_port);
}

bool waitFor(const std::function<bool()>& ready, int ms = 10000) {
  for (int i = 0; i < ms / 50; ++i) {
    if (ready()) {
      return true;
    }
    usleep(50 * 1000);
  }
  return ready();
}

size_t countLines(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// HttpWorld: server-everything over Streamable HTTP (approved as
// "remote") and over the older HTTP+SSE transport (approved as "legacy"),
// plus a second Streamable HTTP instance no entry names ("rogue.test"),
// all on 127.0.0.1; the test's DNS upstream maps the .test names there.
struct HttpWorld {
  World w;
  int http_port = freePort();
  int sse_port = freePort();
  int rogue_port = freePort();
  std::string dns_port_file = w.base + "/dns.port";
  std::unique_ptr<Background> dns, http, sse, rogue;
  std::string dns_port;

  HttpWorld() {
    std::string scripts = fs::path(fixtures()).parent_path().string() + "/net";
    dns = std::make_unique<Background>(
        std::vector<std::string>{"python3", scripts + "/dns_upstream.py", "--listen",
                                 "127.0.0.1:0", "--port-file", dns_port_file, "--map",
                                 "mcp.test=127.0.0.1", "--map", "rogue.test=127.0.0.1", "--log",
                                 w.base + "/dns.log"},
        std::vector<std::string>{"PATH=/usr/bin:/bin"}, w.base + "/dns.out");
    auto server = [&](int port, const char* mode, const std::string& log) {
      return std::make_unique<Background>(
          std::vector<std::string>{"node", "--require", fixtures() + "/loopback.cjs",
                                   serverJs("server-everything"), mode},
          std::vector<std::string>{"PATH=/usr/local/bin:/usr/bin:/bin",
                                   "PORT=" + std::to_string(port)},
          log);
    };
    http = server(http_port, "streamableHttp", w.base + "/http.log");
    sse = server(sse_port, "sse", w.base + "/sse.log");
    rogue = server(rogue_port, "streamableHttp", w.base + "/rogue.log");
    REQUIRE(waitFor([&] { return !readFile(dns_port_file).empty(); }));
    dns_port = readFile(dns_port_file);
    while (!dns_port.empty() && (dns_port.back() == '\n' || dns_port.back() == ' ')) {
      dns_port.pop_back();
    }
    REQUIRE(waitFor([&] {
      return contains(readFile(w.base + "/http.log"), "listening") &&
             contains(readFile(w.base + "/sse.log"), "running") &&
             contains(readFile(w.base + "/rogue.log"), "listening");
    }));
    std::ofstream f(w.policy, std::ios::app);
    f << "    - name: remote\n"
         "      url: http://mcp.test:" << http_port << "/mcp\n"
         "      tools: {allow: [echo, get-sum]}\n"
         "    - name: legacy\n"
         "      url: http://mcp.test:" << sse_port << "/sse\n"
         "      tools: {allow: [echo]}\n"
         "network:\n"
         "  default: deny\n"
         "  rules:\n"
         "    - allow: [mcp.test, rogue.test]\n"
         "      ports: [" << http_port << ", " << sse_port << ", " << rogue_port << "]\n";
  }

  json client(const std::string& transport, const std::string& url, const json& ops) const {
    std::vector<std::string> argv = {guardPath(), "--policy", w.policy, "--audit", w.audit,
                                     "--dns-upstream", "127.0.0.1:" + dns_port, "--",
                                     "node", fixtures() + "/client.mjs", transport, url,
                                     "--ops", ops.dump()};
    Run r = runProgram(argv, w.project,
                       {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + w.project}, 60000);
    INFO(describe(r));
    REQUIRE(r.status == 0);
    json out = json::parse(World::lastLine(r.out), nullptr, false);
    REQUIRE(out.is_object());
    return out;
  }
};

TEST_CASE("mcp: a remote server over Streamable HTTP is filtered by the proxy",
          "[integration][mcp]") {
  HttpWorld h;
  std::string url = "http://mcp.test:" + std::to_string(h.http_port) + "/mcp";
  json base = h.client("--http", url, {{{"op", "list"}}, call("echo", {{"message", "hi"}})});
  size_t posts_base = countLines(readFile(h.w.base + "/http.log"), "Received MCP POST");
  json out = h.client("--http", url,
                      {{{"op", "list"}}, call("echo", {{"message", "hi"}}),
                       call("get-env", json::object())});
  INFO(out.dump(2));
  REQUIRE(out["connect"]["ok"] == true);
  std::vector<std::string> tools = out["results"][0]["tools"];
  std::sort(tools.begin(), tools.end());
  CHECK(tools == std::vector<std::string>{"echo", "get-sum"});
  CHECK(out["results"][1]["text"] == "Echo: hi");
  CHECK(out["results"][2]["code"] == -32001);
  // The denied call never reached the server: the second run made exactly
  // as many POSTs as the first, which did not try it.
  size_t posts = countLines(readFile(h.w.base + "/http.log"), "Received MCP POST");
  CHECK(posts - posts_base == posts_base);
  bool audited = false;
  for (const json& e : h.w.events()) {
    audited = audited || (e["target"] == "remote/get-env" && e["decision"] == "deny" &&
                          e["details"]["transport"] == "http");
  }
  CHECK(audited);
}

TEST_CASE("mcp: a remote server over the older HTTP+SSE transport is filtered too",
          "[integration][mcp]") {
  HttpWorld h;
  std::string url = "http://mcp.test:" + std::to_string(h.sse_port) + "/sse";
  json base = h.client("--sse", url, {{{"op", "list"}}, call("echo", {{"message", "hi"}})});
  size_t msgs_base = countLines(readFile(h.w.base + "/sse.log"), "Client Message");
  json out = h.client("--sse", url,
                      {{{"op", "list"}}, call("echo", {{"message", "hi"}}),
                       call("get-sum", {{"a", 1}, {"b", 2}})});
  INFO(out.dump(2));
  REQUIRE(out["connect"]["ok"] == true);
  CHECK(out["results"][0]["tools"] == json::array({"echo"}));
  CHECK(out["results"][1]["text"] == "Echo: hi");
  CHECK(out["results"][2]["code"] == -32001);
  size_t msgs = countLines(readFile(h.w.base + "/sse.log"), "Client Message");
  CHECK(msgs - msgs_base == msgs_base);
}

TEST_CASE("mcp: an MCP endpoint the policy does not name is blocked", "[integration][mcp]") {
  HttpWorld h;
  json out = h.client("--http", "http://rogue.test:" + std::to_string(h.rogue_port) + "/mcp",
                      {{{"op", "list"}}});
  INFO(out.dump(2));
  CHECK(out["connect"]["ok"] == false);
  CHECK(out["connect"]["http_status"] == 403);
  CHECK(contains(out["connect"].value("error", ""), "no policy entry approves"));
  // Judged by the server: not one MCP request reached it.
  CHECK(countLines(readFile(h.w.base + "/rogue.log"), "Received MCP") == 0);
  // The same host is reachable: only MCP was refused.
  CHECK(contains(readFile(h.w.base + "/dns.log"), "rogue.test"));
}

TEST_CASE("mcp: inside a VM an approved stdio server is filtered, an unapproved one never runs",
          "[integration][mcp][vm]") {
  GUARD_VM_REQUIRE();
  World w;
  w.flags = {"--vm", "--vm-memory", "512"};
  // An approved server runs in the guest; its stdio crosses the control
  // port to guard's filter on the host.
  checkApprovedServerFiltered(w, "vm");
  // An unapproved one, caught by what it reads: it never writes the marker.
  std::string marker = w.files + "/vm-wrote";
  json unapproved = w.raw({writeCall(1, "write_file", marker), kInit},
                          {"node", serverJs("server-filesystem"), w.files}, 20000);
  INFO(unapproved.dump(2));
  CHECK_FALSE(exists(marker));
  CHECK(unapproved["exit"] == 126);
  // node itself is a candidate name: a program that is no MCP server runs.
  Run r = w.guard({"node", "-e", "require('fs').writeFileSync('plain-ran', 'yes')"});
  INFO(describe(r));
  CHECK(r.status == 0);
  CHECK(readFile(w.project + "/plain-ran") == "yes");
  bool refused = false;
  for (const json& e : w.events()) {
    refused = refused || (e.value("action", "") == "start" && e.value("decision", "") == "deny" &&
                          e["details"].value("mode", "") == "vm");
  }
  CHECK(refused);
}

}  // namespace
}  // namespace guard::testing
