// MCP governance: the JSON-RPC filter between an MCP client and server, the
// stdio relay that runs it over descriptors, and the supervisor that answers
// the preload shim (policy/wire.h) from outside the agent's sandbox.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "policy/audit.h"
#include "policy/policy.h"

namespace guard::proxy {

// kMcpMaxMessage bounds one JSON-RPC message (one line on stdio, one HTTP
// body); a larger client message is refused with an error, a larger server
// message ends the session (the filter could not see what it lists).
constexpr size_t kMcpMaxMessage = 8u << 20;

// kMcpDenied is the JSON-RPC error code of every refusal guard makes (the
// range -32000..-32099 is the implementation's, JSON-RPC 2.0 section 5.1).
constexpr int kMcpDenied = -32001;

// isMcpTraffic reports whether BODY holds a JSON-RPC message (or batch) of
// MCP: one of MCP's own methods, or an initialize carrying MCP's
// protocolVersion (language servers speak JSON-RPC too, and are not MCP).
bool isMcpTraffic(std::string_view body);

// McpContext is what every filter of a session shares.
struct McpContext {
  const policy::Policy* policy = nullptr;
  policy::AuditSink* sink = nullptr;
  policy::AuditEvent base;  // session, user, groups, host
  std::string mode = "host";
  std::string component = "proxy";  // who emits the events
};

// McpFilter governs one conversation between an MCP client and one server,
// message by message, in both directions (JSON-RPC 2.0, MCP 2025-06-18):
//  - tools/call of a tool the policy denies is answered with an error and
//    not forwarded; every tools/call is one audit event;
//  - tools/list results (any response whose result holds a "tools" array)
//    lose the denied tools; nextCursor is kept, and since every list is
//    filtered the filter holds after notifications/tools/list_changed;
//  - a batch with a denied call is refused whole;
//  - a client message that is not JSON is answered with a parse error;
//  - everything else passes byte for byte.
// A denied server (DENY non-empty) forwards nothing and answers every
// request, initialize included, with DENY.
class McpFilter {
 public:
  // SERVER is the policy's name for the server; TRANSPORT ("stdio",
  // "http") goes into the audit events.
  McpFilter(const McpContext* ctx, std::string server, std::string transport,
            std::string deny = {});

  // fromClient takes one message the client sent (without its newline) and
  // appends what goes on to the server and what goes back to the client,
  // each message ending in a newline.
  void fromClient(std::string_view msg, std::string* out_server, std::string* out_client);

  // fromServer takes one message the server sent and appends what the
  // client gets. The filter keeps no state between messages, so one
  // conversation may use several filters (HTTP requests).
  void fromServer(std::string_view msg, std::string* out_client);

  const std::string& server() const { return server_; }
  bool denied() const { return !deny_.empty(); }

 private:
  const McpContext* ctx_;
  std::string server_;
  std::string transport_;
  std::string deny_;
};

// auditMcp emits one MCP event (surface "mcp") through CTX's sink.
void auditMcp(const McpContext& ctx, const char* action, const std::string& target,
              const policy::Verdict& v, const std::string& reason, nlohmann::json details);

// sseEventEnd returns the length of the first complete server-sent event
// in BUF, its blank-line terminator included, or npos (WHATWG HTML 9.2.6).
size_t sseEventEnd(std::string_view buf);

// filterSseEvent passes one event through FILTER's server side: its data
// lines joined are one JSON-RPC message. An event the filter leaves alone
// comes back byte for byte.
std::string filterSseEvent(McpFilter* filter, std::string_view event);

// sseEndpoint returns the data of an "endpoint" event (the older HTTP+SSE
// transport announces where the client must POST its messages with it),
// or empty for any other event.
std::string sseEndpoint(std::string_view event);

// relayStdio runs FILTER between a client and a server over descriptors
// until the server's output ends (or, for a denied server, the client's):
// CLIENT_IN is what the client writes (the server's stdin), CLIENT_OUT what
// it reads; SERVER is a socket connected to the server's stdin and stdout,
// or -1 for a denied server. Owns and closes every descriptor it is given.
// Non-JSON bytes and lines the filter passes are copied unchanged.
void relayStdio(McpFilter* filter, int client_in, int client_out, int server);

// McpSupervisor answers the preload shim on a listening SOCK_SEQPACKET
// socket (policy/wire.h): which programs may be MCP servers, whether one
// may start, and whether a process reading JSON-RPC on its stdin is an MCP
// server nobody approved. Approved servers are wrapped: their stdio becomes
// a socket whose other end a relay thread filters. Runs on its own thread.
// Its threads are detached and use the supervisor until the process ends:
// it must never be destroyed while the process lives on.
// McpGuestRelays answers the preload shim inside a VM guest, whose
// requests (policy/wire.h, the message without its descriptors) the guest's
// init relays over the VM's control port. Each is judged as the supervisor
// judges it. An approved server is wrapped across the VM boundary: answer()
// returns "W" and two sockets, *CLIENT (stands for the client's stdin and
// stdout in the guest) and *SERVER (for the server's), whose bytes the
// caller carries to and from the guest; a thread filters between them as
// relayStdio does for host mode. Every refusal is an audit event. The
// destructor waits for those threads: destroy it only after every socket
// it handed out is closed.
class McpGuestRelays {
 public:
  explicit McpGuestRelays(McpContext ctx) : ctx_(std::move(ctx)) {}
  ~McpGuestRelays();
  McpGuestRelays(const McpGuestRelays&) = delete;
  McpGuestRelays& operator=(const McpGuestRelays&) = delete;

  // answer returns the reply ('C...', 'P', 'A', 'D' + message, or 'W' with
  // *CLIENT and *SERVER set, which the caller then owns; -1 otherwise).
  std::string answer(std::string_view request, int* client, int* server);

 private:
  struct Relay {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  McpContext ctx_;
  std::vector<Relay> relays_;  // finished ones are joined at the next answer
};

class McpSupervisor {
 public:
  explicit McpSupervisor(McpContext ctx);
  ~McpSupervisor();

  // start serves LISTENER (owned) on a new thread.
  void start(int listener);

  // serveOne answers one connection (owned); blocking, short.
  void serveOne(int conn);

 private:
  void exec(int conn, std::string_view payload, const std::vector<int>& fds);
  void sniffed(int conn, std::string_view payload, const std::vector<int>& fds);
  void deny(int conn, const std::string& server, const std::string& message, int client_in,
            int client_out, std::string_view already_read);

  McpContext ctx_;
  std::mutex mu_;                   // guards wrapped_; leaf lock
  std::set<uint64_t> wrapped_;      // inode numbers of wrap sockets' server ends
};

}  // namespace guard::proxy
