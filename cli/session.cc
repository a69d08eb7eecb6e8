// A guard session: policy, audit sink, filesystem view and jail wired together.
#include "cli/session.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include <spdlog/spdlog.h>

#include "cli/credentials.h"
#include "fusefs/view.h"
#include "mitm-proxy/mcp.h"
#include "mitm-proxy/proxy.h"
#include "mitm-proxy/secrets.h"
#include "policy/audit.h"
#include "policy/loader.h"
#include "policy/policy.h"
#include "vmhost/jail.h"
#include "vmhost/vm.h"
#include "vmhost/vm_wire.h"

extern char** environ;

namespace guard::cli {
namespace {

using policy::AuditEvent;
using policy::Decision;

constexpr int kSetupFailed = 1;

int refuse(const std::string& why) {
  std::fprintf(stderr, "guard: %s\n", why.c_str());
  return kSetupFailed;
}

AuditEvent event(const AuditEvent& base, const char* surface, const char* action,
                 const std::string& target, const std::string& decision) {
  AuditEvent e = base;
  e.ts = std::chrono::system_clock::now();
  e.mono_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();
  e.component = "cli";
  e.surface = surface;
  e.action = action;
  e.target = target;
  e.decision = decision;
  e.pid = static_cast<int>(getpid());
  return e;
}

void withRule(AuditEvent* e, const policy::Verdict& v) {
  e->rule = {std::string(v.rule.id), std::string(v.rule.layer), v.rule.source()};
  e->reason = std::string(v.reason);
}

// agentEnvironment keeps the host variables the policy lets through, then
// sets the policy's `env.set` values (overriding host ones). Every decision
// is audited.
std::vector<std::string> agentEnvironment(const policy::Policy& p, policy::AuditSink* sink,
                                          const AuditEvent& base) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      continue;
    }
    std::string name = kv.substr(0, eq);
    policy::Verdict v = p.env(name);
    AuditEvent ev = event(base, "env", "pass", name, policy::decisionName(v.decision));
    withRule(&ev, v);
    sink->emit(std::move(ev));
    if (v.allowed()) {
      env.push_back(kv);
    }
  }
  for (const auto& set : p.envSet()) {
    std::string prefix = set.first + "=";
    std::erase_if(env, [&](const std::string& kv) { return kv.rfind(prefix, 0) == 0; });
    env.push_back(prefix + set.second);
    AuditEvent ev = event(base, "env", "set", set.first, "allow");
    sink->emit(std::move(ev));
  }
  return env;
}

// The trust store a Debian-family host keeps; the session CA is appended to
// it in the agent's view, and every CA variable points at it.
constexpr const char* kCaBundle = "/etc/ssl/certs/ca-certificates.crt";
// Where the agent finds the preload shim: the view serves it there.
constexpr const char* kShimInView = "/etc/libguard-interpose.so";

// shimPath is the preload shim on the host: built and installed next to
// the guard binary.
std::string shimPath() {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  std::string dir = n > 0 ? std::string(exe, static_cast<size_t>(n)) : std::string();
  dir = dir.substr(0, dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/'));
  return dir + "/libguard-interpose.so";
}

// networkEnvironment sets what tools that prefer an explicit proxy or a CA
// file look for. Programs that ignore them are captured all the same.
// PROXY_HOST is where the agent reaches the proxy: its own loopback on the
// host, the tap's address from inside a VM.
void networkEnvironment(std::vector<std::string>* env, const Credentials& creds,
                        const std::string& proxy_host) {
  std::string proxy = "http://" + proxy_host + ":" + std::to_string(proxy::kProxyPort);
  std::vector<std::pair<std::string, std::string>> set = {
      {"HTTP_PROXY", proxy}, {"HTTPS_PROXY", proxy}, {"http_proxy", proxy}, {"https_proxy", proxy},
      {"NO_PROXY", "localhost,127.0.0.1,::1"}, {"no_proxy", "localhost,127.0.0.1,::1"},
      {"SSL_CERT_FILE", kCaBundle}, {"NODE_EXTRA_CA_CERTS", kCaBundle},
      {"REQUESTS_CA_BUNDLE", kCaBundle}, {"CURL_CA_BUNDLE", kCaBundle},
      {"GIT_SSL_CAINFO", kCaBundle}, {"LD_PRELOAD", kShimInView}};
  set.insert(set.end(), creds.variables.begin(), creds.variables.end());
  for (const auto& [name, value] : set) {
    std::string prefix = name + "=";
    std::erase_if(*env, [&](const std::string& kv) { return kv.rfind(prefix, 0) == 0; });
    env->push_back(prefix + value);
  }
}

// maskSecrets keeps every credential's real value out of the agent's
// environment, whatever variable holds it (the credential's source variable
// under another name, a copy in GH_TOKEN, a URL with the token in it, a
// base64 or percent-encoded copy such as a Basic auth string): a variable
// that is exactly a value gets that credential's placeholder, one that
// contains a value in any form the proxy's exfiltration scan knows is
// withheld. Values shorter than the scanner's patterns (8 bytes) are not
// looked for. Each change is audited.
void maskSecrets(std::vector<std::string>* env, const Credentials& creds, policy::AuditSink* sink,
                 const AuditEvent& base) {
  std::vector<proxy::Secret> values = creds.secrets;
  for (proxy::Secret& s : values) {
    s.placeholder.clear();  // placeholders are what the agent may hold
  }
  const proxy::SecretScanner scanner(values);
  for (auto it = env->begin(); it != env->end();) {
    size_t eq = it->find('=');
    std::string name = it->substr(0, eq);
    std::string_view value = std::string_view(*it).substr(eq + 1);
    std::optional<proxy::SecretScanner::Hit> hit = scanner.find(value);
    if (!hit) {
      ++it;
      continue;
    }
    const proxy::Secret& held = creds.secrets[hit->secret];
    bool exact = value == held.value;
    AuditEvent ev = event(base, "env", exact ? "mask" : "withhold", name, "deny");
    ev.reason = std::string("the variable holds the real value of credential ") + held.name +
                (exact ? ": the agent gets its placeholder"
                       : std::string(" (") + hit->form + "): the agent does not get it");
    sink->emit(std::move(ev));
    if (exact) {
      *it = name + "=" + held.placeholder;
      ++it;
    } else {
      it = env->erase(it);
    }
  }
}

// loadSessionPolicy fills *CTX from the environment and loads the layered
// policy (FILES replace the user and project layers). Policy errors are
// printed as they are (file:line:col); the returned error says guard refuses.
Result<policy::Policy> loadSessionPolicy(const std::vector<std::string>& files, policy::Context* ctx,
                                         policy::Loaded* loaded) {
  auto ctx_or = policy::contextFromEnvironment();
  if (!ctx_or.ok()) {
    return ctx_or.error();
  }
  *ctx = ctx_or.value();
  policy::LoadOptions load;
  load.explicit_files = files;
  auto pol = policy::loadPolicy(ctx, load, loaded);
  if (!pol.ok()) {
    std::fprintf(stderr, "%s\n", pol.error().message().c_str());  // file:line:col errors
    return Error(pol.error().code(), "refusing to run: the policy has errors");
  }
  return pol;
}

std::string runtimeDir() {
  const char* x = getenv("XDG_RUNTIME_DIR");
  if (x != nullptr && x[0] == '/' && access(x, W_OK) == 0) {
    return x;
  }
  return "/tmp";
}

}  // namespace

int runSession(const SessionOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  auto phase = [&](const char* what) {
    spdlog::debug("{:.1f} ms: {}",
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                      .count(),
                  what);
  };
  if (options.command.empty()) {
    return refuse("nothing to run\n  usage: guard [--policy FILE]... [--audit FILE] -- CMD [ARGS...]");
  }
  policy::Context ctx;
  policy::Loaded loaded;
  auto pol = loadSessionPolicy(options.policy_files, &ctx, &loaded);
  if (!pol.ok()) {
    return refuse(pol.error().message());
  }
  const policy::Policy& p = pol.value();

  phase("policy loaded");

  fusefs::AllowedAudit allowed;
  if (options.allowed_audit == "none") {
    allowed = fusefs::AllowedAudit::kNone;
  } else if (options.allowed_audit == "writes") {
    allowed = fusefs::AllowedAudit::kWrites;
  } else if (options.allowed_audit == "first") {
    allowed = fusefs::AllowedAudit::kFirst;
  } else {
    return refuse("--audit-allowed must be none, writes or first");
  }
  if (options.bind_writable && (options.serve_all || allowed != fusefs::AllowedAudit::kNone)) {
    return refuse(options.serve_all
                      ? "--bind-writable and --serve-all contradict each other"
                      : "--bind-writable stops the audit of allowed writes in the trees it binds: "
                        "give --audit-allowed none with it");
  }

  policy::Verdict cwd = p.file(ctx.project, policy::FileOp::kRead);
  if (!cwd.allowed() && !p.revealsBelow(ctx.project)) {
    return refuse("the working directory " + ctx.project + " is hidden by rule " +
                  std::string(cwd.rule.id) + " (" + cwd.rule.source() + ")");
  }

  AuditEvent base;
  base.session = policy::newSessionId();
  base.user = ctx.user;
  base.groups = ctx.groups;
  base.host = ctx.host;
  // Every event of the session says which mode it ran in, the view's, the
  // proxy's and guard's own (environment, credentials) alike.
  base.details["mode"] = options.vm ? "vm" : "host";

  std::string audit_path = options.audit_file.empty() ? policy::defaultAuditPath()
                                                      : options.audit_file;
  auto creds_or = readCredentials(p);
  if (!creds_or.ok()) {
    return refuse(creds_or.error().message());
  }
  const Credentials& creds = creds_or.value();
  auto ca = proxy::SessionCa::create();
  if (!ca.ok()) {
    return refuse(ca.error().message());
  }
  proxy::ProxyOptions popts;
  popts.ca = ca.value();
  popts.secrets = creds.secrets;
  popts.audit_base = base;
  popts.mode = options.vm ? "vm" : "host";
  popts.dns_upstream = options.dns_upstream;
  if (!options.upstream_ca.empty()) {
    popts.upstream_ca = options.upstream_ca;
  }
  popts.record_path = options.record_file;
  auto proxy_or = proxy::spawnProxy(p, audit_path, popts);
  if (!proxy_or.ok()) {
    return refuse("cannot start the proxy: " + proxy_or.error().message());
  }
  proxy::ProxyProcess proxy = proxy_or.value();
  phase("proxy forked");

  // The view is served by a process of its own: guard outlives it to report
  // its death and end the session, and the jail is forked from a process
  // that holds no serving threads.
  std::string mnt = runtimeDir() + "/guard-" + base.session;
  if (mkdir(mnt.c_str(), 0700) != 0) {
    return refuse("cannot create " + mnt + ": " + strerror(errno));
  }
  fusefs::ViewOptions vopts;
  vopts.mountpoint = mnt;
  vopts.allowed_audit = allowed;
  vopts.audit_base = base;
  // The overlays' memfds stay open until the session ends: the view and
  // the jail (forks) copy from them.
  struct Overlays {
    std::vector<int> fds;
    ~Overlays() {
      for (int fd : fds) {
        close(fd);
      }
    }
  } overlays;
  auto overlay = [&](const char* path, const std::string& source, const std::string& tail,
                     mode_t mode) -> Error {
    auto fd = fusefs::makeOverlay(source, tail, mode);
    if (!fd.ok()) {
      return fd.error();
    }
    overlays.fds.push_back(fd.value());
    vopts.overlays.push_back({path, fd.value()});
    return Error();
  };
  Error made;
  if (access(kCaBundle, R_OK) == 0) {
    made = overlay(kCaBundle, kCaBundle, "\n# guard session CA\n" + popts.ca->certPem(), 0444);
  }
  // The preload shim is served by the view itself and named in
  // /etc/ld.so.preload there, so every dynamic program of the session loads
  // it whatever its environment says (docs/security.md, "MCP servers").
  if (made.ok()) {
    if (Error e = overlay(kShimInView, shimPath(), "", 0555); !e.ok()) {
      made = Error(e.code(), "cannot read the preload shim " + shimPath() +
                                 " (it is built next to guard: run make): " + e.message());
    }
  }
  if (made.ok()) {
    made = overlay("/etc/ld.so.preload", "", std::string(kShimInView) + "\n", 0444);
  }
  if (!made.ok()) {
    proxy::stopProxy(&proxy);
    rmdir(mnt.c_str());
    return refuse(made.message());
  }
  auto view_or = fusefs::spawnView(p, audit_path, vopts);
  if (!view_or.ok()) {
    rmdir(mnt.c_str());
    proxy::stopProxy(&proxy);
    return refuse(view_or.error().message());
  }
  fusefs::ViewProcess view = view_or.value();
  phase("view mounted");
  // Bound trees skip the view, and with it the audit of what happens in
  // them: read-only ones are bound only where first reads are not audited,
  // read-write ones only when asked, with allowed writes not audited.
  // Planned while the proxy may still be loading its trust store.
  std::vector<fusefs::Bind> binds;
  if (!options.serve_all && !options.vm && allowed != fusefs::AllowedAudit::kFirst) {
    binds = fusefs::planBinds(p, vopts, options.bind_writable);
    phase("binds planned");
  }
  if (Error e = proxy::awaitProxy(&proxy); !e.ok()) {
    fusefs::stopView(&view);
    rmdir(mnt.c_str());
    return refuse("cannot start the proxy: " + e.message());
  }
  phase("proxy ready");

  auto sink_or = policy::FileAuditSink::open(audit_path);
  if (!sink_or.ok()) {
    fusefs::stopView(&view);
    proxy::stopProxy(&proxy);
    rmdir(mnt.c_str());
    return refuse("cannot open the audit log: " + sink_or.error().message());
  }
  std::unique_ptr<policy::FileAuditSink> sink = std::move(sink_or.value());

  std::string cmdline;
  for (const std::string& a : options.command) {
    cmdline += (cmdline.empty() ? "" : " ") + a;
  }
  AuditEvent start = event(base, "session", "start", cmdline, "ok");
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : loaded.files) {
    files.push_back({{"layer", f.layer}, {"file", f.file}});
  }
  const char* mode = options.vm ? "vm" : "host";
  start.details = {{"mode", mode}, {"cwd", ctx.project}, {"policy", files}};
  sink->emit(std::move(start));

  std::vector<std::string> env = agentEnvironment(p, sink.get(), base);
  networkEnvironment(&env, creds, options.vm ? vmhost::wire::kHostAddr : "127.0.0.1");
  maskSecrets(&env, creds, sink.get(), base);
  for (const std::string& name : creds.missing) {
    AuditEvent ev = event(base, "credentials", "read", name, "ok");
    ev.reason = "the credential's source is missing or empty: the agent gets a placeholder and nothing is injected";
    sink->emit(std::move(ev));
  }

  phase("environment decided");
  vmhost::JailSpec spec;
  spec.argv = options.command;
  spec.env = env;
  spec.cwd = ctx.project;
  spec.root = mnt;
  spec.net_fd = proxy.jail_fd;
  spec.proxy_port = proxy::kProxyPort;
  spec.writable = {"/dev", "/tmp"};
  bool everything_writable = false;
  for (const auto& vp : p.pathPrefixes()) {
    if (vp.access == policy::Access::kReadWrite) {
      if (vp.prefix == "/") {
        everything_writable = true;
      }
      spec.writable.push_back(vp.prefix);
    }
  }
  if (everything_writable) {
    spec.writable = {"/"};
  }
  for (fusefs::Bind& b : binds) {
    std::vector<std::pair<std::string, int>> layer;
    for (fusefs::Overlay& o : b.layer) {
      layer.emplace_back(std::move(o.path), o.fd);
    }
    spec.binds.push_back({std::move(b.path), b.writable, std::move(layer)});
  }

  // The terminal's signals go to the agent (same process group); guard
  // itself waits for the agent to decide.
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  signal(SIGTSTP, SIG_IGN);

  Error detach_error;
  pid_t died = -1;
  const pid_t view_pid = view.pid;
  const pid_t proxy_pid = proxy.pid;
  auto on_rooted = [&] {
    phase(options.vm ? "virtiofsd holds the view" : "jail rooted in the view");
    detach_error = fusefs::detachView(view);
  };
  // VM mode: the same view, environment, proxy and watch; the VM replaces
  // the jail.
  vmhost::VmSpec vm;
  vm.net_fd = proxy.jail_fd;
  vm.proxy_port = proxy::kProxyPort;
  // The shim inside the guest asks through the guest's init: its requests
  // are judged here, and an approved server's stdio is filtered here too
  // (its bytes cross the control port). Declared after the audit sink, so
  // its relay threads are joined (once the VM's sockets are closed) before
  // the sink goes.
  proxy::McpGuestRelays mcp_relays(proxy::McpContext{&p, sink.get(), base, "vm", "cli"});
  vm.mcp_answer = [&mcp_relays](std::string_view request, int* client, int* server) {
    return mcp_relays.answer(request, client, server);
  };
  vm.argv = spec.argv;
  vm.env = spec.env;
  vm.cwd = spec.cwd;
  vm.root = spec.root;
  vm.hostname = spec.hostname;
  vm.memory_mib = options.vm_memory_mib;
  vm.cpus = options.vm_cpus;
  auto rc = options.vm ? vmhost::runVm(vm, on_rooted, {view_pid, proxy_pid}, &died)
                       : vmhost::runJail(spec, on_rooted, {view_pid, proxy_pid}, &died);
  phase("agent exited");
  // The view and the proxy stop together. The view process holds a copy of
  // the proxy's control socket (it was forked after the proxy), so closing
  // guard's copy alone would reach the proxy only once the view is gone;
  // shutting the socket down reaches it now.
  shutdown(proxy.control_fd, SHUT_WR);
  Error view_error = fusefs::stopView(&view);
  Error proxy_error = proxy::stopProxy(&proxy);
  rmdir(mnt.c_str());
  phase("view stopped");

  int code = 0;
  AuditEvent done = event(base, "session", "exit", cmdline, "ok");
  done.details = {{"mode", mode}};
  if (!rc.ok()) {
    done.decision = "setup_error";
    done.reason = rc.error().message();
    code = kSetupFailed;
    std::fprintf(stderr, "guard: %s\n", rc.error().message().c_str());
  } else {
    code = rc.value();
    done.details["exit_code"] = code;
    if (code > 128 && code < 128 + 65) {
      done.decision = "signaled";
    }
  }
  if (died == view_pid || !view_error.ok() || died == proxy_pid || !proxy_error.ok()) {
    done.decision = "internal_error";
    done.reason = !view_error.ok()    ? view_error.message()
                  : !proxy_error.ok() ? proxy_error.message()
                  : died == view_pid  ? "the filesystem view died"
                                      : "the proxy died";
    std::fprintf(stderr, "guard: %s; the session was ended (the agent never sees the host)\n",
                 done.reason.c_str());
    code = kSetupFailed;
  }
  if (!detach_error.ok()) {
    std::fprintf(stderr, "guard: warning: %s\n", detach_error.message().c_str());
  }
  sink->emit(std::move(done));
  if (Error e = sink->flush(); !e.ok()) {
    std::fprintf(stderr, "guard: the audit log failed: %s\n", e.message().c_str());
    return code == 0 ? kSetupFailed : code;
  }
  return code;
}

int runProxyCommand(const ProxyCommandOptions& options) {
  policy::Context ctx;
  policy::Loaded loaded;
  auto pol = loadSessionPolicy(options.policy_files, &ctx, &loaded);
  if (!pol.ok()) {
    return refuse(pol.error().message());
  }
  // The listener: ADDR:PORT, IPv6 in brackets.
  std::string addr = options.listen;
  size_t colon = addr.rfind(':');
  sockaddr_storage ss{};
  socklen_t len = 0;
  int port = colon == std::string::npos ? -1 : atoi(addr.c_str() + colon + 1);
  std::string host = colon == std::string::npos ? "" : addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (port > 0 && port < 65536 && inet_pton(AF_INET, host.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*sin);
  } else if (port > 0 && port < 65536 && inet_pton(AF_INET6, host.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*sin6);
  } else {
    return refuse("--listen wants ADDR:PORT, e.g. 127.0.0.1:3128 or [::1]:3128");
  }
  int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(lfd, 4096) != 0) {
    return refuse("cannot listen on " + options.listen + ": " + strerror(errno));
  }
  auto ca = proxy::SessionCa::create();
  if (!ca.ok()) {
    return refuse(ca.error().message());
  }
  if (!options.ca_out.empty()) {
    std::string tmp = options.ca_out + ".tmp";
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << ca.value()->certPem();
    f.close();
    if (!f || rename(tmp.c_str(), options.ca_out.c_str()) != 0) {
      return refuse("cannot write " + options.ca_out + ": " + strerror(errno));
    }
  }
  std::string audit_path = options.audit_file.empty() ? policy::defaultAuditPath() : options.audit_file;
  auto sink_or = policy::FileAuditSink::open(audit_path);
  if (!sink_or.ok()) {
    return refuse("cannot open the audit log: " + sink_or.error().message());
  }
  proxy::ProxyOptions popts;
  popts.ca = ca.value();
  popts.dns_upstream = options.dns_upstream;
  if (!options.upstream_ca.empty()) {
    popts.upstream_ca = options.upstream_ca;
  }
  popts.record_path = options.record_file;
  popts.mode = "proxy";
  popts.audit_base.session = policy::newSessionId();
  popts.audit_base.user = ctx.user;
  popts.audit_base.groups = ctx.groups;
  popts.audit_base.host = ctx.host;
  // SIGINT and SIGTERM end the loop through a signalfd it watches.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  int sfd = signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK);
  std::fprintf(stderr, "guard: proxy listening on %s (session CA%s%s)\n", options.listen.c_str(),
               options.ca_out.empty() ? " in memory only" : " written to ",
               options.ca_out.c_str());
  proxy::Listeners listeners;
  listeners.tcp.push_back(lfd);
  Error e = proxy::serveProxy(pol.value(), sink_or.value().get(), popts, listeners, sfd);
  Error flushed = sink_or.value()->flush();
  if (!e.ok()) {
    return refuse(e.message());
  }
  if (!flushed.ok()) {
    return refuse("the audit log failed: " + flushed.message());
  }
  return 0;
}

}  // namespace guard::cli

namespace guard::cli {

int runMcpWrap(const McpWrapOptions& options) {
  policy::Context ctx;
  policy::Loaded loaded;
  auto pol = loadSessionPolicy(options.policy_files, &ctx, &loaded);
  if (!pol.ok()) {
    return refuse(pol.error().message());
  }
  const policy::Policy& p = pol.value();
  std::string audit_path =
      options.audit_file.empty() ? policy::defaultAuditPath() : options.audit_file;
  auto sink_or = policy::FileAuditSink::open(audit_path);
  if (!sink_or.ok()) {
    return refuse("cannot open the audit log: " + sink_or.error().message());
  }
  policy::AuditSink* sink = sink_or.value().get();
  proxy::McpContext mctx;
  mctx.policy = &p;
  mctx.sink = sink;
  mctx.base.session = policy::newSessionId();
  mctx.base.user = ctx.user;
  mctx.base.groups = ctx.groups;
  mctx.base.host = ctx.host;
  mctx.mode = "mcp-wrap";
  mctx.component = "cli";
  signal(SIGPIPE, SIG_IGN);

  std::string name(p.mcpServerForCommand(options.command));
  policy::Verdict v = p.mcpServer(name);
  std::string argv;
  for (const std::string& a : options.command) {
    argv += (argv.empty() ? "" : " ") + a;
  }
  AuditEvent start = event(mctx.base, "mcp", "start", name.empty() ? argv : name,
                           policy::decisionName(v.decision));
  start.component = "cli";
  start.rule = {std::string(v.rule.id), std::string(v.rule.layer), v.rule.source()};
  start.details = {{"server", name}, {"transport", "stdio"}, {"argv", options.command},
                   {"mode", "mcp-wrap"}};
  sink->emit(std::move(start));
  if (!v.allowed() || name.empty()) {
    // An unknown server is denied even under `mcp.default: allow`: with no
    // entry there are no tool rules to filter by.
    std::string message =
        name.empty() ? "no MCP server entry of the policy matches `" + argv + "`"
                     : "MCP server '" + name + "' is denied by " + std::string(v.rule.id);
    std::fprintf(stderr, "guard: %s\n", message.c_str());
    proxy::McpFilter filter(&mctx, name, "stdio", "guard: " + message);
    proxy::relayStdio(&filter, dup(0), dup(1), -1);
    sink->flush();
    return 126;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return refuse(std::string("cannot create the server's socket: ") + strerror(errno));
  }
  pid_t child = fork();
  if (child < 0) {
    return refuse(std::string("cannot fork: ") + strerror(errno));
  }
  if (child == 0) {
    signal(SIGPIPE, SIG_DFL);
    dup2(sv[1], 0);
    dup2(sv[1], 1);
    std::vector<char*> args;
    for (const std::string& a : options.command) {
      args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "guard: cannot run %s: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  close(sv[1]);
  proxy::McpFilter filter(&mctx, name, "stdio");
  proxy::relayStdio(&filter, dup(0), dup(1), sv[0]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  sink->flush();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace guard::cli
