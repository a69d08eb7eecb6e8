// Unit tests for MCP governance's pure parts: the JSON-RPC filter in both
// directions, server-sent event framing and filtering, and the policy's
// MCP lookups (command names, basename matching, server verdicts).
#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mitm-proxy/mcp.h"
#include "policy/policy.h"

namespace guard::proxy {
namespace {

using nlohmann::json;

policy::Policy policyOf(const std::string& yaml) {
  auto layer = policy::parseLayer(yaml, "t.yaml", "t");
  REQUIRE(layer.ok());
  policy::Context ctx;
  ctx.home = "/home/u";
  ctx.project = "/home/u/p";
  auto p = policy::compile({layer.value()}, ctx);
  REQUIRE(p.ok());
  return std::move(p.value());
}

const char* kPolicy =
    "version: 1\n"
    "mcp:\n"
    "  default: deny\n"
    "  servers:\n"
    "    - name: files\n"
    "      command: [npx, \"-y\", server-filesystem, \"**\"]\n"
    "      tools: {deny: [write_file]}\n"
    "    - name: local\n"
    "      command: [\"**/bin/mcp-*\", \"**\"]\n"
    "      tools: {allow: [\"read_*\"]}\n"
    "    - name: off\n"
    "      command: [off-server]\n"
    "      allow: false\n";

struct Fixture {
  policy::Policy p = policyOf(kPolicy);
  policy::MemoryAuditSink sink;
  McpContext ctx{&p, &sink, {}, "host"};
};

std::string call(int id, const std::string& tool) {
  return json{{"jsonrpc", "2.0"},
              {"id", id},
              {"method", "tools/call"},
              {"params", {{"name", tool}, {"arguments", {{"path", "/x"}}}}}}
      .dump();
}

TEST_CASE("mcp filter: a denied call is answered and not forwarded; an allowed one passes as is",
          "[unit][mcp]") {
  Fixture f;
  McpFilter filter(&f.ctx, "files", "stdio");
  std::string to_server, to_client;
  filter.fromClient(call(1, "write_file"), &to_server, &to_client);
  CHECK(to_server.empty());
  json answer = json::parse(to_client);
  CHECK(answer["id"] == 1);
  CHECK(answer["error"]["code"] == kMcpDenied);
  CHECK(answer["error"]["message"].get<std::string>().find("t.mcp.files") != std::string::npos);

  to_client.clear();
  std::string ok = call(2, "read_file");
  filter.fromClient(ok, &to_server, &to_client);
  CHECK(to_server == ok + "\n");  // byte for byte
  CHECK(to_client.empty());

  auto events = f.sink.events();
  REQUIRE(events.size() == 2);
  CHECK(events[0].decision == "deny");
  CHECK(events[0].target == "files/write_file");
  CHECK(events[0].details["request_id"] == 1);
  CHECK(events[0].details.contains("arguments_sha256"));
  CHECK(events[1].decision == "allow");
}

TEST_CASE("mcp filter: names are compared after JSON decoding, exactly", "[unit][mcp]") {
  Fixture f;
  McpFilter filter(&f.ctx, "files", "stdio");
  std::string to_server, to_client;
  // \u0077 is "w": the server would decode it to write_file.
  filter.fromClient(
      R"({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"\u0077rite_file"}})",
      &to_server, &to_client);
  CHECK(to_server.empty());
  CHECK(json::parse(to_client)["error"]["code"] == kMcpDenied);
  // A call without a name is refused rather than guessed at.
  to_client.clear();
  filter.fromClient(R"({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}})", &to_server,
                    &to_client);
  CHECK(to_server.empty());
  CHECK(json::parse(to_client)["id"] == 4);
}

TEST_CASE("mcp filter: a batch holding a denied call is refused whole", "[unit][mcp]") {
  Fixture f;
  McpFilter filter(&f.ctx, "files", "stdio");
  std::string to_server, to_client;
  std::string batch = "[" + call(1, "read_file") + "," + call(2, "write_file") +
                      R"(,{"jsonrpc":"2.0","method":"notifications/progress"}])";
  filter.fromClient(batch, &to_server, &to_client);
  CHECK(to_server.empty());
  json answers = json::parse(to_client);
  REQUIRE(answers.is_array());
  REQUIRE(answers.size() == 2);  // the notification gets no answer
  CHECK(answers[0]["id"] == 1);
  CHECK(answers[1]["id"] == 2);
  // A batch of allowed messages passes untouched.
  to_client.clear();
  std::string good = "[" + call(5, "read_file") + "]";
  filter.fromClient(good, &to_server, &to_client);
  CHECK(to_server == good + "\n");
}

TEST_CASE("mcp filter: malformed client messages get errors, blank lines pass", "[unit][mcp]") {
  Fixture f;
  McpFilter filter(&f.ctx, "files", "stdio");
  std::string to_server, to_client;
  filter.fromClient("{not json", &to_server, &to_client);
  CHECK(to_server.empty());
  CHECK(json::parse(to_client)["error"]["code"] == -32700);
  to_client.clear();
  filter.fromClient("[]", &to_server, &to_client);
  CHECK(json::parse(to_client)["error"]["code"] == -32600);
  filter.fromClient("  ", &to_server, &to_client);
  CHECK(to_server == "  \n");
}

TEST_CASE("mcp filter: tools/list results lose denied tools and keep their cursor",
          "[unit][mcp]") {
  Fixture f;
  McpFilter filter(&f.ctx, "local", "stdio");
  json list = {{"jsonrpc", "2.0"},
               {"id", 7},
               {"result",
                {{"tools", {{{"name", "read_a"}}, {{"name", "delete_all"}}, {{"name", "read_b"}}}},
                 {"nextCursor", "c2"}}}};
  std::string out;
  filter.fromServer(list.dump(), &out);
  json got = json::parse(out);
  CHECK(got["result"]["nextCursor"] == "c2");
  REQUIRE(got["result"]["tools"].size() == 2);
  CHECK(got["result"]["tools"][0]["name"] == "read_a");
  CHECK(got["result"]["tools"][1]["name"] == "read_b");
  // Other messages pass byte for byte, also when they mention "tools".
  out.clear();
  std::string other = R"({"jsonrpc":"2.0","method":"notifications/tools/list_changed"})";
  filter.fromServer(other, &out);
  CHECK(out == other + "\n");
}

TEST_CASE("mcp filter: a denied server answers every request and forwards nothing",
          "[unit][mcp]") {
  Fixture f;
  McpFilter filter(&f.ctx, "off", "stdio", "guard: server off is denied");
  std::string to_server, to_client;
  filter.fromClient(R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}})", &to_server,
                    &to_client);
  filter.fromClient(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", &to_server,
                    &to_client);
  CHECK(to_server.empty());
  json answer = json::parse(to_client);
  CHECK(answer["id"] == 0);
  CHECK(answer["error"]["message"] == "guard: server off is denied");
}

TEST_CASE("mcp: MCP traffic is told from other JSON-RPC", "[unit][mcp]") {
  CHECK(isMcpTraffic(R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}})"));
  CHECK(isMcpTraffic(
      R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}})"));
  CHECK(isMcpTraffic(R"([{"jsonrpc":"2.0","method":"notifications/initialized"}])"));
  // A language server's initialize has no protocolVersion.
  CHECK_FALSE(isMcpTraffic(
      R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"processId":1,"rootUri":null}})"));
  CHECK_FALSE(isMcpTraffic(R"({"model":"x","messages":[]})"));
  CHECK_FALSE(isMcpTraffic("not json"));
}

TEST_CASE("mcp: server-sent events are framed and filtered event by event", "[unit][mcp]") {
  CHECK(sseEventEnd("data: a\n\nrest") == 9);
  CHECK(sseEventEnd("data: a\r\n\r\nrest") == 11);
  CHECK(sseEventEnd("data: a\n") == std::string::npos);
  CHECK(sseEventEnd("data: a\r") == std::string::npos);
  CHECK(sseEndpoint("event: endpoint\ndata: /message?sessionId=1\n\n") == "/message?sessionId=1");
  CHECK(sseEndpoint("event: message\ndata: /x\n\n").empty());

  Fixture f;
  McpFilter filter(&f.ctx, "local", "http");
  std::string untouched = "event: message\nid: 4\ndata: {\"jsonrpc\":\"2.0\",\"id\":1}\n\n";
  CHECK(filterSseEvent(&filter, untouched) == untouched);
  json list = {{"jsonrpc", "2.0"},
               {"id", 2},
               {"result", {{"tools", {{{"name", "read_a"}}, {{"name", "rm"}}}}}}};
  std::string event = "event: message\nid: 5\ndata: " + list.dump() + "\n\n";
  std::string out = filterSseEvent(&filter, event);
  CHECK(out.rfind("event: message\nid: 5\ndata: ", 0) == 0);
  json got = json::parse(out.substr(out.find("data: ") + 6));
  CHECK(got["result"]["tools"].size() == 1);
}

TEST_CASE("policy: MCP server lookups by command, name and program name", "[unit][mcp]") {
  policy::Policy p = policyOf(kPolicy);
  std::vector<std::string> a = {"/usr/bin/npx", "-y", "server-filesystem", "/tmp"};
  CHECK(p.mcpServerForCommand(a) == "files");  // a bare first element matches the basename
  std::vector<std::string> b = {"/opt/bin/mcp-notes", "--x"};
  CHECK(p.mcpServerForCommand(b) == "local");
  std::vector<std::string> c = {"node", "/x/server-filesystem/dist/index.js"};
  CHECK(p.mcpServerForCommand(c).empty());
  std::vector<std::string> names = p.mcpCommandNames();
  std::sort(names.begin(), names.end());
  // "mcp-*" is a glob: every program is a candidate then.
  CHECK(names == std::vector<std::string>{"*", "npx", "off-server"});
  CHECK(p.mcpServer("files").decision == policy::Decision::kAllow);
  CHECK(p.mcpServer("off").decision == policy::Decision::kDeny);
  CHECK(p.mcpServer("").decision == policy::Decision::kDeny);  // unknown: the default
  REQUIRE(p.mcpEntry("files") != nullptr);
}

}  // namespace
}  // namespace guard::proxy
