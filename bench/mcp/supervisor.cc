// bench/mcp/supervisor.cc: guard's MCP supervisor (mitm-proxy/mcp.h), on its
// own, for the shim-overhead benchmark (bench/mcp/run.sh).
//
//   build/bench/mcp-supervisor --policy FILE [--audit FILE] [--count]
//
// Loads FILE (guard::policy::parseLayer + compile, the context of this
// process), binds a SOCK_SEQPACKET socket at the abstract name
// GUARD_WIRE_NAME (policy/wire.h), listens, and serves it with
// guard::proxy::McpSupervisor::start, exactly as a session's proxy does; audit
// events go to a FileAuditSink (default /dev/null). Prints "ready" on stdout
// once listening, then waits for SIGTERM or SIGINT.
//
// --count serves the socket with a loop of its own instead of start(): the
// same accept4, receive timeout and McpSupervisor::serveOne per connection,
// plus a MSG_PEEK of each request's first byte, so that it can say how many
// 'C', 'E' and 'S' requests the shim made. SIGUSR1 prints
// "requests C=N E=N S=N other=N" on stdout (so does exiting); without
// --count the counts are all 0. run.sh uses --count only to check that the
// shim takes its real path, never for the timed runs.
//
// Abstract names are per network namespace: run it in a namespace of its
// own (`unshare -n`), as run.sh does, so that no other program's shim finds it.
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "mitm-proxy/mcp.h"
#include "policy/audit.h"
#include "policy/policy.h"
#include "policy/wire.h"

namespace {

std::atomic<unsigned long> g_count_c{0}, g_count_e{0}, g_count_s{0}, g_count_other{0};

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "mcp-supervisor: %s\n", message.c_str());
  std::exit(2);
}

void usage() {
  std::fprintf(stderr,
               "usage: mcp-supervisor --policy FILE [--audit FILE] [--count]\n"
               "  serves guard's MCP supervisor at the abstract socket name \"%s\"\n",
               GUARD_WIRE_NAME);
  std::exit(2);
}

void printCounts() {
  std::printf("requests C=%lu E=%lu S=%lu other=%lu\n", g_count_c.load(), g_count_e.load(),
              g_count_s.load(), g_count_other.load());
  std::fflush(stdout);
}

// countingLoop is McpSupervisor::start's loop with a peek at each request.
void countingLoop(guard::proxy::McpSupervisor* sup, int listener) {
  for (;;) {
    int conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        continue;
      }
      return;
    }
    timeval tv{1, 0};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char first = 0;
    ssize_t n;
    do {
      n = recv(conn, &first, 1, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n == 1 && first == 'C') {
      ++g_count_c;
    } else if (n == 1 && first == 'E') {
      ++g_count_e;
    } else if (n == 1 && first == 'S') {
      ++g_count_s;
    } else {
      ++g_count_other;
    }
    sup->serveOne(conn);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string policy_file;
  std::string audit_file = "/dev/null";
  bool count = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--policy" && i + 1 < argc) {
      policy_file = argv[++i];
    } else if (a == "--audit" && i + 1 < argc) {
      audit_file = argv[++i];
    } else if (a == "--count") {
      count = true;
    } else {
      usage();
    }
  }
  if (policy_file.empty()) {
    usage();
  }

  std::ifstream in(policy_file, std::ios::binary);
  if (!in) {
    die("cannot read " + policy_file);
  }
  std::stringstream text;
  text << in.rdbuf();
  auto layer = guard::policy::parseLayer(text.str(), policy_file, "bench");
  if (!layer.ok()) {
    die(layer.error().message());
  }
  auto ctx = guard::policy::contextFromEnvironment();
  if (!ctx.ok()) {
    die(ctx.error().message());
  }
  auto policy = guard::policy::compile({layer.value()}, ctx.value());
  if (!policy.ok()) {
    die(policy.error().message());
  }
  auto sink = guard::policy::FileAuditSink::open(audit_file);
  if (!sink.ok()) {
    die(sink.error().message());
  }

  // The signals are taken by sigwait below; block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);  // as in the session's proxy: a shim may hang up first

  int listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (listener < 0) {
    die(std::string("socket: ") + std::strerror(errno));
  }
  sockaddr_un sun;
  socklen_t sun_len = guard_wire_address(&sun);
  if (bind(listener, reinterpret_cast<sockaddr*>(&sun), sun_len) != 0) {
    die(std::string("bind @" GUARD_WIRE_NAME ": ") + std::strerror(errno) +
        (errno == EADDRINUSE ? " (another supervisor serves this network namespace)" : ""));
  }
  if (listen(listener, 128) != 0) {
    die(std::string("listen: ") + std::strerror(errno));
  }

  guard::proxy::McpContext mctx;
  mctx.policy = &policy.value();
  mctx.sink = sink.value().get();
  mctx.base.session = guard::policy::newSessionId();
  mctx.base.user = ctx.value().user;
  mctx.base.host = ctx.value().host;
  mctx.mode = "bench";
  auto sup = std::make_unique<guard::proxy::McpSupervisor>(mctx);
  if (count) {
    std::thread(countingLoop, sup.get(), listener).detach();
  } else {
    sup->start(listener);
  }
  std::printf("ready\n");
  std::fflush(stdout);

  for (;;) {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0) {
      continue;
    }
    printCounts();
    if (sig != SIGUSR1) {
      break;
    }
  }
  // The supervisor's threads are detached and may be inside a request: leave
  // without destroying what they use.
  sink.value()->flush();
  std::fflush(stdout);
  _exit(0);
}
