// guard-vm-init: PID 1 of VM mode's guest. Loads the virtio modules, mounts
// the policy view (virtiofs) as the agent's root, runs the session's command
// and relays its stdio and exit status to guard over the control port.
//
// Built static (-static, no spdlog, no yaml) and packed with the guest
// kernel's modules into the initramfs by scripts/vm-prepare.sh. PID 1 stays
// in the initramfs so it can reap orphans and report the exit status after
// everything of the command has ended; the command runs in a mount
// namespace of its own whose root is the view.
//
// Trust: everything inside the guest belongs to the agent (it runs as the
// guest's root). What guards the host is outside: the view enforces the
// policy on every file operation, and the VM's one network device is a tap
// in a network namespace of guard's where only the proxy and the DNS
// responder answer. A hostile agent can at most forge its own output and
// exit status on the control port.
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "policy/wire.h"
#include "vmhost/vm_wire.h"

extern char** environ;

namespace {

namespace wire = guard::vmhost::wire;
using wire::Frame;
using wire::writeAll;

constexpr const char* kRoot = "/root";        // where the view is mounted
constexpr const char* kModules = "/modules";  // the kernel modules, and their order
constexpr int kCtlWaitMs = 20000;             // for the control port to appear
constexpr size_t kMaxBuffered = 4u << 20;     // stdin held for the command
constexpr size_t kOutHighWater = 256u << 10;  // stop reading the command's output above it
constexpr size_t kReadChunk = 64u << 10;

int g_ctl = -1;  // the control port, once open

// powerOff ends the VM. Nothing of the session outlives it.
[[noreturn]] void powerOff() {
  sync();
  reboot(RB_POWER_OFF);
  for (;;) {
    pause();
  }
}

void sendFrame(Frame type, std::string_view payload) {
  if (g_ctl < 0) {
    return;
  }
  std::string f;
  wire::appendFrame(&f, type, payload);
  writeAll(g_ctl, f.data(), f.size());
}

// fatal reports a setup error: one line to guard (kError) or, before the
// control port exists, to the console that guard shows when the VM ends
// without a status. Then the VM powers off.
[[noreturn]] void fatal(const std::string& what, int err) {
  std::string line = what;
  if (err != 0) {
    line += std::string(": ") + strerror(err);
  }
  if (g_ctl >= 0) {
    sendFrame(Frame::kError, line);
  }
  std::string console = "guard-vm-init: " + line + "\n";
  writeAll(2, console.data(), console.size());
  powerOff();
}

void mountOrDie(const char* src, const char* dst, const char* type, unsigned long flags,
                const char* data) {
  mkdir(dst, 0755);
  if (mount(src, dst, type, flags, data) != 0) {
    fatal(std::string("mount ") + type + " on " + dst, errno);
  }
}

std::string readSmallFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return "";
  }
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    s.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return s;
}

void sleepMs(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, nullptr);
}

// loadModules loads /modules/*.ko in the order /modules/order lists them
// (scripts/vm-prepare.sh writes it; built-in drivers are not listed).
void loadModules() {
  std::string order = readSmallFile(std::string(kModules) + "/order");
  size_t pos = 0;
  while (pos < order.size()) {
    size_t nl = order.find('\n', pos);
    if (nl == std::string::npos) {
      nl = order.size();
    }
    std::string name = order.substr(pos, nl - pos);
    pos = nl + 1;
    if (name.empty()) {
      continue;
    }
    std::string path = std::string(kModules) + "/" + name;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      fatal("open module " + path, errno);
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
      fatal("load module " + name, errno);
    }
    close(fd);
  }
}

// openControlPort waits for the virtio-serial port named wire::kPortName
// (ports appear asynchronously after the driver loads) and opens it.
int openControlPort() {
  // Polled every millisecond: the port's name arrives in a kworker, which
  // runs only while this waits (one vCPU).
  struct timespec start {};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    struct timespec now {};
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > kCtlWaitMs) {
      break;
    }
    for (int dev = 0; dev < 4; ++dev) {
      for (int port = 0; port < 4; ++port) {
        std::string vport = "vport" + std::to_string(dev) + "p" + std::to_string(port);
        std::string name = readSmallFile("/sys/class/virtio-ports/" + vport + "/name");
        while (!name.empty() && name.back() == '\n') {
          name.pop_back();
        }
        if (name != wire::kPortName) {
          continue;
        }
        int fd = open(("/dev/" + vport).c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd >= 0) {
          return fd;
        }
      }
    }
    sleepMs(1);
  }
  fatal(std::string("the control port ") + wire::kPortName + " did not appear", 0);
}

struct Spec {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string exe;  // the host's PATH search's answer, or empty
  std::string cwd = "/";
  std::string hostname = "guard";
  unsigned ttys = 0;  // bit N: fd N is a terminal on the host
  unsigned short rows = 0;
  unsigned short cols = 0;
};

Spec parseSpec(const std::string& payload) {
  Spec s;
  size_t pos = 0;
  while (pos < payload.size()) {
    size_t end = payload.find('\0', pos);
    if (end == std::string::npos || end == pos) {
      fatal("malformed session spec", 0);
    }
    char key = payload[pos];
    std::string value = payload.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    switch (key) {
      case 'A':
        s.argv.push_back(value);
        break;
      case 'E':
        s.env.push_back(value);
        break;
      case 'C':
        s.cwd = value;
        break;
      case 'X':
        s.exe = value;
        break;
      case 'H':
        s.hostname = value;
        break;
      case 'T':
        s.ttys = static_cast<unsigned>(atoi(value.c_str()));
        break;
      case 'W': {
        unsigned r = 0;
        unsigned c = 0;
        if (sscanf(value.c_str(), "%u %u", &r, &c) == 2) {
          s.rows = static_cast<unsigned short>(r);
          s.cols = static_cast<unsigned short>(c);
        }
        break;
      }
      default:
        break;  // unknown keys are for newer guests
    }
  }
  if (s.argv.empty() || s.cwd.empty() || s.cwd[0] != '/') {
    fatal("session spec without a command or an absolute working directory", 0);
  }
  return s;
}

// readSpec reads frames until the spec; later frames (early stdin) stay in
// *PENDING for the relay.
Spec readSpec(std::string* pending) {
  char buf[kReadChunk];
  for (;;) {
    Frame type;
    std::string payload;
    wire::ParseResult r = wire::takeFrame(pending, &type, &payload);
    if (r == wire::ParseResult::kTooLarge) {
      fatal("oversized frame on the control port", 0);
    }
    if (r == wire::ParseResult::kFrame) {
      if (type == Frame::kSpec) {
        return parseSpec(payload);
      }
      continue;  // nothing else means anything before the spec
    }
    ssize_t n = read(g_ctl, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      fatal("the control port closed before the session spec", n < 0 ? errno : 0);
    }
    pending->append(buf, static_cast<size_t>(n));
  }
}

void makeNode(const std::string& path, mode_t mode, unsigned major_nr, unsigned minor_nr) {
  if (mknod(path.c_str(), mode, makedev(major_nr, minor_nr)) != 0) {
    fatal("mknod " + path, errno);
  }
}

// mountRoot mounts the view and, inside it, what host mode's jail mounts:
// /proc, a minimal /dev (no device of the VM beyond the harmless ones and
// a private devpts) and a private /tmp (a working directory below /tmp is
// carried into it).
void mountRoot(const Spec& spec) {
  mkdir(kRoot, 0755);
  int err = 0;
  for (int waited = 0; waited < 5000; waited += 5) {
    if (mount(wire::kRootTag, kRoot, "virtiofs", 0, nullptr) == 0) {
      err = 0;
      break;
    }
    err = errno;
    if (err != ENOENT && err != ENODEV && err != ENXIO) {
      break;
    }
    sleepMs(5);  // the device may still be probing
  }
  if (err != 0) {
    fatal(std::string("mount the filesystem view (virtiofs ") + wire::kRootTag + ")", err);
  }
  std::string root = kRoot;
  if (mount("proc", (root + "/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) !=
      0) {
    fatal("mount /proc in the view", errno);
  }
  std::string dev = root + "/dev";
  if (mount("tmpfs", dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") != 0) {
    fatal("mount /dev in the view", errno);
  }
  makeNode(dev + "/null", S_IFCHR | 0666, 1, 3);
  makeNode(dev + "/zero", S_IFCHR | 0666, 1, 5);
  makeNode(dev + "/full", S_IFCHR | 0666, 1, 7);
  makeNode(dev + "/random", S_IFCHR | 0666, 1, 8);
  makeNode(dev + "/urandom", S_IFCHR | 0666, 1, 9);
  makeNode(dev + "/tty", S_IFCHR | 0666, 5, 0);
  mkdir((dev + "/pts").c_str(), 0755);
  if (mount("devpts", (dev + "/pts").c_str(), "devpts", MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620") != 0) {
    fatal("mount devpts in the view", errno);
  }
  mkdir((dev + "/shm").c_str(), 01777);
  if (mount("tmpfs", (dev + "/shm").c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) {
    fatal("mount /dev/shm in the view", errno);
  }
  symlink("pts/ptmx", (dev + "/ptmx").c_str());
  symlink("/proc/self/fd", (dev + "/fd").c_str());
  symlink("/proc/self/fd/0", (dev + "/stdin").c_str());
  symlink("/proc/self/fd/1", (dev + "/stdout").c_str());
  symlink("/proc/self/fd/2", (dev + "/stderr").c_str());
  if (mount(nullptr, dev.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
            nullptr) != 0) {
    fatal("make /dev read-only", errno);
  }
  int keep = -1;
  if (spec.cwd.rfind("/tmp/", 0) == 0) {
    keep = open((root + spec.cwd).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (keep < 0) {
      fatal("cannot enter the working directory " + spec.cwd, errno);
    }
  }
  if (mount("tmpfs", (root + "/tmp").c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) {
    fatal("mount /tmp in the view", errno);
  }
  if (keep >= 0) {
    std::string target;
    for (size_t i = 1; i <= spec.cwd.size();) {
      size_t j = spec.cwd.find('/', i);
      if (j == std::string::npos) {
        j = spec.cwd.size();
      }
      target = root + spec.cwd.substr(0, j);
      mkdir(target.c_str(), 0755);
      i = j + 1;
    }
    std::string src = "/proc/self/fd/" + std::to_string(keep);
    if (mount(src.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      fatal("carry the working directory into /tmp", errno);
    }
    close(keep);
  }
}

// networkUp configures eth0 when the host gave the guest a network device:
// wire::kGuestAddr/24, the default route and DNS through wire::kHostAddr,
// where guard's proxy takes every TCP connection and every DNS query. IPv6
// is off from boot (ipv6.disable_ipv6=1 on the kernel command line, which
// eth0 inherits): the host side drops it anyway. The view's /etc/resolv.conf (the
// host's, which may name a resolver on the host's own loopback) is covered
// by one naming the host side.
void networkUp(const std::string& root) {
  if (if_nametoindex("eth0") == 0) {
    return;  // no network device: nothing leaves the VM
  }
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq ifr = {};
  strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
  auto* sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
  sin->sin_family = AF_INET;
  inet_pton(AF_INET, wire::kGuestAddr, &sin->sin_addr);
  if (s < 0 || ioctl(s, SIOCSIFADDR, &ifr) != 0) {
    fatal("give eth0 its address", errno);
  }
  sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_netmask);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(0xffffff00u);
  if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    fatal("set eth0's netmask", errno);
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
    fatal("bring up eth0", errno);
  }
  struct rtentry rt = {};
  auto* dst = reinterpret_cast<sockaddr_in*>(&rt.rt_dst);
  dst->sin_family = AF_INET;
  auto* mask = reinterpret_cast<sockaddr_in*>(&rt.rt_genmask);
  mask->sin_family = AF_INET;
  auto* gw = reinterpret_cast<sockaddr_in*>(&rt.rt_gateway);
  gw->sin_family = AF_INET;
  inet_pton(AF_INET, wire::kHostAddr, &gw->sin_addr);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  if (ioctl(s, SIOCADDRT, &rt) != 0) {
    fatal("add the default route", errno);
  }
  close(s);
  std::string conf = std::string("nameserver ") + wire::kHostAddr + "\n";
  int fd = open("/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
  if (fd < 0 || write(fd, conf.data(), conf.size()) != static_cast<ssize_t>(conf.size())) {
    fatal("write resolv.conf", errno);
  }
  close(fd);
  // The host's file may be absent, or a symlink into a hidden /run: then
  // there is nothing to cover, and any resolver address the guest uses
  // still leaves through eth0 to the responder.
  mount("/resolv.conf", (root + "/etc/resolv.conf").c_str(), nullptr, MS_BIND, nullptr);
}

// loopbackUp brings up lo, as host mode's jail does: programs talk to
// themselves over 127.0.0.1.
void loopbackUp() {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq ifr = {};
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    fatal("find the loopback interface", errno);
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
    fatal("bring up the loopback interface", errno);
  }
  close(s);
}

int exitCodeOf(int status) {
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status);
  }
  if (WIFSIGNALED(status)) {
    return 128 + WTERMSIG(status);
  }
  return 125;
}

// Stream is one of the command's output channels: a pipe or a pty master.
struct Stream {
  int fd = -1;
  Frame frame = Frame::kStdout;
};

// Io is the command's side of the relay.
struct Io {
  int stdin_fd = -1;  // where stdin bytes go (pipe write end or pty master)
  bool stdin_is_pty = false;
  int pty_master = -1;  // for the window size
  std::vector<Stream> outputs;
  int child_fds[3] = {-1, -1, -1};  // what the command gets as 0, 1, 2
};

// setupIo gives the command a pty on the fds that are terminals on the host
// and pipes on the others.
Io setupIo(const Spec& spec) {
  Io io;
  int slave = -1;
  if (spec.ttys != 0) {
    io.pty_master = open((std::string(kRoot) + "/dev/pts/ptmx").c_str(),
                         O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (io.pty_master < 0 || unlockpt(io.pty_master) != 0) {
      fatal("open a pseudo-terminal", errno);
    }
    slave = ioctl(io.pty_master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
    if (slave < 0) {
      fatal("open the pseudo-terminal's peer", errno);
    }
    if (spec.rows != 0 && spec.cols != 0) {
      struct winsize ws = {};
      ws.ws_row = spec.rows;
      ws.ws_col = spec.cols;
      ioctl(io.pty_master, TIOCSWINSZ, &ws);
    }
  }
  for (int fd = 0; fd <= 2; ++fd) {
    bool tty = (spec.ttys & (1u << fd)) != 0;
    if (tty) {
      io.child_fds[fd] = slave;
      continue;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
      fatal("pipe", errno);
    }
    if (fd == 0) {
      io.child_fds[0] = p[0];
      io.stdin_fd = p[1];
    } else {
      io.child_fds[fd] = p[1];
      io.outputs.push_back({p[0], fd == 1 ? Frame::kStdout : Frame::kStderr});
    }
    fcntl(fd == 0 ? p[1] : p[0], F_SETFL, O_NONBLOCK);
  }
  if (io.pty_master >= 0) {
    // The terminal's output goes to the first host fd that is a terminal.
    Frame f = (spec.ttys & 2u) != 0   ? Frame::kStdout
              : (spec.ttys & 4u) != 0 ? Frame::kStderr
                                      : Frame::kStdout;
    if ((spec.ttys & 6u) != 0) {
      io.outputs.push_back({io.pty_master, f});
    }
    if ((spec.ttys & 1u) != 0) {
      io.stdin_fd = io.pty_master;
      io.stdin_is_pty = true;
    }
  }
  return io;
}

[[noreturn]] void childDie(int err_fd, const std::string& what, int e) {
  std::string msg = what + ": " + strerror(e);
  writeAll(err_fd, msg.data(), msg.size());
  _exit(125);
}

// runChild is the command's process: a session of its own (with the pty as
// its controlling terminal), a mount namespace whose root is the view, the
// working directory and environment of the spec. Errors go to ERR_FD.
[[noreturn]] void runChild(const Spec& spec, const Io& io, int err_fd) {
  auto die = [&](const std::string& what, int e) { childDie(err_fd, what, e); };
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    signal(sig, SIG_DFL);
  }
  setsid();
  for (int fd = 0; fd <= 2; ++fd) {
    if ((spec.ttys & (1u << fd)) != 0) {
      ioctl(io.child_fds[fd], TIOCSCTTY, 0);
      break;
    }
  }
  int fds[3];
  for (int fd = 0; fd <= 2; ++fd) {
    fds[fd] = fcntl(io.child_fds[fd], F_DUPFD_CLOEXEC, 10);
  }
  for (int fd = 0; fd <= 2; ++fd) {
    if (dup2(fds[fd], fd) < 0) {
      die("set up stdio", errno);
    }
  }
  if (unshare(CLONE_NEWNS) != 0) {
    die("create the command's mount namespace", errno);
  }
  // The view becomes the namespace's root (initramfs cannot be pivoted
  // away, so move the mount over / as switch_root does).
  if (chdir(kRoot) != 0 || mount(".", "/", nullptr, MS_MOVE, nullptr) != 0 || chroot(".") != 0 ||
      chdir("/") != 0) {
    die("enter the filesystem view", errno);
  }
  if (chdir(spec.cwd.c_str()) != 0) {
    die("enter the working directory (" + spec.cwd + ")", errno);
  }
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : spec.env) {
    envp.push_back(const_cast<char*>(e.c_str()));
  }
  envp.push_back(nullptr);
  environ = envp.data();  // execvp searches the PATH of the command's environment
  if (!spec.exe.empty()) {
    execve(spec.exe.c_str(), argv.data(), envp.data());  // the host searched PATH
  }
  execvp(argv[0], argv.data());
  childDie(err_fd, "start the command (" + spec.argv[0] + ")", errno);
}

// Relay moves bytes between the control port and the command until the
// command has exited and its output is drained.
class Relay {
 public:
  Relay(Io io, std::string pending, pid_t child, int sigfd)
      : io_(std::move(io)), in_(std::move(pending)), child_(child), sigfd_(sigfd) {}

  int run();

 private:
  void readControl();
  void handleFrames();
  void readOutput(Stream* s);
  void reapChildren();
  void closeStdin();
  // ackStdin counts N stdin bytes gone from the buffer and tells the host
  // every 64 KiB, or at once when FLUSH (the buffer emptied).
  void ackStdin(size_t n, bool flush) {
    stdin_done_ += n;
    if (stdin_done_ >= (64u << 10) || (flush && stdin_done_ > 0)) {
      wire::appendFrame(&out_, Frame::kStdinAck, wire::le32(static_cast<uint32_t>(stdin_done_)));
      stdin_done_ = 0;
    }
  }

  Io io_;
  std::string in_;         // bytes read from the control port, not yet parsed
  std::string out_;        // frames for the control port
  std::string stdin_buf_;  // bytes for the command's stdin
  size_t stdin_done_ = 0;  // stdin bytes written or dropped, not yet acknowledged
  bool stdin_eof_ = false;
  bool ctl_eof_ = false;
  pid_t child_;
  int sigfd_;
  bool child_done_ = false;
  int status_ = 0;
  // The preload shim's requests, relayed to the host (mcpListener).
  struct ShimAsk {
    uint32_t id;
    int conn;
    int fds[4];  // the caller's stdin and stdout (what an 'E' or 'S' carries)
    int nfds;
  };
  void acceptShim();
  void answerShim(ShimAsk* ask, std::string_view reply);
  std::vector<ShimAsk> shim_waiting_;
  uint32_t shim_next_ = 1;
  // Approved servers wrapped by the host's filter, with the inode of the
  // socket that is each server's stdin (so its own sniffed reads are
  // answered here: it is wrapped already).
  std::vector<std::pair<wire::McpChannel, ino_t>> mcp_;
};

void closeFds(const int* fds, int n) {
  for (int i = 0; i < n; ++i) {
    close(fds[i]);
  }
}

// answerShim gives the shim the host's REPLY. For "W" the server's stdio
// becomes one end of a new socket pair; the other end and the caller's
// descriptors are joined to the host's filter over the control port.
void Relay::answerShim(ShimAsk* ask, std::string_view reply) {
  int sv[2];
  struct stat st {};
  if (reply == "W" && ask->nfds == 2 &&
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
    fstat(sv[1], &st);
    guard_wire_send(ask->conn, "W", 1, sv[1]);
    close(sv[1]);
    close(ask->conn);
    wire::McpChannel ch;
    ch.id = ask->id;
    ch.ends[0].rd = ask->fds[0];  // what the client writes
    ch.ends[0].wr = ask->fds[1];  // what the client reads
    ch.ends[1].rd = ch.ends[1].wr = ch.ends[1].sock = sv[0];
    for (int fd : {ask->fds[0], ask->fds[1], sv[0]}) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    mcp_.emplace_back(std::move(ch), st.st_ino);
    return;
  }
  // Closing right after the reply ends a refused program at once (its
  // stand-in waits for this connection to close). A "W" that cannot be
  // set up here is refused: no server runs unfiltered.
  std::string_view r = reply == "W" ? "Dthe guest could not wrap the MCP server" : reply;
  guard_wire_send(ask->conn, r.data(), r.size(), -1);
  close(ask->conn);
  closeFds(ask->fds, ask->nfds);
}

void Relay::closeStdin() {
  if (io_.stdin_fd >= 0 && !io_.stdin_is_pty) {
    close(io_.stdin_fd);
  }
  io_.stdin_fd = -1;
  ackStdin(stdin_buf_.size(), true);
  stdin_buf_.clear();
}

void Relay::handleFrames() {
  for (;;) {
    Frame type;
    std::string payload;
    wire::ParseResult r = wire::takeFrame(&in_, &type, &payload);
    if (r == wire::ParseResult::kNeedMore) {
      return;
    }
    if (r == wire::ParseResult::kTooLarge) {
      fatal("oversized frame on the control port", 0);
    }
    switch (type) {
      case Frame::kStdin:
        if (payload.empty()) {
          stdin_eof_ = true;
        } else if (io_.stdin_fd >= 0) {
          stdin_buf_ += payload;
        } else {
          ackStdin(payload.size(), true);  // the command closed its stdin: dropped
        }
        break;
      case Frame::kWinsize:
        if (payload.size() == 4 && io_.pty_master >= 0) {
          struct winsize ws = {};
          ws.ws_row = static_cast<unsigned short>(static_cast<uint8_t>(payload[0]) |
                                                  static_cast<uint8_t>(payload[1]) << 8);
          ws.ws_col = static_cast<unsigned short>(static_cast<uint8_t>(payload[2]) |
                                                  static_cast<uint8_t>(payload[3]) << 8);
          ioctl(io_.pty_master, TIOCSWINSZ, &ws);
        }
        break;
      case Frame::kSignal:
        if (payload.size() == 1 && !child_done_) {
          kill(-child_, static_cast<uint8_t>(payload[0]));
        }
        break;
      case Frame::kCloseOutput:
        // The host's stream is gone: the command's next write gets EPIPE
        // (SIGPIPE), as it would writing to the closed host pipe directly.
        for (Stream& s : io_.outputs) {
          if (payload.size() == 1 && s.fd != io_.pty_master &&
              ((payload[0] == 1 && s.frame == Frame::kStdout) ||
               (payload[0] == 2 && s.frame == Frame::kStderr))) {
            close(s.fd);
            s.fd = -1;
          }
        }
        break;
      case Frame::kMcpAnswer:
        if (payload.size() >= 4) {
          uint32_t id = wire::getLe32(payload.data());
          for (auto it = shim_waiting_.begin(); it != shim_waiting_.end(); ++it) {
            if (it->id == id) {
              answerShim(&*it, std::string_view(payload).substr(4));
              shim_waiting_.erase(it);
              break;
            }
          }
        }
        break;
      case Frame::kMcpData:
        if (payload.size() >= 4) {
          uint32_t id = wire::getLe32(payload.data());
          for (auto it = mcp_.begin(); it != mcp_.end(); ++it) {
            if (it->first.id == id && !it->first.deliver(std::string_view(payload).substr(4))) {
              it->first.release();
              mcp_.erase(it);
              break;
            }
          }
        }
        break;
      case Frame::kSpec:
      case Frame::kHello:
      case Frame::kStarted:
      case Frame::kStdout:
      case Frame::kStderr:
      case Frame::kExit:
      case Frame::kError:
      case Frame::kMcpAsk:
      case Frame::kStdinAck:
        break;
    }
  }
}

// g_mcp is the listening socket of the guest's side of the MCP supervisor:
// the abstract name the preload shim asks (policy/wire.h), bound by PID 1
// before the command starts, so no process of the guest can take it.
int g_mcp = -1;

void mcpListen() {
  g_mcp = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un sun;
  socklen_t len = guard_wire_address(&sun);
  if (g_mcp < 0 || bind(g_mcp, reinterpret_cast<sockaddr*>(&sun), len) != 0 ||
      listen(g_mcp, 64) != 0) {
    fatal("listen for the preload shim", errno);
  }
}

// acceptShim takes the shim's pending connections and relays each request
// to the host, which decides by the policy (proxy::McpGuestRelays): no
// MCP server inside the guest runs unfiltered.
void Relay::acceptShim() {
  for (;;) {
    int conn = accept4(g_mcp, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) {
      return;
    }
    timeval tv{1, 0};  // a shim sends its request right after connecting
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ShimAsk ask{shim_next_++, conn, {-1, -1, -1, -1}, 0};
    std::string msg(GUARD_WIRE_MAX_MSG + 1, '\0');
    ssize_t n = guard_wire_recv(conn, msg.data(), msg.size(), ask.fds, &ask.nfds);
    if (n <= 0) {
      close(conn);  // the shim treats a missing reply as a refusal
      closeFds(ask.fds, ask.nfds);
      continue;
    }
    msg.resize(static_cast<size_t>(n));
    // A wrapped server reading its first messages: its stdin is the socket
    // this init gave it, so it is filtered already.
    struct stat st {};
    if (msg[0] == 'S' && ask.nfds >= 1 && fstat(ask.fds[0], &st) == 0 && S_ISSOCK(st.st_mode)) {
      bool wrapped = false;
      for (const auto& [ch, ino] : mcp_) {
        wrapped = wrapped || ino == st.st_ino;
      }
      if (wrapped) {
        answerShim(&ask, "P");
        continue;
      }
    }
    uint32_t id = ask.id;
    std::string payload;
    wire::putLe32(&payload, id);
    payload += msg;
    wire::appendFrame(&out_, Frame::kMcpAsk, payload);
    shim_waiting_.push_back(ask);
  }
}

void Relay::readControl() {
  char buf[kReadChunk];
  ssize_t n = read(g_ctl, buf, sizeof(buf));
  if (n > 0) {
    in_.append(buf, static_cast<size_t>(n));
    handleFrames();
  } else if (n == 0) {
    // The host side went away (or has not connected): nothing more comes.
    ctl_eof_ = true;
  }
}

void Relay::readOutput(Stream* s) {
  char buf[kReadChunk];
  ssize_t n = read(s->fd, buf, sizeof(buf));
  if (n > 0) {
    wire::appendFrame(&out_, s->frame, std::string_view(buf, static_cast<size_t>(n)));
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    return;
  }
  // EOF, or EIO from a pty master once no process holds the terminal.
  if (s->fd == io_.pty_master) {
    s->fd = -1;  // the master stays open for stdin and the window size until the end
  } else {
    close(s->fd);
    s->fd = -1;
  }
}

void Relay::reapChildren() {
  struct signalfd_siginfo si;
  while (read(sigfd_, &si, sizeof(si)) > 0) {
  }
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      return;
    }
    if (pid == child_ && !child_done_) {
      child_done_ = true;
      status_ = status;
      // As in host mode, the session ends with its command: whatever it
      // left behind is killed, which also closes its ends of the pipes.
      kill(-1, SIGKILL);
    }
  }
}

int Relay::run() {
  handleFrames();  // what came with the spec (early stdin)
  for (;;) {
    bool outputs_open = false;
    for (const Stream& s : io_.outputs) {
      outputs_open = outputs_open || s.fd >= 0;
    }
    if (child_done_ && !outputs_open) {
      break;
    }
    if (stdin_eof_ && stdin_buf_.empty() && io_.stdin_fd >= 0 && !io_.stdin_is_pty) {
      closeStdin();
    }
    std::vector<struct pollfd> pfds;
    pfds.push_back({sigfd_, POLLIN, 0});
    pfds.push_back({g_ctl,
                    static_cast<short>(
                        (ctl_eof_ || in_.size() + stdin_buf_.size() > kMaxBuffered ? 0 : POLLIN) |
                        (out_.empty() ? 0 : POLLOUT)),
                    0});
    size_t first_out = pfds.size();
    for (const Stream& s : io_.outputs) {
      pfds.push_back(
          {s.fd, static_cast<short>(s.fd >= 0 && out_.size() < kOutHighWater ? POLLIN : 0), 0});
    }
    size_t stdin_at = pfds.size();
    pfds.push_back({io_.stdin_fd, static_cast<short>(stdin_buf_.empty() ? 0 : POLLOUT), 0});
    size_t shim_at = pfds.size();
    pfds.push_back({g_mcp, POLLIN, 0});
    size_t mcp_at = pfds.size();
    for (const auto& [ch, ino] : mcp_) {
      for (const wire::McpChannel::End& e : ch.ends) {
        bool rd = e.rd >= 0 && out_.size() < kOutHighWater;
        pfds.push_back({rd ? e.rd : -1, POLLIN, 0});
        pfds.push_back({e.wr >= 0 && !e.pending.empty() ? e.wr : -1, POLLOUT, 0});
      }
    }
    if (poll(pfds.data(), pfds.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      fatal("poll", errno);
    }
    // The wrapped servers first: frames below may add or drop channels.
    for (size_t k = 0; k < mcp_.size(); ++k) {
      wire::McpChannel& ch = mcp_[k].first;
      for (int e = 0; e < 2; ++e) {
        if (pfds[mcp_at + 4 * k + 2 * static_cast<size_t>(e)].revents != 0 && ch.ends[e].rd >= 0) {
          ch.readEnd(e, &out_);
        }
      }
      ch.flush();
    }
    std::erase_if(mcp_, [](auto& entry) {
      if (!entry.first.done()) {
        return false;
      }
      entry.first.release();
      return true;
    });
    if (pfds[0].revents != 0) {
      reapChildren();
    }
    if ((pfds[1].revents & POLLIN) != 0) {
      readControl();
    }
    if ((pfds[shim_at].revents & POLLIN) != 0) {
      acceptShim();
    }
    if ((pfds[1].revents & POLLOUT) != 0 && !out_.empty()) {
      ssize_t n = write(g_ctl, out_.data(), out_.size());
      if (n > 0) {
        out_.erase(0, static_cast<size_t>(n));
      }
    }
    for (size_t i = 0; i < io_.outputs.size(); ++i) {
      if ((pfds[first_out + i].revents & (POLLIN | POLLHUP | POLLERR)) != 0 &&
          io_.outputs[i].fd >= 0) {
        readOutput(&io_.outputs[i]);
      }
    }
    if ((pfds[stdin_at].revents & (POLLOUT | POLLERR | POLLHUP)) != 0 && io_.stdin_fd >= 0) {
      ssize_t n = write(io_.stdin_fd, stdin_buf_.data(), stdin_buf_.size());
      if (n > 0) {
        stdin_buf_.erase(0, static_cast<size_t>(n));
        ackStdin(static_cast<size_t>(n), stdin_buf_.empty());
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        closeStdin();  // the command closed its stdin
      }
    }
  }
  // Everything the command wrote goes out before its status.
  if (!out_.empty()) {
    writeAll(g_ctl, out_.data(), out_.size());
    out_.clear();
  }
  return exitCodeOf(status_);
}

}  // namespace

int main() {
  if (getpid() != 1) {
    std::fprintf(stderr, "guard-vm-init: this is the guest's init (PID 1) of guard --vm\n");
    return 2;
  }
  mkdir("/dev", 0755);
  mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  int console = open("/dev/console", O_RDWR | O_NOCTTY);
  if (console >= 0) {
    for (int fd = 0; fd <= 2; ++fd) {
      if (console != fd) {
        dup2(console, fd);
      }
    }
    if (console > 2) {
      close(console);
    }
  }
  mountOrDie("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  mountOrDie("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  loadModules();
  g_ctl = openControlPort();
  sendFrame(Frame::kHello, "");
  sendFrame(Frame::kStdinAck, wire::le32(0));  // this guest acknowledges stdin

  std::string pending;
  Spec spec = readSpec(&pending);
  mountRoot(spec);
  sethostname(spec.hostname.c_str(), spec.hostname.size());
  loopbackUp();
  networkUp(kRoot);
  mcpListen();
  Io io = setupIo(spec);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) {
    fatal("signalfd", errno);
  }
  int errp[2];
  if (pipe2(errp, O_CLOEXEC) != 0) {
    fatal("pipe", errno);
  }
  pid_t child = fork();
  if (child < 0) {
    fatal("fork", errno);
  }
  if (child == 0) {
    close(errp[0]);
    runChild(spec, io, errp[1]);
  }
  close(errp[1]);
  for (int fd = 0; fd <= 2; ++fd) {
    int f = io.child_fds[fd];
    if (f >= 0 && (fd == 0 || (f != io.child_fds[0] && (fd == 1 || f != io.child_fds[1])))) {
      close(f);  // the pty peer may stand for several fds: close it once
    }
  }
  std::string err;
  char buf[512];
  ssize_t n;
  while ((n = read(errp[0], buf, sizeof(buf))) != 0) {
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      break;
    }
    err.append(buf, static_cast<size_t>(n));
  }
  close(errp[0]);
  if (!err.empty()) {
    waitpid(child, nullptr, 0);
    sendFrame(Frame::kError, "cannot " + err);
    powerOff();
  }
  sendFrame(Frame::kStarted, "");
  fcntl(g_ctl, F_SETFL, O_NONBLOCK);
  int code = Relay(std::move(io), std::move(pending), child, sigfd).run();
  // The command's writes reached the view before its files were closed;
  // sync flushes anything the guest still holds before the host stops it.
  sync();
  std::string status;
  wire::putLe32(&status, static_cast<uint32_t>(code));
  fcntl(g_ctl, F_SETFL, 0);
  sendFrame(Frame::kExit, status);
  powerOff();
}
