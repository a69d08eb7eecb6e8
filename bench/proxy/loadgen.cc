// bench/proxy/loadgen.cc: an HTTPS load generator that also speaks through an HTTP CONNECT
// proxy (wrk and its kin cannot), with the measurements bench/proxy/run.sh reports.
//
// One process, a few threads, each an epoll loop over its share of non-blocking connections.
// A connection: TCP connect, [CONNECT host:port to the proxy, 200 expected], TLS (BoringSSL)
// with SNI and certificate verification against --ca, then HTTP/1.1 GET requests.
// Only requests that complete inside the measured window count; the window opens once every
// connection is set up (keep-alive modes) plus --warmup. With --pid, the CPU time of that
// process and its descendants (utime + stime from /proc) is sampled at the window's edges.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

constexpr char kUsage[] =
    R"(usage: proxy-loadgen --url https://NAME[:PORT]/PATH [options]

Loads an HTTPS origin, directly or through an HTTP CONNECT proxy, and prints one
"name value" line per metric (or one JSON object with --json).

  --url URL            the origin URL (https only); NAME is the SNI and the name verified
  --proxy HOST:PORT    send CONNECT NAME:PORT to this proxy first (default: direct)
  --direct             connect to the origin itself (the default)
  --ca FILE            PEM CA bundle that verifies the TLS peer: the origin when direct,
                       the proxy's minted certificate when proxied (required)
  --resolve N:A:P      connect to address A for NAME N, port P (direct mode; like curl)
  --mode MODE          keepalive  requests/s over --conns keep-alive connections
                       newconn    a new TCP + CONNECT + TLS connection per request
                       bulk       MB/s of (large) bodies over --conns connections
                       latency    keepalive at one connection, latency percentiles
                       hold       open --conns connections, one request each, then hold
                                  them for --seconds (with --pid: report the proxy's memory)
  --conns N            connections (default 1; hold: how many to open)
  --seconds S          measured window, or hold time (default 5)
  --warmup S           unmeasured time before the window (default 0)
  --threads N          client threads, each an epoll loop (default 1)
  --concurrency N      hold mode: at most N connections being set up at once (default 64)
  --pid PID            a process (with its descendants) whose CPU time (and in hold mode,
                       memory) to report; repeatable
  --origin-pid PID     the same for the origin server (CPU time only); repeatable
  --timeout S          give up if setup takes longer than this (default 60)
  --json               one JSON object instead of lines
  -h, --help           this text

Metrics: requests, req_per_s, mb_per_s (10^6 body bytes/s), latency p50/p90/p99/max in us
(newconn: connect to last byte), errors, client_cpu_pct and client_us_per_req (this
process), proxy_cpu_pct and proxy_us_per_req (--pid), origin_cpu_pct (--origin-pid);
hold: held, proxy_rss_kib, proxy_pss_kib (and *_idle before the connections opened).
The peer's certificate is verified (chain to --ca, dates, NAME); a leaf already verified
in this run is accepted again from a cache, the handshake signature is checked every time.
Exit status: 0 measured (see "errors"), 1 the run failed (first error on stderr) or, in
hold mode, not every connection is open at the end, 2 usage.
)";

enum class Mode { kKeepAlive, kNewConn, kBulk, kLatency, kHold };

struct ResolveEntry {
  std::string name;
  uint16_t port = 0;
  std::string addr;
};

struct Options {
  bool direct = true;
  std::string proxy_host;
  uint16_t proxy_port = 0;
  std::string ca;
  std::vector<ResolveEntry> resolves;
  std::string url_host;
  uint16_t url_port = 443;
  std::string url_path = "/";
  int conns = 1;
  double seconds = 5;
  double warmup = 0;
  int threads = 1;
  int concurrency = 64;
  Mode mode = Mode::kKeepAlive;
  std::vector<pid_t> pids;
  std::vector<pid_t> origin_pids;
  double timeout = 60;
  bool json = false;
};

[[noreturn]] void usageError(const std::string& msg) {
  std::fprintf(stderr, "proxy-loadgen: %s (try --help)\n", msg.c_str());
  std::exit(2);
}

int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

bool parseU16(std::string_view s, uint16_t* out) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v == 0 || v > 65535) {
    return false;
  }
  *out = static_cast<uint16_t>(v);
  return true;
}

// splitHostPort splits "host:port" or "[v6]:port".
bool splitHostPort(std::string_view s, std::string* host, uint16_t* port) {
  size_t colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return false;
  }
  std::string_view h = s.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
    h = h.substr(1, h.size() - 2);
  }
  *host = std::string(h);
  return parseU16(s.substr(colon + 1), port);
}

double parseDouble(const std::string& flag, const char* s) {
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (end == s || *end != '\0' || v < 0) {
    usageError(flag + " wants a non-negative number, not '" + s + "'");
  }
  return v;
}

int parseInt(const std::string& flag, const char* s) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 1 || v > 1000000) {
    usageError(flag + " wants a positive integer, not '" + s + "'");
  }
  return static_cast<int>(v);
}

Options parseArgs(int argc, char** argv) {
  Options o;
  bool have_url = false;
  bool conns_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        usageError(a + " needs a value");
      }
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--url") {
      std::string_view u = value();
      if (u.substr(0, 8) != "https://") {
        usageError("--url must start with https://");
      }
      u.remove_prefix(8);
      size_t slash = u.find('/');
      std::string_view authority = u.substr(0, slash);
      o.url_path = slash == std::string_view::npos ? "/" : std::string(u.substr(slash));
      if (authority.find(':') != std::string_view::npos) {
        if (!splitHostPort(authority, &o.url_host, &o.url_port)) {
          usageError("bad host:port in --url");
        }
      } else {
        o.url_host = std::string(authority);
      }
      if (o.url_host.empty()) {
        usageError("--url has no host");
      }
      have_url = true;
    } else if (a == "--proxy") {
      if (!splitHostPort(value(), &o.proxy_host, &o.proxy_port)) {
        usageError("--proxy wants HOST:PORT");
      }
      o.direct = false;
    } else if (a == "--direct") {
      o.direct = true;
    } else if (a == "--ca") {
      o.ca = value();
    } else if (a == "--resolve") {
      std::string_view r = value();
      size_t c1 = r.find(':');
      size_t c2 = c1 == std::string_view::npos ? c1 : r.find(':', c1 + 1);
      ResolveEntry e;
      if (c2 == std::string_view::npos || !parseU16(r.substr(c1 + 1, c2 - c1 - 1), &e.port)) {
        usageError("--resolve wants NAME:PORT:ADDR");
      }
      e.name = std::string(r.substr(0, c1));
      e.addr = std::string(r.substr(c2 + 1));
      if (e.addr.size() >= 2 && e.addr.front() == '[' && e.addr.back() == ']') {
        e.addr = e.addr.substr(1, e.addr.size() - 2);
      }
      o.resolves.push_back(e);
    } else if (a == "--mode") {
      std::string m = value();
      if (m == "keepalive") {
        o.mode = Mode::kKeepAlive;
      } else if (m == "newconn") {
        o.mode = Mode::kNewConn;
      } else if (m == "bulk") {
        o.mode = Mode::kBulk;
      } else if (m == "latency") {
        o.mode = Mode::kLatency;
      } else if (m == "hold") {
        o.mode = Mode::kHold;
      } else {
        usageError("unknown --mode " + m);
      }
    } else if (a == "--conns") {
      o.conns = parseInt(a, value());
      conns_given = true;
    } else if (a == "--seconds") {
      o.seconds = parseDouble(a, value());
    } else if (a == "--warmup") {
      o.warmup = parseDouble(a, value());
    } else if (a == "--threads") {
      o.threads = parseInt(a, value());
    } else if (a == "--concurrency") {
      o.concurrency = parseInt(a, value());
    } else if (a == "--pid") {
      o.pids.push_back(static_cast<pid_t>(parseInt(a, value())));
    } else if (a == "--origin-pid") {
      o.origin_pids.push_back(static_cast<pid_t>(parseInt(a, value())));
    } else if (a == "--timeout") {
      o.timeout = parseDouble(a, value());
    } else if (a == "--json") {
      o.json = true;
    } else {
      usageError("unknown option " + a);
    }
  }
  if (!have_url) {
    usageError("--url is required");
  }
  if (o.ca.empty()) {
    usageError("--ca is required: both hops are verified");
  }
  if (o.mode == Mode::kLatency && !conns_given) {
    o.conns = 1;
  }
  o.threads = std::min(o.threads, o.conns);
  return o;
}

// ---- /proc sampling -----------------------------------------------------------------------

struct ProcSample {
  double cpu_s = 0;  // utime + stime of the tree
  long rss_kib = 0;
  long pss_kib = 0;
  int procs = 0;
};

// treeOf returns PIDS and all their live descendants.
std::set<pid_t> treeOf(const std::vector<pid_t>& pids) {
  std::multimap<pid_t, pid_t> children;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') {
        continue;
      }
      std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
      std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      size_t rp = s.rfind(')');
      if (rp == std::string::npos) {
        continue;
      }
      char state = 0;
      int ppid = 0;
      if (std::sscanf(s.c_str() + rp + 1, " %c %d", &state, &ppid) == 2) {
        children.emplace(ppid, std::atoi(e->d_name));
      }
    }
    closedir(d);
  }
  std::set<pid_t> out;
  std::vector<pid_t> todo(pids.begin(), pids.end());
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    if (!out.insert(p).second) {
      continue;
    }
    auto [b, e] = children.equal_range(p);
    for (auto it = b; it != e; ++it) {
      todo.push_back(it->second);
    }
  }
  return out;
}

long statusKib(const std::string& path, std::string_view key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, key.size(), key) == 0) {
      return std::atol(line.c_str() + key.size());
    }
  }
  return 0;
}

ProcSample sampleProcs(const std::vector<pid_t>& pids, bool memory) {
  ProcSample s;
  if (pids.empty()) {
    return s;
  }
  static const double kTick = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (pid_t p : treeOf(pids)) {
    std::string dir = "/proc/" + std::to_string(p);
    std::ifstream f(dir + "/stat");
    std::string st((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    size_t rp = st.rfind(')');
    if (rp == std::string::npos) {
      continue;
    }
    // Fields after comm: state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    if (std::sscanf(st.c_str() + rp + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                    &utime, &stime) != 2) {
      continue;
    }
    s.cpu_s += static_cast<double>(utime + stime) / kTick;
    s.procs++;
    if (memory) {
      s.rss_kib += statusKib(dir + "/status", "VmRSS:");
      s.pss_kib += statusKib(dir + "/smaps_rollup", "Pss:");
    }
  }
  return s;
}

double selfCpuS() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// ---- connections ----------------------------------------------------------------------------

struct Shared {
  const Options* opt = nullptr;
  SSL_CTX* ctx = nullptr;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::string connect_req;
  std::string http_req;
  std::atomic<int64_t> t_start{INT64_MAX};
  std::atomic<int64_t> t_end{INT64_MAX};
  std::atomic<bool> stop{false};
  std::atomic<int> setup_done{0};  // connections set up once (hold: held or failed)
  std::atomic<bool> fatal{false};
  std::mutex err_mu;
  std::string first_error;
  std::string cipher;  // what the first handshake negotiated, e.g. TLSv1.3/TLS_AES_128_GCM_SHA256

  void noteCipher(const SSL* ssl) {
    std::lock_guard<std::mutex> l(err_mu);
    if (cipher.empty()) {
      cipher = std::string(SSL_get_version(ssl)) + "/" + SSL_CIPHER_standard_name(SSL_get_current_cipher(ssl));
    }
  }
  void noteError(const std::string& e) {
    std::lock_guard<std::mutex> l(err_mu);
    if (first_error.empty()) {
      first_error = e;
    }
  }
  bool inWindow(int64_t t) const {
    return t >= t_start.load(std::memory_order_relaxed) &&
           t < t_end.load(std::memory_order_relaxed);
  }
};

enum class St {
  kClosed,
  kConnecting,
  kProxyWrite,
  kProxyRead,
  kHandshake,
  kWriteReq,
  kReadHead,
  kReadBody,
  kHeld,
};

enum class Body { kLength, kChunked, kUntilClose };
enum class Chunk { kSize, kData, kDataEnd, kTrailer };

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;
  St st = St::kClosed;
  uint32_t events = 0;
  size_t out_off = 0;
  std::string head;  // CONNECT reply or response head, then chunk-size lines
  int status = 0;
  std::string status_line;  // kept for the error message when status != 200
  Body body = Body::kLength;
  Chunk chunk = Chunk::kSize;
  uint64_t body_left = 0;
  bool close_after = false;
  bool reused = false;       // a request has completed on this connection
  bool ever_set_up = false;  // counted in setup_done
  int64_t conn_start = 0;
  int64_t req_start = 0;
};

struct Stats {
  uint64_t requests = 0;   // completed inside the window
  uint64_t completed = 0;  // completed at any time
  uint64_t bytes = 0;
  uint64_t errors = 0;
  uint64_t reconnects = 0;
  uint64_t held_closed = 0;
  std::vector<uint32_t> lat_us;
};

std::string sslErrorText(SSL* ssl, int ret) {
  int e = SSL_get_error(ssl, ret);
  std::string out;
  if (e == SSL_ERROR_SSL) {
    char buf[256];
    ERR_error_string_n(ERR_peek_error(), buf, sizeof buf);
    out = buf;
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK) {
      out += std::string(" (certificate: ") + X509_verify_cert_error_string(vr) + ")";
    }
  } else if (e == SSL_ERROR_SYSCALL) {
    out = errno != 0 ? std::string("syscall: ") + std::strerror(errno) : "unexpected EOF";
  } else if (e == SSL_ERROR_ZERO_RETURN) {
    out = "closed by peer";
  } else {
    out = "SSL error " + std::to_string(e);
  }
  ERR_clear_error();
  return out;
}

bool ieq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

bool icontains(std::string_view hay, std::string_view needle) {
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    if (ieq(hay.substr(i, needle.size()), needle)) {
      return true;
    }
  }
  return false;
}

// parseStatus reads the code of "HTTP/1.x NNN ..."; 0 when malformed.
int parseStatus(std::string_view head) {
  if (head.size() < 12 || head.substr(0, 7) != "HTTP/1." || head[8] != ' ') {
    return 0;
  }
  int code = 0;
  for (int i = 9; i < 12; ++i) {
    if (head[i] < '0' || head[i] > '9') {
      return 0;
    }
    code = code * 10 + (head[i] - '0');
  }
  return code;
}

class Worker {
 public:
  Worker(Shared* sh, int num_conns) : sh_(sh), buf_(1 << 16) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < num_conns; ++i) {
      conns_.push_back(std::make_unique<Conn>());
    }
  }
  ~Worker() {
    for (auto& c : conns_) {
      closeConn(*c);
    }
    close(ep_);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  const Stats& stats() const { return st_; }
  int held() const {
    int n = 0;
    for (const auto& c : conns_) {
      n += c->st == St::kHeld ? 1 : 0;
    }
    return n;
  }

  void run() {
    const Options& o = *sh_->opt;
    size_t limit = conns_.size();
    if (o.mode == Mode::kHold) {
      limit = std::max<size_t>(1, static_cast<size_t>(o.concurrency / o.threads));
    }
    for (; next_ < conns_.size() && next_ < limit; ++next_) {
      startConn(*conns_[next_]);
      pending_++;
    }
    epoll_event evs[256];
    while (!sh_->stop.load(std::memory_order_relaxed)) {
      int n = epoll_wait(ep_, evs, 256, 20);
      if (n < 0 && errno != EINTR) {
        fatal(std::string("epoll_wait: ") + std::strerror(errno));
        return;
      }
      for (int i = 0; i < n; ++i) {
        drive(*static_cast<Conn*>(evs[i].data.ptr));
      }
      // hold mode: keep `limit` set-ups in flight
      while (o.mode == Mode::kHold && pending_ < limit && next_ < conns_.size()) {
        startConn(*conns_[next_++]);
        pending_++;
      }
    }
  }

 private:
  void fatal(const std::string& e) {
    sh_->noteError(e);
    sh_->fatal = true;
    sh_->stop = true;
  }

  void want(Conn& c, uint32_t ev) {
    if (c.events != ev) {
      epoll_event e{};
      e.events = ev;
      e.data.ptr = &c;
      epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &e);
      c.events = ev;
    }
  }

  void closeConn(Conn& c) {
    if (c.ssl != nullptr) {
      SSL_free(c.ssl);
      c.ssl = nullptr;
    }
    if (c.fd >= 0) {
      close(c.fd);  // also leaves the epoll set
      c.fd = -1;
    }
    c.st = St::kClosed;
  }

  void markSetUp(Conn& c) {
    if (!c.ever_set_up) {
      c.ever_set_up = true;
      sh_->setup_done.fetch_add(1);
      if (pending_ > 0) {
        pending_--;
      }
    }
  }

  void startConn(Conn& c) {
    closeConn(c);
    c.out_off = 0;
    c.head.clear();
    c.reused = false;
    c.conn_start = nowNs();
    c.fd = socket(sh_->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
      fail(c, std::string("socket: ") + std::strerror(errno));
      return;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&sh_->addr), sh_->addr_len) < 0 &&
        errno != EINPROGRESS) {
      fail(c, std::string("connect: ") + std::strerror(errno));
      return;
    }
    c.st = St::kConnecting;
    c.events = EPOLLOUT;
    epoll_event e{};
    e.events = c.events;
    e.data.ptr = &c;
    epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &e);
  }

  // fail ends a connection that went wrong. Failures before any request completed mean the
  // setup itself is broken (certificate, policy, refused): the run stops. Later
  // failures are counted and the connection starts over.
  void fail(Conn& c, const std::string& why) {
    const Options& o = *sh_->opt;
    closeConn(c);
    st_.errors++;
    if (o.mode == Mode::kHold) {
      sh_->noteError(why);
      markSetUp(c);
      return;
    }
    if (!c.ever_set_up && st_.completed == 0 && (o.mode != Mode::kNewConn || st_.errors >= 5)) {
      fatal(why);
      return;
    }
    sh_->noteError(why);
    if (st_.errors > 1000 && st_.errors > 10 * st_.requests) {
      fatal("too many errors; the first: " + sh_->first_error);
      return;
    }
    if (!sh_->stop.load(std::memory_order_relaxed)) {
      startConn(c);
    }
  }

  void restart(Conn& c) {
    st_.reconnects++;
    startConn(c);
  }

  void newSsl(Conn& c) {
    c.ssl = SSL_new(sh_->ctx);
    SSL_set_fd(c.ssl, c.fd);
    SSL_set_connect_state(c.ssl);
    const std::string& host = sh_->opt->url_host;
    SSL_set_tlsext_host_name(c.ssl, host.c_str());
    SSL_set1_host(c.ssl, host.c_str());
  }

  void responseDone(Conn& c) {
    const Options& o = *sh_->opt;
    int64_t now = nowNs();
    if (c.status != 200) {
      fail(c, "HTTP status " + std::to_string(c.status) + ": " + c.status_line);
      return;
    }
    st_.completed++;
    if (sh_->inWindow(now)) {
      st_.requests++;
      int64_t from = o.mode == Mode::kNewConn ? c.conn_start : c.req_start;
      st_.lat_us.push_back(
          static_cast<uint32_t>(std::min<int64_t>((now - from) / 1000, UINT32_MAX)));
    }
    c.reused = true;
    switch (o.mode) {
      case Mode::kHold:
        c.st = St::kHeld;
        want(c, EPOLLIN);
        markSetUp(c);
        return;
      case Mode::kNewConn:
        SSL_shutdown(c.ssl);  // one close_notify, as a polite client sends
        startConn(c);
        return;
      case Mode::kKeepAlive:
      case Mode::kBulk:
      case Mode::kLatency:
        break;
    }
    if (c.close_after || c.body == Body::kUntilClose) {
      restart(c);
      return;
    }
    c.st = St::kWriteReq;
    c.out_off = 0;
  }

  // consumeBody takes N body bytes at P; returns false when the connection was closed.
  bool consumeBody(Conn& c, const char* p, size_t n) {
    int64_t now = nowNs();
    bool counted = sh_->inWindow(now);
    while (n > 0 || (c.body == Body::kLength && c.body_left == 0)) {
      switch (c.body) {
        case Body::kUntilClose:
          if (counted) {
            st_.bytes += n;
          }
          return true;
        case Body::kLength: {
          size_t take = static_cast<size_t>(std::min<uint64_t>(n, c.body_left));
          c.body_left -= take;
          if (counted) {
            st_.bytes += take;
          }
          if (c.body_left == 0) {
            if (take != n) {
              fail(c, "data after the response body");
              return false;
            }
            responseDone(c);
            return c.st != St::kClosed;
          }
          return true;
        }
        case Body::kChunked:
          if (c.chunk == Chunk::kData) {
            size_t take = static_cast<size_t>(std::min<uint64_t>(n, c.body_left));
            c.body_left -= take;
            if (counted) {
              st_.bytes += take;
            }
            p += take;
            n -= take;
            if (c.body_left == 0) {
              c.chunk = Chunk::kDataEnd;
              c.head.clear();
            }
            continue;
          }
          // kSize, kDataEnd, kTrailer work line by line
          {
            const char* nl = static_cast<const char*>(std::memchr(p, '\n', n));
            size_t take = nl == nullptr ? n : static_cast<size_t>(nl - p) + 1;
            c.head.append(p, take);
            p += take;
            n -= take;
            if (nl == nullptr) {
              if (c.head.size() > 4096) {
                fail(c, "chunk line too long");
                return false;
              }
              continue;
            }
            std::string line = c.head;
            c.head.clear();
            while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
              line.pop_back();
            }
            if (c.chunk == Chunk::kDataEnd) {
              if (!line.empty()) {
                fail(c, "chunk not followed by CRLF");
                return false;
              }
              c.chunk = Chunk::kSize;
            } else if (c.chunk == Chunk::kSize) {
              char* end = nullptr;
              unsigned long long size = std::strtoull(line.c_str(), &end, 16);
              if (end == line.c_str()) {
                fail(c, "bad chunk size");
                return false;
              }
              if (size == 0) {
                c.chunk = Chunk::kTrailer;
              } else {
                c.body_left = size;
                c.chunk = Chunk::kData;
              }
            } else if (line.empty()) {  // end of the trailer
              if (n != 0) {
                fail(c, "data after the response body");
                return false;
              }
              responseDone(c);
              return c.st != St::kClosed;
            }
          }
          continue;
      }
    }
    return true;
  }

  // consume takes N bytes read from TLS; returns false when the connection was closed.
  bool consume(Conn& c, const char* p, size_t n) {
    if (c.st == St::kReadBody) {
      return consumeBody(c, p, n);
    }
    size_t old = c.head.size();
    c.head.append(p, n);
    size_t end = c.head.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
    if (end == std::string::npos) {
      if (c.head.size() > 65536) {
        fail(c, "response head over 64 KiB");
        return false;
      }
      return true;
    }
    std::string rest = c.head.substr(end + 4);
    c.head.resize(end + 2);
    c.status = parseStatus(c.head);
    c.body = Body::kUntilClose;
    c.close_after = false;
    size_t pos = c.head.find("\r\n") + 2;
    while (pos < c.head.size()) {
      size_t eol = c.head.find("\r\n", pos);
      std::string_view line(c.head.data() + pos, eol - pos);
      pos = eol + 2;
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) {
        continue;
      }
      std::string_view name = line.substr(0, colon);
      std::string_view val = line.substr(colon + 1);
      while (!val.empty() && (val.front() == ' ' || val.front() == '\t')) {
        val.remove_prefix(1);
      }
      if (ieq(name, "content-length") && c.body != Body::kChunked) {
        c.body = Body::kLength;
        c.body_left = std::strtoull(std::string(val).c_str(), nullptr, 10);
      } else if (ieq(name, "transfer-encoding") && icontains(val, "chunked")) {
        c.body = Body::kChunked;
        c.chunk = Chunk::kSize;
      } else if ((ieq(name, "connection") || ieq(name, "proxy-connection")) &&
                 icontains(val, "close")) {
        c.close_after = true;
      }
    }
    c.st = St::kReadBody;
    c.status_line = c.status == 200 ? std::string() : c.head.substr(0, c.head.find('\r'));
    c.head.clear();  // chunk-size lines use it from here
    return consumeBody(c, rest.data(), rest.size());
  }

  void drive(Conn& c) {
    const Options& o = *sh_->opt;
    for (;;) {
      switch (c.st) {
        case St::kClosed:
          return;
        case St::kConnecting: {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {
            fail(c, std::string("connect: ") + std::strerror(err));
            return;
          }
          if (o.direct) {
            newSsl(c);
            c.st = St::kHandshake;
          } else {
            c.st = St::kProxyWrite;
            c.out_off = 0;
          }
          continue;
        }
        case St::kProxyWrite: {
          const std::string& r = sh_->connect_req;
          ssize_t w = send(c.fd, r.data() + c.out_off, r.size() - c.out_off, MSG_NOSIGNAL);
          if (w < 0) {
            if (errno == EAGAIN) {
              want(c, EPOLLOUT);
              return;
            }
            fail(c, std::string("send CONNECT: ") + std::strerror(errno));
            return;
          }
          c.out_off += static_cast<size_t>(w);
          if (c.out_off == r.size()) {
            c.st = St::kProxyRead;
            c.head.clear();
          }
          continue;
        }
        case St::kProxyRead: {
          char b[1024];
          ssize_t r = recv(c.fd, b, sizeof b, 0);
          if (r < 0) {
            if (errno == EAGAIN) {
              want(c, EPOLLIN);
              return;
            }
            fail(c, std::string("read CONNECT reply: ") + std::strerror(errno));
            return;
          }
          if (r == 0) {
            fail(c,
                 "proxy closed the connection after CONNECT" +
                     (c.head.empty() ? std::string() : ": " + c.head.substr(0, c.head.find('\r'))));
            return;
          }
          c.head.append(b, static_cast<size_t>(r));
          size_t end = c.head.find("\r\n\r\n");
          if (end == std::string::npos) {
            if (c.head.size() > 16384) {
              fail(c, "CONNECT reply head too long");
            }
            continue;
          }
          int code = parseStatus(c.head);
          if (code != 200) {
            fail(c, "CONNECT refused: " + c.head.substr(0, c.head.find('\r')));
            return;
          }
          if (end + 4 != c.head.size()) {
            fail(c, "proxy sent data before the TLS handshake");
            return;
          }
          c.head.clear();
          newSsl(c);
          c.st = St::kHandshake;
          continue;
        }
        case St::kHandshake: {
          int r = SSL_do_handshake(c.ssl);
          if (r == 1) {
            sh_->noteCipher(c.ssl);
            c.st = St::kWriteReq;
            c.out_off = 0;
            if (o.mode != Mode::kHold && o.mode != Mode::kNewConn) {
              markSetUp(c);
            }
            continue;
          }
          int e = SSL_get_error(c.ssl, r);
          if (e == SSL_ERROR_WANT_READ) {
            want(c, EPOLLIN);
            return;
          }
          if (e == SSL_ERROR_WANT_WRITE) {
            want(c, EPOLLOUT);
            return;
          }
          fail(c, "TLS handshake with " + std::string(o.direct ? "the origin" : "the proxy") +
                      ": " + sslErrorText(c.ssl, r));
          return;
        }
        case St::kWriteReq: {
          const std::string& q = sh_->http_req;
          if (c.out_off == 0) {
            c.req_start = nowNs();
          }
          int r = SSL_write(c.ssl, q.data(), static_cast<int>(q.size()));
          if (r <= 0) {
            int e = SSL_get_error(c.ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
              c.out_off = 1;
              want(c, EPOLLIN);
              return;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
              c.out_off = 1;
              want(c, EPOLLOUT);
              return;
            }
            if (c.reused) {  // the server closed an idle keep-alive connection
              ERR_clear_error();
              restart(c);
              return;
            }
            fail(c, "TLS write: " + sslErrorText(c.ssl, r));
            return;
          }
          c.st = St::kReadHead;
          c.head.clear();
          continue;
        }
        case St::kReadHead:
        case St::kReadBody:
        case St::kHeld: {
          int r = SSL_read(c.ssl, buf_.data(), static_cast<int>(buf_.size()));
          if (r > 0) {
            if (c.st == St::kHeld) {
              fail(c, "data on a held connection");
              return;
            }
            if (!consume(c, buf_.data(), static_cast<size_t>(r))) {
              return;
            }
            if (c.st == St::kHeld) {
              return;
            }
            continue;
          }
          int e = SSL_get_error(c.ssl, r);
          if (e == SSL_ERROR_WANT_READ) {
            want(c, EPOLLIN);
            return;
          }
          if (e == SSL_ERROR_WANT_WRITE) {
            want(c, EPOLLOUT);
            return;
          }
          bool eof = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0) ||
                     (e == SSL_ERROR_SYSCALL && errno == ECONNRESET);
          if (c.st == St::kHeld) {
            ERR_clear_error();
            sh_->noteError("the proxy closed a held connection");
            st_.held_closed++;
            closeConn(c);
            return;
          }
          if (eof && c.st == St::kReadBody && c.body == Body::kUntilClose) {
            ERR_clear_error();
            responseDone(c);
            if (c.st != St::kClosed && c.st != St::kHeld) {
              restart(c);
            }
            return;
          }
          if (eof && c.st == St::kReadHead && c.head.empty() && c.reused) {
            ERR_clear_error();
            restart(c);  // closed between requests
            return;
          }
          fail(c, "TLS read: " + sslErrorText(c.ssl, r));
          return;
        }
      }
    }
  }

  Shared* sh_;
  int ep_ = -1;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<char> buf_;
  Stats st_;
  size_t next_ = 0;
  size_t pending_ = 0;
};

// verifyCached is the certificate verifier: X509_verify_cert (chain to --ca, validity, the
// name set by SSL_set1_host), except that a leaf already verified in this run (same DER
// bytes) is accepted again without repeating the chain's signature checks, as browsers cache
// verifications. BoringSSL's generic P-256 code makes each chain check cost hundreds of
// microseconds; without the cache the client, not the proxy, would bound the newconn rate.
// The handshake's own signature (CertificateVerify) is still checked on every connection.
int verifyCached(X509_STORE_CTX* store_ctx, void* /*arg*/) {
  static std::mutex mu;
  static std::set<std::string> verified;
  X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
  std::string der;
  if (leaf != nullptr) {
    uint8_t* p = nullptr;
    int len = i2d_X509(leaf, &p);
    if (len > 0) {
      der.assign(reinterpret_cast<char*>(p), static_cast<size_t>(len));
    }
    OPENSSL_free(p);
  }
  if (!der.empty()) {
    std::lock_guard<std::mutex> l(mu);
    if (verified.count(der) != 0) {
      return 1;
    }
  }
  int ok = X509_verify_cert(store_ctx);
  if (ok == 1 && !der.empty()) {
    std::lock_guard<std::mutex> l(mu);
    if (verified.size() < 256) {
      verified.insert(der);
    }
  }
  return ok;
}

// ---- main -------------------------------------------------------------------------------------

bool resolveTarget(const Options& o, Shared* sh, std::string* err) {
  std::string host = o.direct ? o.url_host : o.proxy_host;
  uint16_t port = o.direct ? o.url_port : o.proxy_port;
  for (const auto& r : o.resolves) {
    if (r.name == host && r.port == port) {
      host = r.addr;
      break;
    }
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    *err = "cannot resolve " + host + ": " + gai_strerror(rc);
    return false;
  }
  std::memcpy(&sh->addr, res->ai_addr, res->ai_addrlen);
  sh->addr_len = res->ai_addrlen;
  freeaddrinfo(res);
  return true;
}

void sleepUntil(int64_t t) {
  for (int64_t now = nowNs(); now < t; now = nowNs()) {
    int64_t d = t - now;
    timespec ts{static_cast<time_t>(d / 1000000000), static_cast<long>(d % 1000000000)};
    nanosleep(&ts, nullptr);
  }
}

std::string fmt(double v, int decimals) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

const char* modeName(Mode m) {
  switch (m) {
    case Mode::kKeepAlive:
      return "keepalive";
    case Mode::kNewConn:
      return "newconn";
    case Mode::kBulk:
      return "bulk";
    case Mode::kLatency:
      return "latency";
    case Mode::kHold:
      return "hold";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parseArgs(argc, argv);

  // hold mode keeps one descriptor per connection open
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  Shared sh;
  sh.opt = &o;
  sh.ctx = SSL_CTX_new(TLS_method());
  SSL_CTX_set_min_proto_version(sh.ctx, TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(sh.ctx, o.ca.c_str(), nullptr) != 1) {
    std::fprintf(stderr, "proxy-loadgen: cannot load CA file %s\n", o.ca.c_str());
    return 1;
  }
  SSL_CTX_set_verify(sh.ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_cert_verify_callback(sh.ctx, verifyCached, nullptr);
  SSL_CTX_set_session_cache_mode(sh.ctx, SSL_SESS_CACHE_OFF);  // every handshake is full
  static const uint8_t kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(sh.ctx, kAlpn, sizeof kAlpn);
  std::string err;
  if (!resolveTarget(o, &sh, &err)) {
    std::fprintf(stderr, "proxy-loadgen: %s\n", err.c_str());
    return 1;
  }
  std::string authority = o.url_host + ":" + std::to_string(o.url_port);
  sh.connect_req = "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n";
  sh.http_req = "GET " + o.url_path +
                " HTTP/1.1\r\nHost: " + (o.url_port == 443 ? o.url_host : authority) +
                "\r\nUser-Agent: guard-bench-loadgen/1\r\nAccept: */*\r\n\r\n";

  bool hold = o.mode == Mode::kHold;
  ProcSample idle = sampleProcs(o.pids, hold);
  int64_t t0 = nowNs();

  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < o.threads; ++i) {
    workers.push_back(
        std::make_unique<Worker>(&sh, o.conns / o.threads + (i < o.conns % o.threads)));
  }
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&w] { w->run(); });
  }

  // The window opens once every connection is set up (none to wait for in newconn mode).
  int64_t deadline = t0 + static_cast<int64_t>(o.timeout * 1e9);
  if (o.mode != Mode::kNewConn) {
    while (sh.setup_done.load() < o.conns && !sh.fatal.load() && nowNs() < deadline) {
      usleep(2000);
    }
  }
  int64_t t_setup = nowNs();
  bool timed_out = !sh.fatal.load() && o.mode != Mode::kNewConn && sh.setup_done.load() < o.conns;
  if (timed_out) {
    sh.noteError("setup timed out: " + std::to_string(sh.setup_done.load()) + " of " +
                 std::to_string(o.conns) + " connections after " + fmt(o.timeout, 0) + " s");
    sh.fatal = true;
  }

  int64_t ts = t_setup + static_cast<int64_t>(o.warmup * 1e9);
  int64_t te = ts + static_cast<int64_t>(o.seconds * 1e9);
  sh.t_end = te;
  sh.t_start = ts;
  ProcSample p0;
  ProcSample p1;
  ProcSample o0;
  ProcSample o1;
  double c0 = 0;
  double c1 = 0;
  ProcSample mem;
  if (!sh.fatal.load()) {
    sleepUntil(ts);
    p0 = sampleProcs(o.pids, false);
    o0 = sampleProcs(o.origin_pids, false);
    c0 = selfCpuS();
    if (hold) {
      mem = sampleProcs(o.pids, true);  // right after the last connection opened
    }
    while (nowNs() < te && !sh.fatal.load()) {
      usleep(std::min<int64_t>(20000, std::max<int64_t>(1, (te - nowNs()) / 1000)));
    }
    te = std::min(te, nowNs());
    p1 = sampleProcs(o.pids, false);
    o1 = sampleProcs(o.origin_pids, false);
    c1 = selfCpuS();
    if (hold) {
      ProcSample later = sampleProcs(o.pids, true);  // after holding: keep the larger
      mem.rss_kib = std::max(mem.rss_kib, later.rss_kib);
      mem.pss_kib = std::max(mem.pss_kib, later.pss_kib);
    }
  }
  sh.stop = true;
  for (auto& t : threads) {
    t.join();
  }

  if (sh.fatal.load()) {
    std::fprintf(stderr, "proxy-loadgen: %s %s: %s\n", modeName(o.mode),
                 o.direct ? "direct" : "via proxy", sh.first_error.c_str());
    if (o.json) {
      std::printf("{\"mode\":\"%s\",\"error\":\"failed\"}\n", modeName(o.mode));
    } else {
      std::printf("error %s\n", sh.first_error.c_str());
    }
    return 1;
  }

  Stats all;
  int held = 0;
  for (auto& w : workers) {
    const Stats& s = w->stats();
    all.requests += s.requests;
    all.bytes += s.bytes;
    all.errors += s.errors;
    all.reconnects += s.reconnects;
    all.held_closed += s.held_closed;
    all.lat_us.insert(all.lat_us.end(), s.lat_us.begin(), s.lat_us.end());
    held += w->held();
  }
  double window = static_cast<double>(te - ts) / 1e9;
  std::vector<std::pair<std::string, std::string>> m;
  m.emplace_back("mode", modeName(o.mode));
  m.emplace_back("path", o.direct ? "direct" : "proxy");
  m.emplace_back("conns", std::to_string(o.conns));
  m.emplace_back("threads", std::to_string(o.threads));
  m.emplace_back("setup_s", fmt(static_cast<double>(t_setup - t0) / 1e9, 3));
  m.emplace_back("seconds", fmt(window, 3));
  m.emplace_back("tls", sh.cipher.empty() ? "none" : sh.cipher);
  if (hold) {
    m.emplace_back("held", std::to_string(held));
    m.emplace_back("held_closed", std::to_string(all.held_closed));
  } else {
    m.emplace_back("requests", std::to_string(all.requests));
    m.emplace_back("req_per_s", fmt(static_cast<double>(all.requests) / window, 1));
    m.emplace_back("mb_per_s", fmt(static_cast<double>(all.bytes) / window / 1e6, 1));
  }
  std::vector<uint32_t>& lat = all.lat_us;
  if (!lat.empty()) {
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double q) {
      size_t i = static_cast<size_t>(q * static_cast<double>(lat.size() - 1) + 0.5);
      return std::to_string(lat[std::min(i, lat.size() - 1)]);
    };
    double sum = 0;
    for (uint32_t v : lat) {
      sum += v;
    }
    m.emplace_back("lat_mean_us", fmt(sum / static_cast<double>(lat.size()), 1));
    m.emplace_back("lat_p50_us", pct(0.50));
    m.emplace_back("lat_p90_us", pct(0.90));
    m.emplace_back("lat_p99_us", pct(0.99));
    m.emplace_back("lat_max_us", std::to_string(lat.back()));
  }
  m.emplace_back("errors", std::to_string(all.errors));
  m.emplace_back("reconnects", std::to_string(all.reconnects));
  double ccpu = c1 - c0;
  m.emplace_back("client_cpu_pct", fmt(100 * ccpu / window, 1));
  if (all.requests > 0) {
    m.emplace_back("client_us_per_req", fmt(1e6 * ccpu / static_cast<double>(all.requests), 1));
  }
  if (!o.pids.empty()) {
    double pcpu = p1.cpu_s - p0.cpu_s;
    m.emplace_back("proxy_procs", std::to_string(p1.procs));
    m.emplace_back("proxy_cpu_pct", fmt(100 * pcpu / window, 1));
    if (all.requests > 0) {
      m.emplace_back("proxy_us_per_req", fmt(1e6 * pcpu / static_cast<double>(all.requests), 1));
    }
    if (hold) {
      m.emplace_back("proxy_rss_kib_idle", std::to_string(idle.rss_kib));
      m.emplace_back("proxy_pss_kib_idle", std::to_string(idle.pss_kib));
      m.emplace_back("proxy_rss_kib", std::to_string(mem.rss_kib));
      m.emplace_back("proxy_pss_kib", std::to_string(mem.pss_kib));
      if (held > 0) {
        m.emplace_back("proxy_rss_kib_per_conn",
                       fmt(static_cast<double>(mem.rss_kib - idle.rss_kib) / held, 1));
      }
    }
  }
  if (!o.origin_pids.empty()) {
    double ocpu = o1.cpu_s - o0.cpu_s;
    m.emplace_back("origin_cpu_pct", fmt(100 * ocpu / window, 1));
    if (all.requests > 0) {
      m.emplace_back("origin_us_per_req", fmt(1e6 * ocpu / static_cast<double>(all.requests), 1));
    }
  }
  if (!sh.first_error.empty()) {
    m.emplace_back("first_error", sh.first_error);
  }
  if (o.json) {
    std::string out = "{";
    for (size_t i = 0; i < m.size(); ++i) {
      const auto& [k, v] = m[i];
      bool num = !v.empty() && v.find_first_not_of("0123456789.-") == std::string::npos;
      std::string esc;
      for (char ch : v) {
        if (ch == '"' || ch == '\\') {
          esc += '\\';
        }
        esc += (static_cast<unsigned char>(ch) < 0x20) ? ' ' : ch;
      }
      out += (i ? "," : "") + ("\"" + k + "\":") + (num ? esc : "\"" + esc + "\"");
    }
    std::printf("%s}\n", out.c_str());
  } else {
    for (const auto& [k, v] : m) {
      std::printf("%s %s\n", k.c_str(), v.c_str());
    }
  }
  SSL_CTX_free(sh.ctx);
  if (hold && held < o.conns) {
    std::fprintf(stderr, "proxy-loadgen: hold: %d of %d connections open; the first error: %s\n",
                 held, o.conns, sh.first_error.c_str());
    return 1;
  }
  return 0;
}
