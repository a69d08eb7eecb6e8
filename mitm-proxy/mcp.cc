// MCP governance: the JSON-RPC filter, the stdio relay and the shim's supervisor.
#include "mitm-proxy/mcp.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <strings.h>
#include <thread>

#include "policy/document.h"
#include "policy/wire.h"

namespace guard::proxy {

using nlohmann::json;
using policy::Verdict;

namespace {

std::string hexSha256(std::string_view s) {
  uint8_t d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(s.data()), s.size(), d);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : d) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

json errorFor(const json& id, int code, const std::string& message) {
  return json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", message}}}};
}

void appendLine(std::string* out, const json& j) {
  *out += j.dump(-1, ' ', false, json::error_handler_t::replace);
  *out += '\n';
}

bool isRequest(const json& m) { return m.is_object() && m.contains("method") && m.contains("id"); }

std::string methodOf(const json& m) {
  if (!m.is_object()) {
    return {};
  }
  auto it = m.find("method");
  return it != m.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

void auditMcp(const McpContext& ctx, const char* action, const std::string& target,
              const Verdict& v, const std::string& reason, json details) {
  policy::AuditEvent e = ctx.base;
  e.ts = std::chrono::system_clock::now();
  e.mono_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();
  e.component = ctx.component;
  e.surface = "mcp";
  e.action = action;
  e.target = target;
  e.decision = policy::decisionName(v.decision);
  e.rule = {std::string(v.rule.id), std::string(v.rule.layer), v.rule.source()};
  e.reason = reason.empty() ? std::string(v.reason) : reason;
  e.pid = static_cast<int>(getpid());
  details["mode"] = ctx.mode;
  e.details = std::move(details);
  ctx.sink->emit(std::move(e));
}

namespace {

// isMcpMethod tells MCP traffic from other JSON-RPC on stdio (language
// servers speak JSON-RPC too): MCP's own method names, and an initialize
// that carries MCP's protocolVersion.
bool isMcpMessage(const json& m) {
  std::string method = methodOf(m);
  if (method == "initialize") {
    auto p = m.find("params");
    return p != m.end() && p->is_object() && p->contains("protocolVersion");
  }
  for (const char* prefix : {"tools/", "resources/", "prompts/", "completion/", "logging/",
                             "notifications/", "sampling/", "roots/", "elicitation/"}) {
    if (method.rfind(prefix, 0) == 0) {
      return true;
    }
  }
  return method == "ping";
}

}  // namespace

bool isMcpTraffic(std::string_view body) {
  json m = json::parse(body, nullptr, false);
  if (m.is_object()) {
    return isMcpMessage(m);
  }
  if (m.is_array()) {
    for (const json& x : m) {
      if (isMcpMessage(x)) {
        return true;
      }
    }
  }
  return false;
}

// ---- McpFilter ----

McpFilter::McpFilter(const McpContext* ctx, std::string server, std::string transport,
                     std::string deny)
    : ctx_(ctx), server_(std::move(server)), transport_(std::move(transport)),
      deny_(std::move(deny)) {}

void McpFilter::fromClient(std::string_view msg, std::string* out_server,
                           std::string* out_client) {
  size_t first = msg.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) {
    if (!denied()) {
      out_server->append(msg);
      *out_server += '\n';
    }
    return;
  }
  json m = json::parse(msg, nullptr, false);
  if (m.is_discarded()) {
    appendLine(out_client, errorFor(nullptr, -32700, "guard: parse error: the message is not JSON"));
    return;
  }
  bool batch = m.is_array();
  if (batch && m.empty()) {
    appendLine(out_client, errorFor(nullptr, -32600, "guard: invalid request: empty batch"));
    return;
  }
  std::vector<const json*> items;
  if (batch) {
    for (const json& x : m) {
      items.push_back(&x);
    }
  } else {
    items.push_back(&m);
  }
  // Decide every tools/call first: one denied call refuses the whole batch,
  // since its allowed members' answers would have to be merged with ours.
  std::string refusal;
  json refused_id;
  for (const json* x : items) {
    if (denied()) {
      break;
    }
    if (methodOf(*x) != "tools/call") {
      continue;
    }
    json id = x->is_object() && x->contains("id") ? (*x)["id"] : json();
    std::string tool;
    const json* params = x->contains("params") ? &(*x)["params"] : nullptr;
    if (params != nullptr && params->is_object() && params->contains("name") &&
        (*params)["name"].is_string()) {
      tool = (*params)["name"].get<std::string>();
    }
    Verdict v = ctx_->policy->mcpTool(server_, tool);
    std::string reason;
    if (tool.empty()) {
      v.decision = policy::Decision::kDeny;
      reason = "tools/call without a tool name";
    }
    json details = {{"server", server_}, {"tool", tool}, {"transport", transport_},
                    {"request_id", id},  {"request_bytes", msg.size()}};
    json args = params != nullptr && params->is_object() && params->contains("arguments")
                    ? (*params)["arguments"]
                    : json::object();
    std::string args_text = args.dump(-1, ' ', false, json::error_handler_t::replace);
    details["arguments_bytes"] = args_text.size();
    const policy::McpServer* entry = ctx_->policy->mcpEntry(server_);
    std::string how = entry != nullptr ? entry->arguments : "hash";
    if (how == "full") {
      details["arguments"] = args;
    } else if (how == "hash") {
      details["arguments_sha256"] = hexSha256(args_text);
    }
    auditMcp(*ctx_, "tools/call", server_ + "/" + tool, v, reason, std::move(details));
    if (!v.allowed() && refusal.empty()) {
      refusal = "guard: tool '" + tool + "' of MCP server '" + server_ + "' is denied by " +
                std::string(v.rule.id) + (v.reason.empty() ? "" : ": " + std::string(v.reason)) +
                (reason.empty() ? "" : " (" + reason + ")");
      refused_id = id;
    }
  }
  if (denied() || !refusal.empty()) {
    json answers = json::array();
    for (const json* x : items) {
      if (!isRequest(*x)) {
        continue;  // notifications and responses get no answer
      }
      std::string why = denied() ? deny_
                        : (*x)["id"] == refused_id && methodOf(*x) == "tools/call"
                            ? refusal
                            : "guard: the batch was refused because it holds a denied call: " +
                                  refusal;
      answers.push_back(errorFor((*x)["id"], kMcpDenied, why));
    }
    if (batch && !answers.empty()) {
      appendLine(out_client, answers);
    } else if (!answers.empty()) {
      appendLine(out_client, answers[0]);
    }
    return;
  }
  out_server->append(msg);
  *out_server += '\n';
}

void McpFilter::fromServer(std::string_view msg, std::string* out_client) {
  // Only a tools/list result has a "tools" array in its result, whatever
  // request it answers (on HTTP it may arrive on another connection than
  // its request), so that is what is filtered; other messages pass unparsed.
  if (msg.find("\"tools\"") == std::string_view::npos) {
    out_client->append(msg);
    *out_client += '\n';
    return;
  }
  json m = json::parse(msg, nullptr, false);
  bool changed = false;
  auto filterOne = [&](json& x) {
    if (!x.is_object() || !x.contains("id") || x.contains("method")) {
      return;
    }
    auto r = x.find("result");
    if (r == x.end() || !r->is_object() || !r->contains("tools") || !(*r)["tools"].is_array()) {
      return;
    }
    json kept = json::array();
    json removed = json::array();
    for (json& t : (*r)["tools"]) {
      std::string name = t.is_object() && t.contains("name") && t["name"].is_string()
                             ? t["name"].get<std::string>()
                             : std::string();
      if (!name.empty() && ctx_->policy->mcpTool(server_, name).decision !=
                               policy::Decision::kDeny) {
        kept.push_back(std::move(t));
      } else {
        removed.push_back(name);
      }
    }
    if (!removed.empty()) {
      (*r)["tools"] = std::move(kept);
      changed = true;
      Verdict v = ctx_->policy->mcpTool(server_, removed[0].get<std::string>());
      auditMcp(*ctx_, "tools/list", server_, v, "denied tools removed from the list",
                {{"server", server_}, {"transport", transport_}, {"removed", removed}});
    }
  };
  if (m.is_object()) {
    filterOne(m);
  } else if (m.is_array()) {
    for (json& x : m) {
      filterOne(x);
    }
  }
  if (changed) {
    appendLine(out_client, m);
  } else {
    out_client->append(msg);
    *out_client += '\n';
  }
}

// ---- server-sent events ----

size_t sseEventEnd(std::string_view buf) {
  // Lines end in CRLF, LF or CR; an empty line ends the event.
  for (size_t i = 0; i < buf.size(); ++i) {
    if (buf[i] != '\n' && buf[i] != '\r') {
      continue;
    }
    size_t next = i + (buf[i] == '\r' && i + 1 < buf.size() && buf[i + 1] == '\n' ? 2 : 1);
    if (buf[i] == '\r' && i + 1 == buf.size()) {
      return std::string_view::npos;  // a CR whose LF may still come
    }
    if (next < buf.size() && (buf[next] == '\n' || buf[next] == '\r')) {
      size_t end = next + (buf[next] == '\r' && next + 1 < buf.size() && buf[next + 1] == '\n' ? 2 : 1);
      if (buf[next] == '\r' && next + 1 == buf.size()) {
        return std::string_view::npos;
      }
      return end;
    }
  }
  return std::string_view::npos;
}

std::string filterSseEvent(McpFilter* filter, std::string_view event) {
  std::string data;
  std::vector<std::string_view> others;
  bool any = false;
  std::string_view rest = event;
  while (!rest.empty()) {
    size_t eol = rest.find_first_of("\r\n");
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    if (!rest.empty() && eol != std::string_view::npos && event[event.size() - rest.size() - 1] == '\r' &&
        rest.front() == '\n') {
      rest.remove_prefix(1);
    }
    if (line.rfind("data", 0) == 0 && (line.size() == 4 || line[4] == ':')) {
      std::string_view v = line.size() > 4 ? line.substr(5) : std::string_view();
      if (!v.empty() && v.front() == ' ') {
        v.remove_prefix(1);
      }
      data += any ? "\n" : "";
      data += v;
      any = true;
    } else if (!line.empty()) {
      others.push_back(line);
    }
  }
  if (!any || data.find("\"tools\"") == std::string::npos) {
    return std::string(event);
  }
  std::string out;
  filter->fromServer(data, &out);
  if (!out.empty() && out.back() == '\n') {
    out.pop_back();
  }
  if (out == data) {
    return std::string(event);
  }
  std::string rebuilt;
  for (std::string_view o : others) {
    rebuilt.append(o);
    rebuilt += '\n';
  }
  rebuilt += "data: " + out + "\n\n";
  return rebuilt;
}

std::string sseEndpoint(std::string_view event) {
  bool endpoint = false;
  std::string data;
  size_t at = 0;
  while (at < event.size()) {
    size_t eol = event.find_first_of("\r\n", at);
    std::string_view line = event.substr(at, eol == std::string_view::npos ? eol : eol - at);
    at = eol == std::string_view::npos ? event.size() : eol + 1;
    if (line == "event: endpoint" || line == "event:endpoint") {
      endpoint = true;
    } else if (line.rfind("data:", 0) == 0) {
      data = std::string(line.substr(line.size() > 5 && line[5] == ' ' ? 6 : 5));
    }
  }
  return endpoint ? data : std::string();
}

// ---- relayStdio ----

namespace {

// Stream is one direction of a relay: bytes read from IN, split into
// messages at newlines, filtered, queued for OUT.
struct Stream {
  int in = -1;
  std::string partial;   // bytes of a message not yet ended by a newline
  bool discarding = false;  // inside a client message over the limit
  bool eof = false;
};

bool flushSome(int fd, std::string* buf) {
  while (!buf->empty()) {
    // A socket whose reader is gone must not raise SIGPIPE: a VM's relays
    // may outlive the loop that ignores it (proxy::McpGuestRelays).
    ssize_t n = send(fd, buf->data(), buf->size(), MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) {
      n = write(fd, buf->data(), buf->size());
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && errno == EAGAIN) {
      return true;
    }
    if (n <= 0) {
      return false;
    }
    buf->erase(0, static_cast<size_t>(n));
  }
  return true;
}

constexpr size_t kHighWater = 1u << 20;  // stop reading a side while this much waits

}  // namespace

void relayStdio(McpFilter* filter, int client_in, int client_out, int server) {
  for (int fd : {client_in, client_out, server}) {
    if (fd >= 0) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
  }
  Stream from_client;
  from_client.in = client_in;
  Stream from_server;
  from_server.in = server;
  std::string to_server;
  std::string to_client;
  bool client_out_ok = true;
  bool server_write_shut = false;
  char buf[65536];
  for (;;) {
    bool server_done = server < 0 ? from_client.eof : from_server.eof;
    if (server_done && to_client.empty()) {
      break;
    }
    if (!client_out_ok) {
      break;
    }
    if (server >= 0 && from_client.eof && to_server.empty() && !server_write_shut) {
      shutdown(server, SHUT_WR);
      server_write_shut = true;
    }
    pollfd p[3];
    int np = 0;
    int ci = -1, co = -1, si = -1;
    if (!from_client.eof && to_server.size() < kHighWater && to_client.size() < kHighWater) {
      ci = np;
      p[np++] = {client_in, POLLIN, 0};
    }
    if (!to_client.empty()) {
      co = np;
      p[np++] = {client_out, POLLOUT, 0};
    }
    if (server >= 0) {
      short ev = 0;
      if (!from_server.eof && to_client.size() < kHighWater) {
        ev |= POLLIN;
      }
      if (!to_server.empty()) {
        ev |= POLLOUT;
      }
      if (ev != 0) {
        si = np;
        p[np++] = {server, ev, 0};
      }
    }
    if (np == 0) {
      break;
    }
    if (poll(p, static_cast<nfds_t>(np), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    if (co >= 0 && (p[co].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      client_out_ok = flushSome(client_out, &to_client);
    }
    if (si >= 0 && (p[si].revents & POLLOUT) != 0) {
      if (!flushSome(server, &to_server)) {
        from_server.eof = true;  // the server is gone
      }
    }
    auto pump = [&](Stream* s, bool client) {
      ssize_t n = read(s->in, buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
      }
      if (n <= 0) {
        s->eof = true;
        if (!s->partial.empty() && !s->discarding) {
          // A last message without a newline is still a message.
          std::string last = std::move(s->partial);
          if (client) {
            filter->fromClient(last, &to_server, &to_client);
          } else {
            filter->fromServer(last, &to_client);
          }
          // fromX appended a newline the sender did not write.
          std::string& out = client ? to_server : to_client;
          if (!out.empty() && out.back() == '\n') {
            out.pop_back();
          }
        }
        return;
      }
      std::string_view data(buf, static_cast<size_t>(n));
      while (!data.empty()) {
        size_t nl = data.find('\n');
        std::string_view piece = data.substr(0, nl);
        if (s->discarding) {
          if (nl != std::string_view::npos) {
            s->discarding = false;
          }
        } else if (s->partial.size() + piece.size() > kMcpMaxMessage) {
          s->partial.clear();
          if (client) {
            appendLine(&to_client, errorFor(nullptr, -32600,
                                            "guard: message over " +
                                                std::to_string(kMcpMaxMessage >> 20) +
                                                " MiB refused"));
            s->discarding = nl == std::string_view::npos;
          } else {
            std::fprintf(stderr,
                         "guard: MCP server '%s' sent a message over %zu MiB; ending its "
                         "session\n",
                         filter->server().c_str(), kMcpMaxMessage >> 20);
            s->eof = true;
            from_client.eof = true;
            return;
          }
        } else if (nl == std::string_view::npos) {
          s->partial.append(piece);
        } else if (s->partial.empty()) {
          client ? filter->fromClient(piece, &to_server, &to_client)
                 : filter->fromServer(piece, &to_client);
        } else {
          s->partial.append(piece);
          std::string line = std::move(s->partial);
          s->partial.clear();
          client ? filter->fromClient(line, &to_server, &to_client)
                 : filter->fromServer(line, &to_client);
        }
        if (nl == std::string_view::npos) {
          break;
        }
        data.remove_prefix(nl + 1);
      }
    };
    if (ci >= 0 && (p[ci].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      pump(&from_client, true);
    }
    if (si >= 0 && (p[si].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && !from_server.eof) {
      pump(&from_server, false);
    }
  }
  for (int fd : {client_in, client_out, server}) {
    if (fd >= 0) {
      close(fd);
    }
  }
}

// ---- McpSupervisor ----

namespace {

// recvRequest reads one message with up to two descriptors.
ssize_t recvRequest(int conn, std::string* out, std::vector<int>* fds) {
  out->resize(GUARD_WIRE_MAX_MSG + 1);
  int got[4];
  int nfds = 0;
  ssize_t n = guard_wire_recv(conn, out->data(), out->size(), got, &nfds);
  fds->assign(got, got + nfds);
  if (n < 0) {
    return -1;
  }
  out->resize(static_cast<size_t>(n));
  return n;
}

void sendReply(int conn, std::string_view reply, int fd = -1) {
  guard_wire_send(conn, reply.data(), reply.size(), fd);
}

std::vector<std::string> splitNul(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    size_t z = s.find('\0');
    out.emplace_back(s.substr(0, z));
    if (z == std::string_view::npos) {
      break;
    }
    s.remove_prefix(z + 1);
  }
  return out;
}

std::string joinArgv(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) {
    s += s.empty() ? "" : " ";
    s += a;
  }
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

}  // namespace

McpSupervisor::McpSupervisor(McpContext ctx) : ctx_(std::move(ctx)) {}

McpSupervisor::~McpSupervisor() = default;

void McpSupervisor::start(int listener) {
  std::thread([this, listener] {
    for (;;) {
      int conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) {
        if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
          if (errno == EMFILE || errno == ENFILE) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
          continue;
        }
        return;
      }
      // A shim sends its request right after connecting; one that does not
      // must not hold up the others for long.
      timeval tv{1, 0};
      setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      serveOne(conn);
    }
  }).detach();
}

void McpSupervisor::serveOne(int conn) {
  std::string msg;
  std::vector<int> fds;
  ssize_t n = recvRequest(conn, &msg, &fds);
  auto closeFds = [&] {
    for (int fd : fds) {
      close(fd);
    }
    fds.clear();
  };
  if (n <= 0) {
    closeFds();
    close(conn);
    return;
  }
  std::string_view payload = std::string_view(msg).substr(1);
  switch (msg[0]) {
    case 'C': {
      std::string reply = "C";
      for (const std::string& name : ctx_.policy->mcpCommandNames()) {
        reply += name;
        reply += '\0';
      }
      sendReply(conn, reply);
      break;
    }
    case 'E':
      if (fds.size() == 2) {
        exec(conn, payload, fds);
        return;  // exec owns conn and the descriptors
      }
      sendReply(conn, "Dmalformed request from the preload shim");
      break;
    case 'S':
      if (fds.size() == 2) {
        sniffed(conn, payload, fds);
        return;
      }
      sendReply(conn, "Dmalformed request from the preload shim");
      break;
    default:
      sendReply(conn, "Dunknown request from the preload shim");
      break;
  }
  closeFds();
  close(conn);
}

namespace {

enum class Sniff { kMcp, kOther, kUndecided };

// classifySniffed judges the bytes a process read from its stdin: MCP, some
// other JSON-RPC (a language server), or not enough to tell yet.
Sniff classifySniffed(std::string_view data) {
  // Find whole JSON messages in what was read: newline-delimited (MCP), or
  // framed by a Content-Length header (language servers).
  bool mcp = false;
  bool other = false;
  auto judge = [&](std::string_view text) {
    json m = json::parse(text, nullptr, false);
    if (m.is_discarded()) {
      return;
    }
    for (const json& x : m.is_array() ? m : json::array({m})) {
      if (isMcpMessage(x)) {
        mcp = true;
      } else if (x.is_object() && x.contains("jsonrpc")) {
        other = true;
      }
    }
  };
  size_t at = 0;
  while (at < data.size()) {
    size_t nl = data.find('\n', at);
    if (nl == std::string_view::npos) {
      break;
    }
    std::string_view line = data.substr(at, nl - at);
    at = nl + 1;
    if (line.size() > 15 && strncasecmp(line.data(), "Content-Length:", 15) == 0) {
      size_t len = strtoul(std::string(line.substr(15)).c_str(), nullptr, 10);
      size_t body = data.find("\r\n\r\n", at - 2);
      if (body != std::string_view::npos && body + 4 + len <= data.size()) {
        judge(data.substr(body + 4, len));
        at = body + 4 + len;
      }
      continue;
    }
    size_t brace = line.find_first_of("{[");
    if (brace != std::string_view::npos) {
      judge(line.substr(brace));
    }
  }
  // A message split across reads is judged by MCP's own words in what
  // there is of it.
  if (!mcp && !other) {
    for (std::string_view word : {"\"protocolVersion\"", "\"tools/", "\"resources/", "\"prompts/",
                                  "\"notifications/initialized\"", "\"completion/complete\""}) {
      mcp = mcp || data.find(word) != std::string_view::npos;
    }
  }
  return mcp ? Sniff::kMcp : other ? Sniff::kOther : Sniff::kUndecided;
}

}  // namespace

namespace {

// Start is what happens to a program the shim asks about.
struct Start {
  enum Kind { kRun, kWrap, kDeny } kind = kRun;
  std::string name;     // the policy's name for the server ("" when none)
  std::string message;  // kDeny: the one line the shim prints
};

// judgeStart decides one program the shim asks about: started by exec
// (DETECTED false: only servers an entry names are judged) or caught by
// its first MCP message (DETECTED true). UNWRAPPABLE, when set, says why no
// filter can be put between client and server; an approved server is then
// refused rather than run unfiltered. Every decision but kRun of a program
// no entry names is an audit event, except kWrap's, which the caller
// emits once the wrap is in place.
Start judgeStart(const McpContext& ctx, const std::vector<std::string>& argv, bool detected,
                 const char* unwrappable, Verdict* verdict, json* details) {
  Start st;
  st.name = std::string(ctx.policy->mcpServerForCommand(argv));
  if (!detected && st.name.empty()) {
    return st;  // not a server any entry names
  }
  Verdict v = ctx.policy->mcpServer(st.name);
  *details = {{"server", st.name}, {"transport", "stdio"}, {"argv", argv}};
  if (detected) {
    (*details)["detected"] = true;
  }
  std::string target = st.name.empty() ? joinArgv(argv) : st.name;
  if (v.allowed() && st.name.empty()) {
    // The default admits servers no entry names; there is no entry whose
    // tools could be filtered, so the process goes on unwrapped.
    auditMcp(ctx, "start", target, v, {}, std::move(*details));
    return st;
  }
  if (v.allowed() && unwrappable == nullptr) {
    st.kind = Start::kWrap;
    *verdict = v;
    return st;
  }
  st.kind = Start::kDeny;
  if (!v.allowed()) {
    st.message = (st.name.empty() ? "an MCP server no policy entry approves (" + joinArgv(argv) + ")"
                                  : "MCP server '" + st.name + "' (" + joinArgv(argv) + ")") +
                 " is denied by " + std::string(v.rule.id) +
                 (v.reason.empty() ? "" : ": " + std::string(v.reason));
  } else {
    st.message = "MCP server '" + st.name + "' (" + joinArgv(argv) + ") " + unwrappable;
    v.decision = policy::Decision::kDeny;  // approved, but unfiltered: fail closed
    v.reason = unwrappable;
  }
  auditMcp(ctx, "start", target, v, {}, std::move(*details));
  return st;
}

}  // namespace

void McpSupervisor::exec(int conn, std::string_view payload, const std::vector<int>& fds) {
  std::vector<std::string> parts = splitNul(payload);
  std::vector<std::string> argv(parts.size() > 1 ? parts.begin() + 1 : parts.end(), parts.end());
  Verdict v;
  json details;
  Start start = judgeStart(ctx_, argv, false, nullptr, &v, &details);
  if (start.kind == Start::kRun) {
    sendReply(conn, "P");
    close(fds[0]);
    close(fds[1]);
    close(conn);
    return;
  }
  if (start.kind == Start::kDeny) {
    deny(conn, start.name, start.message, fds[0], fds[1], {});
    return;
  }
  const std::string& name = start.name;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    sendReply(conn, "Dcannot create the socket that wraps the MCP server");
    close(fds[0]);
    close(fds[1]);
    close(conn);
    return;
  }
  struct stat st {};
  fstat(sv[1], &st);
  {
    std::lock_guard<std::mutex> lock(mu_);
    wrapped_.insert(st.st_ino);
  }
  auditMcp(ctx_, "start", name, v, {}, std::move(details));
  sendReply(conn, "W", sv[1]);
  close(sv[1]);
  close(conn);
  uint64_t ino = st.st_ino;
  int client_in = fds[0];
  int client_out = fds[1];
  int server = sv[0];
  std::thread([this, name, client_in, client_out, server, ino] {
    McpFilter filter(&ctx_, name, "stdio");
    relayStdio(&filter, client_in, client_out, server);
    std::lock_guard<std::mutex> lock(mu_);
    wrapped_.erase(ino);
  }).detach();
}

void McpSupervisor::deny(int conn, const std::string& server, const std::string& message,
                         int client_in, int client_out, std::string_view already_read) {
  sendReply(conn, "D" + message);
  std::string first(already_read);
  std::thread([this, server, message, client_in, client_out, conn, first] {
    McpFilter filter(&ctx_, server, "stdio", "guard: " + message);
    std::string ignored;
    std::string answers;
    // Answer what the process had already read before it was caught.
    size_t at = 0;
    while (at < first.size()) {
      size_t nl = first.find('\n', at);
      if (nl == std::string::npos) {
        break;  // the rest of that message is still in the pipe
      }
      filter.fromClient(std::string_view(first).substr(at, nl - at), &ignored, &answers);
      at = nl + 1;
    }
    if (!answers.empty()) {
      fcntl(client_out, F_SETFL, fcntl(client_out, F_GETFL) & ~O_NONBLOCK);
      ssize_t unused = write(client_out, answers.data(), answers.size());
      (void)unused;
    }
    relayStdio(&filter, client_in, client_out, -1);
    close(conn);  // lets the denied process exit
  }).detach();
}

void McpSupervisor::sniffed(int conn, std::string_view payload, const std::vector<int>& fds) {
  size_t end = payload.find(std::string_view("\0\0", 2));
  std::vector<std::string> argv =
      splitNul(payload.substr(0, end == std::string_view::npos ? payload.size() : end));
  std::string_view data =
      end == std::string_view::npos ? std::string_view() : payload.substr(end + 2);
  struct stat st {};
  bool wrapped = false;
  if (fstat(fds[0], &st) == 0 && S_ISSOCK(st.st_mode)) {
    std::lock_guard<std::mutex> lock(mu_);
    wrapped = wrapped_.count(st.st_ino) != 0;
  }
  auto plain = [&](const char* reply) {
    sendReply(conn, reply);
    close(fds[0]);
    close(fds[1]);
    close(conn);
  };
  if (wrapped) {
    plain("P");
    return;
  }
  Sniff kind = classifySniffed(data);
  if (kind != Sniff::kMcp) {
    plain(kind == Sniff::kOther ? "P" : "A");
    return;
  }
  Verdict v;
  json details;
  Start start = judgeStart(ctx_, argv, true,
                           "was started in a way guard could not wrap; start it by its command",
                           &v, &details);
  if (start.kind != Start::kDeny) {
    plain("P");  // kWrap cannot happen: an unwrappable start is never wrapped
    return;
  }
  deny(conn, start.name, start.message, fds[0], fds[1], data);
}

McpGuestRelays::~McpGuestRelays() {
  for (Relay& r : relays_) {
    r.thread.join();
  }
}

std::string McpGuestRelays::answer(std::string_view request, int* client, int* server) {
  *client = *server = -1;
  std::erase_if(relays_, [](Relay& r) {
    if (!r.done->load()) {
      return false;
    }
    r.thread.join();
    return true;
  });
  if (request.empty()) {
    return "Dempty request from the preload shim";
  }
  std::string_view payload = request.substr(1);
  std::vector<std::string> argv;
  if (request[0] == 'C') {
    std::string reply = "C";
    for (const std::string& name : ctx_.policy->mcpCommandNames()) {
      reply += name;
      reply += '\0';
    }
    return reply;
  }
  bool detected = request[0] == 'S';
  if (request[0] == 'E') {
    std::vector<std::string> parts = splitNul(payload);
    argv.assign(parts.size() > 1 ? parts.begin() + 1 : parts.end(), parts.end());
  } else if (detected) {
    // The guest's init answers for the servers it wrapped itself: what
    // reaches here was started some other way.
    size_t end = payload.find(std::string_view("\0\0", 2));
    argv = splitNul(payload.substr(0, end == std::string_view::npos ? payload.size() : end));
    Sniff kind = classifySniffed(end == std::string_view::npos ? std::string_view()
                                                               : payload.substr(end + 2));
    if (kind != Sniff::kMcp) {
      return kind == Sniff::kOther ? "P" : "A";
    }
  } else {
    return "Dunknown request from the preload shim";
  }
  Verdict v;
  json details;
  Start start = judgeStart(
      ctx_, argv, detected,
      detected ? "was started in a way guard could not wrap; start it by its command" : nullptr, &v,
      &details);
  if (start.kind != Start::kWrap) {
    return start.kind == Start::kDeny ? "D" + start.message : "P";
  }
  int c[2];
  int s[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c) != 0) {
    return "Dcannot create the socket that wraps the MCP server";
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) != 0) {
    close(c[0]);
    close(c[1]);
    return "Dcannot create the socket that wraps the MCP server";
  }
  int client_in = fcntl(c[0], F_DUPFD_CLOEXEC, 0);  // relayStdio reads and writes apart
  if (client_in < 0) {
    for (int fd : {c[0], c[1], s[0], s[1]}) {
      close(fd);
    }
    return "Dcannot create the socket that wraps the MCP server";
  }
  auditMcp(ctx_, "start", start.name, v, {}, std::move(details));
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread t([this, name = start.name, client_in, client_out = c[0], srv = s[0], done] {
    McpFilter filter(&ctx_, name, "stdio");
    relayStdio(&filter, client_in, client_out, srv);
    done->store(true);
  });
  relays_.push_back({std::move(t), std::move(done)});
  *client = c[1];
  *server = s[1];
  return "W";
}

}  // namespace guard::proxy
