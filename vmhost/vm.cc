// VM mode's host side: starts virtiofsd on the filesystem view and a QEMU
// microvm booting guard's guest kernel and init, relays the control port to
// the caller's stdio, and stops both when the command ends or anything dies.
//
// Process tree:
//   guard (the session)
//     ├─ virtiofsd: own process group and user + mount namespace (root in it
//     │   is the caller), chrooted into the view; serves it as virtiofs
//     └─ QEMU -M microvm: own process group; no network device
//          └─ guest: guard-vm-init (PID 1) └─ the command
//
// Descriptors handed to QEMU: 3 the vhost-user socket to virtiofsd, 4 the
// control port's socket (vm_wire.h), 5 the serial console's pipe (kernel
// messages and the guest init's early errors; guard keeps its tail for error
// messages and streams it at -vv). QEMU's own stderr goes to another pipe
// whose tail is kept the same way.
//
// QEMU and virtiofsd get PR_SET_PDEATHSIG, so they die with guard; their
// process groups are their own, so the terminal's Ctrl-C reaches guard (and
// through the control port the command), never QEMU.
#include "vmhost/vm.h"

#include "vmhost/netns.h"

#include <cpuid.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/kvm.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "vmhost/vm_wire.h"

namespace guard::vmhost {
namespace {

using wire::Frame;
using wire::writeAll;

constexpr const char* kQemu = "qemu-system-x86_64";
constexpr const char* kVirtiofsd = "/usr/lib/qemu/virtiofsd";
constexpr const char* kKernel = "vmlinux";
constexpr const char* kInitramfs = "initramfs.cpio";
// From QEMU's start to the command's start. TCG on a busy 2-core machine
// gets there in a few seconds; a guest that has not after this hangs.
constexpr int kBootTimeoutMs = 120000;
// Under KVM a guest says hello within a second; one that has not after
// this long is taken as KVM failing to run it (and booted under TCG).
constexpr int kKvmHelloTimeoutMs = 10000;
constexpr size_t kTailBytes = 8192;
constexpr size_t kStdinHighWater = 1u << 20;  // stop reading stdin above this
constexpr size_t kMaxMcpChannels = 64;       // wrapped MCP servers of one guest at once
constexpr size_t kReadChunk = 64u << 10;
constexpr int kQemuVfsFd = 3;
constexpr int kQemuCtlFd = 4;
constexpr int kQemuConsoleFd = 5;
constexpr int kQemuTapFd = 6;
constexpr int kQemuMemFd = 7;
constexpr int kVirtiofsdListenFd = 3;

Error ioError(const std::string& what, int e) {
  return Error(ErrorCode::kIo, what + ": " + strerror(e), e);
}

// Fd owns a descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset(o.release());
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Tail keeps the last kTailBytes of a stream of diagnostics.
struct Tail {
  std::string text;
  void add(const char* p, size_t n) {
    text.append(p, n);
    if (text.size() > 2 * kTailBytes) {
      text.erase(0, text.size() - kTailBytes);
    }
  }
  // lastLines returns up to N non-empty lines from the end, joined by "; ".
  std::string lastLines(size_t n) const {
    std::vector<std::string> lines;
    size_t end = text.size();
    while (end > 0 && lines.size() < n) {
      size_t start = text.rfind('\n', end - 1);
      size_t from = start == std::string::npos ? 0 : start + 1;
      std::string line = text.substr(from, end - from);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
        line.pop_back();
      }
      if (!line.empty()) {
        lines.insert(lines.begin(), line);
      }
      if (start == std::string::npos) {
        break;
      }
      end = start;
    }
    std::string out;
    for (const std::string& l : lines) {
      out += (out.empty() ? "" : "; ") + l;
    }
    return out;
  }
};

// findInPath returns the absolute path of NAME in $PATH, or "".
std::string findInPath(const std::string& name) {
  const char* path = getenv("PATH");
  std::string dirs = path != nullptr && path[0] != '\0' ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t pos = 0;
  while (pos <= dirs.size()) {
    size_t colon = dirs.find(':', pos);
    if (colon == std::string::npos) {
      colon = dirs.size();
    }
    std::string dir = dirs.substr(pos, colon - pos);
    pos = colon + 1;
    if (dir.empty()) {
      continue;
    }
    std::string cand = dir + "/" + name;
    if (access(cand.c_str(), X_OK) == 0) {
      return cand;
    }
  }
  return "";
}

// hostTscKhz is the host's TSC frequency, or 0 when unknown. Under TCG the
// guest's TSC runs at the host's rate; telling the guest kernel skips its
// calibration, which under TCG sometimes hangs.
unsigned long hostTscKhz() {
  unsigned a = 0;
  unsigned b = 0;
  unsigned c = 0;
  unsigned d = 0;
  if (__get_cpuid_max(0, nullptr) >= 0x15) {
    __cpuid(0x15, a, b, c, d);
    if (a != 0 && b != 0 && c != 0) {
      return static_cast<unsigned long>(static_cast<uint64_t>(c) * b / a / 1000);
    }
  }
  if (__get_cpuid_max(0x40000000, nullptr) >= 0x40000010) {
    __cpuid(0x40000010, a, b, c, d);  // hypervisor timing leaf: TSC kHz
    if (a != 0) {
      return a;
    }
  }
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return static_cast<unsigned long>(strtod(line.c_str() + colon + 1, nullptr) * 1000);
      }
    }
  }
  return 0;
}

// fakeSetgroups installs a seccomp filter under which setgroups(2) does
// nothing and returns 0. virtiofsd drops supplementary groups at start and
// exits when it cannot; in an unprivileged user namespace setgroups is
// denied (that is what lets the namespace map the caller's gid). Keeping
// the caller's groups gives virtiofsd no more than the caller has, and the
// view decides every access anyway. Raw syscalls only (after fork).
bool fakeSetgroups() {
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setgroups, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {static_cast<unsigned short>(std::size(code)), code};
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

// ChildSpec is one helper process (QEMU or virtiofsd), prepared before the
// fork so the child only makes system calls.
struct ChildSpec {
  std::string path;
  std::vector<std::string> argv;
  std::vector<std::pair<int, int>> fds;  // (descriptor here, number in the child)
  int out_fd = -1;                       // stdout and stderr
  bool user_namespace = false;           // virtiofsd: own user + mount namespace
  int ready_fd = -1;                     // gets one byte once the child's namespaces are set up
  // cover: directories (absolute, in the child's mount namespace) that get
  // an empty read-only tmpfs of their own, so virtiofsd serves them as
  // distinct inodes (see the call).
  std::vector<std::string> cover;
  // net_fd: QEMU runs in a network namespace of its own whose tap device
  // (descriptor kQemuTapFd) is the guest's network (setupVmNetwork).
  int net_fd = -1;
  uint16_t proxy_port = 0;
  // memory_bytes: the guest's memory, as a file at descriptor kQemuMemFd
  // that lives as long as QEMU (guestMemory).
  uint64_t memory_bytes = 0;
};

// guestMemory makes the file that backs the guest's memory, BYTES long, and
// returns its descriptor (-1 on failure, with errno). virtiofsd must map the
// guest's memory, so it is a shared file rather than QEMU's anonymous memory.
// A memfd would do, but this kernel's shmem THP setting (`shmem_enabled`,
// `never` on Debian) denies it huge pages: then every 4 KiB the boot touches
// is a page fault in QEMU, ~31,000 of them, ~0.25 s under TCG. So the file
// lies on a tmpfs of its own mounted huge=always, which gets 2 MiB pages
// whatever that setting says. The tmpfs is never attached to any tree: it
// exists only through the descriptor and goes with QEMU. Where the kernel
// refuses such a mount, a memfd: the same memory, in small pages.
// It runs in a forked child: system calls only.
int guestMemory(uint64_t bytes) {
  char size[32];
  snprintf(size, sizeof(size), "%llu", static_cast<unsigned long long>(bytes));
  int fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
  if (fs >= 0) {
    int mnt = -1;
    if (fsconfig(fs, FSCONFIG_SET_STRING, "huge", "always", 0) == 0 &&
        fsconfig(fs, FSCONFIG_SET_STRING, "size", size, 0) == 0 &&
        fsconfig(fs, FSCONFIG_SET_STRING, "nr_inodes", "2", 0) == 0 &&
        fsconfig(fs, FSCONFIG_SET_STRING, "mode", "0700", 0) == 0 &&
        fsconfig(fs, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) == 0) {
      mnt = fsmount(fs, FSMOUNT_CLOEXEC,
                    MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    }
    close(fs);
    if (mnt >= 0) {
      int fd = openat(mnt, "guest-memory", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      close(mnt);
      if (fd >= 0 && ftruncate(fd, static_cast<off_t>(bytes)) == 0) {
        return fd;
      }
      if (fd >= 0) {
        close(fd);
      }
    }
  }
  int fd = memfd_create("guard-guest-memory", MFD_CLOEXEC);
  if (fd >= 0 && ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// spawnChild forks and execs SPEC in a process group of its own with a clean
// environment; the child dies with the calling thread. Exec failures show
// up as the child's death with a message on SPEC.out_fd.
Result<pid_t> spawnChild(const ChildSpec& spec) {
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  const char* envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", nullptr};
  char uid_map[64];
  char gid_map[64];
  snprintf(uid_map, sizeof(uid_map), "0 %u 1", static_cast<unsigned>(geteuid()));
  snprintf(gid_map, sizeof(gid_map), "0 %u 1", static_cast<unsigned>(getegid()));
  bool root = geteuid() == 0;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    return ioError("fork", errno);
  }
  if (pid != 0) {
    return pid;
  }
  // The child: system calls only.
  auto fail = [&](const char* what) {
    char msg[256];
    int n =
        snprintf(msg, sizeof(msg), "guard: %s: %s: %s\n", spec.path.c_str(), what, strerror(errno));
    if (n > 0 && spec.out_fd >= 0) {
      ssize_t ignored = write(spec.out_fd, msg, static_cast<size_t>(n));
      (void)ignored;
    }
    _exit(127);
  };
  setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    signal(sig, SIG_DFL);
  }
  if (spec.user_namespace) {
    // Like `unshare -Urm`: root in a user namespace of its own is the
    // caller; a tmpfs over /run keeps virtiofsd's lock files private. As
    // host root without user namespaces, a mount namespace alone.
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0) {
      auto put = [&](const char* file, const char* text) {
        int fd = open(file, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, text, strlen(text)) < 0) {
          fail(file);
        }
        close(fd);
      };
      put("/proc/self/setgroups", "deny");
      put("/proc/self/uid_map", uid_map);
      put("/proc/self/gid_map", gid_map);
      if (!fakeSetgroups()) {
        fail("install its seccomp filter");
      }
    } else if (!root || unshare(CLONE_NEWNS) != 0) {
      fail("create its namespaces");
    }
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
      fail("set up its mounts");
    }
    for (const std::string& dir : spec.cover) {
      if (mount("tmpfs", dir.c_str(), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "size=4k,mode=0555") != 0) {
        fail("cover a mount point of the view");
      }
    }
  }
  int tap = -1;
  // Host root keeps its user namespace; anyone else maps themselves to root
  // in a new one, whose capabilities make the tap and the rules, and mount
  // the guest memory's tmpfs (in a mount namespace of its own).
  bool own_user = !root && (spec.net_fd >= 0 || spec.memory_bytes > 0);
  int flags = (spec.net_fd >= 0 ? CLONE_NEWNET : 0) | (own_user ? CLONE_NEWUSER | CLONE_NEWNS : 0);
  if (flags != 0 && unshare(flags) != 0) {
    if (spec.net_fd >= 0) {
      fail("create its network namespace");
    }
    own_user = false;  // the guest's memory will be a memfd
  }
  if (own_user) {
    for (auto [file, text] : {std::pair<const char*, const char*>{"/proc/self/setgroups", "deny"},
                              {"/proc/self/uid_map", uid_map},
                              {"/proc/self/gid_map", gid_map}}) {
      int fd = open(file, O_WRONLY | O_CLOEXEC);
      if (fd < 0 || write(fd, text, strlen(text)) < 0) {
        fail(file);
      }
      close(fd);
    }
  }
  if (spec.net_fd >= 0) {
    std::string what;
    tap = setupVmNetwork(spec.net_fd, spec.proxy_port, &what);
    if (tap < 0) {
      fail(what.c_str());
    }
  }
  int memory = -1;
  if (spec.memory_bytes > 0 && (memory = guestMemory(spec.memory_bytes)) < 0) {
    fail("make the guest's memory");
  }
  if (spec.ready_fd >= 0 && write(spec.ready_fd, "R", 1) != 1) {
    fail("report");
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) {
    _exit(127);  // guard is already gone
  }
  // Move the inherited descriptors out of the way, then into place.
  std::vector<std::pair<int, int>> moved;
  for (const auto& [from, to] : spec.fds) {
    int high = fcntl(from, F_DUPFD_CLOEXEC, 64);
    if (high < 0) {
      fail("dup");
    }
    moved.emplace_back(high, to);
  }
  if (tap >= 0) {
    moved.emplace_back(fcntl(tap, F_DUPFD_CLOEXEC, 64), kQemuTapFd);
  }
  if (memory >= 0) {
    moved.emplace_back(fcntl(memory, F_DUPFD_CLOEXEC, 64), kQemuMemFd);
  }
  int out = spec.out_fd >= 0 ? fcntl(spec.out_fd, F_DUPFD_CLOEXEC, 64) : -1;
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0 || dup2(null, 0) < 0 || dup2(out >= 0 ? out : null, 1) < 0 ||
      dup2(out >= 0 ? out : null, 2) < 0) {
    fail("set up stdio");
  }
  int max_fd = 2;
  for (const auto& [high, to] : moved) {
    if (dup2(high, to) < 0) {
      fail("dup2");
    }
    max_fd = std::max(max_fd, to);
  }
  syscall(SYS_close_range, static_cast<unsigned>(max_fd + 1), ~0u, 0u);
  execve(spec.path.c_str(), argv.data(), const_cast<char**>(envp));
  fail("exec");
  _exit(127);
}

// Process is a started helper and a pidfd that becomes readable when it dies.
struct Process {
  const char* name = "";
  pid_t pid = -1;
  Fd pidfd;
  bool exited = false;
  int status = 0;
};

Result<Fd> openPidfd(pid_t pid) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    return ioError("pidfd_open", errno);
  }
  return Fd(fd);
}

// Terminal puts stdin's terminal in raw mode for the session and restores it.
class Terminal {
 public:
  Terminal() {
    // Only in the terminal's foreground: from the background, tcsetattr
    // would stop guard with SIGTTOU.
    if (isatty(0) && tcgetpgrp(0) == getpgrp() && tcgetattr(0, &saved_) == 0) {
      struct termios raw = saved_;
      cfmakeraw(&raw);
      raw.c_cc[VMIN] = 1;
      raw.c_cc[VTIME] = 0;
      raw_ = tcsetattr(0, TCSADRAIN, &raw) == 0;
    }
  }
  ~Terminal() {
    if (raw_) {
      tcsetattr(0, TCSADRAIN, &saved_);
    }
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

 private:
  struct termios saved_ {};
  bool raw_ = false;
};

// g_signal_pipe is the write end of Signals' self-pipe, for its handler.
std::atomic<int> g_signal_pipe{-1};

void onRelayedSignal(int sig) {
  int saved = errno;
  int fd = g_signal_pipe.load(std::memory_order_relaxed);
  if (fd >= 0) {
    char b = static_cast<char>(sig);
    ssize_t ignored = write(fd, &b, 1);  // async-signal-safe; a full pipe drops it
    (void)ignored;
  }
  errno = saved;
}

// Signals catches the signals the session relays, in whichever thread of
// guard the kernel picks (a handler, not a blocked mask: guard may have
// other threads), and hands them to the loop through a self-pipe. SIGPIPE
// is ignored. Everything is restored on destruction.
class Signals {
 public:
  static constexpr int kRelayed[] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH};
  Signals() {
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
      read_.reset(p[0]);
      write_.reset(p[1]);
      g_signal_pipe.store(p[1]);
    }
    for (size_t i = 0; i < std::size(kRelayed); ++i) {
      struct sigaction sa {};
      sa.sa_handler = onRelayedSignal;
      sa.sa_flags = SA_RESTART;
      sigemptyset(&sa.sa_mask);
      sigaction(kRelayed[i], &sa, &saved_[i]);
    }
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, &saved_pipe_);
  }
  ~Signals() {
    for (size_t i = 0; i < std::size(kRelayed); ++i) {
      sigaction(kRelayed[i], &saved_[i], nullptr);
    }
    sigaction(SIGPIPE, &saved_pipe_, nullptr);
    g_signal_pipe.store(-1);
  }
  Signals(const Signals&) = delete;
  Signals& operator=(const Signals&) = delete;
  int fd() const { return read_.get(); }

 private:
  struct sigaction saved_[std::size(kRelayed)]{};
  struct sigaction saved_pipe_ {};
  Fd read_;
  Fd write_;
};

std::string winsizePayload() {
  struct winsize ws {};
  for (int fd = 0; fd <= 2; ++fd) {
    if (isatty(fd) && ioctl(fd, TIOCGWINSZ, &ws) == 0) {
      break;
    }
  }
  std::string p;
  p.push_back(static_cast<char>(ws.ws_row & 0xff));
  p.push_back(static_cast<char>(ws.ws_row >> 8));
  p.push_back(static_cast<char>(ws.ws_col & 0xff));
  p.push_back(static_cast<char>(ws.ws_col >> 8));
  return p;
}

// guestOwn says whether PATH lies in one of the guest's own mounts, which
// the view on the host does not show.
bool guestOwn(const std::string& path) {
  for (const char* top : {"/proc", "/dev", "/sys", "/tmp"}) {
    size_t n = strlen(top);
    if (path.compare(0, n, top) == 0 && (path.size() == n || path[n] == '/')) {
      return true;
    }
  }
  return false;
}

// commandPath finds the command along its PATH in the view, from the host,
// as execvp in the guest would (as root: any execute bit will do). In the
// guest each name looked up is a virtiofs round trip, about a millisecond
// under TCG, and a developer's PATH runs to a dozen entries of which most
// lack the command. Symlinks resolve inside the view (RESOLVE_IN_ROOT). A
// relative entry, or one in the guest's own mounts, ends the search with
// "": the guest's execvp searches as before, as it does when this finds
// nothing.
std::string commandPath(const std::string& root, const std::string& file,
                        const std::vector<std::string>& env) {
  const std::string* path = nullptr;
  for (const std::string& e : env) {
    if (e.rfind("PATH=", 0) == 0) {
      path = &e;  // the first, as getenv and execvp take it
      break;
    }
  }
  if (file.empty() || file.find('/') != std::string::npos || path == nullptr) {
    return "";
  }
  Fd root_fd(open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (root_fd.get() < 0) {
    return "";
  }
  size_t i = 5;
  while (i <= path->size()) {
    size_t j = path->find(':', i);
    if (j == std::string::npos) {
      j = path->size();
    }
    std::string dir = path->substr(i, j - i);
    i = j + 1;
    if (dir.empty() || dir[0] != '/' || guestOwn(dir)) {
      return "";
    }
    std::string cand = dir + "/" + file;
    struct open_how how {};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    Fd fd(static_cast<int>(syscall(SYS_openat2, root_fd.get(), cand.c_str(), &how, sizeof(how))));
    if (fd.get() < 0) {
      if (errno != ENOENT && errno != ENOTDIR && errno != EACCES) {
        return "";
      }
      // Missing here, but through a symlink, which in the guest may lead
      // into its own /proc or /dev: the guest decides.
      how.resolve |= RESOLVE_NO_SYMLINKS;
      Fd plain(static_cast<int>(syscall(SYS_openat2, root_fd.get(), cand.c_str(), &how, sizeof(how))));
      if (plain.get() < 0 && errno == ELOOP) {
        return "";
      }
      continue;
    }
    struct stat st {};
    if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0) {
      continue;
    }
    // Where the name led (through symlinks) must be the view's too.
    char real[PATH_MAX];
    std::string link = "/proc/self/fd/" + std::to_string(fd.get());
    ssize_t n = readlink(link.c_str(), real, sizeof(real) - 1);
    std::string at(real, n > 0 ? static_cast<size_t>(n) : 0);
    if (at.compare(0, root.size() + 1, root + "/") != 0 || guestOwn(at.substr(root.size()))) {
      return "";
    }
    return cand;
  }
  return "";
}

std::string encodeSpec(const VmSpec& spec) {
  std::string out;
  for (const std::string& a : spec.argv) {
    wire::addSpecEntry(&out, 'A', a);
  }
  for (const std::string& e : spec.env) {
    wire::addSpecEntry(&out, 'E', e);
  }
  // The executable execvp would run; the guest falls back to its own
  // search if it cannot run it.
  if (std::string exe = commandPath(spec.root, spec.argv[0], spec.env); !exe.empty()) {
    wire::addSpecEntry(&out, 'X', exe);
  }
  wire::addSpecEntry(&out, 'C', spec.cwd);
  wire::addSpecEntry(&out, 'H', spec.hostname);
  unsigned ttys = 0;
  for (int fd = 0; fd <= 2; ++fd) {
    if (isatty(fd)) {
      ttys |= 1u << fd;
    }
  }
  wire::addSpecEntry(&out, 'T', std::to_string(ttys));
  if (ttys != 0) {
    std::string w = winsizePayload();
    unsigned rows = static_cast<uint8_t>(w[0]) | static_cast<uint8_t>(w[1]) << 8;
    unsigned cols = static_cast<uint8_t>(w[2]) | static_cast<uint8_t>(w[3]) << 8;
    wire::addSpecEntry(&out, 'W', std::to_string(rows) + " " + std::to_string(cols));
  }
  return out;
}

// vhostSocket makes the vhost-user connection between QEMU and virtiofsd:
// a listening socket for virtiofsd (--fd) and QEMU's end, already
// connected. The socket's name lives only for the moment between bind and
// connect, in a fresh 0700 directory.
Result<std::pair<Fd, Fd>> vhostSocket() {
  const char* x = getenv("XDG_RUNTIME_DIR");
  std::string base = x != nullptr && x[0] == '/' && access(x, W_OK) == 0 ? x : "/tmp";
  std::string dir = base + "/guard-vm-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    return ioError("mkdtemp " + dir, errno);
  }
  std::string path = dir + "/vhost.sock";
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    rmdir(dir.c_str());
    return Error(ErrorCode::kIo, "socket path too long: " + path);
  }
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  Fd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  Fd client(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int e = 0;
  if (listener.get() < 0 || client.get() < 0 ||
      bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener.get(), 1) != 0 ||
      connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    e = errno;
  }
  unlink(path.c_str());
  rmdir(dir.c_str());
  if (e != 0) {
    return ioError("the vhost-user socket", e);
  }
  return std::make_pair(std::move(listener), std::move(client));
}

void warnTcg(const std::string& why) {
  std::string line;
  for (size_t i = 0; i < why.size(); ++i) {  // one line: "a\n  b" reads "a: b"
    if (why[i] != '\n') {
      line += why[i];
    } else if (why.compare(i, 3, "\n  ") == 0) {
      line += ": ";
      i += 2;
    } else {
      line += ' ';
    }
  }
  std::fprintf(stderr,
               "guard: warning: %s; the VM runs under TCG emulation, which is much slower\n",
               line.c_str());
}

// forwardListeners passes the one message of listeners (descriptors and
// their kinds, netns.cc) from QEMU's child to the proxy, unread.
Error forwardListeners(int from, int to) {
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
    n = recvmsg(from, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n == 0) {
    return Error();  // the helper died first: its exit tells why
  }
  // The sender's one SCM_RIGHTS message; they are closed here whatever
  // becomes of them (the proxy holds its own copies once sent).
  std::vector<int> fds;
  cmsghdr* cm = n > 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
  if (cm != nullptr && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
    fds.resize((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    memcpy(fds.data(), CMSG_DATA(cm), fds.size() * sizeof(int));
  }
  ssize_t sent = -1;
  int e = EPROTO;  // no descriptors, or cut short
  if (!fds.empty() && (msg.msg_flags & MSG_CTRUNC) == 0) {
    iov.iov_len = static_cast<size_t>(n);
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    do {
      sent = sendmsg(to, &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    e = sent < 0 ? errno : EPIPE;
  }
  for (int fd : fds) {
    close(fd);
  }
  if (sent != n) {
    return ioError("hand the VM's listeners to the proxy", e);
  }
  return Error();
}

// Session is the running VM: its helpers, the control port and the relay.
class Session {
 public:
  Session(const VmSpec& spec, const std::function<void()>& on_started,
          const std::vector<pid_t>& watch, pid_t* died)
      : spec_(spec), on_started_(on_started), watch_(watch), died_(died) {}
  ~Session() {
    stop();
    for (wire::McpChannel& ch : mcp_) {
      ch.release();
    }
  }

  Result<int> run();

 private:
  Error start();
  void release();
  void stop();
  Error loop(const Signals& signals);
  Error handleFrames();
  void relaySignal(int sig);
  ssize_t readDiagnostics(int fd, Tail* tail, const char* prefix);
  void reap(Process* p);
  Error helperEnded(Process* p);
  void writeOutput(int fd, const std::string& data);

  const VmSpec& spec_;
  const std::function<void()>& on_started_;
  const std::vector<pid_t>& watch_;
  pid_t* died_;

  Process qemu_;
  Process virtiofsd_;
  std::vector<Process> watched_;
  Fd ctl_;      // our end of the control port
  Fd console_;  // read end of the serial console's pipe
  Fd diag_;     // read end of QEMU's and virtiofsd's stderr
  Tail console_tail_;
  Tail diag_tail_;
  std::string in_;   // from the control port, not yet parsed
  std::string out_;  // frames for the control port
  std::vector<wire::McpChannel> mcp_;  // approved MCP servers of the guest, wrapped here
  bool stdin_open_ = true;
  bool stdin_acked_ = false;   // the guest acknowledges stdin (kStdinAck)
  size_t stdin_unacked_ = 0;   // stdin bytes sent and not yet acknowledged
  bool output_open_[3] = {false, true, true};
  bool kvm_ = false;          // this boot's accelerator is KVM
  bool kvm_failed_ = false;   // KVM could not boot the guest: boot again under TCG
  std::string kvm_failure_;   // why, for the warning; set: this is the second boot
  bool released_ = false;     // on_started_ called: the view's host mount may go
  Fd listeners_;  // QEMU's child's listeners arrive here, for the proxy
  bool hello_ = false;
  bool started_ = false;
  bool exited_ = false;
  int status_ = 0;
  Error guest_error_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point boot_t0_;  // this boot's QEMU started
};

void Session::reap(Process* p) {
  if (!p->exited) {
    while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR) {
    }
    p->exited = true;
  }
}

ssize_t Session::readDiagnostics(int fd, Tail* tail, const char* prefix) {
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n <= 0) {
    if (n == 0) {
      (fd == console_.get() ? console_ : diag_).reset();
    }
    return n;
  }
  tail->add(buf, static_cast<size_t>(n));
  if (spdlog::should_log(spdlog::level::debug)) {
    std::string text(buf, static_cast<size_t>(n));
    size_t pos = 0;
    while (pos < text.size()) {
      size_t nl = text.find('\n', pos);
      std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? text.size() : nl + 1;
      if (!line.empty() && line != "\r") {
        spdlog::debug("{}{}", prefix, line);
      }
    }
  }
  return n;
}

Error Session::start() {
  std::string dir = spec_.image_dir.empty() ? vmImageDir() : spec_.image_dir;
  std::string kernel = dir + "/" + kKernel;
  std::string initramfs = dir + "/" + kInitramfs;
  for (const std::string& f : {kernel, initramfs}) {
    if (access(f.c_str(), R_OK) != 0) {
      // The guest init is built next to guard; the script is in guard's
      // source tree (make vm-image runs it for build/).
      std::string exe_dir = vmImageDir(true);
      return Error(ErrorCode::kNotFound,
                   "the VM's guest kernel or initramfs is missing (" + f +
                       "); make them, from guard's source tree, with:\n  GUARD_VM_DIR=" + dir +
                       " scripts/vm-prepare.sh --init " + exe_dir + "/guard-vm-init\n"
                       "(it takes Debian's cloud kernel with apt-get download, never installs "
                       "it, and builds the initramfs)");
    }
  }
  std::string qemu = findInPath(kQemu);
  if (qemu.empty()) {
    return Error(ErrorCode::kNotFound, std::string(kQemu) +
                                           " is not installed (Debian: qemu-system-x86; see "
                                           "scripts/install-deps.sh)");
  }
  if (access(kVirtiofsd, X_OK) != 0) {
    return Error(ErrorCode::kNotFound,
                 std::string(kVirtiofsd) + " is not installed (Debian: qemu-system-common)");
  }
  std::string spec_payload = encodeSpec(spec_);
  if (spec_payload.size() > wire::kMaxFrame) {
    return Error(ErrorCode::kUsage, "the command line and environment are too large for the VM (" +
                                        std::to_string(spec_payload.size()) + " bytes; at most " +
                                        std::to_string(wire::kMaxFrame) + ")");
  }
  auto vhost = vhostSocket();
  if (!vhost.ok()) {
    return vhost.error();
  }
  Fd vfs_listen = std::move(vhost.value().first);
  Fd vfs_client = std::move(vhost.value().second);
  int ctl[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0) {
    return ioError("socketpair", errno);
  }
  ctl_.reset(ctl[0]);
  Fd ctl_qemu(ctl[1]);
  int con[2];
  int diag[2];
  if (pipe2(con, O_CLOEXEC) != 0) {
    return ioError("pipe", errno);
  }
  console_.reset(con[0]);
  Fd con_qemu(con[1]);
  if (pipe2(diag, O_CLOEXEC) != 0) {
    return ioError("pipe", errno);
  }
  diag_.reset(diag[0]);
  Fd diag_w(diag[1]);
  for (int fd : {ctl_.get(), console_.get(), diag_.get()}) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }

  std::string mem = std::to_string(spec_.memory_mib) + "M";
  // The guest's kernel command line. panic=-1 with -no-reboot: a guest
  // panic ends QEMU, and so the session. loglevel=3 keeps the console to
  // critical messages (the guest init's own errors are written to it
  // directly). cryptomgr.notests skips the crypto self-tests (~0.4 s under
  // TCG). ipv6.disable_ipv6=1: the guest has no IPv6 (its init relies on
  // it, ~3 ms of writes to /proc saved); off from the start, bringing lo and
  // eth0 up skips IPv6's address setup, ~40 ms under TCG. Other trims
  // (pci=off, mitigations=off, lsm=, one UART) measured no difference here
  // under TCG.
  std::string append =
      "console=ttyS0 loglevel=3 panic=-1 rdinit=/init cryptomgr.notests ipv6.disable_ipv6=1";
  if (!kvm_) {
    // Under TCG the guest's TSC runs at the host's rate: say so, and the
    // kernel skips the calibration that sometimes hangs under TCG.
    if (unsigned long khz = hostTscKhz(); khz != 0) {
      append += " tsc_early_khz=" + std::to_string(khz);
    }
  }
  // GUARD_VM_APPEND: more kernel parameters, for debugging (with -vv the
  // console is shown; e.g. GUARD_VM_APPEND=loglevel=7).
  if (const char* extra = getenv("GUARD_VM_APPEND"); extra != nullptr && extra[0] != '\0') {
    append += std::string(" ") + extra;
  }
  spdlog::debug("vm: kernel command line: {}", append);  // bench/vm/run.sh reads it
  ChildSpec q;
  q.path = qemu;
  // clang-format off: one option per line
  q.argv = {
      "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      // QEMU's own seccomp filter: no fork/exec, no privilege changes.
      "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny", "-M",
      "microvm,acpi=on,x-option-roms=off,memory-backend=guard.mem", "-accel", kvm_ ? "kvm" : "tcg",
      "-cpu", kvm_ ? "host" : "max", "-m", mem, "-smp", std::to_string(spec_.cpus),
      // virtiofs needs guest memory that virtiofsd can map: a shared file
      // (guestMemory), 2 MiB-aligned so that huge pages can back it.
      "-object", "memory-backend-file,id=guard.mem,size=" + mem + ",share=on,align=2M,mem-path=/proc/self/fd/" +
      std::to_string(kQemuMemFd), "-global",
      "virtio-mmio.force-legacy=false", "-kernel", kernel, "-initrd", initramfs, "-append", append,
      // event_idx=off: with notification suppression on, a guest whose
      // threads stat many files at once (git status) lost a completion and
      // waited forever, QEMU, virtiofsd and the view all idle, within a
      // few runs under TCG; off, far more rarely (docs/security.md).
      "-chardev", "socket,id=vfs,fd=" + std::to_string(kQemuVfsFd), "-device",
      std::string("vhost-user-fs-device,chardev=vfs,event_idx=off,tag=") + wire::kRootTag, "-device",
      "virtio-serial-device,max_ports=2", "-chardev",
      "socket,id=ctl,fd=" + std::to_string(kQemuCtlFd), "-device",
      std::string("virtserialport,chardev=ctl,name=") + wire::kPortName, "-chardev",
      "file,id=con,path=/proc/self/fd/" + std::to_string(kQemuConsoleFd), "-serial", "chardev:con"};
  // clang-format on
  bool tun = spec_.net_fd >= 0 && access("/dev/net/tun", R_OK | W_OK) == 0;
  Fd relay_child;
  if (spec_.net_fd >= 0 && !tun && kvm_failure_.empty()) {
    // Fail closed, and say so: without a tap the guest gets no network
    // device at all, rather than any other way out.
    std::fprintf(stderr,
                 "guard: warning: /dev/net/tun is not open to this user, so the VM has no network "
                 "device (nothing leaves it); make it mode 0666, as Debian does, to give the VM "
                 "guard's proxy\n");
  }
  if (tun) {
    // The tap in QEMU's own network namespace, where only the proxy and the
    // DNS responder answer (setupVmNetwork).
    q.argv.insert(q.argv.end(), {"-netdev", "tap,id=net0,vhost=off,fd=" + std::to_string(kQemuTapFd),
                                 "-device", "virtio-net-device,netdev=net0"});
    // QEMU's child sends its listeners here; guard passes them on to the
    // proxy (forwardListeners), which takes one set per session.
    int relay[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, relay) != 0) {
      return ioError("socketpair", errno);
    }
    listeners_.reset(relay[0]);
    relay_child.reset(relay[1]);
    q.net_fd = relay_child.get();
    q.proxy_port = spec_.proxy_port;
  } else {
    q.argv.insert(q.argv.end(), {"-nic", "none"});  // no network device at all
  }
  q.fds = {{vfs_client.get(), kQemuVfsFd},
           {ctl_qemu.get(), kQemuCtlFd},
           {con_qemu.get(), kQemuConsoleFd}};
  q.out_fd = diag_w.get();
  q.memory_bytes = static_cast<uint64_t>(spec_.memory_mib) << 20;
  auto qpid = spawnChild(q);
  if (!qpid.ok()) {
    return qpid.error();
  }
  qemu_.name = "QEMU";
  qemu_.pid = qpid.value();
  boot_t0_ = std::chrono::steady_clock::now();

  // virtiofsd after QEMU: QEMU's start (loading, its memory, TCG) overlaps
  // with virtiofsd's; QEMU waits for virtiofsd's first answer on the socket.
  ChildSpec vfs;
  vfs.path = kVirtiofsd;
  // clang-format off: one option per line
  vfs.argv = {
      "virtiofsd", "--fd=" + std::to_string(kVirtiofsdListenFd), "-o", "source=" + spec_.root,
      // chroot(2) into the view; its own namespaces come from spawnChild.
      // cache=always keeps a file's pages in the guest across opens (with
      // cache=auto every exec read ld.so and libc again through virtiofs
      // and the view: ~180 ms per exec of /bin/true under TCG, ~50 ms now);
      // timeout=1 revalidates names and attributes after a second, and the
      // guest drops cached pages whose file's size or mtime changed, so a
      // change made on the host shows as it does in host mode's view.
      "-o", "sandbox=chroot", "-o", "cache=always", "-o", "timeout=1", "-o", "log_level=warn", "--rlimit-nofile=0"};
  // clang-format on
  vfs.fds = {{vfs_listen.get(), kVirtiofsdListenFd}};
  vfs.out_fd = diag_w.get();
  vfs.user_namespace = true;
  // The view serves its synthetic /proc, /dev and /sys as one and the same
  // empty directory (one inode number). virtiofsd keys its inodes by
  // (st_ino, st_dev, mount), so the guest would see one directory under
  // three names, and its mounts on them would collapse into one. The guest
  // mounts its own on each; an empty tmpfs apiece in virtiofsd's namespace
  // keeps them apart. (Other inode numbers the view passes through from
  // different host filesystems can collide the same way: the view must
  // hand out unique ones.)
  for (const char* synthetic : {"/proc", "/dev", "/sys"}) {
    vfs.cover.push_back(spec_.root + synthetic);
  }
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    return ioError("pipe", errno);
  }
  Fd ready_r(ready[0]);
  Fd ready_w(ready[1]);
  vfs.ready_fd = ready_w.get();
  auto vpid = spawnChild(vfs);
  if (!vpid.ok()) {
    return vpid.error();
  }
  virtiofsd_.name = "virtiofsd";
  virtiofsd_.pid = vpid.value();
  vfs_listen.reset();
  ready_w.reset();
  // Once virtiofsd's mount namespace holds its own copy of the view, the
  // view's host mount may go: as in host mode, early, so that no host
  // process (the view's own scan included) walks into it for long.
  char byte = 0;
  ssize_t got;
  while ((got = read(ready_r.get(), &byte, 1)) < 0 && errno == EINTR) {
  }
  if (got != 1) {
    char buf[512];
    ssize_t n = read(diag_.get(), buf, sizeof(buf));
    return Error(ErrorCode::kIo,
                 "virtiofsd could not start" +
                     (n > 0 ? ": " + std::string(buf, static_cast<size_t>(n)) : std::string()));
  }
  // Under KVM the view's host mount stays until the guest boots: should
  // KVM fail to boot it, a second virtiofsd under TCG needs the mount.
  if (!kvm_) {
    release();
  }
  spdlog::debug("vm: started virtiofsd (pid {}) and QEMU (pid {}, {}, {} MiB, {} cpu)",
                virtiofsd_.pid, qemu_.pid, kvm_ ? "kvm" : "tcg", spec_.memory_mib, spec_.cpus);

  for (Process* p : {&virtiofsd_, &qemu_}) {
    auto fd = openPidfd(p->pid);
    if (!fd.ok()) {
      return fd.error();
    }
    p->pidfd = std::move(fd.value());
  }
  for (pid_t pid : watch_) {
    auto fd = openPidfd(pid);
    if (!fd.ok()) {
      return fd.error();
    }
    Process w;
    w.name = "watched";
    w.pid = pid;
    w.pidfd = std::move(fd.value());
    watched_.push_back(std::move(w));
  }
  wire::appendFrame(&out_, Frame::kSpec, spec_payload);
  return Error();
}

void Session::release() {
  if (!released_) {
    released_ = true;
    on_started_();
  }
}

void Session::stop() {
  // Both are killed before either is waited for: each takes a while to
  // free its memory (QEMU the guest's), and they can do it side by side.
  for (Process* p : {&qemu_, &virtiofsd_}) {
    if (p->pid > 0 && !p->exited) {
      kill(p->pid, SIGKILL);
    }
  }
  for (Process* p : {&qemu_, &virtiofsd_}) {
    if (p->pid > 0 && !p->exited) {
      while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR) {
      }
      p->exited = true;
    }
  }
}

void Session::writeOutput(int fd, const std::string& data) {
  if (!output_open_[fd]) {
    return;
  }
  if (!writeAll(fd, data.data(), data.size())) {
    // The reader is gone: tell the guest, whose command then gets EPIPE.
    output_open_[fd] = false;
    wire::appendFrame(&out_, Frame::kCloseOutput, std::string(1, static_cast<char>(fd)));
  }
}

Error Session::handleFrames() {
  for (;;) {
    Frame type;
    std::string payload;
    wire::ParseResult r = wire::takeFrame(&in_, &type, &payload);
    if (r == wire::ParseResult::kNeedMore) {
      return Error();
    }
    if (r == wire::ParseResult::kTooLarge) {
      return Error(ErrorCode::kIo, "the guest broke the control protocol (oversized frame)");
    }
    auto ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
    switch (type) {
      case Frame::kHello:
        if (!hello_) {
          hello_ = true;
          release();
          spdlog::debug("vm: {:.0f} ms: the guest booted", ms);
        }
        break;
      case Frame::kStarted:
        started_ = true;
        spdlog::debug("vm: {:.0f} ms: the command started", ms);
        break;
      case Frame::kStdout:
        writeOutput(1, payload);
        break;
      case Frame::kStderr:
        writeOutput(2, payload);
        break;
      case Frame::kExit:
        if (payload.size() == 4) {
          status_ = static_cast<int>(wire::getLe32(payload.data()));
          exited_ = true;
          spdlog::debug("vm: {:.0f} ms: the command exited with {}", ms, status_);
        }
        break;
      case Frame::kError:
        guest_error_ = Error(ErrorCode::kIo, payload);
        break;
      case Frame::kMcpAsk:
        if (payload.size() >= 4) {
          int client = -1;
          int server = -1;
          std::string answer;
          if (!spec_.mcp_answer) {
            answer = "Dthis session has no MCP supervisor";
          } else if (mcp_.size() >= kMaxMcpChannels && payload.size() > 4 && payload[4] == 'E') {
            // A guest asking for servers without end must not exhaust
            // guard's descriptors and threads.
            answer = "Dtoo many MCP servers at once in this VM (" +
                     std::to_string(kMaxMcpChannels) + ")";
          } else {
            answer = spec_.mcp_answer(std::string_view(payload).substr(4), &client, &server);
          }
          if (answer == "W" && client >= 0 && server >= 0) {
            wire::McpChannel ch;
            ch.id = wire::getLe32(payload.data());
            for (auto [end, fd] : {std::pair{&ch.ends[0], client}, std::pair{&ch.ends[1], server}}) {
              fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
              end->rd = end->wr = end->sock = fd;
            }
            mcp_.push_back(std::move(ch));
          }
          wire::appendFrame(&out_, Frame::kMcpAnswer, payload.substr(0, 4) + answer);
        }
        break;
      case Frame::kStdinAck:
        if (payload.size() == 4) {
          stdin_acked_ = true;
          stdin_unacked_ -= std::min<size_t>(stdin_unacked_, wire::getLe32(payload.data()));
        }
        break;
      case Frame::kMcpData:
        if (payload.size() >= 4) {
          uint32_t id = wire::getLe32(payload.data());
          for (auto it = mcp_.begin(); it != mcp_.end(); ++it) {
            if (it->id == id && !it->deliver(std::string_view(payload).substr(4))) {
              // The guest broke the protocol or flooded the filter: this
              // server's conversation ends (the filter sees EOF).
              spdlog::warn("vm: the guest's MCP server {} sent too much unread data; closed", id);
              it->release();
              mcp_.erase(it);
              break;
            }
          }
        }
        break;
      case Frame::kSpec:
      case Frame::kStdin:
      case Frame::kWinsize:
      case Frame::kSignal:
      case Frame::kCloseOutput:
      case Frame::kMcpAnswer:
        break;
    }
  }
}

void Session::relaySignal(int sig) {
  if (sig == SIGWINCH) {
    wire::appendFrame(&out_, Frame::kWinsize, winsizePayload());
    return;
  }
  wire::appendFrame(&out_, Frame::kSignal, std::string(1, static_cast<char>(sig)));
}

Error Session::helperEnded(Process* p) {
  reap(p);
  // One helper going takes the other along (QEMU powering off ends
  // virtiofsd's connection): give QEMU a moment, so that the report is
  // about the guest when the guest was the cause.
  if (p != &qemu_ && !qemu_.exited) {
    struct pollfd q = {qemu_.pidfd.get(), POLLIN, 0};
    if (poll(&q, 1, 2000) > 0) {
      reap(&qemu_);
    }
  }
  // Take what the guest and the helpers said on their way out.
  while (ctl_.get() >= 0) {
    char buf[kReadChunk];
    ssize_t n = read(ctl_.get(), buf, sizeof(buf));
    if (n <= 0) {
      break;
    }
    in_.append(buf, static_cast<size_t>(n));
  }
  if (Error e = handleFrames(); !e.ok()) {
    return e;
  }
  if (exited_ || !guest_error_.ok()) {
    return guest_error_;  // the guest reported before it went
  }
  while (console_.get() >= 0 && readDiagnostics(console_.get(), &console_tail_, "guest: ") > 0) {
  }
  while (diag_.get() >= 0 && readDiagnostics(diag_.get(), &diag_tail_, "vm: ") > 0) {
  }
  // The guest init's own error, written to the console before the control
  // port existed (or instead of it).
  const std::string marker = "guard-vm-init: ";
  size_t at = console_tail_.text.rfind(marker);
  if (at != std::string::npos) {
    size_t end = console_tail_.text.find('\n', at);
    std::string line = console_tail_.text.substr(
        at + marker.size(),
        end == std::string::npos ? std::string::npos : end - at - marker.size());
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
      line.pop_back();
    }
    return Error(ErrorCode::kIo, "the VM could not set the session up: " + line);
  }
  // A guest kernel panic (panic=-1 ends QEMU): its one-line reason.
  const std::string panic = "Kernel panic - not syncing: ";
  at = console_tail_.text.rfind(panic);
  if (at != std::string::npos) {
    size_t end = console_tail_.text.find('\n', at);
    std::string line =
        console_tail_.text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
      line.pop_back();
    }
    return Error(ErrorCode::kIo, "the VM's kernel stopped: " + line);
  }
  // virtiofsd ending cleanly is QEMU's doing; otherwise name who died.
  Process* culprit = p;
  if (p == &virtiofsd_ && WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0 && qemu_.exited) {
    culprit = &qemu_;
  }
  int st = culprit->status;
  std::string how = WIFEXITED(st) ? "exited with status " + std::to_string(WEXITSTATUS(st))
                                  : std::string("was killed by signal ") + strsignal(WTERMSIG(st));
  std::string msg = std::string(culprit->name) + " " + how + " before the command finished";
  std::string diag = diag_tail_.lastLines(3);
  std::string console = console_tail_.lastLines(3);
  if (!diag.empty()) {
    msg += "\n  " + diag;
  }
  if (!console.empty()) {
    msg += "\n  guest console: " + console;
  }
  return Error(ErrorCode::kIo, msg);
}

Error Session::loop(const Signals& signals) {
  char buf[kReadChunk];
  auto boot_deadline = boot_t0_ + std::chrono::milliseconds(kBootTimeoutMs);
  while (!exited_ && guest_error_.ok()) {
    std::vector<struct pollfd> pfds;
    auto add = [&](int fd, short events) {
      pfds.push_back({fd, events, 0});
      return pfds.size() - 1;
    };
    size_t i_sig = add(signals.fd(), POLLIN);
    size_t i_ctl = add(ctl_.get(), static_cast<short>(POLLIN | (out_.empty() ? 0 : POLLOUT)));
    bool window_open = !stdin_acked_ || stdin_unacked_ < wire::kStdinWindow;
    // Under KVM stdin waits for the guest's hello: a boot that fails goes
    // again under TCG, and must find stdin unread.
    bool stdin_ready = stdin_open_ && window_open && out_.size() < kStdinHighWater;
    size_t i_in = add(stdin_ready && (hello_ || !kvm_) ? 0 : -1, POLLIN);
    size_t i_con = add(console_.get(), POLLIN);
    size_t i_diag = add(diag_.get(), POLLIN);
    // The listeners go to the proxy once this boot is the one: under KVM,
    // when the guest has said hello.
    size_t i_net = add(hello_ || !kvm_ ? listeners_.get() : -1, POLLIN);
    size_t i_qemu = add(qemu_.pidfd.get(), POLLIN);
    size_t i_vfs = add(virtiofsd_.pidfd.get(), POLLIN);
    size_t i_watch = pfds.size();
    for (const Process& w : watched_) {
      add(w.pidfd.get(), POLLIN);
    }
    size_t i_mcp = pfds.size();
    for (const wire::McpChannel& ch : mcp_) {
      for (const wire::McpChannel::End& e : ch.ends) {
        bool read = e.rd >= 0 && out_.size() < kStdinHighWater;
        bool write = e.wr >= 0 && !e.pending.empty();
        add(read || write ? e.sock : -1,
            static_cast<short>((read ? POLLIN : 0) | (write ? POLLOUT : 0)));
      }
    }
    int timeout = -1;
    if (!started_) {  // booting, mounting the view, starting the command
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      boot_deadline - std::chrono::steady_clock::now())
                      .count();
      auto kvm_left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          boot_t0_ + std::chrono::milliseconds(kKvmHelloTimeoutMs) -
                          std::chrono::steady_clock::now())
                          .count();
      if (kvm_ && !hello_ && kvm_left <= 0) {
        kvm_failed_ = true;
        kvm_failure_ = "the guest did not boot within " +
                       std::to_string(kKvmHelloTimeoutMs / 1000) + " s";
        return Error();
      }
      if (kvm_ && !hello_) {
        left = std::min(left, kvm_left);
      }
      if (left <= 0) {
        return Error(
            ErrorCode::kIo,
            std::string(hello_ ? "the VM booted but did not start the command"
                               : "the VM did not boot") +
                " within " + std::to_string(kBootTimeoutMs / 1000) + " s" +
                (console_tail_.text.empty() ? std::string()
                                            : "\n  guest console: " + console_tail_.lastLines(3)));
      }
      timeout = static_cast<int>(left);
    }
    if (poll(pfds.data(), pfds.size(), timeout) < 0) {
      if (errno == EINTR) {
        continue;
      }
      return ioError("poll", errno);
    }
    // Diagnostics first, so a death below can quote them.
    if (pfds[i_con].revents != 0) {
      readDiagnostics(console_.get(), &console_tail_, "guest: ");
    }
    if (pfds[i_diag].revents != 0) {
      readDiagnostics(diag_.get(), &diag_tail_, "vm: ");
    }
    // The wrapped MCP servers' sockets, before any frame below can add or
    // drop a channel (and shift the indices).
    for (size_t k = 0; k < mcp_.size(); ++k) {
      wire::McpChannel& ch = mcp_[k];
      for (int e = 0; e < 2; ++e) {
        short rev = pfds[i_mcp + 2 * k + static_cast<size_t>(e)].revents;
        if ((rev & (POLLIN | POLLHUP | POLLERR)) != 0 && ch.ends[e].rd >= 0) {
          ch.readEnd(e, &out_);
        }
      }
      ch.flush();
    }
    std::erase_if(mcp_, [](wire::McpChannel& ch) {
      if (!ch.done()) {
        return false;
      }
      ch.release();
      return true;
    });
    if (pfds[i_ctl].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(ctl_.get(), buf, sizeof(buf));
      if (n > 0) {
        in_.append(buf, static_cast<size_t>(n));
        if (Error e = handleFrames(); !e.ok()) {
          return e;
        }
        if (exited_ || !guest_error_.ok()) {
          break;
        }
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        // QEMU closed its end: it is exiting; its pidfd says why.
        ctl_.reset();
      }
    }
    if (pfds[i_net].revents != 0) {
      Error e = forwardListeners(listeners_.get(), spec_.net_fd);
      listeners_.reset();
      if (!e.ok()) {
        return e;
      }
    }
    if ((pfds[i_ctl].revents & POLLOUT) && !out_.empty()) {
      ssize_t n = write(ctl_.get(), out_.data(), out_.size());
      if (n > 0) {
        out_.erase(0, static_cast<size_t>(n));
      }
    }
    if (pfds[i_in].revents != 0) {
      ssize_t n = (pfds[i_in].revents & POLLNVAL) ? 0 : read(0, buf, sizeof(buf));
      if (n > 0) {
        wire::appendFrame(&out_, Frame::kStdin, std::string_view(buf, static_cast<size_t>(n)));
        stdin_unacked_ += static_cast<size_t>(n);
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        stdin_open_ = false;
        wire::appendFrame(&out_, Frame::kStdin, "");
      }
    }
    if (pfds[i_sig].revents != 0) {
      char sigs[64];
      ssize_t got = read(signals.fd(), sigs, sizeof(sigs));
      for (ssize_t k = 0; k < got; ++k) {
        int sig = static_cast<uint8_t>(sigs[k]);
        if (!started_ && sig != SIGWINCH) {
          // Nothing to relay to yet: the session ends as the command would.
          status_ = 128 + sig;
          return Error();
        }
        relaySignal(sig);
      }
    }
    for (size_t k = 0; k < watched_.size(); ++k) {
      if (pfds[i_watch + k].revents != 0) {
        if (died_ != nullptr) {
          *died_ = watched_[k].pid;
        }
        status_ = 128 + SIGKILL;
        return Error();
      }
    }
    for (auto [idx, p] : {std::pair{i_qemu, &qemu_}, std::pair{i_vfs, &virtiofsd_}}) {
      if (pfds[idx].revents != 0 && !p->exited) {
        Error e = helperEnded(p);
        // QEMU's own KVM errors name it; a guest that panicked or an init
        // that reported an error ran, and fails the same way under TCG.
        if (kvm_ && !hello_ && qemu_.exited && !e.ok() &&
            strcasestr(diag_tail_.text.c_str(), "kvm") != nullptr) {
          kvm_failed_ = true;
          kvm_failure_ = e.message();
          return Error();
        }
        return e;
      }
    }
  }
  if (!guest_error_.ok()) {
    return guest_error_;
  }
  return Error();
}

// run boots the VM and relays until the command ends. KVM is probed by
// creating a VM; a host whose KVM passes that and still cannot boot the
// guest (QEMU refuses the vCPU, or the guest never says hello) gets a
// second boot under TCG, with one warning, rather than a failed session.
Result<int> Session::run() {
  // The relay's signal handlers and the terminal's raw mode hold for both
  // boots and the moment between them.
  Signals signals;
  Terminal terminal;
  std::string reason;
  kvm_ = kvmUsable(&reason);
  if (!kvm_) {
    warnTcg("KVM is not usable (" + reason + ")");
  }
  for (;;) {
    Error e = start();
    if (e.ok()) {
      // loop returns 128+N for a signal that arrives before the command starts.
      e = loop(signals);
    }
    stop();
    if (!kvm_failed_) {
      return e.ok() ? Result<int>(status_) : Result<int>(e);
    }
    warnTcg("KVM could not boot the VM (" + kvm_failure_ + ")");
    kvm_ = false;
    kvm_failed_ = false;
    listeners_.reset();
    qemu_ = Process();
    virtiofsd_ = Process();
    watched_.clear();
    ctl_.reset();
    console_.reset();
    diag_.reset();
    console_tail_ = Tail();
    diag_tail_ = Tail();
    in_.clear();
    out_.clear();
  }
}

}  // namespace

std::string vmImageDir(bool exe_dir) {
  const char* env = getenv("GUARD_VM_DIR");
  if (!exe_dir && env != nullptr && env[0] != '\0') {
    return env;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  std::string dir = n > 0 ? std::string(exe, static_cast<size_t>(n)) : std::string();
  size_t slash = dir.rfind('/');
  dir = slash == std::string::npos ? "." : dir.substr(0, slash);
  return exe_dir ? dir : dir + "/vm";
}

bool kvmUsable(std::string* reason) {
  Fd kvm(open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (kvm.get() < 0) {
    *reason = std::string("/dev/kvm: ") + strerror(errno);
    return false;
  }
  int version = ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    *reason = "/dev/kvm speaks API version " + std::to_string(version);
    return false;
  }
  Fd vm(ioctl(kvm.get(), KVM_CREATE_VM, 0));
  if (vm.get() < 0) {
    *reason = std::string("cannot create a KVM VM: ") + strerror(errno);
    return false;
  }
  // PVM (kvm_pvm) gives KVM without hardware virtualisation: it takes a VM
  // but boots only guest kernels built for it, not Debian's. Trying costs
  // a QEMU start (run() boots again under TCG when KVM fails); this saves it.
  if (access("/sys/module/kvm_pvm", F_OK) == 0 && access("/sys/module/kvm_intel", F_OK) != 0 &&
      access("/sys/module/kvm_amd", F_OK) != 0) {
    *reason = "/dev/kvm is PVM (kvm_pvm), which boots only guest kernels built for it";
    return false;
  }
  return true;
}

Result<int> runVm(const VmSpec& spec, const std::function<void()>& on_started,
                  const std::vector<pid_t>& watch, pid_t* died) {
  Session session(spec, on_started, watch, died);
  return session.run();
}

}  // namespace guard::vmhost
