// TestNet: starts and stops the loopback PKI, nginx origins and DNS upstream.
#include "tests/net/net_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <thread>

#include "tests/testing.h"

namespace guard::testing {

namespace {

namespace fs = std::filesystem;

constexpr int kStartTimeoutMs = 30000;
constexpr int kStopTimeoutMs = 10000;

bool executable(const std::string &path) {
  return access(path.c_str(), X_OK) == 0;
}

// inPath returns the full path of PROG from $PATH or the sbin directories
// (nginx lives in /usr/sbin, which an ordinary user's PATH may lack), or "".
std::string inPath(const std::string &prog) {
  std::string path =
      getenv("PATH") != nullptr ? getenv("PATH") : "/usr/bin:/bin";
  path += ":/usr/local/sbin:/usr/sbin:/sbin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) {
      end = path.size();
    }
    std::string cand = path.substr(start, end - start) + "/" + prog;
    if (end > start && executable(cand)) {
      return cand;
    }
    start = end + 1;
  }
  return "";
}

// python prefers the distribution's interpreter: it starts fastest and the
// scripts need only the standard library.
std::string python() {
  return executable("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

std::string scriptsDir() {
  const char *env = getenv("GUARD_NET_SCRIPTS");
  if (env != nullptr && env[0] != '\0') {
    return fs::absolute(env).string();
  }
  if (fs::exists("tests/net/origin.py")) {
    return fs::absolute("tests/net").string();
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path cand = exe.parent_path().parent_path() / "tests" / "net";
    if (fs::exists(cand / "origin.py")) {
      return cand.string();
    }
  }
  throw std::runtime_error(
      "TestNet: tests/net scripts not found; set GUARD_NET_SCRIPTS");
}

std::string trim(std::string s) {
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) {
    s.pop_back();
  }
  return s;
}

std::string tail(const std::string &s, size_t n = 2000) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

// portFrom returns the number after "KEY=" in TEXT, or 0.
int portFrom(const std::string &text, const std::string &key) {
  size_t at = text.find(key + "=");
  if (at == std::string::npos) {
    return 0;
  }
  return std::atoi(text.c_str() + at + key.size() + 1);
}

std::string joinAddrs(const NetSite &s) {
  std::string out = s.name + "=";
  for (size_t i = 0; i < s.addrs.size(); ++i) {
    out += (i == 0 ? "" : ",") + s.addrs[i];
  }
  return out;
}

// isLoopback says whether ADDR is in 127.0.0.0/8 or is ::1.
bool isLoopback(const std::string &addr) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, addr.c_str(), buf) == 1) {
    return buf[0] == 127;
  }
  return addr == "::1" || addr == "0:0:0:0:0:0:0:1";
}

bool waitUntil(const std::function<bool()> &pred, int timeout_ms) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (pred()) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

} // namespace

bool TestNet::hasIpv6Loopback() {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_addr = in6addr_loopback;
  bool ok = bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) == 0;
  close(fd);
  return ok;
}

std::vector<NetSite> TestNet::defaultSites() {
  if (!hasIpv6Loopback()) {
    return {{kAllowedHost, {"127.0.0.2"}},
            {kForbiddenHost, {"127.0.0.3"}},
            {kInspectHost, {"127.0.0.4"}},
            {kUntrustedHost, {"127.0.0.5"}}};
  }
  return {{kAllowedHost, {"127.0.0.2", "::1"}},
          {kForbiddenHost, {"127.0.0.3"}},
          {kInspectHost, {"127.0.0.4"}},
          {kUntrustedHost, {"127.0.0.5"}}};
}

bool TestNet::usable(std::string* why) {
  if (std::string tool = missingTool(); !tool.empty()) {
    *why = tool + " is not installed";
    return false;
  }
  Run r = runProgram({"unshare", "-Urn", "true"}, "/", {"PATH=/usr/local/bin:/usr/bin:/bin"});
  if (r.status != 0) {
    *why = "user and network namespaces are unavailable";
    return false;
  }
  return true;
}

std::string TestNet::missingTool() {
  for (const char *tool : {"nginx", "openssl", "python3", "git"}) {
    if (inPath(tool).empty()) {
      return tool;
    }
  }
  return "";
}

TestNet::TestNet() : TestNet(defaultSites()) {}

TestNet::TestNet(std::vector<NetSite> sites, std::vector<std::string> dns_args)
    : sites_(std::move(sites)) {
  try {
    start(std::move(dns_args));
  } catch (...) {
    cleanup();
    throw;
  }
}

TestNet::~TestNet() { cleanup(); }

void TestNet::start(std::vector<std::string> dns_args) {
  if (sites_.empty()) {
    throw std::runtime_error("TestNet: no sites");
  }
  for (const NetSite &s : sites_) {
    if (s.addrs.empty()) {
      throw std::runtime_error("TestNet: site " + s.name + " has no address");
    }
    for (const std::string &a : s.addrs) {
      if (!isLoopback(a)) {
        throw std::runtime_error("TestNet: refusing non-loopback address " + a +
                                 " for " + s.name);
      }
    }
  }
  scripts_ = scriptsDir();
  char tmpl[] = "/var/tmp/guard-net-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    throw std::runtime_error("TestNet: mkdtemp under /var/tmp failed");
  }
  dir_ = tmpl;
  if (geteuid() == 0 &&
      chmod(dir_.c_str(), 0755) != 0) { // nginx workers run as nobody
    throw std::runtime_error("TestNet: chmod " + dir_ + " failed");
  }

  // 1. PKI.
  std::vector<std::string> pki = {scripts_ + "/pki.sh", dir_ + "/pki"};
  for (const NetSite &s : sites_) {
    pki.push_back(s.name);
  }
  Run r = runProgram(pki, "", {}, kStartTimeoutMs);
  if (r.status != 0) {
    throw std::runtime_error("TestNet: pki.sh failed (" +
                             std::to_string(r.status) + "): " + tail(r.err));
  }

  // 2. DNS upstream: started first, it is quick and the origin takes longer.
  std::vector<std::string> dns = {python(),      scripts_ + "/dns_upstream.py",
                                  "--listen",    "127.0.0.1:0",
                                  "--log",       dir_ + "/dns.log",
                                  "--port-file", dir_ + "/dns.port"};
  for (const NetSite &s : sites_) {
    dns.push_back("--map");
    dns.push_back(joinAddrs(s));
  }
  dns.insert(dns.end(), dns_args.begin(), dns_args.end());
  dns_ = spawn("dns_upstream.py", dns, dir_ + "/dns");

  // 3. Origin.
  std::vector<std::string> origin = {python(), scripts_ + "/origin.py",
                                     "run",    dir_ + "/origin",
                                     "--pki",  dir_ + "/pki"};
  for (const NetSite &s : sites_) {
    origin.push_back("--site");
    origin.push_back(joinAddrs(s));
  }
  origin_ = spawn("origin.py", origin, dir_ + "/origin");

  dns_port_ =
      std::atoi(waitForFile(dns_, dir_ + "/dns.port", kStartTimeoutMs).c_str());
  std::string ports =
      waitForFile(origin_, dir_ + "/origin/origin.ports", kStartTimeoutMs);
  https_port_ = portFrom(ports, "https");
  http_port_ = portFrom(ports, "http");
  if (dns_port_ <= 0 || https_port_ <= 0 || http_port_ <= 0) {
    throw std::runtime_error("TestNet: bad ports: dns " +
                             std::to_string(dns_port_) + ", " + ports);
  }
}

TestNet::Child TestNet::spawn(const std::string &name,
                              const std::vector<std::string> &argv,
                              const std::string &out_path) {
  std::vector<char *> args;
  for (const std::string &a : argv) {
    args.push_back(const_cast<char *>(a.c_str()));
  }
  args.push_back(nullptr);
  std::string out = out_path + ".out";
  std::string err = out_path + ".err";
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    throw std::runtime_error("TestNet: fork failed for " + name);
  }
  if (pid == 0) {
    // Only async-signal-safe calls until exec: the test process may have
    // threads.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) {
      _exit(1); // the test died before PR_SET_PDEATHSIG took effect
    }
    int in = open("/dev/null", O_RDONLY);
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (in < 0 || o < 0 || e < 0) {
      _exit(126);
    }
    dup2(in, 0);
    dup2(o, 1);
    dup2(e, 2);
    execvp(args[0], args.data());
    _exit(127);
  }
  setpgid(pid, pid); // also here, so a kill of the group cannot race the
                     // child's own call
  return {pid, name, err};
}

std::string TestNet::waitForFile(Child &child, const std::string &path,
                                 int timeout_ms) {
  std::string text;
  int status = 0;
  bool exited = false;
  bool found = waitUntil(
      [&] {
        text = readFile(path);
        if (!text.empty() && text.back() == '\n') {
          return true;
        }
        if (waitpid(child.pid, &status, WNOHANG) == child.pid) {
          exited = true;
          return true;
        }
        return false;
      },
      timeout_ms);
  if (exited) {
    child.pid = -1;
    std::string code = WIFEXITED(status)
                           ? "exit " + std::to_string(WEXITSTATUS(status))
                           : "signal " + std::to_string(WTERMSIG(status));
    throw std::runtime_error(
        "TestNet: " + child.name + " ended (" + code +
        ") before it was ready: " + tail(readFile(child.err)));
  }
  if (!found) {
    throw std::runtime_error("TestNet: " + child.name + " not ready after " +
                             std::to_string(timeout_ms) + " ms");
  }
  return text;
}

void TestNet::stop(Child &child) {
  if (child.pid <= 0) {
    return;
  }
  // The child is the leader of a process group this fixture created; its own
  // children (nginx) stay in that group.
  kill(child.pid, SIGTERM);
  int status = 0;
  bool gone = waitUntil(
      [&] { return waitpid(child.pid, &status, WNOHANG) == child.pid; },
      kStopTimeoutMs);
  if (!gone) {
    kill(-child.pid, SIGKILL);
    waitpid(child.pid, &status, 0);
  }
  child.pid = -1;
}

void TestNet::cleanup() {
  stop(origin_);
  stop(dns_);
  if (!dir_.empty() && dir_.rfind("/var/tmp/guard-net-", 0) == 0) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  dir_.clear();
}

const NetSite &TestNet::site(const std::string &name) const {
  for (const NetSite &s : sites_) {
    if (s.name == name) {
      return s;
    }
  }
  throw std::out_of_range("TestNet: no site " + name);
}

std::string TestNet::caFile() const { return dir_ + "/pki/ca.pem"; }
std::string TestNet::untrustedCaFile() const {
  return dir_ + "/pki/untrusted-ca.pem";
}
std::string TestNet::certFile(const std::string &name) const {
  return dir_ + "/pki/" + site(name).name + ".pem";
}
std::string TestNet::keyFile(const std::string &name) const {
  return dir_ + "/pki/" + site(name).name + ".key";
}

int TestNet::httpsPort(const std::string &name) const {
  site(name);
  return https_port_;
}

int TestNet::httpPort(const std::string &name) const {
  site(name);
  return http_port_;
}

const std::vector<std::string> &
TestNet::addresses(const std::string &name) const {
  return site(name).addrs;
}

const std::string &TestNet::address(const std::string &name) const {
  return site(name).addrs.front();
}

std::string TestNet::url(const std::string &name, const std::string &path,
                         bool https) const {
  return (https ? "https://" : "http://") + name + ":" +
         std::to_string(https ? httpsPort(name) : httpPort(name)) + path;
}

std::vector<std::string> TestNet::curlResolve(const std::string &name,
                                              bool https) const {
  const std::string &a = address(name);
  std::string addr = a.find(':') != std::string::npos ? "[" + a + "]" : a;
  return {"--resolve",
          name + ":" +
              std::to_string(https ? httpsPort(name) : httpPort(name)) + ":" +
              addr};
}

std::string TestNet::dnsUpstream() const {
  return "127.0.0.1:" + std::to_string(dns_port_);
}

std::string TestNet::accessLogPath(const std::string &name) const {
  return dir_ + "/origin/" + site(name).name + ".access.log";
}

std::string TestNet::accessLog(const std::string &name) const {
  return readFile(accessLogPath(name));
}

std::string TestNet::dnsLog() const { return readFile(dir_ + "/dns.log"); }

std::string TestNet::uploads() const {
  std::string all;
  std::error_code ec;
  for (const auto &e : std::filesystem::directory_iterator(dir_ + "/origin/www/uploads", ec)) {
    all += readFile(e.path().string());
  }
  return all;
}

bool TestNet::waitAccessLog(const std::string &name, const std::string &needle,
                            int timeout_ms) const {
  std::string path = accessLogPath(name);
  return waitUntil(
      [&] { return readFile(path).find(needle) != std::string::npos; },
      timeout_ms);
}

bool TestNet::waitDnsLog(const std::string &needle, int timeout_ms) const {
  return waitUntil([&] { return dnsLog().find(needle) != std::string::npos; },
                   timeout_ms);
}

std::string TestNet::bigSha256() const {
  return trim(readFile(dir_ + "/origin/big.sha256"));
}

std::string TestNet::repoHead() const {
  return trim(readFile(dir_ + "/origin/repo.head"));
}

} // namespace guard::testing
