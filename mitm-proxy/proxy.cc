// The proxy's event loop: listeners, connections, resolver and DNS responder.
//
// Every connection is a Conn with two Sides (down: the agent, up: the
// server). Sockets are edge-triggered; an event only marks a side readable
// or writable, and pump() then moves bytes until nothing more can move.
// TLS runs over a BIO on the sides' own buffers (sideBio), so the same byte
// plumbing serves plain and encrypted sides, and the ClientHello read for
// the decision is replayed into the TLS server untouched.
#include "mitm-proxy/proxy.h"

#include <ares.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netlink.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "mitm-proxy/dns.h"
#include "mitm-proxy/http.h"
#include "mitm-proxy/mcp.h"
#include "mitm-proxy/sni.h"

namespace guard::proxy {
namespace {

using Clock = std::chrono::steady_clock;
using policy::AuditEvent;
using policy::Verdict;

constexpr size_t kCap = 1024 * 1024;  // bytes buffered per direction before reads pause
constexpr size_t kChunk = 64 * 1024;  // one read into a small buffer
constexpr size_t kRecord = 16384;     // the most plaintext in a TLS record (RFC 8446 5.1)
constexpr auto kHandshakeTimeout = std::chrono::seconds(15);
constexpr auto kIdleTimeout = std::chrono::seconds(600);
constexpr size_t kMaxConns = 16384;

// Synthetic addresses handed out in DNS answers map back to the name asked
// for (198.18.0.0/15, RFC 2544 benchmarking space; fdc6:7561:7264::/64).
constexpr uint32_t kSynth4 = 0xc6120000;
constexpr uint32_t kSynth4Size = 1u << 17;
constexpr uint8_t kSynth6[8] = {0xfd, 0xc6, 0x75, 0x61, 0x72, 0x64, 0, 0};

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string addrText(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, buf, sizeof(buf));
  } else if (ss.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr, buf, sizeof(buf));
  }
  return buf;
}

uint16_t portOf(const sockaddr_storage& ss) {
  return ntohs(ss.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in&>(ss).sin_port
                                       : reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
}

policy::IpAddr ipOf(const sockaddr_storage& ss) {
  policy::IpAddr ip;
  if (ss.ss_family == AF_INET) {
    ip.v4 = true;  // IpAddr keeps IPv4 in its first four bytes
    memcpy(ip.bytes, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, 4);
  } else {
    memcpy(ip.bytes, &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr, 16);
    policy::IpAddr::parse(addrText(ss), &ip);  // folds IPv4-mapped addresses
  }
  return ip;
}

// hostPort splits "host:port" or "[v6]:port" (authority-form, RFC 9112 3.2.3).
bool hostPort(std::string_view s, uint16_t default_port, std::string* host, uint16_t* port) {
  *port = default_port;
  std::string_view h = s;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    h = s.substr(1, close - 1);
    s.remove_prefix(close + 1);
    if (!s.empty() && s[0] != ':') {
      return false;
    }
  } else {
    size_t colon = s.rfind(':');
    if (colon != std::string_view::npos) {
      h = s.substr(0, colon);
      s.remove_prefix(colon);
    } else {
      s = {};
    }
  }
  if (!s.empty()) {
    unsigned long p = 0;
    std::string digits(s.substr(1));
    if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos ||
        (p = std::stoul(digits)) == 0 || p > 65535) {
      return false;
    }
    *port = static_cast<uint16_t>(p);
  }
  if (h.empty()) {
    return false;
  }
  host->assign(h);
  for (char& c : *host) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  while (!host->empty() && host->back() == '.') {
    host->pop_back();
  }
  return !host->empty();
}

// unroutable reports addresses the proxy never connects to, whatever the
// policy says: the unspecified address (it reaches the host itself) and
// guard's own synthetic ranges.
bool unroutable(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    uint32_t a = ntohl(reinterpret_cast<const sockaddr_in&>(ss).sin_addr.s_addr);
    return (a >> 24) == 0 || (a & ~(kSynth4Size - 1)) == kSynth4;
  }
  const auto& a6 = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr;
  static const uint8_t kMappedZero[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return IN6_IS_ADDR_UNSPECIFIED(&a6) || memcmp(a6.s6_addr, kSynth6, 8) == 0 ||
         (memcmp(a6.s6_addr, kMappedZero, 12) == 0 && a6.s6_addr[12] == 0);
}

const char* reasonPhrase(int status) {
  switch (status) {
    case 400:
      return " Bad Request";
    case 403:
      return " Forbidden";
    case 413:
      return " Content Too Large";
    default:
      return " Bad Gateway";
  }
}

bool isIpLiteral(const std::string& s) {
  uint8_t b[16];
  return inet_pton(AF_INET, s.c_str(), b) == 1 || inet_pton(AF_INET6, s.c_str(), b) == 1;
}

struct Handler {
  virtual void onEvent(uint32_t events) = 0;
  virtual ~Handler() = default;
};

// Buffer is a byte queue of a side. Consumers take bytes from the front by
// moving an offset (nothing behind them shifts); producers (read(),
// SSL_read) can write straight into the spare room at the back, which is
// never zero-filled. Like a std::string it keeps its storage when it
// empties; the live bytes move to the front only when the room behind them
// runs out and the consumed part is at least as large as they are, so a
// queue that never quite empties stays within a few times its live size.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    data_ = std::move(o.data_);
    cap_ = std::exchange(o.cap_, 0);
    off_ = std::exchange(o.off_, 0);
    end_ = std::exchange(o.end_, 0);
    return *this;
  }

  size_t size() const { return end_ - off_; }
  bool empty() const { return end_ == off_; }
  const char* data() const { return data_.get() + off_; }
  operator std::string_view() const { return {data(), size()}; }  // parsers read it as text
  // spare is how many bytes fit behind the live ones without allocating.
  size_t spare() const { return cap_ - size(); }

  void clear() { off_ = end_ = 0; }
  void append(std::string_view s) {
    if (!s.empty()) {
      memcpy(tail(s.size()), s.data(), s.size());
      end_ += s.size();
    }
  }
  // erase removes N bytes at POS; from the front it only moves the offset.
  void erase(size_t pos, size_t n) {
    n = std::min(n, size() - pos);
    if (pos == 0) {
      off_ += n;
    } else {
      char* at = data_.get() + off_ + pos;
      memmove(at, at + n, size() - pos - n);
      end_ -= n;
    }
    if (off_ == end_) {
      clear();
    }
  }
  // replace puts S in place of the N bytes at POS.
  void replace(size_t pos, size_t n, std::string_view s) {
    if (n == 0 && s.empty()) {
      return;
    }
    if (s.size() > n) {
      tail(s.size() - n);  // may move the live bytes: POS counts from the front
    }
    char* at = data_.get() + off_ + pos;
    memmove(at + s.size(), at + n, size() - pos - n);
    memcpy(at, s.data(), s.size());
    end_ = end_ - n + s.size();
  }
  // resize truncates to N bytes (or pads with zeros).
  void resize(size_t n) {
    if (n > size()) {
      memset(tail(n - size()), 0, n - size());
    }
    end_ = off_ + n;
    if (off_ == end_) {
      clear();
    }
  }
  // tail returns room for at least N bytes behind the live ones; commit(N)
  // then makes N bytes written there part of the buffer.
  char* tail(size_t n) {
    if (cap_ - end_ < n) {
      if (off_ >= size() && cap_ - size() >= n) {
        memmove(data_.get(), data(), size());  // compact: no more than what was consumed
      } else {
        size_t cap = std::max(cap_ * 2, size() + n);
        auto bigger = std::make_unique_for_overwrite<char[]>(cap);
        if (!empty()) {
          memcpy(bigger.get(), data(), size());
        }
        data_ = std::move(bigger);
        cap_ = cap;
      }
      end_ = size();
      off_ = 0;
    }
    return data_.get() + end_;
  }
  void commit(size_t n) { end_ += n; }

 private:
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0;
  size_t off_ = 0;  // bytes before it are consumed
  size_t end_ = 0;  // bytes from it on are free
};

class Proxy;
struct Conn;

// Side is one socket of a connection, with its TLS state when it has one.
struct Side : Handler {
  Conn* conn = nullptr;
  int fd = -1;
  SSL* ssl = nullptr;
  Buffer raw_in;         // ssl: ciphertext from the socket, not yet read by ssl
  bool readable = false;
  bool writable = false;
  bool hup = false;      // the peer closed (or failed): read until EOF
  bool raw_eof = false;  // the socket said EOF
  bool eof = false;      // the plaintext stream ended
  bool shut = false;     // we sent our EOF
  Buffer in;             // plaintext received, not yet consumed
  Buffer out;            // bytes for the socket (ciphertext when ssl)
  size_t cap = kCap;     // reads pause while this much plaintext waits (raised for MCP bodies)

  void onEvent(uint32_t events) override;
  size_t pending() const { return out.size(); }
  bool handshaken() const { return ssl == nullptr || SSL_is_init_finished(ssl); }
  void closeAll() {
    if (ssl != nullptr) {
      SSL_free(ssl);  // frees the BIOs too
      ssl = nullptr;
    }
    if (fd >= 0) {
      close(fd);
      fd = -1;
    }
  }
};

// sideBio is the transport under a side's TLS: it reads ciphertext from the
// side's raw_in (advancing an offset, never shifting) and appends what TLS
// writes straight to the side's out buffer, so no bytes wait in a BIO.
BIO_METHOD* sideBio() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "guard side");
    BIO_meth_set_read(m, [](BIO* b, char* out, int len) -> int {
      auto* s = static_cast<Side*>(BIO_get_data(b));
      BIO_clear_retry_flags(b);
      size_t avail = s == nullptr ? 0 : s->raw_in.size();
      if (avail == 0) {
        if (s != nullptr && s->raw_eof) {
          return 0;
        }
        BIO_set_retry_read(b);
        return -1;
      }
      size_t n = std::min(avail, static_cast<size_t>(len));
      memcpy(out, s->raw_in.data(), n);
      s->raw_in.erase(0, n);
      return static_cast<int>(n);
    });
    BIO_meth_set_write(m, [](BIO* b, const char* in, int len) -> int {
      auto* s = static_cast<Side*>(BIO_get_data(b));
      if (s == nullptr) {
        return -1;  // parked: nothing may be written
      }
      s->out.append({in, static_cast<size_t>(len)});
      return len;
    });
    BIO_meth_set_ctrl(m, [](BIO*, int cmd, long, void*) -> long { return cmd == BIO_CTRL_FLUSH ? 1 : 0; });
    return m;
  }();
  return method;
}

// Body tracks where one HTTP message body ends. counted bytes at the front
// of the source's buffer are known to belong to it but are not yet sent.
struct Body {
  Framing framing;
  uint64_t left = 0;
  ChunkedReader chunks;
  size_t counted = 0;
  bool ended = true;
  // A chunked request body is scanned as its payload, without the framing:
  // where the payload of the counted, unsent bytes lies (offset in the
  // side's buffer, length), and the end of the payload already sent.
  std::vector<std::pair<size_t, size_t>> spans;
  std::string sent_payload;

  void start(const Framing& f) {
    framing = f;
    left = f.length;
    chunks = ChunkedReader();
    counted = 0;
    ended = f.kind == Framing::Kind::kNone;
    spans.clear();
    sent_payload.clear();
  }
};

enum class Phase { kExplicit, kClassify, kTunnel, kHttp };
enum class Up { kIdle, kResolving, kConnecting, kConnected };
enum class Msg { kHead, kBody, kRaw };

struct Conn {
  uint64_t id = 0;
  Proxy* px = nullptr;
  Side down;
  Side up;
  Phase phase = Phase::kClassify;
  Up up_state = Up::kIdle;
  Clock::time_point last = Clock::now();
  const Clock::time_point created = Clock::now();
  bool established = false;  // past the decision and handshakes: idle timeout applies
  bool dead = false;
  bool destroyed = false;  // closed; freed once the current batch of events is done
  bool close_after_flush = false;
  bool refused = false;  // refuse() ended the exchange: only its page is still flushed
  // A captured connection the policy denies: answered with this 403 page if
  // its first bytes are HTTP, else reset (no upstream is ever contacted).
  std::string denied_page;

  std::string name;       // the domain the connection is for (may be empty)
  policy::IpAddr ip;      // the destination address when the agent named one
  bool ip_known = false;
  uint16_t port = 0;
  std::string peer;       // "host:port" for events
  bool inspect = false;
  bool intercept = false;
  bool connect_reply = false;  // CONNECT: say 200 once upstream is connected
  bool explicit_http = false;  // absolute-form requests: rewrite to origin-form
  uint64_t allowed_secrets = 0;
  std::vector<sockaddr_storage> targets;
  size_t next_target = 0;
  std::string rule_id;

  Msg req = Msg::kHead;
  Msg resp = Msg::kHead;
  Body req_body;
  Body resp_body;
  std::deque<std::string> methods;
  std::deque<Clock::time_point> sent_at;  // when each request's head went out (--record)
  // MCP over HTTP: for each request awaiting its response, the policy's
  // server governing it ("" for none); the server whose event stream is
  // being filtered, with the events not yet complete.
  std::deque<std::string> mcp;
  std::string sse_server;
  bool sse_chunked = false;  // the filtered stream goes out chunked
  Framing sse_framing;       // how the server frames the stream
  std::string sse_buf;
  std::string scan_tail;  // the end of the request body already sent, for scanning across reads
  uint64_t requests = 0;
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
};

// Resolution is the resolver's answer for a name, shared by every waiter.
struct Resolution {
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<sockaddr_storage> addrs;
  std::vector<std::pair<std::string, std::string>> cnames;  // alias -> name
  Clock::time_point expires;
  std::vector<std::function<void(const Resolution&)>> waiters;
};

class Proxy {
 public:
  Proxy(const policy::Policy& p, policy::AuditSink* sink, const ProxyOptions& o)
      : p_(p), sink_(sink), o_(o), scanner_(o.secrets),
        mcp_ctx_{&p, sink, o.audit_base, o.mode} {}
  ~Proxy();

  Error start(Listeners listeners, int stop_fd);
  Error run();

  void pump(Conn* c);

 private:
  struct Fd : Handler {
    std::function<void(uint32_t)> fn;
    void onEvent(uint32_t e) override { fn(e); }
  };

  void watch(int fd, Handler* h, uint32_t events);
  void accept(int lfd);
  void startConn(Conn* c);
  bool decide(Conn* c, const std::string& name, const policy::IpAddr* ip, const char* via);
  void startUpstream(Conn* c);
  void connectNext(Conn* c);
  void onConnected(Conn* c);
  bool io(Conn* c, Side* s);
  bool step(Conn* c);
  bool stepExplicit(Conn* c);
  bool stepClassify(Conn* c);
  bool relay(Conn* c, Side* from, Side* to);
  bool requestFilter(Conn* c);
  bool responseFilter(Conn* c);
  bool moveBody(Conn* c, Body* b, Side* from, Side* to, bool request);
  enum class McpStep { kPass, kWait, kDone };
  McpStep mcpRequest(Conn* c, HttpHead* head, size_t head_len, Framing* framing,
                     std::string* server);
  McpStep mcpResponse(Conn* c, HttpHead* head, size_t head_len);
  bool moveEvents(Conn* c, Body* b, Side* from, Side* to);
  void answerMcp(Conn* c, size_t consume, int status, const std::string& json_body);
  bool sendTo(Conn* c, Side* s, std::string_view data);
  bool startTls(Conn* c, Side* s, SSL* ssl);
  void refuse(Conn* c, int status, const std::string& why);
  void fail(Conn* c, const std::string& why);
  void destroy(Conn* c);
  void sweep();
  bool roomFor(const Side& s) const { return s.pending() < kCap; }

  void resolve(const std::string& name, std::function<void(const Resolution&)> cb);
  static void onResolved(void* arg, int status, int timeouts, ares_addrinfo* res);
  static void onAresSocket(void* data, ares_socket_t fd, int readable, int writable);

  void dnsQuery(std::span<const uint8_t> packet, std::function<void(std::vector<uint8_t>)> reply);
  void dnsUdp(int fd);
  void dnsTcpAccept(int fd);
  void dropped(int fd);
  std::string synthesize(const std::string& name, bool v6);
  bool unsynthesize(const policy::IpAddr& ip, std::string* name);

  void audit(const char* action, const std::string& target, const std::string& decision,
             const Verdict* v, const std::string& reason, nlohmann::json details);
  void auditConn(Conn* c, const std::string& decision, const Verdict* v, const std::string& reason,
                 nlohmann::json details = nlohmann::json::object());
  void record(nlohmann::json flow);
  // recordHeaders is HEAD's headers for --record, [name, value] each, with
  // the values of credential-bearing headers (Authorization, Cookie, ...)
  // and of any that holds a secret replaced.
  nlohmann::json recordHeaders(const HttpHead& head) const;

  const policy::Policy& p_;
  policy::AuditSink* sink_;
  ProxyOptions o_;
  SecretScanner scanner_;
  std::unique_ptr<UpstreamTls> up_tls_;
  int ep_ = -1;
  int stop_fd_ = -1;
  bool stopping_ = false;
  ares_channel ares_ = nullptr;
  std::vector<std::unique_ptr<Fd>> fixed_;  // listeners, DNS sockets, stop fd
  std::unordered_map<int, std::unique_ptr<Fd>> ares_fds_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  uint64_t next_id_ = 1;
  std::unordered_map<std::string, Resolution> cache_;
  std::vector<std::function<void()>> deferred_;  // run from the loop, after the events
  std::vector<std::unique_ptr<Conn>> graveyard_;  // destroyed during this batch
  std::vector<int> paused_;                        // listeners out of descriptors
  int dns_tcp_open_ = 0;
  // Rate limit of dropped-packet events (see dropped()).
  Clock::time_point drop_window_ = Clock::now();
  int drop_events_ = 0;
  uint64_t drop_suppressed_ = 0;
  std::unordered_map<int, Fd*> listener_handlers_;
  std::unique_ptr<McpSupervisor> mcp_;  // threads of its own; outlives nothing it serves
  McpContext mcp_ctx_;
  // Message endpoints that governed servers of the older HTTP+SSE transport
  // announced ("scheme://host[:port]/path?query"): the server, and the
  // connection of the event stream on which its answers travel.
  struct McpEndpoint {
    std::string server;
    uint64_t stream = 0;
  };
  std::unordered_map<std::string, McpEndpoint> mcp_endpoints_;
  std::vector<std::unique_ptr<Fd>> fd_graveyard_;

  // Idle upstream TLS connections of intercepted sessions, by "name:port",
  // newest last: a new agent connection to the same server takes one
  // instead of a TCP and TLS handshake of its own.
  struct Pooled {
    int fd = -1;
    SSL* ssl = nullptr;
    Clock::time_point since;
  };
  std::unordered_map<std::string, std::vector<Pooled>> pool_;
  size_t pooled_ = 0;
  static std::string poolKey(const Conn* c) { return c->name + ":" + std::to_string(c->port); }
  bool parkUpstream(Conn* c);
  bool takeUpstream(Conn* c);
  void dropPooled(Pooled* p);
  std::unordered_map<std::string, uint32_t> synth_index_;
  std::vector<std::string> synth_names_;
  uint32_t synth_next_ = 0;
  FILE* record_ = nullptr;
  int pid_ = static_cast<int>(getpid());
  // has_values_: some credential has a real value (redaction has work to do).
  bool has_values_ = std::any_of(o_.secrets.begin(), o_.secrets.end(),
                                 [](const Secret& s) { return !s.value.empty(); });
  Clock::time_point last_sweep_ = Clock::now();
};

Proxy* g_proxy = nullptr;  // for Side::onEvent; one proxy per process

void Side::onEvent(uint32_t events) {
  if (conn->destroyed) {
    return;  // the other side's event in the same batch ended the connection
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    readable = true;
  }
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    hup = true;
  }
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
    writable = true;
  }
  g_proxy->pump(conn);
}

Proxy::~Proxy() {
  // The supervisor's relay threads may still be serving MCP servers: they
  // end with the process, so the supervisor they use is never freed.
  static_cast<void>(mcp_.release());
  for (auto& [id, c] : conns_) {
    c->down.closeAll();
    c->up.closeAll();
  }
  for (auto& [key, list] : pool_) {
    for (Pooled& p : list) {
      dropPooled(&p);
    }
  }
  if (ares_ != nullptr) {
    ares_destroy(ares_);
  }
  if (ep_ >= 0) {
    close(ep_);
  }
  if (record_ != nullptr) {
    fclose(record_);
  }
}

void Proxy::watch(int fd, Handler* h, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST) {
    epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev);
  }
}

Error Proxy::start(Listeners listeners, int stop_fd) {
  auto tls = UpstreamTls::create(o_.upstream_ca);
  if (!tls.ok()) {
    return tls.error();
  }
  up_tls_ = std::move(tls.value());
  if (o_.ca == nullptr) {
    return Error(ErrorCode::kInternal, "the proxy has no session CA");
  }
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("epoll: ") + strerror(e), e);
  }
  ares_options ao{};
  ao.sock_state_cb = &Proxy::onAresSocket;
  ao.sock_state_cb_data = this;
  ao.timeout = 2000;
  ao.tries = 2;
  // NOSEARCH: the name the policy judged is the name resolved, never one
  // completed with the host's search domains.
  ao.flags = ARES_FLAG_NOSEARCH;
  int status = ares_init_options(
      &ares_, &ao, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
  if (status != ARES_SUCCESS) {
    return Error(ErrorCode::kInternal, std::string("cannot start the resolver: ") + ares_strerror(status));
  }
  if (!o_.dns_upstream.empty() &&
      (status = ares_set_servers_ports_csv(ares_, o_.dns_upstream.c_str())) != ARES_SUCCESS) {
    return Error(ErrorCode::kUsage, "bad DNS upstream '" + o_.dns_upstream + "': " + ares_strerror(status));
  }
  if (!o_.record_path.empty()) {
    record_ = fopen(o_.record_path.c_str(), "ae");
    if (record_ == nullptr) {
      int e = errno;
      return Error(ErrorCode::kIo, "cannot open the capture file " + o_.record_path + ": " + strerror(e), e);
    }
  }
  auto add = [&](int fd, std::function<void(uint32_t)> fn) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    auto h = std::make_unique<Fd>();
    h->fn = std::move(fn);
    watch(fd, h.get(), EPOLLIN);
    fixed_.push_back(std::move(h));
  };
  for (int fd : listeners.tcp) {
    add(fd, [this, fd](uint32_t) { accept(fd); });
    listener_handlers_[fd] = fixed_.back().get();
  }
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;  // two descriptors per connection
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  for (int fd : listeners.dns_udp) {
    add(fd, [this, fd](uint32_t) { dnsUdp(fd); });
  }
  for (int fd : listeners.dns_tcp) {
    add(fd, [this, fd](uint32_t) { dnsTcpAccept(fd); });
  }
  for (int fd : listeners.dropped) {
    add(fd, [this, fd](uint32_t) { dropped(fd); });
  }
  if (!listeners.mcp.empty()) {
    mcp_ = std::make_unique<McpSupervisor>(
        McpContext{&p_, sink_, o_.audit_base, o_.mode});
    for (int fd : listeners.mcp) {
      mcp_->start(fd);
    }
  }
  if (stop_fd >= 0) {
    stop_fd_ = stop_fd;
    add(stop_fd, [this](uint32_t) { stopping_ = true; });
  }
  g_proxy = this;
  return Error();
}

Error Proxy::run() {
  epoll_event events[256];
  while (!stopping_) {
    timeval tv{1, 0};
    timeval* t = ares_timeout(ares_, &tv, &tv);
    int ms = deferred_.empty() ? static_cast<int>(t->tv_sec * 1000 + t->tv_usec / 1000) + 1 : 0;
    int n = epoll_wait(ep_, events, 256, ms);
    if (n < 0 && errno != EINTR) {
      int e = errno;
      return Error(ErrorCode::kIo, std::string("epoll_wait: ") + strerror(e), e);
    }
    for (int i = 0; i < n; ++i) {
      static_cast<Handler*>(events[i].data.ptr)->onEvent(events[i].events);
    }
    ares_process_fd(ares_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts
    while (!deferred_.empty()) {
      auto batch = std::move(deferred_);
      deferred_.clear();
      for (auto& fn : batch) {
        fn();
      }
    }
    if (Clock::now() - last_sweep_ > std::chrono::seconds(1)) {
      sweep();
    }
    graveyard_.clear();
    fd_graveyard_.clear();
  }
  return Error();
}

// ---- audit and capture ----

void Proxy::audit(const char* action, const std::string& target, const std::string& decision,
                  const Verdict* v, const std::string& reason, nlohmann::json details) {
  AuditEvent e = o_.audit_base;
  e.ts = std::chrono::system_clock::now();
  e.mono_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  Clock::now().time_since_epoch())
                  .count();
  e.component = "proxy";
  e.surface = "network";
  e.action = action;
  e.target = target;
  e.decision = decision;
  if (v != nullptr) {
    e.rule = {std::string(v->rule.id), std::string(v->rule.layer), v->rule.source()};
    e.reason = reason.empty() ? std::string(v->reason) : reason;
  } else {
    e.reason = reason;
  }
  e.pid = pid_;
  details["mode"] = o_.mode;
  // A refused request or exfiltration attempt is a flow too: --record gets
  // it with the audit's target (which never holds a secret) and reason.
  if (record_ != nullptr && decision == "deny" &&
      (strcmp(action, "http") == 0 || strcmp(action, "exfiltration") == 0)) {
    bool http = strcmp(action, "http") == 0;
    nlohmann::json flow = {{"event", action}, {http ? "url" : "target", target},
                           {"decision", decision}, {"rule", e.rule.id}, {"reason", e.reason}};
    for (const char* key : {"conn", "method", "credential"}) {
      if (details.contains(key)) {
        flow[key] = details[key];
      }
    }
    record(std::move(flow));
  }
  e.details = std::move(details);
  sink_->emit(std::move(e));
}

// nameTail is NAME with all but its last two labels replaced by "*", for
// audit events about a name that carries a secret.
std::string nameTail(const std::string& name) {
  size_t dot = name.rfind('.');
  dot = dot == std::string::npos || dot == 0 ? std::string::npos : name.rfind('.', dot - 1);
  return "*" + (dot == std::string::npos ? std::string() : name.substr(dot));
}

void Proxy::auditConn(Conn* c, const std::string& decision, const Verdict* v,
                      const std::string& reason, nlohmann::json details) {
  if (!c->name.empty()) {
    details["name"] = c->name;
  }
  if (c->ip_known) {
    details["address"] = c->ip.toString();
  }
  details["conn"] = c->id;
  audit("connect", c->peer, decision, v, reason, std::move(details));
}

void Proxy::record(nlohmann::json flow) {
  if (record_ == nullptr) {
    return;
  }
  flow["ts"] = std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  flow["session"] = o_.audit_base.session;
  std::string line = flow.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  fwrite(line.data(), 1, line.size(), record_);
  fflush(record_);
}

nlohmann::json Proxy::recordHeaders(const HttpHead& head) const {
  nlohmann::json out = nlohmann::json::array();
  for (const HttpHeader& h : head.headers) {
    std::string value = h.value;
    for (const char* name : {"authorization", "proxy-authorization", "cookie", "set-cookie"}) {
      if (strcasecmp(h.name.c_str(), name) == 0) {
        value = "[redacted]";
      }
    }
    if (auto hit = scanner_.find(value, 0)) {
      value = "[redacted: credential " + o_.secrets[hit->secret].name + "]";
    }
    out.push_back({h.name, value});
  }
  return out;
}

// ---- DNS ----

std::string Proxy::synthesize(const std::string& name, bool v6) {
  auto it = synth_index_.find(name);
  uint32_t idx = 0;
  if (it != synth_index_.end()) {
    idx = it->second;
  } else {
    idx = synth_next_++ % (kSynth4Size - 2) + 1;
    if (synth_names_.size() <= idx) {
      synth_names_.resize(idx + 1);
    } else if (!synth_names_[idx].empty()) {
      synth_index_.erase(synth_names_[idx]);  // the pool wrapped: the oldest name lets go
    }
    synth_names_[idx] = name;
    synth_index_[name] = idx;
  }
  std::string bytes;
  if (v6) {
    bytes.assign(16, '\0');
    memcpy(bytes.data(), kSynth6, 8);
    for (int i = 0; i < 4; ++i) {
      bytes[12 + i] = static_cast<char>((idx >> (24 - 8 * i)) & 0xff);
    }
    return bytes;
  }
  uint32_t a = htonl(kSynth4 + idx);
  return std::string(reinterpret_cast<const char*>(&a), 4);
}

bool Proxy::unsynthesize(const policy::IpAddr& ip, std::string* name) {
  uint32_t idx = 0;
  if (ip.v4) {
    uint32_t a = 0;
    memcpy(&a, ip.bytes, 4);
    a = ntohl(a);
    if ((a & ~(kSynth4Size - 1)) != kSynth4) {
      return false;
    }
    idx = a - kSynth4;
  } else {
    if (memcmp(ip.bytes, kSynth6, 8) != 0) {
      return false;
    }
    idx = static_cast<uint32_t>(ip.bytes[12]) << 24 | ip.bytes[13] << 16 | ip.bytes[14] << 8 | ip.bytes[15];
  }
  if (idx >= synth_names_.size() || synth_names_[idx].empty()) {
    name->clear();
    return true;  // synthetic, but never handed out (or forgotten): no name
  }
  *name = synth_names_[idx];
  return true;
}

void Proxy::onAresSocket(void* data, ares_socket_t fd, int readable, int writable) {
  auto* self = static_cast<Proxy*>(data);
  if (!readable && !writable) {
    epoll_ctl(self->ep_, EPOLL_CTL_DEL, fd, nullptr);
    auto it = self->ares_fds_.find(fd);
    if (it != self->ares_fds_.end()) {
      // This may run inside that handler's own callback: free it after the batch.
      self->fd_graveyard_.push_back(std::move(it->second));
      self->ares_fds_.erase(it);
    }
    return;
  }
  auto& h = self->ares_fds_[fd];
  if (!h) {
    h = std::make_unique<Fd>();
    h->fn = [self, fd](uint32_t e) {
      ares_process_fd(self->ares_,
                      (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? fd : ARES_SOCKET_BAD,
                      (e & EPOLLOUT) ? fd : ARES_SOCKET_BAD);
    };
  }
  uint32_t events = (readable ? uint32_t{EPOLLIN} : 0u) | (writable ? uint32_t{EPOLLOUT} : 0u);
  self->watch(fd, h.get(), events);
}

struct ResolveArg {
  Proxy* px;
  std::string name;
};

void Proxy::resolve(const std::string& name, std::function<void(const Resolution&)> cb) {
  Resolution& r = cache_[name];
  if (r.done && Clock::now() < r.expires) {
    // Never call back from inside the caller: it may be in the middle of
    // pumping the very connection the callback pumps (and may destroy).
    deferred_.push_back([cb = std::move(cb), r] { cb(r); });
    return;
  }
  r.waiters.push_back(std::move(cb));
  if (r.waiters.size() > 1) {
    return;  // a lookup is already on its way
  }
  r.done = false;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = ARES_AI_NOSORT;
  ares_getaddrinfo(ares_, name.c_str(), nullptr, &hints, &Proxy::onResolved,
                   new ResolveArg{this, name});
}

void Proxy::onResolved(void* arg, int status, int, ares_addrinfo* res) {
  std::unique_ptr<ResolveArg> a(static_cast<ResolveArg*>(arg));
  if (status == ARES_EDESTRUCTION) {
    return;
  }
  auto it = a->px->cache_.find(a->name);
  if (it == a->px->cache_.end()) {
    ares_freeaddrinfo(res);
    return;
  }
  Resolution& r = it->second;
  r.done = true;
  r.status = status;
  r.addrs.clear();
  r.cnames.clear();
  int ttl = 300;
  if (status == ARES_SUCCESS && res != nullptr) {
    for (ares_addrinfo_node* n = res->nodes; n != nullptr; n = n->ai_next) {
      sockaddr_storage ss{};
      if (n->ai_addrlen > sizeof(ss) || (n->ai_family != AF_INET && n->ai_family != AF_INET6)) {
        continue;
      }
      memcpy(&ss, n->ai_addr, n->ai_addrlen);
      r.addrs.push_back(ss);
      ttl = std::min(ttl, n->ai_ttl);
    }
    for (ares_addrinfo_cname* cn = res->cnames; cn != nullptr; cn = cn->next) {
      if (cn->alias != nullptr && cn->name != nullptr) {
        r.cnames.emplace_back(cn->alias, cn->name);
      }
    }
  }
  ares_freeaddrinfo(res);
  r.expires = Clock::now() + std::chrono::seconds(std::clamp(ttl, 5, 300));
  if (status != ARES_SUCCESS) {
    r.expires = Clock::now() + std::chrono::seconds(5);
  }
  auto waiters = std::move(r.waiters);
  r.waiters.clear();
  // c-ares may answer from inside ares_getaddrinfo (the hosts file, a bad
  // name): the waiters run from the loop, never from the caller.
  Resolution copy = r;
  for (auto& w : waiters) {
    a->px->deferred_.push_back([w = std::move(w), copy] { w(copy); });
  }
}

void Proxy::dnsQuery(std::span<const uint8_t> packet,
                     std::function<void(std::vector<uint8_t>)> reply) {
  DnsQuery q;
  DnsParse parsed = parseDnsQuery(packet, &q);
  if (parsed != DnsParse::kOk) {
    audit("dns", "", "deny", nullptr,
          parsed == DnsParse::kMalformed ? "malformed DNS query" : "not a standard query",
          {{"size", packet.size()}});
    reply(buildDnsError(packet, parsed == DnsParse::kMalformed ? kRcodeFormErr : kRcodeNotImp));
    return;
  }
  nlohmann::json details = {{"type", q.type}};
  if (q.klass != 1) {
    audit("dns", q.name, "deny", nullptr, "DNS class other than IN", details);
    reply(buildDnsAnswer(q, kRcodeRefused, {}));
    return;
  }
  if (auto hit = scanner_.findInName(q.name)) {
    details["credential"] = o_.secrets[hit->secret].name;
    details["form"] = hit->form;
    audit("exfiltration", "dns:" + nameTail(q.name), "deny", nullptr,
          std::string("a DNS query carries the ") + (hit->placeholder ? "placeholder" : "value") +
              " of credential " + o_.secrets[hit->secret].name,
          details);
    reply(buildDnsAnswer(q, kRcodeRefused, {}));
    return;
  }
  Verdict v = p_.dns(q.name);
  record({{"event", "dns"}, {"name", q.name}, {"type", q.type}, {"decision", policy::decisionName(v.decision)},
          {"rule", v.rule.id}});
  if (!v.allowed()) {
    // No query leaves for a denied name: nothing in its labels reaches anyone.
    audit("dns", q.name, "deny", &v, "", details);
    reply(buildDnsAnswer(q, kRcodeRefused, {}));
    return;
  }
  audit("dns", q.name, policy::decisionName(v.decision), &v, "", details);
  bool want4 = q.type == static_cast<uint16_t>(DnsType::kA) || q.type == static_cast<uint16_t>(DnsType::kAny);
  bool want6 = q.type == static_cast<uint16_t>(DnsType::kAaaa) || q.type == static_cast<uint16_t>(DnsType::kAny);
  if (!want4 && !want6) {
    reply(buildDnsAnswer(q, kRcodeNoError, {}));  // other types: no data
    return;
  }
  resolve(q.name, [this, q, want4, want6, reply](const Resolution& r) {
    if (r.status == ARES_ENOTFOUND || r.status == ARES_ENODATA) {
      reply(buildDnsAnswer(q, r.status == ARES_ENOTFOUND ? kRcodeNxDomain : kRcodeNoError, {}));
      return;
    }
    if (r.status != ARES_SUCCESS) {
      reply(buildDnsAnswer(q, kRcodeServFail, {}));
      return;
    }
    std::vector<DnsRecord> answers;
    std::string owner = q.name;
    for (const auto& [alias, target] : r.cnames) {
      answers.push_back({alias, DnsType::kCname, target, 60});
      owner = target;
    }
    bool has4 = false;
    bool has6 = false;
    for (const auto& a : r.addrs) {
      has4 |= a.ss_family == AF_INET;
      has6 |= a.ss_family == AF_INET6;
    }
    if (want4 && has4) {
      answers.push_back({owner, DnsType::kA, synthesize(q.name, false), 60});
    }
    if (want6 && has6) {
      answers.push_back({owner, DnsType::kAaaa, synthesize(q.name, true), 60});
    }
    reply(buildDnsAnswer(q, kRcodeNoError, answers));
  });
}

void Proxy::dnsUdp(int fd) {
  uint8_t buf[4096];
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&peer), &len);
    if (n < 0) {
      return;
    }
    dnsQuery({buf, static_cast<size_t>(n)}, [fd, peer, len](std::vector<uint8_t> answer) {
      if (answer.size() > 512) {
        answer.resize(12);  // RFC 1035 4.2.1: truncated, retry over TCP
        answer[2] |= 0x02;
        answer[4] = answer[5] = answer[6] = answer[7] = 0;
      }
      sendto(fd, answer.data(), answer.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&peer), len);
    });
  }
}

// DnsTcp serves DNS over one TCP connection (RFC 7766): length-prefixed
// messages, answered in order as they resolve.
struct DnsTcp : Handler {
  Proxy* px = nullptr;
  int fd = -1;
  std::string in;
  std::function<void(DnsTcp*)> on_close;
  std::function<void(DnsTcp*, std::span<const uint8_t>)> on_query;
  void onEvent(uint32_t) override {
    char buf[4096];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n > 0) {
        in.append(buf, static_cast<size_t>(n));
        if (in.size() > 70000) {
          on_close(this);
          return;
        }
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        break;
      }
      on_close(this);
      return;
    }
    while (in.size() >= 2) {
      size_t len = static_cast<uint8_t>(in[0]) << 8 | static_cast<uint8_t>(in[1]);
      if (in.size() < 2 + len) {
        break;
      }
      std::string msg = in.substr(2, len);
      in.erase(0, 2 + len);
      on_query(this, {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()});
    }
  }
};

void Proxy::dnsTcpAccept(int lfd) {
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      return;
    }
    if (dns_tcp_open_ >= 256) {
      close(fd);  // bounded: DNS over TCP is a fallback, not a channel
      continue;
    }
    ++dns_tcp_open_;
    auto* t = new DnsTcp;
    t->px = this;
    t->fd = fd;
    auto alive = std::make_shared<bool>(true);
    t->on_close = [this, alive](DnsTcp* self) {
      *alive = false;
      --dns_tcp_open_;
      epoll_ctl(ep_, EPOLL_CTL_DEL, self->fd, nullptr);
      close(self->fd);
      delete self;
    };
    t->on_query = [this, alive](DnsTcp* self, std::span<const uint8_t> q) {
      int sfd = self->fd;
      dnsQuery(q, [alive, sfd](std::vector<uint8_t> answer) {
        if (!*alive) {
          return;
        }
        uint8_t len[2] = {static_cast<uint8_t>(answer.size() >> 8), static_cast<uint8_t>(answer.size())};
        answer.insert(answer.begin(), len, len + 2);
        ssize_t ignored = write(sfd, answer.data(), answer.size());  // small: fits the socket buffer
        (void)ignored;
      });
    };
    watch(fd, t, EPOLLIN | EPOLLRDHUP);
  }
}

// dropped audits the packets the namespace's rules dropped (NFLOG): every
// protocol but TCP and DNS, bound anywhere but the agent's own loopback.
// At most kMaxDropEvents a second are audited one by one; the rest are
// counted into the next event.
void Proxy::dropped(int fd) {
  constexpr int kMaxDropEvents = 50;
  alignas(nlmsghdr) char buf[8192];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      return;
    }
    size_t left = static_cast<size_t>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, left); nh = NLMSG_NEXT(nh, left)) {
      if ((nh->nlmsg_type & 0xff) != NFULNL_MSG_PACKET) {
        continue;
      }
      const char* p = static_cast<const char*>(NLMSG_DATA(nh)) + NLMSG_ALIGN(sizeof(nfgenmsg));
      const char* end = reinterpret_cast<const char*>(nh) + nh->nlmsg_len;
      std::string_view payload;
      while (p + NLA_HDRLEN <= end) {
        const auto* a = reinterpret_cast<const nlattr*>(p);
        if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end) {
          break;
        }
        if ((a->nla_type & NLA_TYPE_MASK) == NFULA_PAYLOAD) {
          payload = std::string_view(p + NLA_HDRLEN, a->nla_len - NLA_HDRLEN);
        }
        p += NLA_ALIGN(a->nla_len);
      }
      if (payload.empty()) {
        continue;
      }
      // The IP header says what was dropped and where it was going.
      auto u = [&](size_t i) { return static_cast<uint8_t>(payload[i]); };
      int version = u(0) >> 4;
      size_t hlen = version == 4 ? (u(0) & 15) * 4u : 40u;
      if ((version != 4 && version != 6) || payload.size() < hlen) {
        continue;
      }
      int proto = version == 4 ? u(9) : u(6);
      char addr[INET6_ADDRSTRLEN] = "";
      inet_ntop(version == 4 ? AF_INET : AF_INET6, payload.data() + (version == 4 ? 16 : 24), addr,
                sizeof(addr));
      std::string target = addr;
      const char* pname = proto == IPPROTO_UDP ? "udp" : proto == IPPROTO_TCP ? "tcp"
                          : proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 ? "icmp" : "ip";
      if ((proto == IPPROTO_UDP || proto == IPPROTO_TCP) && payload.size() >= hlen + 4) {
        target = (version == 6 ? "[" + target + "]" : target) + ":" + std::to_string(u(hlen + 2) << 8 | u(hlen + 3));
      }
      if (Clock::now() - drop_window_ > std::chrono::seconds(1)) {
        drop_window_ = Clock::now();
        drop_events_ = 0;
      }
      if (++drop_events_ > kMaxDropEvents) {
        ++drop_suppressed_;
        continue;
      }
      nlohmann::json details = {{"protocol", pname}};
      if (drop_suppressed_ > 0) {
        details["suppressed_before"] = drop_suppressed_;
        drop_suppressed_ = 0;
      }
      audit("packet", std::string(pname) + " " + target, "deny", nullptr,
            "only TCP (through the proxy) and DNS leave the agent's network namespace", details);
    }
  }
}

// ---- connections ----

void Proxy::accept(int lfd) {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    int fd = accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: stop watching the listener (it is level-
        // triggered and would spin) until the sweep, after closes.
        epoll_ctl(ep_, EPOLL_CTL_DEL, lfd, nullptr);
        paused_.push_back(lfd);
      }
      return;
    }
    if (conns_.size() >= kMaxConns) {
      audit("connect", "", "deny", nullptr, "too many connections", {{"limit", kMaxConns}});
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_unique<Conn>();
    c->id = next_id_++;
    c->px = this;
    c->down.conn = c->up.conn = c.get();
    c->down.fd = fd;
    Conn* raw = c.get();
    conns_[c->id] = std::move(c);
    watch(fd, &raw->down, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
    startConn(raw);
    if (!raw->dead) {
      pump(raw);
    } else {
      destroy(raw);
    }
  }
}

void Proxy::startConn(Conn* c) {
  // SO_ORIGINAL_DST names where a redirected connection was going; for one
  // made to the proxy's own address it names the proxy: explicit mode.
  sockaddr_storage orig{};
  sockaddr_storage local{};
  socklen_t olen = sizeof(orig);
  socklen_t llen = sizeof(local);
  getsockname(c->down.fd, reinterpret_cast<sockaddr*>(&local), &llen);
  int rc = local.ss_family == AF_INET6
               ? getsockopt(c->down.fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &orig, &olen)
               : getsockopt(c->down.fd, SOL_IP, SO_ORIGINAL_DST, &orig, &olen);
  bool redirected = rc == 0 && !(portOf(orig) == portOf(local) && addrText(orig) == addrText(local));
  if (!redirected) {
    c->phase = Phase::kExplicit;
    return;
  }
  c->ip = ipOf(orig);
  c->port = portOf(orig);
  std::string name;
  bool allowed = false;
  if (unsynthesize(c->ip, &name)) {
    if (name.empty()) {
      c->peer = addrText(orig) + ":" + std::to_string(c->port);
      refuse(c, 0, "a synthetic address that no DNS answer of this session handed out");
      return;
    }
    c->ip_known = false;
    allowed = decide(c, name, nullptr, "dns");
  } else {
    c->ip_known = true;
    allowed = decide(c, "", &c->ip, "address");
  }
  if (!c->dead && !allowed) {
    c->phase = Phase::kClassify;  // to answer with a 403 page or a reset
    return;
  }
  if (!c->dead) {
    c->phase = Phase::kClassify;
    auto pooled = c->inspect ? pool_.find(poolKey(c)) : pool_.end();
    if (pooled == pool_.end() || pooled->second.empty()) {
      startUpstream(c);  // in parallel with the agent's first bytes
    }
  }
}

// decide judges the connection by NAME (may be empty) and IP (may be null)
// and the port; on deny it audits, refuses and marks the connection dead.
bool Proxy::decide(Conn* c, const std::string& name, const policy::IpAddr* ip, const char* via) {
  if (auto hit = scanner_.findInName(name)) {
    // A name from CONNECT, an absolute URL, a Host header or the SNI that
    // carries a secret would reach the upstream resolver as a query (a
    // wildcard rule may allow it): refused before anything resolves it,
    // and named in the audit by its last two labels only.
    c->peer = nameTail(name) + ":" + std::to_string(c->port);
    audit("exfiltration", c->peer, "deny", nullptr,
          std::string("the destination name carries the ") +
              (hit->placeholder ? "placeholder" : "value") + " of credential " +
              o_.secrets[hit->secret].name,
          {{"credential", o_.secrets[hit->secret].name}, {"form", hit->form}, {"via", via},
           {"conn", c->id}});
    refuse(c, 403, "guard: the destination name carries a credential");
    return false;
  }
  c->name = name;
  std::string host = !name.empty() ? name : ip->toString();
  c->peer = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(c->port);
  Verdict v = p_.connect(name, ip, c->port);
  c->rule_id = std::string(v.rule.id);
  c->inspect = v.inspect;
  c->allowed_secrets = 0;
  for (size_t i = 0; i < o_.secrets.size() && i < 64; ++i) {
    if (!o_.secrets[i].value.empty() && p_.credential(o_.secrets[i].name, host).allowed()) {
      c->allowed_secrets |= uint64_t{1} << i;
      c->inspect = true;  // the swap needs to see the request
    }
  }
  if (record_ != nullptr) {
    record({{"event", "connect"}, {"conn", c->id}, {"target", c->peer}, {"via", via},
            {"decision", policy::decisionName(v.decision)}, {"rule", v.rule.id}});
  }
  if (!v.allowed()) {
    auditConn(c, "deny", &v, "", {{"via", via}});
    std::string why = "guard: connection to " + c->peer + " denied by rule " +
                      std::string(v.rule.id) + " (" + v.rule.source() + ")";
    if (c->phase == Phase::kExplicit) {
      refuse(c, 403, why);
    } else {
      c->denied_page = why;  // a captured connection: its first bytes say how to answer
    }
    return false;
  }
  auditConn(c, policy::decisionName(v.decision), &v, "",
            {{"via", via}, {"inspect", c->inspect}});
  return true;
}

void Proxy::startUpstream(Conn* c) {
  if (c->ip_known) {
    sockaddr_storage ss{};
    if (c->ip.v4) {
      auto& sin = reinterpret_cast<sockaddr_in&>(ss);
      sin.sin_family = AF_INET;
      memcpy(&sin.sin_addr, c->ip.bytes, 4);
      sin.sin_port = htons(c->port);
    } else {
      auto& sin6 = reinterpret_cast<sockaddr_in6&>(ss);
      sin6.sin6_family = AF_INET6;
      memcpy(&sin6.sin6_addr, c->ip.bytes, 16);
      sin6.sin6_port = htons(c->port);
    }
    if (unroutable(ss)) {
      auditConn(c, "deny", nullptr, "the unspecified address and guard's synthetic ranges are never connected to");
      refuse(c, 403, "guard: unroutable address");
      return;
    }
    c->targets = {ss};
    connectNext(c);
    return;
  }
  c->up_state = Up::kResolving;
  uint64_t id = c->id;
  resolve(c->name, [this, id](const Resolution& r) {
    auto it = conns_.find(id);
    if (it == conns_.end()) {
      return;
    }
    Conn* cc = it->second.get();
    if (r.status != ARES_SUCCESS || r.addrs.empty()) {
      fail(cc, "cannot resolve " + cc->name + ": " + ares_strerror(r.status));
      pump(cc);
      return;
    }
    // Each address is judged too: an allowed name that resolves into a
    // denied network (cloud metadata, the host's own services) is refused.
    const Verdict* denied = nullptr;
    Verdict last;
    for (sockaddr_storage ss : r.addrs) {
      if (unroutable(ss)) {
        continue;
      }
      policy::IpAddr ip = ipOf(ss);
      last = p_.connect(cc->name, &ip, cc->port);
      if (!last.allowed()) {
        denied = &last;
        continue;
      }
      if (ss.ss_family == AF_INET) {
        reinterpret_cast<sockaddr_in&>(ss).sin_port = htons(cc->port);
      } else {
        reinterpret_cast<sockaddr_in6&>(ss).sin6_port = htons(cc->port);
      }
      cc->targets.push_back(ss);
    }
    if (cc->targets.empty()) {
      auditConn(cc, "deny", denied, "every address of " + cc->name + " is in a denied network");
      refuse(cc, 403, "guard: " + cc->name + " resolves only into denied networks (rule " +
                          std::string(denied->rule.id) + ")");
      pump(cc);
      return;
    }
    connectNext(cc);
    pump(cc);
  });
}

void Proxy::connectNext(Conn* c) {
  if (c->up.fd >= 0) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, c->up.fd, nullptr);
    close(c->up.fd);
    c->up.fd = -1;
  }
  while (c->next_target < c->targets.size()) {
    const sockaddr_storage& ss = c->targets[c->next_target++];
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    socklen_t len = ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
      close(fd);
      continue;
    }
    c->up.fd = fd;
    c->up.readable = c->up.writable = false;
    c->up_state = Up::kConnecting;
    watch(fd, &c->up, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
    return;
  }
  fail(c, "cannot connect to " + c->peer);
}

void Proxy::onConnected(Conn* c) {
  c->up_state = Up::kConnected;
  if (c->connect_reply) {
    c->connect_reply = false;
    sendTo(c, &c->down, "HTTP/1.1 200 Connection established\r\n\r\n");
  }
  if (c->intercept && c->up.ssl == nullptr) {
    startTls(c, &c->up, up_tls_->newClient(c->name.empty() ? c->ip.toString() : c->name));
  }
}

bool Proxy::startTls(Conn* c, Side* s, SSL* ssl) {
  if (ssl == nullptr && s == &c->up && !up_tls_->error().empty()) {
    // Without a trust store no upstream can be verified: fail closed.
    auditConn(c, "deny", nullptr, up_tls_->error(), {{"tls", "trust store"}});
    refuse(c, 502, "guard: " + up_tls_->error());
    return false;
  }
  if (ssl == nullptr) {
    fail(c, "TLS setup failed: " + tlsErrorText());
    return false;
  }
  s->ssl = ssl;
  BIO* bio = BIO_new(sideBio());
  if (bio == nullptr) {
    SSL_free(ssl);
    s->ssl = nullptr;
    fail(c, "TLS setup failed: out of memory");
    return false;
  }
  BIO_set_data(bio, s);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl, bio, bio);
  return true;
}

void Proxy::refuse(Conn* c, int status, const std::string& why) {
  spdlog::debug("[c{}] refused: {}", c->id, why);
  c->refused = true;
  // Where the agent speaks HTTP to us, it gets a page that says why; the
  // server side (if any) is dropped, since the exchange is over.
  bool http = c->phase == Phase::kExplicit || c->phase == Phase::kHttp;
  if (status != 0 && http && c->down.handshaken()) {
    std::string body = why + "\n";
    sendTo(c, &c->down,
           "HTTP/1.1 " + std::to_string(status) + reasonPhrase(status) +
               "\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body);
    c->close_after_flush = true;
    if (c->up.fd >= 0) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, c->up.fd, nullptr);
      c->up.closeAll();
    }
    return;
  }
  // Anything else is closed with a reset, so the client fails at once.
  linger l{1, 0};
  setsockopt(c->down.fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  c->dead = true;
}

void Proxy::fail(Conn* c, const std::string& why) {
  if (!c->established || c->phase == Phase::kExplicit) {
    auditConn(c, "error", nullptr, why);
  }
  refuse(c, 502, "guard: " + why);
}

void Proxy::destroy(Conn* c) {
  if (c->destroyed) {
    return;
  }
  c->destroyed = true;
  c->dead = true;
  if (record_ != nullptr && (c->requests > 0 || c->bytes_up > 0 || c->bytes_down > 0)) {
    record({{"event", "close"}, {"conn", c->id}, {"target", c->peer}, {"requests", c->requests},
            {"bytes_up", c->bytes_up}, {"bytes_down", c->bytes_down},
            {"ms", std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - c->created)
                       .count()}});
  }
  for (Side* s : {&c->down, &c->up}) {
    if (s->fd >= 0) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, s->fd, nullptr);
    }
    s->closeAll();
  }
  // Freed after the batch: later events of this batch may still point here.
  auto it = conns_.find(c->id);
  graveyard_.push_back(std::move(it->second));
  conns_.erase(it);
}

constexpr auto kPoolIdle = std::chrono::seconds(30);
constexpr size_t kPoolPerKey = 16;
constexpr size_t kPoolMax = 256;

void Proxy::dropPooled(Pooled* p) {
  SSL_free(p->ssl);  // frees the BIOs too
  close(p->fd);
  --pooled_;
}

// parkUpstream keeps C's upstream connection for reuse when it sits at a
// message boundary with nothing in flight; returns whether it did.
bool Proxy::parkUpstream(Conn* c) {
  Side* up = &c->up;
  if (!c->intercept || c->phase != Phase::kHttp || c->req != Msg::kHead || c->resp != Msg::kHead ||
      !c->methods.empty() || up->fd < 0 || up->ssl == nullptr || !SSL_is_init_finished(up->ssl) ||
      up->eof || up->raw_eof || up->shut || !up->in.empty() || up->pending() != 0 ||
      !up->raw_in.empty() || pooled_ >= kPoolMax) {
    return false;
  }
  auto& list = pool_[poolKey(c)];
  if (list.size() >= kPoolPerKey) {
    return false;
  }
  epoll_ctl(ep_, EPOLL_CTL_DEL, up->fd, nullptr);
  BIO_set_data(SSL_get_rbio(up->ssl), nullptr);  // no side while parked
  list.push_back({up->fd, up->ssl, Clock::now()});
  ++pooled_;
  up->fd = -1;
  up->ssl = nullptr;
  return true;
}

// takeUpstream gives C a live pooled connection to its server, if any.
bool Proxy::takeUpstream(Conn* c) {
  auto it = pool_.find(poolKey(c));
  while (it != pool_.end() && !it->second.empty()) {
    Pooled p = it->second.back();
    it->second.pop_back();
    char b;
    ssize_t n = recv(p.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0 || errno != EAGAIN || Clock::now() - p.since > kPoolIdle) {
      dropPooled(&p);  // closed, or it said something (an alert) while idle
      continue;
    }
    --pooled_;
    c->up.fd = p.fd;
    c->up.ssl = p.ssl;
    BIO_set_data(SSL_get_rbio(p.ssl), &c->up);
    c->up.readable = c->up.writable = true;
    c->up_state = Up::kConnected;
    watch(p.fd, &c->up, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
    return true;
  }
  return false;
}

void Proxy::sweep() {
  last_sweep_ = Clock::now();
  for (int fd : paused_) {
    watch(fd, listener_handlers_[fd], EPOLLIN);
  }
  paused_.clear();
  std::erase_if(cache_, [&](const auto& kv) {
    return kv.second.done && kv.second.waiters.empty() && last_sweep_ > kv.second.expires;
  });
  for (auto& [key, list] : pool_) {
    std::erase_if(list, [&](Pooled& p) {
      if (last_sweep_ - p.since <= kPoolIdle) {
        return false;
      }
      dropPooled(&p);
      return true;
    });
  }
  std::vector<Conn*> expired;
  for (auto& [id, c] : conns_) {
    // Setup is timed from the start (a byte every few seconds does not keep
    // an undecided connection alive); an established one from its last read.
    bool over = c->established ? last_sweep_ - c->last > kIdleTimeout
                               : last_sweep_ - c->created > kHandshakeTimeout;
    if (over) {
      expired.push_back(c.get());
    }
  }
  for (Conn* c : expired) {
    if (!c->established) {
      auditConn(c, "error", nullptr, "timed out before the connection was set up");
    }
    destroy(c);
  }
}

bool Proxy::sendTo(Conn* c, Side* s, std::string_view data) {
  if (data.empty()) {
    return true;
  }
  if (s == &c->up) {
    c->bytes_up += data.size();
  } else {
    c->bytes_down += data.size();
  }
  if (s->ssl == nullptr) {
    s->out.append(data);
    return true;
  }
  while (!data.empty()) {
    int n = SSL_write(s->ssl, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)));
    if (n <= 0) {
      fail(c, "TLS write failed: " + tlsErrorText());
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// io moves bytes between one side's socket and its buffers, through TLS
// when the side has it. Returns whether anything moved.
bool Proxy::io(Conn* c, Side* s) {
  if (s->fd < 0) {
    return false;
  }
  bool progress = false;
  if (s == &c->up && c->up_state == Up::kConnecting) {
    if (!s->writable) {
      return false;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      connectNext(c);
      return true;
    }
    onConnected(c);
    progress = true;
  }
  if (s == &c->up && c->up_state != Up::kConnected) {
    return progress;
  }
  char buf[kChunk];
  // TLS output waiting in the BIO goes to the socket buffer first.
  while (s->writable && s->pending() > 0) {
    ssize_t n = write(s->fd, s->out.data(), s->out.size());
    if (n > 0) {
      s->out.erase(0, static_cast<size_t>(n));
      progress = true;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      s->writable = false;
    } else {
      s->raw_eof = s->eof = true;  // the peer is gone
      s->writable = false;
      s->out.clear();
      progress = true;
    }
  }
  Buffer& dst = s->ssl != nullptr ? s->raw_in : s->in;
  while (s->readable && !s->raw_eof && dst.size() < s->cap) {
    // A buffer with room (one that has carried bulk data) takes the bytes
    // straight, up to kCap in one read; a small one reads through BUF, so
    // connections that carry little keep small buffers.
    bool direct = dst.spare() >= kChunk && s->cap - dst.size() >= kChunk;
    size_t want = direct ? std::min({dst.spare(), s->cap - dst.size(), kCap}) : sizeof(buf);
    ssize_t n = read(s->fd, direct ? dst.tail(want) : buf, want);
    if (n > 0) {
      progress = true;
      c->last = Clock::now();
      if (static_cast<size_t>(n) < want && !s->hup) {
        // A short read emptied the socket; more data (or the peer's EOF)
        // raises a new edge, so the read that would say EAGAIN is saved.
        s->readable = false;
      }
      if (direct) {
        dst.commit(static_cast<size_t>(n));
      } else {
        dst.append({buf, static_cast<size_t>(n)});
      }
    } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      s->raw_eof = true;
      progress = true;
      if (s->ssl == nullptr) {
        s->eof = true;  // with ssl, its BIO reports EOF once raw_in is read
      }
    } else if (errno == EAGAIN) {
      s->readable = false;
    }
  }
  if (s->ssl != nullptr) {
    size_t out_before = s->out.size();  // TLS writes straight into out
    if (!SSL_is_init_finished(s->ssl)) {
      int r = SSL_do_handshake(s->ssl);
      if (r == 1) {
        progress = true;
      } else {
        int err = SSL_get_error(s->ssl, r);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
          std::string why = s == &c->up ? "the upstream TLS handshake failed" : "the agent's TLS handshake failed";
          if (s == &c->up) {
            long verify = SSL_get_verify_result(s->ssl);
            if (verify != X509_V_OK) {
              why = "the upstream certificate of " + c->peer + " is not trusted (" +
                    X509_verify_cert_error_string(verify) + ")";
            }
          }
          why += ": " + tlsErrorText();
          auditConn(c, "deny", nullptr, why, {{"tls", "handshake"}});
          refuse(c, 502, "guard: " + why);
          return true;
        }
      }
    }
    // Without ciphertext left (or an EOF to report), SSL_read could only
    // say it wants more: it is not called.
    while (SSL_is_init_finished(s->ssl) && !s->eof && s->in.size() < s->cap &&
           (!s->raw_in.empty() || s->raw_eof || SSL_has_pending(s->ssl))) {
      // Plaintext goes straight into IN when it has room for a record.
      bool direct = s->in.spare() >= kRecord;
      int n = direct ? SSL_read(s->ssl, s->in.tail(kRecord), kRecord)
                     : SSL_read(s->ssl, buf, sizeof(buf));
      if (n > 0) {
        if (direct) {
          s->in.commit(static_cast<size_t>(n));
        } else {
          s->in.append({buf, static_cast<size_t>(n)});
        }
        progress = true;
        continue;
      }
      int err = SSL_get_error(s->ssl, n);
      if (err == SSL_ERROR_WANT_READ) {
        break;
      }
      s->eof = true;  // close_notify, or a truncated stream
      progress = true;
      ERR_clear_error();
    }
    progress |= s->out.size() != out_before;
  }
  return progress;
}

void Proxy::pump(Conn* c) {
  if (c->destroyed) {
    return;
  }
  for (int round = 0; round < 64 && !c->dead; ++round) {
    bool progress = io(c, &c->down);
    progress |= io(c, &c->up);
    if (!c->dead) {
      progress |= step(c);
    }
    if (!progress) {
      break;
    }
  }
  if (c->dead) {
    destroy(c);
    return;
  }
  // The agent is done with a connection whose server side is idle: keep
  // that for the next connection to the same server.
  if (c->down.eof && c->down.in.empty() && c->down.pending() == 0 && parkUpstream(c)) {
    destroy(c);
    return;
  }
  // Half-close: once one side has ended and everything it sent is
  // delivered, the other side hears EOF too.
  for (auto [from, to] : {std::pair{&c->down, &c->up}, std::pair{&c->up, &c->down}}) {
    bool drained = from->in.empty() && to->pending() == 0;
    Msg state = from == &c->up ? c->resp : c->req;
    bool forward_eof = c->phase == Phase::kTunnel || (c->phase == Phase::kHttp && state != Msg::kBody);
    if (from->eof && drained && !to->shut && to->fd >= 0 && forward_eof &&
        (to != &c->up || c->up_state == Up::kConnected)) {
      to->shut = true;
      if (to->ssl != nullptr && SSL_is_init_finished(to->ssl)) {
        SSL_shutdown(to->ssl);
        io(c, to);
      }
      shutdown(to->fd, SHUT_WR);
    }
  }
  bool flushed = c->down.pending() == 0;
  if (c->close_after_flush && flushed) {
    destroy(c);
    return;
  }
  bool down_done = c->down.eof && (c->down.shut || c->up.fd < 0);
  bool up_done = c->up.fd < 0 ? c->up_state == Up::kConnected || c->down.eof : c->up.eof && c->up.shut;
  if (down_done && up_done && flushed && c->up.pending() == 0) {
    destroy(c);
    return;
  }
  if (c->down.eof && c->up.fd < 0 && c->up_state != Up::kResolving && c->up_state != Up::kConnecting) {
    destroy(c);
  }
}

bool Proxy::step(Conn* c) {
  if (c->refused) {
    return false;  // what the agent still sends is not judged, nor audited, again
  }
  switch (c->phase) {
    case Phase::kExplicit:
      return stepExplicit(c);
    case Phase::kClassify:
      return stepClassify(c);
    case Phase::kTunnel:
      return relay(c, &c->down, &c->up) | relay(c, &c->up, &c->down);
    case Phase::kHttp:
      if (!c->established && c->down.handshaken() && c->up_state == Up::kConnected &&
          c->up.fd >= 0 && c->up.handshaken()) {
        c->established = true;  // both handshakes done: from now on the idle timeout
      }
      return requestFilter(c) | responseFilter(c);
  }
  return false;
}

bool Proxy::relay(Conn* c, Side* from, Side* to) {
  if (from->in.empty() || to->fd < 0 || (to == &c->up && c->up_state != Up::kConnected) ||
      !to->handshaken() || !roomFor(*to)) {
    return false;
  }
  size_t n = std::min(from->in.size(), kCap);
  if (!sendTo(c, to, std::string_view(from->in).substr(0, n))) {
    return true;
  }
  from->in.erase(0, n);
  return true;
}

bool Proxy::stepExplicit(Conn* c) {
  HttpHead head;
  size_t len = 0;
  HeadParse r = parseRequestHead(c->down.in, &head, &len);
  if (r == HeadParse::kNeedMore) {
    if (c->down.eof) {
      c->dead = true;
      return true;
    }
    return false;
  }
  c->peer = "proxy";
  if (r != HeadParse::kOk) {
    auditConn(c, "deny", nullptr, "malformed proxy request");
    refuse(c, 400, "guard: malformed proxy request");
    return true;
  }
  std::string host;
  if (iequals(head.method, "CONNECT")) {
    if (!hostPort(head.target, 0, &host, &c->port) || c->port == 0) {
      auditConn(c, "deny", nullptr, "CONNECT target is not host:port");
      refuse(c, 400, "guard: CONNECT needs host:port");
      return true;
    }
    c->down.in.erase(0, len);
    c->connect_reply = true;
  } else {
    std::string_view t = head.target;
    if (t.substr(0, 7) != "http://" ) {
      auditConn(c, "deny", nullptr, "not a proxy request");
      refuse(c, 400, "guard: this is a proxy; send CONNECT or an absolute http:// URL");
      return true;
    }
    t.remove_prefix(7);
    if (!hostPort(t.substr(0, t.find_first_of("/?#")), 80, &host, &c->port)) {
      auditConn(c, "deny", nullptr, "bad URL in proxy request");
      refuse(c, 400, "guard: bad URL");
      return true;
    }
    c->explicit_http = true;  // the request stays in the buffer for the HTTP filter
  }
  if (isIpLiteral(host)) {
    policy::IpAddr::parse(host, &c->ip);
    c->ip_known = true;
    if (!decide(c, "", &c->ip, "proxy")) {
      return true;
    }
  } else if (!decide(c, host, nullptr, "proxy")) {
    return true;
  }
  c->phase = c->explicit_http ? Phase::kHttp : Phase::kClassify;
  c->established = c->explicit_http;  // plain HTTP has no handshake to wait for
  auto pooled = c->inspect && c->connect_reply ? pool_.find(poolKey(c)) : pool_.end();
  if (pooled != pool_.end() && !pooled->second.empty()) {
    // A pooled connection to this server will carry it (taken once the
    // agent's ClientHello shows TLS): no reason to make the agent wait.
    c->connect_reply = false;
    sendTo(c, &c->down, "HTTP/1.1 200 Connection established\r\n\r\n");
  } else {
    startUpstream(c);
  }
  return true;
}

bool Proxy::stepClassify(Conn* c) {
  // Server-first protocols (SSH, SMTP) speak before the agent does: their
  // bytes pass while the agent's first bytes are still awaited.
  bool progress = c->intercept ? false : relay(c, &c->up, &c->down);
  if (c->down.in.empty()) {
    if (c->down.eof && c->up_state == Up::kConnected && !c->up.shut) {
      c->phase = Phase::kTunnel;
      return true;
    }
    return progress;
  }
  std::string sni;
  HelloParse h = peekClientHello({reinterpret_cast<const uint8_t*>(c->down.in.data()), c->down.in.size()}, &sni);
  if (h == HelloParse::kNeedMore && !c->down.eof) {
    return progress;
  }
  if (h == HelloParse::kMalformed || h == HelloParse::kNeedMore) {
    auditConn(c, "deny", nullptr, "malformed TLS ClientHello");
    refuse(c, 0, "malformed ClientHello");
    return true;
  }
  if (h == HelloParse::kOk && !c->denied_page.empty()) {
    refuse(c, 0, "denied");  // TLS: no page can reach the agent, only the reset
    return true;
  }
  if (h == HelloParse::kOk) {
    // The name in the ClientHello must be the name the connection was
    // decided for (DNS answer or CONNECT): otherwise it is domain fronting.
    if (!sni.empty() && !c->name.empty() && sni != c->name) {
      auditConn(c, "deny", nullptr,
                "domain fronting: the TLS SNI names " + sni + " but the connection is for " + c->name,
                {{"sni", sni}});
      refuse(c, 0, "SNI mismatch");
      return true;
    }
    if (!sni.empty() && c->name.empty()) {
      Verdict v = p_.connect(sni, &c->ip, c->port);
      if (!v.allowed()) {
        auditConn(c, "deny", &v, "the TLS SNI " + sni + " is not allowed", {{"sni", sni}});
        refuse(c, 0, "SNI denied");
        return true;
      }
    }
    // A tunnel is set up now; an interception once both TLS handshakes are
    // done (step()), so a handshake that stalls is timed as setup.
    c->established = !c->inspect;
    if (c->inspect) {
      c->intercept = true;
      std::string cert_name = !c->name.empty() ? c->name : !sni.empty() ? sni : c->ip.toString();
      if (c->name.empty()) {
        c->name = cert_name;
      }
      if (!startTls(c, &c->down, o_.ca->newServer(cert_name))) {
        return true;
      }
      c->down.raw_in = std::move(c->down.in);  // the ClientHello, replayed into TLS
      c->down.in.clear();
      c->phase = Phase::kHttp;
      if (c->up_state == Up::kIdle && !takeUpstream(c)) {
        startUpstream(c);
      } else if (c->up_state == Up::kConnected && c->up.ssl == nullptr) {
        startTls(c, &c->up, up_tls_->newClient(c->name));
      }
    } else {
      c->phase = Phase::kTunnel;
    }
    if (c->up_state == Up::kIdle) {
      startUpstream(c);
    }
    return true;
  }
  // Not TLS. Anything a lenient HTTP server might take for a request goes
  // to the strict HTTP filter, which refuses what it cannot parse: a leading
  // CR, LF, space or tab, or a token (a method of any length) and then a
  // space or tab. Only bytes that cannot begin a request line (SSH's
  // "SSH-2.0", a database's binary startup) are tunnelled; a token that
  // goes on for kMaxMethod bytes, or until the agent's EOF, is taken for a
  // method.
  constexpr size_t kMaxMethod = 256;
  std::string_view in = c->down.in;
  bool http = in[0] == '\r' || in[0] == '\n' || in[0] == ' ' || in[0] == '\t';
  bool decided = http;
  for (size_t i = 0; !decided && i < in.size(); ++i) {
    char ch = in[i];
    if (ch == ' ' || ch == '\t' || i + 1 >= kMaxMethod) {
      http = decided = true;
    } else if (!(ch >= 'A' && ch <= 'Z') && !(ch >= 'a' && ch <= 'z') && ch != '-' && ch != '_') {
      decided = true;
    }
  }
  if (!decided && !c->down.eof) {
    return progress;
  }
  http = http || !decided;
  if (!c->denied_page.empty()) {
    // Denied when it was captured (and audited then): an HTTP client gets a
    // page naming the rule, anything else a reset.
    c->phase = http ? Phase::kHttp : c->phase;
    refuse(c, http ? 403 : 0, c->denied_page);
    return true;
  }
  c->established = true;
  if (c->up_state == Up::kIdle) {
    startUpstream(c);
  }
  c->phase = http ? Phase::kHttp : Phase::kTunnel;
  return true;
}

bool Proxy::requestFilter(Conn* c) {
  bool progress = false;
  Side* down = &c->down;
  Side* up = &c->up;
  if (!down->handshaken()) {
    return false;
  }
  while (!c->dead && !c->close_after_flush) {
    if (c->req == Msg::kRaw) {
      return relay(c, down, up) | progress;
    }
    if (c->req == Msg::kBody) {
      if (!moveBody(c, &c->req_body, down, up, true)) {
        return progress;
      }
      progress = true;
      continue;
    }
    if (down->in.empty()) {
      return progress;
    }
    if (up->fd < 0 || c->up_state != Up::kConnected || !up->handshaken() || !roomFor(*up)) {
      return progress;  // the head waits for the server side
    }
    HttpHead head;
    size_t len = 0;
    HeadParse r = parseRequestHead(down->in, &head, &len);
    if (r == HeadParse::kNeedMore) {
      return progress;
    }
    if (r != HeadParse::kOk) {
      auditConn(c, "deny", nullptr, r == HeadParse::kTooLarge ? "request head too large" : "malformed HTTP request");
      refuse(c, 400, "guard: malformed HTTP request");
      return true;
    }
    std::string host;
    uint16_t hport = 0;
    if (c->explicit_http) {
      std::string_view t = head.target;
      if (t.substr(0, 7) != "http://") {
        refuse(c, 400, "guard: send absolute http:// URLs through the proxy");
        return true;
      }
      t.remove_prefix(7);
      size_t path = t.find_first_of("/?#");
      hostPort(t.substr(0, path), 80, &host, &hport);
      std::string authority(t.substr(0, path));
      head.target = path == std::string_view::npos ? "/" : std::string(t.substr(path));
      // The URL decides where the request goes; a Host header naming
      // anything else would be fronting, so the URL's authority replaces it.
      head.erase("host");
      head.headers.push_back({"Host", authority});
      head.erase("proxy-connection");
      head.erase("proxy-authorization");
    } else {
      // An absolute-form target names the host a server must use (RFC 9112
      // 3.2.2): it must agree with Host and with the connection, and goes
      // upstream in origin-form.
      const std::string* h = head.find("host");
      if (h != nullptr) {
        hostPort(*h, c->port, &host, &hport);
      }
      std::string_view t = head.target;
      if (t.rfind("https://", 0) == 0 || t.rfind("http://", 0) == 0) {
        t.remove_prefix(t.find("//") + 2);
        size_t path = t.find_first_of("/?#");
        std::string url_host;
        uint16_t url_port = 0;
        if (!hostPort(t.substr(0, path), c->port, &url_host, &url_port) ||
            (!host.empty() && url_host != host)) {
          host = "?";  // disagreement: refused below as fronting
        } else {
          host = url_host;
        }
        head.target = path == std::string_view::npos ? "/" : std::string(t.substr(path));
      }
    }
    size_t hosts = 0;
    for (const HttpHeader& hh : head.headers) {
      hosts += strcasecmp(hh.name.c_str(), "host") == 0 ? 1 : 0;
    }
    if (hosts > 1) {
      host = "?";  // RFC 9112 3.2: more than one Host is refused
    }
    std::string url = std::string(c->intercept ? "https://" : "http://") + c->peer + head.target.substr(0, head.target.find('?'));
    nlohmann::json details = {{"method", head.method}, {"conn", c->id}, {"request", c->requests + 1}};
    // The Host header must name the host the connection was decided for.
    if (host.empty() || (!c->name.empty() && host != c->name)) {
      details["host"] = host;
      audit("http", url, "deny", nullptr,
            host.empty() ? "a request without a Host header"
                         : "domain fronting: the Host header names " + host + " but the connection is for " + c->name,
            details);
      refuse(c, 403, "guard: the Host header does not match the connection (domain fronting)");
      return true;
    }
    if (c->name.empty()) {
      // An address in Host (http://192.0.2.7/) is judged as that address,
      // by the address rules; a name, with the address it was reached at.
      policy::IpAddr literal;
      Verdict v = policy::IpAddr::parse(host, &literal) ? p_.connect("", &literal, c->port)
                                                : p_.connect(host, &c->ip, c->port);
      if (!v.allowed()) {
        audit("http", url, "deny", &v, "the Host header names " + host + ", which is not allowed", details);
        refuse(c, 403, "guard: " + host + " is not allowed: denied by rule " +
                           std::string(v.rule.id) + " (" + v.rule.source() + ")");
        return true;
      }
      c->name = host;
    }
    // A secret (real or placeholder, in any encoding) headed anywhere but
    // where its credential may go is exfiltration.
    std::optional<SecretScanner::Hit> hit;
    if (!scanner_.empty()) {
      hit = scanner_.find(head.serialize(), c->allowed_secrets);
    }
    if (hit) {
      const Secret& s = o_.secrets[hit->secret];
      details["credential"] = s.name;
      details["form"] = hit->form;
      // The URL may carry the secret: the event names the host only.
      audit("exfiltration", std::string(c->intercept ? "https://" : "http://") + c->peer + "/", "deny", nullptr,
            std::string("the request carries the ") + (hit->placeholder ? "placeholder" : "value") +
                " of credential " + s.name + " to a destination it is not allowed for",
            details);
      refuse(c, 403, "guard: request blocked: it carries credential " + s.name + " to " + c->name);
      return true;
    }
    Framing framing;
    if (!requestFraming(head, &framing)) {
      audit("http", url, "deny", nullptr, "ambiguous request framing (request smuggling)", details);
      refuse(c, 400, "guard: ambiguous Content-Length / Transfer-Encoding");
      return true;
    }
    // The swap: placeholders become real values only inside TLS to the
    // credential's own destinations.
    std::vector<std::string> injected;
    if (c->intercept && c->allowed_secrets != 0) {
      for (size_t i = 0; i < o_.secrets.size() && i < 64; ++i) {
        if ((c->allowed_secrets >> i & 1) == 0) {
          continue;
        }
        // Only the credential's own header gets the value, always in the
        // policy's template: the agent never chooses where a real value
        // lands (a path, a query, a header the server echoes).
        const Secret& s = o_.secrets[i];
        if (s.header.empty()) {
          continue;
        }
        std::string v = s.header_template;
        replaceAll(&v, "{value}", s.value);
        head.erase(s.header);
        head.headers.push_back({s.header, v});
        injected.push_back(s.name);
      }
    }
    if (c->allowed_secrets != 0) {
      // A compressed response could carry a value redaction cannot see.
      head.erase("accept-encoding");
      head.headers.push_back({"Accept-Encoding", "identity"});
      if (head.find("upgrade") != nullptr) {
        audit("http", url, "deny", nullptr,
              "protocol upgrades are refused on connections that carry credentials", details);
        refuse(c, 403, "guard: no protocol upgrade on a connection that carries credentials");
        return true;
      }
    }
    if (!injected.empty()) {
      details["credentials"] = injected;
    }
    std::string mcp_server;
    switch (mcpRequest(c, &head, len, &framing, &mcp_server)) {
      case McpStep::kWait:
        return progress;
      case McpStep::kDone:
        progress = true;
        continue;
      case McpStep::kPass:
        break;
    }
    c->mcp.push_back(mcp_server);
    ++c->requests;
    audit("http", url, "allow", nullptr, "", std::move(details));
    if (record_ != nullptr) {
      record({{"event", "http"}, {"conn", c->id}, {"url", url}, {"method", head.method},
              {"credentials", injected}, {"decision", "allow"}, {"rule", c->rule_id},
              {"headers", recordHeaders(head)}});
    }
    c->methods.push_back(head.method);
    c->sent_at.push_back(Clock::now());
    down->in.erase(0, len);
    if (!sendTo(c, up, head.serialize())) {
      return true;
    }
    c->req_body.start(framing);
    c->req = c->req_body.ended ? Msg::kHead : Msg::kBody;
    c->scan_tail.clear();
    progress = true;
  }
  return progress;
}

// moveBody forwards the current message body from FROM to TO, scanning a
// request for secrets or redacting real values from a response. Returns
// whether anything moved; sets the message state when the body ends.
bool Proxy::moveBody(Conn* c, Body* b, Side* from, Side* to, bool request) {
  if (!request && !c->sse_server.empty()) {
    return moveEvents(c, b, from, to);
  }
  bool progress = false;
  if (!b->ended && b->counted < from->in.size()) {
    std::string_view fresh = std::string_view(from->in).substr(b->counted);
    size_t n = 0;
    switch (b->framing.kind) {
      case Framing::Kind::kLength:
        n = static_cast<size_t>(std::min<uint64_t>(b->left, fresh.size()));
        b->left -= n;
        b->ended = b->left == 0;
        break;
      case Framing::Kind::kChunked: {
        std::vector<std::pair<size_t, size_t>> fresh_spans;
        bool scan = request && !scanner_.empty();
        long r = b->chunks.consume(fresh, nullptr, scan ? &fresh_spans : nullptr);
        for (auto [off, len] : fresh_spans) {
          b->spans.emplace_back(b->counted + off, len);
        }
        if (r < 0) {
          auditConn(c, "deny", nullptr, "malformed chunked body");
          refuse(c, request ? 400 : 502, "guard: malformed chunked body");
          return true;
        }
        n = static_cast<size_t>(r);
        b->ended = b->chunks.done();
        break;
      }
      case Framing::Kind::kUntilClose:
        n = fresh.size();
        break;
      case Framing::Kind::kNone:
        b->ended = true;
        break;
    }
    b->counted += n;
  }
  if (b->framing.kind == Framing::Kind::kUntilClose && from->eof) {
    b->ended = true;
  }
  if (!b->ended && from->eof && b->counted == from->in.size()) {
    // The sender stopped mid-body: nothing more will come.
    c->close_after_flush = true;
    from->in.resize(b->counted);
    b->ended = true;
  }
  std::string_view region = std::string_view(from->in).substr(0, b->counted);
  // Bytes that could begin a secret stay until the rest arrives (more when
  // chunk framing may sit inside it).
  size_t window = scanner_.longest() > 0 ? scanner_.longest() - 1 : 0;
  if (window > 0 && b->framing.kind == Framing::Kind::kChunked) {
    window += 64;
  }
  size_t keep = b->ended ? 0 : std::min(region.size(), window);
  std::string payload;  // a chunked request's payload: what was sent, then what waits
  if (request && !scanner_.empty() && b->framing.kind == Framing::Kind::kChunked) {
    payload = b->sent_payload;
    size_t held = 0;  // payload bytes that must wait: those that could begin a secret
    for (auto [off, len] : b->spans) {
      payload.append(region.substr(off, len));
    }
    // The raw bytes from where the last LONGEST-1 payload bytes begin wait
    // too, however much framing (chunk sizes, extensions) lies among them.
    for (size_t i = b->spans.size(); i > 0 && !b->ended && held < window; --i) {
      auto [off, len] = b->spans[i - 1];
      size_t need = std::min(len, window - held);
      held += need;
      keep = std::max(keep, b->counted - (off + len - need));
    }
  }
  if (request && !scanner_.empty()) {
    std::string text;
    text.reserve(c->scan_tail.size() + region.size());
    text.append(c->scan_tail).append(region);
    auto hit = scanner_.find(text, c->allowed_secrets);
    if (!hit && !payload.empty()) {
      hit = scanner_.find(payload, c->allowed_secrets);
    }
    if (hit) {
      const Secret& s = o_.secrets[hit->secret];
      audit("exfiltration", c->peer, "deny", nullptr,
            std::string("a request body carries the ") + (hit->placeholder ? "placeholder" : "value") +
                " of credential " + s.name,
            {{"credential", s.name}, {"form", hit->form}, {"conn", c->id}});
      refuse(c, 403, "guard: request blocked: its body carries credential " + s.name);
      return true;
    }
  } else if (has_values_) {
    std::string mutable_region(region);
    if (redactValues(o_.secrets, &mutable_region, b->framing.kind == Framing::Kind::kChunked) > 0) {
      from->in.replace(0, region.size(), mutable_region);
      audit("redact", c->peer, "allow", nullptr, "a response carried a credential's real value; the agent got the placeholder",
            {{"conn", c->id}});
    }
  }
  size_t emit = b->counted - keep;
  if (!roomFor(*to)) {
    return false;
  }
  if (emit > 0) {
    if (request) {
      std::string_view sent = std::string_view(from->in).substr(0, emit);
      c->scan_tail = std::string(sent.substr(sent.size() - std::min(sent.size(), scanner_.longest())));
      // The payload sent with those bytes joins the sent payload; the spans
      // left move to the front with the bytes that stay.
      std::vector<std::pair<size_t, size_t>> left;
      for (auto [off, len] : b->spans) {
        size_t sent_len = off >= emit ? 0 : std::min(len, emit - off);
        b->sent_payload.append(sent.substr(std::min(off, emit), sent_len));
        if (sent_len < len) {
          left.emplace_back(off + sent_len - emit, len - sent_len);
        }
      }
      b->spans = std::move(left);
      size_t tail = scanner_.longest();
      if (b->sent_payload.size() > tail) {
        b->sent_payload.erase(0, b->sent_payload.size() - tail);
      }
    }
    if (!sendTo(c, to, std::string_view(from->in).substr(0, emit))) {
      return true;
    }
    from->in.erase(0, emit);
    b->counted -= emit;
    progress = true;
  }
  if (b->ended && b->counted == 0) {
    (request ? c->req : c->resp) = Msg::kHead;
    progress = true;
  }
  return progress;
}

bool Proxy::responseFilter(Conn* c) {
  bool progress = false;
  Side* down = &c->down;
  Side* up = &c->up;
  if (!down->handshaken() || !up->handshaken() || up->fd < 0) {
    return false;
  }
  while (!c->dead && !c->close_after_flush) {
    if (c->resp == Msg::kRaw) {
      return relay(c, up, down) | progress;
    }
    if (c->resp == Msg::kBody) {
      if (!moveBody(c, &c->resp_body, up, down, false)) {
        return progress;
      }
      progress = true;
      if (c->resp == Msg::kHead && c->resp_body.framing.kind == Framing::Kind::kUntilClose) {
        c->close_after_flush = true;
      }
      continue;
    }
    if (up->in.empty() || !roomFor(*down)) {
      return progress;
    }
    HttpHead head;
    size_t len = 0;
    HeadParse r = parseResponseHead(up->in, &head, &len);
    if (r == HeadParse::kNeedMore) {
      return progress;
    }
    if (r != HeadParse::kOk || c->methods.empty()) {
      auditConn(c, "deny", nullptr, c->methods.empty() ? "a response nobody asked for" : "malformed HTTP response");
      refuse(c, 502, "guard: malformed response from " + c->peer);
      return true;
    }
    if (const std::string* enc = head.find("content-encoding");
        c->allowed_secrets != 0 && enc != nullptr && strcasecmp(enc->c_str(), "identity") != 0) {
      auditConn(c, "deny", nullptr, "a compressed response on a connection that carries credentials");
      refuse(c, 502, "guard: the server sent a compressed response; refused on a credential connection");
      return true;
    }
    size_t redacted = 0;
    if (has_values_) {
      redacted += redactValues(o_.secrets, &head.reason);
      for (HttpHeader& h : head.headers) {
        redacted += redactValues(o_.secrets, &h.value);
      }
    }
    if (redacted > 0) {
      audit("redact", c->peer, "allow", nullptr, "a response header carried a credential's real value; the agent got the placeholder",
            {{"conn", c->id}});
    }
    if (head.status >= 200 && !c->mcp.empty() && !c->mcp.front().empty()) {
      McpStep s = mcpResponse(c, &head, len);
      if (s == McpStep::kWait) {
        return progress;
      }
      if (s == McpStep::kDone) {
        progress = true;
        continue;
      }
    }
    up->in.erase(0, len);
    if (!sendTo(c, down, head.serialize())) {
      return true;
    }
    progress = true;
    if (head.status == 101) {
      c->resp = c->req = Msg::kRaw;  // an upgraded connection carries bytes, not messages
      continue;
    }
    if (head.status < 200) {
      continue;  // 1xx: the final response follows
    }
    std::string method = std::move(c->methods.front());
    c->methods.pop_front();
    if (!c->sent_at.empty()) {
      if (record_ != nullptr) {
        record({{"event", "response"}, {"conn", c->id}, {"status", head.status},
                {"headers", recordHeaders(head)},
                {"ms", std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() -
                                                                             c->sent_at.front())
                           .count()}});
      }
      c->sent_at.pop_front();
    }
    if (!c->mcp.empty()) {
      c->mcp.pop_front();
    }
    Framing framing;
    if (!responseFraming(head, method, &framing)) {
      auditConn(c, "deny", nullptr, "ambiguous response framing");
      refuse(c, 502, "guard: ambiguous response framing");
      return true;
    }
    c->resp_body.start(c->sse_server.empty() ? framing : c->sse_framing);
    c->resp = c->resp_body.ended ? Msg::kHead : Msg::kBody;
  }
  return progress;
}

// ---- MCP over HTTP ----
//
// Requests to a URL a policy server entry names are governed by that
// entry: the whole JSON-RPC body is read (up to kMcpMaxMessage) and goes
// through the same filter as stdio; a refused call is answered here and
// never forwarded. Responses to them are filtered too: a JSON body whole,
// an event stream event by event, re-framed as chunked. A request to any
// other URL that speaks MCP (its headers, or a JSON body with MCP methods)
// is an MCP server nobody approved: refused, unless the policy's MCP
// default allows unknown servers.

Proxy::McpStep Proxy::mcpRequest(Conn* c, HttpHead* head, size_t head_len, Framing* framing,
                                 std::string* server) {
  Side* down = &c->down;
  uint16_t default_port = c->intercept ? 443 : 80;
  std::string mcp_url = std::string(c->intercept ? "https://" : "http://") + c->name +
                        (c->port != default_port ? ":" + std::to_string(c->port) : "") +
                        head->target.substr(0, head->target.find('?'));
  *server = std::string(p_.mcpServerForUrl(mcp_url));
  auto learned = mcp_endpoints_.end();
  if (!mcp_endpoints_.empty()) {
    std::string origin =
        mcp_url.substr(0, mcp_url.size() - head->target.substr(0, head->target.find('?')).size());
    learned = mcp_endpoints_.find(origin + head->target);
  }
  if (server->empty() && learned != mcp_endpoints_.end()) {
    *server = learned->second.server;
  }
  bool mcp_headers =
      head->find("mcp-protocol-version") != nullptr || head->find("mcp-session-id") != nullptr;
  const std::string* ct = head->find("content-type");
  bool json_post = head->method == "POST" && ct != nullptr &&
                   strncasecmp(ct->c_str(), "application/json", 16) == 0;
  if (server->empty() && !mcp_headers && !json_post) {
    return McpStep::kPass;
  }
  if (!c->methods.empty()) {
    return McpStep::kWait;  // an answer of ours must not overtake the responses still due
  }
  std::string body;
  size_t consumed = 0;
  BodyRead r = readWholeBody(std::string_view(down->in).substr(head_len), *framing, down->eof,
                             kMcpMaxMessage, &consumed, &body);
  if (r == BodyRead::kNeedMore && !down->eof) {
    down->cap = head_len + kMcpMaxMessage + kChunk;
    return McpStep::kWait;
  }
  down->cap = kCap;
  if (r == BodyRead::kTooLarge && server->empty() && !mcp_headers) {
    return McpStep::kPass;  // an ordinary upload: streamed on, its secrets still scanned
  }
  if (r != BodyRead::kOk) {
    std::string why = r == BodyRead::kTooLarge ? "an MCP request over the size limit"
                                               : "a malformed MCP request body";
    auditConn(c, "deny", nullptr, why);
    refuse(c, 400, "guard: " + why);
    return McpStep::kDone;
  }
  if (server->empty() && !mcp_headers && !isMcpTraffic(body)) {
    return McpStep::kPass;  // JSON, but not MCP
  }
  Verdict v = p_.mcpServer(*server);
  if (server->empty() && v.allowed()) {
    return McpStep::kPass;  // the default admits unknown servers; no entry to filter by
  }
  McpFilter filter(&mcp_ctx_, *server, "http");
  std::string to_server;
  std::string to_client;
  if (!v.allowed()) {
    std::string message =
        server->empty()
            ? "guard: " + mcp_url + " is an MCP server no policy entry approves (" +
                  std::string(v.rule.id) + ")"
            : "guard: MCP server '" + *server + "' is denied by " + std::string(v.rule.id);
    auditMcp(mcp_ctx_, "start", server->empty() ? mcp_url : *server, v, message,
             {{"server", *server}, {"transport", "http"}, {"url", mcp_url}});
    McpFilter denier(&mcp_ctx_, *server, "http", message);
    denier.fromClient(body, &to_server, &to_client);
    answerMcp(c, head_len + consumed, 403,
              to_client.empty() ? "{\"error\":\"" + message + "\"}" : to_client);
    return McpStep::kDone;
  }
  if (head->method != "POST") {
    return McpStep::kPass;  // the event stream (GET) and session end (DELETE) carry no calls
  }
  filter.fromClient(body, &to_server, &to_client);
  if (!to_client.empty() && learned != mcp_endpoints_.end()) {
    // The older transport answers on the event stream, not in the POST's
    // response: the refusal goes there as a message event.
    auto stream = conns_.find(learned->second.stream);
    if (stream != conns_.end() && !stream->second->dead && stream->second->sse_chunked) {
      std::string event = "event: message\ndata: " + to_client.substr(0, to_client.size() - 1) + "\n\n";
      char size[24];
      snprintf(size, sizeof(size), "%zx\r\n", event.size());
      sendTo(stream->second.get(), &stream->second->down, size + event + "\r\n");
    } else if (stream != conns_.end() && !stream->second->dead) {
      sendTo(stream->second.get(), &stream->second->down,
             "event: message\ndata: " + to_client.substr(0, to_client.size() - 1) + "\n\n");
    }
    deferred_.push_back([this, id = learned->second.stream] {
      if (auto it = conns_.find(id); it != conns_.end()) {
        pump(it->second.get());  // writes the event out
      }
    });
    c->down.in.erase(0, head_len + consumed);
    sendTo(c, &c->down, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    return McpStep::kDone;
  }
  if (!to_client.empty()) {
    answerMcp(c, head_len + consumed, 200, to_client);
    return McpStep::kDone;
  }
  // What goes on is the body as read; framed by length from here.
  if (!to_server.empty() && to_server.back() == '\n') {
    to_server.pop_back();
  }
  down->in.replace(head_len, consumed, to_server);
  head->erase("content-length");
  head->erase("transfer-encoding");
  head->headers.push_back({"Content-Length", std::to_string(to_server.size())});
  *framing = Framing{Framing::Kind::kLength, to_server.size()};
  return McpStep::kPass;
}

void Proxy::answerMcp(Conn* c, size_t consume, int status, const std::string& json_body) {
  std::string body = json_body;
  if (!body.empty() && body.back() == '\n') {
    body.pop_back();
  }
  c->down.in.erase(0, consume);
  sendTo(c, &c->down,
         "HTTP/1.1 " + std::to_string(status) + (status == 200 ? " OK" : reasonPhrase(status)) +
             "\r\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body);
}

Proxy::McpStep Proxy::mcpResponse(Conn* c, HttpHead* head, size_t head_len) {
  Side* up = &c->up;
  const std::string& server = c->mcp.front();
  Framing framing;
  if (!responseFraming(*head, c->methods.front(), &framing)) {
    return McpStep::kPass;  // refused as ambiguous by the caller
  }
  const std::string* ct = head->find("content-type");
  if (ct != nullptr && strncasecmp(ct->c_str(), "text/event-stream", 17) == 0) {
    c->sse_server = server;
    c->sse_buf.clear();
    c->sse_framing = framing;
    c->sse_chunked = framing.kind != Framing::Kind::kUntilClose;
    if (c->sse_chunked) {
      head->erase("content-length");
      head->erase("transfer-encoding");
      head->headers.push_back({"Transfer-Encoding", "chunked"});
    }
    return McpStep::kPass;
  }
  if (ct == nullptr || strncasecmp(ct->c_str(), "application/json", 16) != 0) {
    return McpStep::kPass;
  }
  std::string body;
  size_t consumed = 0;
  BodyRead r = readWholeBody(std::string_view(up->in).substr(head_len), framing, up->eof,
                             kMcpMaxMessage, &consumed, &body);
  if (r == BodyRead::kNeedMore && !up->eof) {
    up->cap = head_len + kMcpMaxMessage + kChunk;
    return McpStep::kWait;
  }
  up->cap = kCap;
  if (r != BodyRead::kOk) {
    auditConn(c, "deny", nullptr, "an MCP response the filter cannot read whole");
    refuse(c, 502, "guard: the MCP server's response is malformed or over the size limit");
    return McpStep::kDone;
  }
  McpFilter filter(&mcp_ctx_, server, "http");
  std::string out;
  filter.fromServer(body, &out);
  if (!out.empty() && out.back() == '\n') {
    out.pop_back();
  }
  up->in.replace(head_len, consumed, out);
  head->erase("content-length");
  head->erase("transfer-encoding");
  head->headers.push_back({"Content-Length", std::to_string(out.size())});
  return McpStep::kPass;
}

// moveEvents forwards an MCP event stream event by event through the filter.
bool Proxy::moveEvents(Conn* c, Body* b, Side* from, Side* to) {
  if (!roomFor(*to)) {
    return false;
  }
  std::string payload;
  size_t take = 0;
  switch (b->framing.kind) {
    case Framing::Kind::kLength:
      take = static_cast<size_t>(std::min<uint64_t>(b->left, from->in.size()));
      payload.assign(from->in, 0, take);
      b->left -= take;
      b->ended = b->left == 0;
      break;
    case Framing::Kind::kChunked: {
      long r = b->chunks.consume(from->in, &payload);
      if (r < 0) {
        auditConn(c, "deny", nullptr, "malformed chunked body");
        refuse(c, 502, "guard: malformed chunked body");
        return true;
      }
      take = static_cast<size_t>(r);
      b->ended = b->chunks.done();
      break;
    }
    case Framing::Kind::kUntilClose:
      take = from->in.size();
      payload = from->in;
      b->ended = from->eof;
      break;
    case Framing::Kind::kNone:
      b->ended = true;
      break;
  }
  if (!b->ended && from->eof && take == from->in.size()) {
    b->ended = true;  // the server stopped mid-stream
    c->close_after_flush = true;
  }
  from->in.erase(0, take);
  c->sse_buf += payload;
  McpFilter filter(&mcp_ctx_, c->sse_server, "http");
  std::string out;
  for (size_t end; (end = sseEventEnd(c->sse_buf)) != std::string::npos;) {
    std::string_view event = std::string_view(c->sse_buf).substr(0, end);
    if (std::string path = sseEndpoint(event); !path.empty() && path.front() == '/') {
      uint16_t default_port = c->intercept ? 443 : 80;
      mcp_endpoints_[std::string(c->intercept ? "https://" : "http://") + c->name +
                     (c->port != default_port ? ":" + std::to_string(c->port) : "") + path] =
          McpEndpoint{c->sse_server, c->id};
    }
    out += filterSseEvent(&filter, event);
    c->sse_buf.erase(0, end);
  }
  if (c->sse_buf.size() > kMcpMaxMessage) {
    auditConn(c, "deny", nullptr, "an MCP event over the size limit");
    refuse(c, 502, "guard: the MCP server sent an event over the size limit");
    return true;
  }
  if (b->ended) {
    out += c->sse_buf;
    c->sse_buf.clear();
  }
  bool progress = take > 0;
  if (!out.empty()) {
    char size[24];
    snprintf(size, sizeof(size), "%zx\r\n", out.size());
    if (!sendTo(c, to, c->sse_chunked ? size + out + "\r\n" : out)) {
      return true;
    }
    progress = true;
  }
  if (b->ended) {
    if (c->sse_chunked && !sendTo(c, to, "0\r\n\r\n")) {
      return true;
    }
    c->sse_server.clear();
    c->resp = Msg::kHead;
    if (b->framing.kind == Framing::Kind::kUntilClose) {
      c->close_after_flush = true;
    }
    progress = true;
  }
  return progress;
}

}  // namespace

Error serveProxy(const policy::Policy& policy, policy::AuditSink* sink, const ProxyOptions& options,
                 Listeners listeners, int stop_fd) {
  signal(SIGPIPE, SIG_IGN);
  Proxy px(policy, sink, options);
  if (Error e = px.start(std::move(listeners), stop_fd); !e.ok()) {
    return e;
  }
  return px.run();
}

namespace {

// receiveListeners reads the jail's one message of listeners (see
// ProxyProcess::jail_fd).
Error receiveListeners(int fd, Listeners* out) {
  char kinds[16];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  iovec iov{kinds, sizeof(kinds)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    return Error(ErrorCode::kIo, "the jail sent no listeners");
  }
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  if (cm == nullptr || cm->cmsg_type != SCM_RIGHTS) {
    return Error(ErrorCode::kIo, "the jail's message carried no descriptors");
  }
  size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
  int fds[16];
  memcpy(fds, CMSG_DATA(cm), count * sizeof(int));
  if (count != static_cast<size_t>(n)) {
    return Error(ErrorCode::kIo, "the jail's listener message is inconsistent");
  }
  for (size_t i = 0; i < count; ++i) {
    std::vector<int>* list = kinds[i] == 'T'   ? &out->tcp
                             : kinds[i] == 'U' ? &out->dns_udp
                             : kinds[i] == 'D' ? &out->dns_tcp
                             : kinds[i] == 'M' ? &out->mcp
                                               : &out->dropped;
    list->push_back(fds[i]);
  }
  return Error();
}

}  // namespace

Result<ProxyProcess> spawnProxy(const policy::Policy& policy, const std::string& audit_path,
                                const ProxyOptions& options) {
  int ctl[2];
  int jail[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("socketpair: ") + strerror(e), e);
  }
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, jail) != 0) {
    int e = errno;
    close(ctl[0]);
    close(ctl[1]);
    return Error(ErrorCode::kIo, std::string("socketpair: ") + strerror(e), e);
  }
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {ctl[0], ctl[1], jail[0], jail[1]}) {
      close(fd);
    }
    return Error(ErrorCode::kIo, std::string("fork: ") + strerror(e), e);
  }
  if (pid == 0) {
    close(ctl[0]);
    close(jail[1]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_DUMPABLE, 0);  // it holds the session CA key and the real secrets
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGTSTP, SIG_IGN);
    auto reply = [&](const std::string& m) {
      ssize_t n = write(ctl[1], m.data(), m.size());
      (void)n;
    };
    auto sink = policy::FileAuditSink::open(audit_path);
    if (!sink.ok()) {
      reply("E" + sink.error().message());
      _exit(1);
    }
    // Check what can fail before the session goes on: the trust store can
    // be read (it is parsed when the first upstream TLS connection needs it).
    if (auto tls = UpstreamTls::create(options.upstream_ca); !tls.ok()) {
      reply("E" + tls.error().message());
      _exit(1);
    }
    reply("R");
    Listeners listeners;
    if (Error e = receiveListeners(jail[0], &listeners); !e.ok()) {
      _exit(0);  // the session ended before the jail started
    }
    close(jail[0]);
    Error e = serveProxy(policy, sink.value().get(), options, std::move(listeners), ctl[1]);
    if (!e.ok()) {
      fprintf(stderr, "guard: the proxy failed: %s\n", e.message().c_str());
    }
    Error flushed = sink.value()->flush();
    _exit(!e.ok() || !flushed.ok() ? 1 : 0);
  }
  close(ctl[1]);
  close(jail[0]);
  return ProxyProcess{pid, ctl[0], jail[1]};
}

Error awaitProxy(ProxyProcess* proxy) {
  char buf[1024];
  ssize_t n;
  do {
    n = read(proxy->control_fd, buf, sizeof(buf));
  } while (n < 0 && errno == EINTR);
  if (n == 1 && buf[0] == 'R') {
    return Error();
  }
  close(proxy->control_fd);
  close(proxy->jail_fd);
  int status = 0;
  waitpid(proxy->pid, &status, 0);
  *proxy = ProxyProcess{};
  if (n > 1 && buf[0] == 'E') {
    return Error(ErrorCode::kIo, std::string(buf + 1, static_cast<size_t>(n - 1)));
  }
  return Error(ErrorCode::kIo, "the proxy process failed to start");
}

Error stopProxy(ProxyProcess* proxy) {
  if (proxy->pid < 0) {
    return Error();
  }
  if (proxy->jail_fd >= 0) {
    close(proxy->jail_fd);
    proxy->jail_fd = -1;
  }
  close(proxy->control_fd);
  proxy->control_fd = -1;
  int status = 0;
  while (waitpid(proxy->pid, &status, 0) < 0 && errno == EINTR) {
  }
  proxy->pid = -1;
  if (WIFSIGNALED(status)) {
    return Error(ErrorCode::kInternal, std::string("the proxy died (") + strsignal(WTERMSIG(status)) + ")");
  }
  if (WEXITSTATUS(status) != 0) {
    return Error(ErrorCode::kInternal, "the proxy failed while serving");
  }
  return Error();
}

}  // namespace guard::proxy
