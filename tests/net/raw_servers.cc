// SshServer and BannerServer: start and stop sshd and banner_server.py on a
// TestNet site's loopback addresses.
#include "tests/net/raw_servers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <thread>

#include "tests/testing.h"

namespace guard::testing {

namespace {

namespace fs = std::filesystem;

constexpr char kSshd[] = "/usr/sbin/sshd";  // sshd re-execs itself: absolute path
constexpr int kStartTimeoutMs = 15000;
constexpr int kStopTimeoutMs = 5000;
constexpr int kPortAttempts = 5;

std::string tail(const std::string& s, size_t n = 2000) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) {
    s.pop_back();
  }
  return s;
}

bool waitUntil(const std::function<bool()>& pred, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
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

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

bool inPath(const std::string& prog) {
  Run r = runProgram({"sh", "-c", "command -v " + prog}, "/",
                     {"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"});
  return r.status == 0;
}

// bindable binds a TCP socket to ADDR:PORT (PORT 0: any) and returns the
// bound port, or 0 when it cannot. The socket is closed again.
int bindable(const std::string& addr, int port) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = AF_INET;
  if (inet_pton(AF_INET, addr.c_str(), &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr) == 1) {
    auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, addr.c_str(), &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr) ==
             1) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(static_cast<uint16_t>(port));
    family = AF_INET6;
    len = sizeof(sockaddr_in6);
  } else {
    return 0;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return 0;
  }
  int out = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    out = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                  : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
  close(fd);
  return out;
}

// freePort returns a high port that is free on every address of ADDRS, or 0.
int freePort(const std::vector<std::string>& addrs) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    int port = bindable(addrs.front(), 0);
    bool all = port > 0;
    for (size_t i = 1; all && i < addrs.size(); ++i) {
      all = bindable(addrs[i], port) == port;
    }
    if (all) {
      return port;
    }
  }
  return 0;
}

// spawn starts ARGV in its own process group with stdin from /dev/null and
// stdout and stderr appended to OUT; it dies with the test (PDEATHSIG).
int spawn(const std::vector<std::string>& argv, const std::string& out) {
  std::vector<char*> args;
  for (const std::string& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    throw std::runtime_error("fork failed for " + argv[0]);
  }
  if (pid == 0) {
    // Only async-signal-safe calls until exec: the test may have threads.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) {
      _exit(1);
    }
    int in = open("/dev/null", O_RDONLY);
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || o < 0) {
      _exit(126);
    }
    dup2(in, 0);
    dup2(o, 1);
    dup2(o, 2);
    execvp(args[0], args.data());
    _exit(127);
  }
  setpgid(pid, pid);
  return pid;
}

// exited reaps PID without blocking and says whether it has ended.
bool exited(int pid) {
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == pid;
}

// stopChild ends the process group this file started with PID: SIGTERM to
// the leader, and once it has ended (still unreaped, so its id cannot be
// reused) SIGKILL to what is left of its group, then reaps it.
void stopChild(int* pid) {
  if (*pid <= 0) {
    return;
  }
  kill(*pid, SIGTERM);
  auto ended = [&] {
    siginfo_t info{};
    return waitid(P_PID, static_cast<id_t>(*pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == *pid;
  };
  if (!waitUntil(ended, kStopTimeoutMs)) {
    kill(*pid, SIGKILL);
  }
  kill(-*pid, SIGKILL);
  int status = 0;
  waitpid(*pid, &status, 0);
  *pid = -1;
}

void writeFile(const std::string& path, const std::string& text, fs::perms mode) {
  {
    std::ofstream f(path, std::ios::trunc);
    f << text;
    if (!f) {
      throw std::runtime_error("cannot write " + path);
    }
  }
  fs::permissions(path, mode);
}

void mustRun(const std::string& step, const std::vector<std::string>& argv,
             const std::vector<std::string>& env = {}, std::string* out = nullptr) {
  Run r = runProgram(argv, "/", env, kStartTimeoutMs);
  if (r.status != 0) {
    throw std::runtime_error(step + " failed (" + std::to_string(r.status) +
                             "): " + tail(r.err + r.out));
  }
  if (out != nullptr) {
    *out = r.out;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// SshServer
// ---------------------------------------------------------------------------

std::string SshServer::missingTool() {
  if (access(kSshd, X_OK) != 0) {
    return kSshd;
  }
  for (const char* tool : {"ssh", "ssh-keygen", "git-upload-pack"}) {
    if (!inPath(tool)) {
      return tool;
    }
  }
  return "";
}

SshServer::SshServer(const TestNet& net, const std::string& name) {
  try {
    start(net, name);
  } catch (...) {
    stop();
    throw;
  }
}

SshServer::~SshServer() { stop(); }

void SshServer::start(const TestNet& net, const std::string& name) {
  const std::vector<std::string>& addrs = net.addresses(name);
  dir_ = net.dir() + "/sshd-" + name;
  fs::create_directories(dir_);
  struct passwd* pw = getpwuid(geteuid());
  if (pw == nullptr) {
    throw std::runtime_error("SshServer: the test's user has no passwd entry");
  }
  user_ = pw->pw_name;

  // Keys: the server's own host key, and the client's key it accepts.
  for (const char* key : {"host_key", "client_key"}) {
    mustRun(std::string("SshServer: ssh-keygen ") + key,
            {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", std::string("guard-test-") + key,
             "-f", dir_ + "/" + key});
  }
  writeFile(dir_ + "/authorized_keys", "restrict " + readFile(dir_ + "/client_key.pub"),
            fs::perms::owner_read | fs::perms::owner_write);

  // The repository: one commit on main, pushed into a bare repository.
  std::string script =
      "set -e; cd \"$D\"; git init -q --bare -b main repo.git; git init -q -b main work; "
      "cd work; echo 'guard ssh fixture repository' > README; git add README; "
      "git -c user.name=guard -c user.email=guard@test commit -q -m 'ssh fixture commit'; "
      "git push -q ../repo.git main; git -C ../repo.git rev-parse main";
  std::string out;
  mustRun("SshServer: make the repository", {"sh", "-c", script},
          {"PATH=/usr/local/bin:/usr/bin:/bin", "D=" + dir_, "HOME=" + dir_,
           "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"},
          &out);
  head_ = trim(out);

  if (geteuid() == 0 && !fs::exists("/run/sshd")) {
    // The privilege-separation directory sshd requires as root; the
    // distribution's service creates it at start (systemd RuntimeDirectory).
    fs::create_directories("/run/sshd");
    fs::permissions("/run/sshd", fs::perms::owner_all | fs::perms::group_read |
                                     fs::perms::group_exec | fs::perms::others_read |
                                     fs::perms::others_exec);
  }

  std::string log_path = dir_ + "/sshd.log";
  std::string last_log;
  for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
    port_ = freePort(addrs);
    if (port_ == 0) {
      throw std::runtime_error("SshServer: no port free on every address of " + name);
    }
    std::string config = "Port " + std::to_string(port_) + "\n";
    for (const std::string& a : addrs) {
      config += "ListenAddress " + a + "\n";
    }
    config += "HostKey " + dir_ +
              "/host_key\n"
              "PidFile " +
              dir_ +
              "/sshd.pid\n"
              "AuthorizedKeysFile " +
              dir_ +
              "/authorized_keys\n"
              "AllowUsers " +
              user_ +
              "\n"
              "UsePAM no\n"
              "StrictModes no\n"
              "PubkeyAuthentication yes\n"
              "PasswordAuthentication no\n"
              "KbdInteractiveAuthentication no\n"
              "PermitRootLogin prohibit-password\n"
              "AllowTcpForwarding no\n"
              "X11Forwarding no\n"
              "PrintMotd no\n"
              "LogLevel VERBOSE\n";
    writeFile(dir_ + "/sshd_config", config, fs::perms::owner_read | fs::perms::owner_write);
    std::error_code ec;
    fs::remove(log_path, ec);
    pid_ =
        spawn({kSshd, "-D", "-e", "-f", dir_ + "/sshd_config", "-E", log_path}, dir_ + "/sshd.out");
    bool gone = false;
    bool up = waitUntil(
        [&] {
          if (count(readFile(log_path), "Server listening on") >= addrs.size()) {
            return true;
          }
          gone = exited(pid_);
          return gone;
        },
        kStartTimeoutMs);
    if (up && !gone) {
      return;
    }
    last_log = readFile(log_path) + readFile(dir_ + "/sshd.out");
    if (gone) {
      pid_ = -1;
    } else {
      stop();
    }
    if (last_log.find("Address already in use") == std::string::npos) {
      break;  // not a lost race for the port: retrying will not help
    }
  }
  throw std::runtime_error("SshServer: sshd did not start on " + name + ": " + tail(last_log));
}

void SshServer::stop() { stopChild(&pid_); }

std::string SshServer::clientKey() const { return dir_ + "/client_key"; }
std::string SshServer::repoPath() const { return dir_ + "/repo.git"; }
std::string SshServer::log() const { return readFile(dir_ + "/sshd.log"); }

bool SshServer::waitLog(const std::string& needle, int timeout_ms) const {
  return waitUntil([&] { return log().find(needle) != std::string::npos; }, timeout_ms);
}

// ---------------------------------------------------------------------------
// BannerServer
// ---------------------------------------------------------------------------

BannerServer::BannerServer(const TestNet& net, const std::string& name, const std::string& banner) {
  dir_ = net.dir() + "/banner-" + name;
  fs::create_directories(dir_);
  std::string python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  std::vector<std::string> argv = {python,        net.scripts() + "/banner_server.py",
                                   "--banner",    banner,
                                   "--log",       dir_ + "/banner.log",
                                   "--port-file", dir_ + "/banner.port"};
  for (const std::string& a : net.addresses(name)) {
    argv.push_back("--listen");
    argv.push_back(a);
  }
  pid_ = spawn(argv, dir_ + "/banner.out");
  std::string text;
  bool gone = false;
  bool up = waitUntil(
      [&] {
        text = readFile(dir_ + "/banner.port");
        if (!text.empty() && text.back() == '\n') {
          return true;
        }
        gone = exited(pid_);
        return gone;
      },
      kStartTimeoutMs);
  port_ = up && !gone ? std::atoi(text.c_str()) : 0;
  if (port_ <= 0) {
    if (gone) {
      pid_ = -1;
    }
    stopChild(&pid_);
    throw std::runtime_error("BannerServer: banner_server.py did not start on " + name + ": " +
                             tail(readFile(dir_ + "/banner.out")));
  }
}

BannerServer::~BannerServer() { stopChild(&pid_); }

std::string BannerServer::log() const { return readFile(dir_ + "/banner.log"); }

bool BannerServer::waitLog(const std::string& needle, int timeout_ms) const {
  return waitUntil([&] { return log().find(needle) != std::string::npos; }, timeout_ms);
}

}  // namespace guard::testing
