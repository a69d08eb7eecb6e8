// The namespace jail: fork, unshare, map ids, pivot into the view, harden,
// exec. Each step reports failure with its own JailStep.
//
// Process tree:
//   guard (host namespaces; serves the view)
//     └─ A: unshares user, mount, PID, network, IPC, UTS; maps ids; relays status
//          └─ B: PID 1 of the new PID namespace; mounts, pivots, reaps
//               └─ C: the agent, after Landlock, capability drop and seccomp
//                     (the filter compiled in guard, before the fork)
//
// A, B and C are forked from a multi-threaded process; after fork they call
// only what glibc keeps fork-safe (malloc included) and never log.
#include "vmhost/jail.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <net/if.h>
#include <sched.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <linux/securebits.h>
#include <sys/socket.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "vmhost/netns.h"
#include "vmhost/vm_wire.h"  // writeAll

// Debian 12's kernel headers stop at Landlock ABI 2; the running kernel may
// be newer. Values from the kernel's uapi (stable ABI).
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif

extern char** environ;

namespace guard::vmhost {
namespace {

// The proxy's socket sits at this descriptor inside the jail's setup
// processes (the error pipe is 3); it never reaches the agent.
constexpr int kNetFd = 4;

// The error pipe carries "P" once the jail is rooted in the view, and
// "E<step>:<errno>:<text>" when a step fails. It is close-on-exec: EOF with no
// error means the agent was exec'ed.
[[noreturn]] void die(int err_fd, JailStep step, int e, const char* what) {
  char buf[512];
  int n = snprintf(buf, sizeof(buf), "E%d:%d:%s", static_cast<int>(step), e, what);
  if (n > 0) {
    ssize_t ignored = write(err_fd, buf, static_cast<size_t>(std::min(n, 511)));
    (void)ignored;
  }
  _exit(125);
}

void writeFile(int err_fd, JailStep step, const char* path, const char* text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, text, strlen(text)) != static_cast<ssize_t>(strlen(text))) {
    die(err_fd, step, errno, path);
  }
  close(fd);
}

void bindFile(int err_fd, const std::string& src, const std::string& dst) {
  int fd = open(dst.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
  if (fd >= 0) {
    close(fd);
  }
  if (mount(src.c_str(), dst.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    die(err_fd, JailStep::kMountDev, errno, dst.c_str());
  }
}

// mountDev builds a minimal /dev: the harmless character devices bound
// from the host, a private devpts (so no other terminal of the host is
// reachable), shm, and the usual symlinks.
void mountDev(int err_fd, const std::string& root) {
  std::string dev = root + "/dev";
  if (mount("tmpfs", dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") != 0) {
    die(err_fd, JailStep::kMountDev, errno, "tmpfs on /dev");
  }
  for (const char* name : {"null", "zero", "full", "random", "urandom", "tty"}) {
    bindFile(err_fd, std::string("/dev/") + name, dev + "/" + name);
  }
  mkdir((dev + "/pts").c_str(), 0755);
  if (mount("devpts", (dev + "/pts").c_str(), "devpts", MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620") != 0) {
    die(err_fd, JailStep::kMountDev, errno, "devpts");
  }
  mkdir((dev + "/shm").c_str(), 01777);
  if (mount("tmpfs", (dev + "/shm").c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) {
    die(err_fd, JailStep::kMountDev, errno, "tmpfs on /dev/shm");
  }
  // The caller's terminal (a host pty) is bound to /dev/console, so that
  // ttyname() finds it by device number and tools see a terminal; no other
  // host terminal is reachable.
  for (int fd = 0; fd <= 2; ++fd) {
    char name[256];
    if (isatty(fd) && ttyname_r(fd, name, sizeof(name)) == 0) {
      bindFile(err_fd, name, dev + "/console");
      break;
    }
  }
  symlink("pts/ptmx", (dev + "/ptmx").c_str());
  symlink("/proc/self/fd", (dev + "/fd").c_str());
  symlink("/proc/self/fd/0", (dev + "/stdin").c_str());
  symlink("/proc/self/fd/1", (dev + "/stdout").c_str());
  symlink("/proc/self/fd/2", (dev + "/stderr").c_str());
  if (mount(nullptr, dev.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
            nullptr) != 0) {
    die(err_fd, JailStep::kMountDev, errno, "read-only /dev");
  }
}

void loopbackUp(int err_fd) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq ifr {};
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    die(err_fd, JailStep::kLoopback, errno, "lo");
  }
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
    die(err_fd, JailStep::kLoopback, errno, "lo up");
  }
  close(s);
}

// ---- Landlock (raw syscalls: glibc has no wrappers) ------------------------

int landlockAbi() {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

// applyLandlock lets the agent write only beneath WRITABLE, underneath the
// view's own checks (defence in depth). Reads stay with the view.
void applyLandlock(int err_fd, const std::vector<std::string>& writable) {
  int abi = landlockAbi();
  if (abi == 0) {
    return;  // kernel without Landlock: the view still enforces; docs/security.md says so
  }
  uint64_t handled = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                     LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                     LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
                     LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
                     LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;
  if (abi >= 2) {
    handled |= LANDLOCK_ACCESS_FS_REFER;
  }
  if (abi >= 3) {
    handled |= LANDLOCK_ACCESS_FS_TRUNCATE;
  }
  struct landlock_ruleset_attr attr {};
  attr.handled_access_fs = handled;
  int rs = static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0));
  if (rs < 0) {
    die(err_fd, JailStep::kLandlock, errno, "landlock_create_ruleset");
  }
  for (const std::string& p : writable) {
    // A writable path that does not exist yet (~/.claude.json before an
    // agent's first run) can only be created beneath its nearest existing
    // ancestor, so the rule goes there; the view still refuses every other
    // name in it. Never at /: that would switch Landlock off.
    std::string at = p;
    int fd = open(at.c_str(), O_PATH | O_CLOEXEC);
    while (fd < 0 && errno == ENOENT) {
      size_t slash = at.rfind('/');
      if (slash == std::string::npos || slash == 0) {
        break;
      }
      at.resize(slash);
      fd = open(at.c_str(), O_PATH | O_CLOEXEC);
    }
    if (fd < 0) {
      continue;
    }
    struct stat st {};
    fstat(fd, &st);
    struct landlock_path_beneath_attr pb {};
    pb.parent_fd = fd;
    pb.allowed_access = handled;
    if (!S_ISDIR(st.st_mode)) {
      // Files take only file rights.
      pb.allowed_access &= LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE;
    }
    if (syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) != 0) {
      die(err_fd, JailStep::kLandlock, errno, p.c_str());
    }
    close(fd);
  }
  if (syscall(SYS_landlock_restrict_self, rs, 0) != 0) {
    die(err_fd, JailStep::kLandlock, errno, "landlock_restrict_self");
  }
  close(rs);
}

// dropCapabilities leaves the agent with no capability in its namespace, and
// keeps it that way across exec even if it runs as uid 0 there.
void dropCapabilities(int err_fd) {
  if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                   SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                                   SECBIT_NO_CAP_AMBIENT_RAISE |
                                   SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) != 0) {
    die(err_fd, JailStep::kCapabilities, errno, "securebits");
  }
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      die(err_fd, JailStep::kCapabilities, errno, "bounding set");
    }
  }
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  struct __user_cap_header_struct hdr {};
  hdr.version = _LINUX_CAPABILITY_VERSION_3;
  struct __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capset, &hdr, data) != 0) {
    die(err_fd, JailStep::kCapabilities, errno, "capset");
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    die(err_fd, JailStep::kCapabilities, errno, "no_new_privs");
  }
}

// compileSeccomp builds the filter that denies, with EPERM, the system
// calls that could reach around the view or the namespaces
// (docs/security.md explains each), as classic BPF. It runs in guard before
// the jail is forked, so the agent's process only loads the program.
// Returns the program, or an Error naming the libseccomp call that failed.
Result<std::vector<sock_filter>> compileSeccomp() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) {
    return Error(ErrorCode::kInternal, "seccomp_init failed", ENOMEM);
  }
  const int eperm = SCMP_ACT_ERRNO(EPERM);
  static const char* const kDenied[] = {
      // mounting and the new mount API
      "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
      "fsmount", "fspick", "mount_setattr",
      // file handles bypass path lookup, so the view's decisions
      "open_by_handle_at", "name_to_handle_at",
      // the kernel itself
      "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
      "perf_event_open", "userfaultfd", "reboot", "swapon", "swapoff", "acct", "syslog",
      "quotactl", "lookup_dcookie", "vhangup",
      // the kernel keyring is shared beyond the session
      "keyctl", "add_key", "request_key",
      // io_uring performs opens and I/O outside the seccomp view of syscalls
      "io_uring_setup", "io_uring_enter", "io_uring_register",
      // joining other namespaces
      "setns",
  };
  int rc = 0;
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) {
      continue;  // not on this architecture
    }
    rc |= seccomp_rule_add(ctx, eperm, nr, 0);
  }
  // New namespaces (a user namespace grants the capabilities to remount).
  const uint64_t kNsFlags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET |
                            CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWTIME;
  for (uint64_t flag = 1; flag != 0; flag <<= 1) {
    if ((kNsFlags & flag) == 0) {
      continue;
    }
    rc |= seccomp_rule_add(ctx, eperm, SCMP_SYS(unshare), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    rc |= seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
  }
  // clone3 passes its flags in memory, where seccomp cannot look: ENOSYS
  // makes libc fall back to clone, which is checked above.
  rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  // Typing into the controlling terminal of the caller.
  rc |= seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1,
                         SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
  rc |= seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1,
                         SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX));
  if (rc != 0) {
    seccomp_release(ctx);
    return Error(ErrorCode::kInternal, "seccomp_rule_add failed", -rc);
  }
  // The program seccomp_load would install, written to a memory file.
  int mfd = memfd_create("guard-seccomp", MFD_CLOEXEC);
  rc = mfd < 0 ? -errno : seccomp_export_bpf(ctx, mfd);
  seccomp_release(ctx);
  std::vector<sock_filter> prog;
  struct stat st {};
  if (rc == 0 && fstat(mfd, &st) == 0 && st.st_size > 0 &&
      st.st_size % static_cast<off_t>(sizeof(sock_filter)) == 0 &&
      st.st_size <= static_cast<off_t>(BPF_MAXINSNS * sizeof(sock_filter))) {
    prog.resize(static_cast<size_t>(st.st_size) / sizeof(sock_filter));
    if (pread(mfd, prog.data(), static_cast<size_t>(st.st_size), 0) != st.st_size) {
      prog.clear();
    }
  }
  int e = rc != 0 ? -rc : errno;
  if (mfd >= 0) {
    close(mfd);
  }
  if (prog.empty()) {
    return Error(ErrorCode::kInternal, "seccomp_export_bpf failed", e != 0 ? e : EIO);
  }
  return prog;
}

// loadSeccomp installs PROG as seccomp_load would: no_new_privs, then the
// filter with no flags.
void loadSeccomp(int err_fd, const std::vector<sock_filter>& prog) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    die(err_fd, JailStep::kSeccomp, errno, "no_new_privs");
  }
  struct sock_fprog fprog {};
  fprog.len = static_cast<unsigned short>(prog.size());
  fprog.filter = const_cast<sock_filter*>(prog.data());
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) {
    die(err_fd, JailStep::kSeccomp, errno, "seccomp");
  }
}

std::string lookPath(const std::string& file, const std::vector<std::string>& env) {
  if (file.find('/') != std::string::npos) {
    return file;
  }
  std::string path = "/usr/local/bin:/usr/bin:/bin";
  for (const std::string& e : env) {
    if (e.rfind("PATH=", 0) == 0) {
      path = e.substr(5);
    }
  }
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find(':', i);
    if (j == std::string::npos) {
      j = path.size();
    }
    std::string dir = path.substr(i, j - i);
    std::string cand = (dir.empty() ? "." : dir) + "/" + file;
    if (access(cand.c_str(), X_OK) == 0) {
      return cand;
    }
    i = j + 1;
  }
  return "";
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

volatile sig_atomic_t g_child = 0;

void forwardSignal(int sig) {
  if (g_child > 0) {
    kill(static_cast<pid_t>(g_child), sig);
  }
}

// ignoreTerminalSignals: the terminal sends SIGINT/SIGQUIT/SIGTSTP to the
// whole foreground group, the agent included; its supervisors ignore them
// and let the agent decide.
void ignoreTerminalSignals() {
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  signal(SIGTSTP, SIG_IGN);
  signal(SIGTTOU, SIG_IGN);
  signal(SIGTTIN, SIG_IGN);
}

// forwardSentSignal passes on a SIGINT or SIGQUIT that someone sent with
// kill() (a CI runner cancelling a step, `kill -INT`); one the terminal
// generated (si_code SI_KERNEL) already reached the agent in the foreground
// group.
void forwardSentSignal(int sig, siginfo_t* info, void*) {
  if (info != nullptr && info->si_code <= 0) {
    forwardSignal(sig);
  }
}

void forwardTermination(pid_t child) {
  g_child = child;
  struct sigaction sa {};
  sa.sa_handler = forwardSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGHUP, SIGUSR1, SIGUSR2}) {
    sigaction(sig, &sa, nullptr);
  }
  struct sigaction sent {};
  sent.sa_sigaction = forwardSentSignal;
  sigemptyset(&sent.sa_mask);
  sent.sa_flags = SA_RESTART | SA_SIGINFO;
  for (int sig : {SIGINT, SIGQUIT}) {
    sigaction(sig, &sent, nullptr);
  }
}

[[noreturn]] void runAgent(const JailSpec& spec, const std::vector<sock_filter>& filter,
                            int err_fd) {
  signal(SIGINT, SIG_DFL);
  signal(SIGQUIT, SIG_DFL);
  signal(SIGTSTP, SIG_DFL);
  signal(SIGTTOU, SIG_DFL);
  signal(SIGTTIN, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  if (chdir(spec.cwd.c_str()) != 0) {
    die(err_fd, JailStep::kChdir, errno, spec.cwd.c_str());
  }
  std::string exe = lookPath(spec.argv[0], spec.env);
  if (exe.empty()) {
    die(err_fd, JailStep::kExec, ENOENT, spec.argv[0].c_str());
  }
  applyLandlock(err_fd, spec.writable);
  dropCapabilities(err_fd);
  loadSeccomp(err_fd, filter);
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
  execve(exe.c_str(), argv.data(), envp.data());
  die(err_fd, JailStep::kExec, errno, exe.c_str());
}

// copyFile copies the whole of the file at SRC (from offset 0, leaving its
// offset alone) to DST, in the kernel.
bool copyFile(int src, int dst, off_t size) {
  off_t off = 0;
  while (off < size) {
    ssize_t n = sendfile(dst, src, &off, static_cast<size_t>(size - off));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
  }
  return true;
}

// layerFiles fills a fresh tmpfs at DIR with FILES (relative path -> memfd
// with the content and mode) and returns an O_PATH descriptor of it, or -1.
// The caller detaches the tmpfs from DIR once the overlay holds it
// (overlayfs takes only layers that are mounted).
int layerFiles(const std::string& dir, const std::vector<std::pair<std::string, int>>& files) {
  if (mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
    return -1;
  }
  bool ok = true;
  for (const auto& [rel, src] : files) {
    for (size_t i = rel.find('/'); i != std::string::npos; i = rel.find('/', i + 1)) {
      mkdir((dir + "/" + rel.substr(0, i)).c_str(), 0755);
    }
    struct stat st {};
    int fd = open((dir + "/" + rel).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ok = ok && fd >= 0 && fstat(src, &st) == 0 && copyFile(src, fd, st.st_size) &&
         fchmod(fd, st.st_mode & 0555) == 0;
    if (fd >= 0) {
      close(fd);
    }
  }
  int layer = ok ? open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
  if (layer < 0) {
    umount2(dir.c_str(), MNT_DETACH);
  }
  return layer;
}

// bindTrees mounts spec.binds over the view. The source is opened with no
// symlink followed, so a path swapped for a link since it was planned binds
// nothing. A tree that cannot be bound stays served by the view; one bound
// but not made read-only is taken away again, or the jail fails.
void bindTrees(int err_fd, const JailSpec& spec) {
  for (const JailSpec::Bind& b : spec.binds) {
    struct open_how how {};
    how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS;
    int fd = static_cast<int>(syscall(SYS_openat2, AT_FDCWD, b.path.c_str(), &how, sizeof(how)));
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0 || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))) {
      if (fd >= 0) {
        close(fd);
      }
      continue;
    }
    struct statvfs sv {};
    unsigned long locked = 0;  // flags of the host mount that a remount must keep
    if (fstatvfs(fd, &sv) == 0) {
      locked |= (sv.f_flag & ST_NOEXEC) != 0 ? MS_NOEXEC : 0;
      locked |= (sv.f_flag & ST_RDONLY) != 0 ? MS_RDONLY : 0;
    }
    std::string target = spec.root + b.path;
    std::string src = "/proc/self/fd/" + std::to_string(fd);
    if (!b.files.empty()) {
      // A read-only overlayfs with no upper layer: the files above the host
      // directory. The view's /tmp is scratch space until the session's
      // tmpfs covers it. If the kernel refuses, the view serves the tree.
      std::string scratch = spec.root + "/tmp";
      int layer = S_ISDIR(st.st_mode) && !b.writable ? layerFiles(scratch, b.files) : -1;
      if (layer >= 0) {
        std::string opts = "lowerdir=/proc/self/fd/" + std::to_string(layer) + ":" + src;
        mount("overlay", target.c_str(), "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV | locked,
              opts.c_str());
        close(layer);
        if (umount2(scratch.c_str(), MNT_DETACH) != 0) {
          die(err_fd, JailStep::kMountPrivate, errno, scratch.c_str());
        }
      }
      close(fd);
      continue;
    }
    if (mount(src.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) == 0 &&
        mount(nullptr, target.c_str(), nullptr,
              MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | locked | (b.writable ? 0 : MS_RDONLY),
              nullptr) != 0 &&
        umount2(target.c_str(), MNT_DETACH) != 0) {
      die(err_fd, JailStep::kMountPrivate, errno, target.c_str());
    }
    close(fd);
  }
}

// runInit is B: PID 1 of the new PID namespace.
[[noreturn]] void runInit(const JailSpec& spec, const std::vector<sock_filter>& filter,
                           int err_fd) {
  const std::string& root = spec.root;
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    die(err_fd, JailStep::kMountPrivate, errno, "make / private");
  }
  // The view's mount was copied from guard's namespace, which locks it and
  // makes pivot_root refuse it; a bind of it made here is ours to pivot into.
  if (mount(root.c_str(), root.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    die(err_fd, JailStep::kMountPrivate, errno, "bind the view");
  }
  bindTrees(err_fd, spec);
  for (const JailSpec::Bind& b : spec.binds) {
    for (const auto& file : b.files) {
      close(file.second);  // the layers are mounted: their memfds are done
    }
  }
  if (mount("proc", (root + "/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            nullptr) != 0) {
    die(err_fd, JailStep::kMountProc, errno, "proc");
  }
  mountDev(err_fd, root);
  // A private /tmp; a working directory below /tmp is carried into it.
  int keep = -1;
  if (spec.cwd.rfind("/tmp/", 0) == 0) {
    keep = open((root + spec.cwd).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (keep < 0) {
      die(err_fd, JailStep::kChdir, errno, spec.cwd.c_str());
    }
  }
  if (mount("tmpfs", (root + "/tmp").c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) {
    die(err_fd, JailStep::kMountTmp, errno, "tmpfs on /tmp");
  }
  if (keep >= 0) {
    std::string target = root;
    size_t i = 1;
    while (i <= spec.cwd.size()) {
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
      die(err_fd, JailStep::kMountTmp, errno, "carry the working directory into /tmp");
    }
    close(keep);
  }
  // pivot_root(".", ".") stacks the old root under the new one; detaching
  // it leaves the agent no path back to the host tree.
  if (chdir(root.c_str()) != 0 || syscall(SYS_pivot_root, ".", ".") != 0 ||
      umount2(".", MNT_DETACH) != 0 || chdir("/") != 0) {
    die(err_fd, JailStep::kPivotRoot, errno, root.c_str());
  }
  sethostname(spec.hostname.c_str(), spec.hostname.size());
  loopbackUp(err_fd);
  if (spec.net_fd >= 0) {
    std::string what;
    if (!setupNetwork(kNetFd, spec.proxy_port, &what)) {
      die(err_fd, JailStep::kNetwork, errno, what.c_str());
    }
    close(kNetFd);
  }
  if (write(err_fd, "P", 1) != 1) {
    _exit(125);
  }
  pid_t agent = fork();
  if (agent < 0) {
    die(err_fd, JailStep::kFork, errno, "agent");
  }
  if (agent == 0) {
    runAgent(spec, filter, err_fd);
  }
  close(err_fd);
  ignoreTerminalSignals();
  forwardTermination(agent);
  // The agent must not ptrace or signal its init to borrow its capabilities.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  int code = 125;
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0 && errno == EINTR) {
      continue;
    }
    if (pid < 0) {
      break;
    }
    if (pid == agent) {
      code = exitCodeOf(status);
      break;  // exiting PID 1 ends every other process of the session
    }
  }
  _exit(code);
}

// runOuter is A: creates the namespaces and relays B's exit status.
[[noreturn]] void runOuter(const JailSpec& spec, const std::vector<sock_filter>& filter,
                            int err_fd, uid_t uid, gid_t gid) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
              CLONE_NEWUTS) != 0) {
    die(err_fd, JailStep::kUnshare, errno, "unshare");
  }
  char map[64];
  writeFile(err_fd, JailStep::kIdMap, "/proc/self/setgroups", "deny");
  snprintf(map, sizeof(map), "%u %u 1", uid, uid);
  writeFile(err_fd, JailStep::kIdMap, "/proc/self/uid_map", map);
  snprintf(map, sizeof(map), "%u %u 1", gid, gid);
  writeFile(err_fd, JailStep::kIdMap, "/proc/self/gid_map", map);
  pid_t init = fork();
  if (init < 0) {
    die(err_fd, JailStep::kFork, errno, "init");
  }
  if (init == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    runInit(spec, filter, err_fd);
  }
  // The error pipe, the proxy's socket and the layers' memfds are init's.
  syscall(SYS_close_range, 3u, ~0u, 0u);
  ignoreTerminalSignals();
  forwardTermination(init);
  int status = 0;
  while (waitpid(init, &status, 0) < 0 && errno == EINTR) {
  }
  _exit(exitCodeOf(status));
}

}  // namespace

const char* jailStepName(JailStep step) {
  switch (step) {
    case JailStep::kFork:
      return "fork";
    case JailStep::kUnshare:
      return "create namespaces";
    case JailStep::kIdMap:
      return "map user and group ids";
    case JailStep::kMountPrivate:
      return "make mounts private";
    case JailStep::kMountProc:
      return "mount /proc";
    case JailStep::kMountDev:
      return "build /dev";
    case JailStep::kMountTmp:
      return "mount /tmp";
    case JailStep::kPivotRoot:
      return "enter the filesystem view";
    case JailStep::kLoopback:
      return "bring up loopback";
    case JailStep::kNetwork:
      return "route the network to the proxy";
    case JailStep::kChdir:
      return "enter the working directory";
    case JailStep::kLandlock:
      return "apply Landlock";
    case JailStep::kCapabilities:
      return "drop capabilities";
    case JailStep::kSeccomp:
      return "install the seccomp filter";
    case JailStep::kExec:
      return "start the command";
  }
  return "unknown step";
}

bool userNamespacesAvailable(std::string* reason) {
  pid_t pid = fork();
  if (pid == 0) {
    _exit(unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 ? 0 : errno);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  int e = WIFEXITED(status) ? WEXITSTATUS(status) : EINVAL;
  if (e == 0) {
    return true;
  }
  *reason = std::string("cannot create a user namespace (") + strerror(e) +
            "): check sysctl user.max_user_namespaces and kernel.unprivileged_userns_clone, "
            "or an AppArmor restriction on unprivileged user namespaces";
  return false;
}

Result<int> runJail(const JailSpec& spec, const std::function<void()>& on_rooted,
                    const std::vector<pid_t>& watch, pid_t* died) {
  // The seccomp program is compiled here, once, before the fork: the
  // agent's process only loads it.
  auto filter_or = compileSeccomp();
  if (!filter_or.ok()) {
    return Error(ErrorCode::kInternal,
                 std::string("cannot ") + jailStepName(JailStep::kSeccomp) + " (" +
                     filter_or.error().message() + "): " + strerror(filter_or.error().savedErrno()),
                 filter_or.error().savedErrno());
  }
  const std::vector<sock_filter>& filter = filter_or.value();
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("pipe: ") + strerror(e), e);
  }
  uid_t uid = geteuid();
  gid_t gid = getegid();
  pid_t outer = fork();
  if (outer < 0) {
    int e = errno;
    close(pipefd[0]);
    close(pipefd[1]);
    return Error(ErrorCode::kIo, std::string("fork: ") + strerror(e), e);
  }
  if (outer == 0) {
    // /proc/PID/environ shows the environment block the process started
    // with; the jail's processes must not carry guard's (it may hold
    // secrets the agent may not see), so wipe it in place.
    for (char** e = environ; *e != nullptr; ++e) {
      memset(*e, 0, strlen(*e));
    }
    close(pipefd[0]);
    // Only stdin, stdout, stderr, the error pipe, the proxy's socket and the
    // layers' sealed memfds (moved above those) cross into the jail.
    JailSpec moved = spec;
    std::vector<int> keep;
    for (JailSpec::Bind& b : moved.binds) {
      for (auto& file : b.files) {
        file.second = fcntl(file.second, F_DUPFD_CLOEXEC, kNetFd + 1);
        if (file.second < 0) {
          _exit(125);
        }
        keep.push_back(file.second);
      }
    }
    int err_fd = 3;
    if (pipefd[1] != err_fd) {
      if (dup3(pipefd[1], err_fd, O_CLOEXEC) < 0) {
        _exit(125);
      }
    }
    if (spec.net_fd >= 0 && dup3(spec.net_fd, kNetFd, O_CLOEXEC) < 0) {
      _exit(125);
    }
    std::sort(keep.begin(), keep.end());
    unsigned from = spec.net_fd >= 0 ? kNetFd + 1u : 4u;
    for (int fd : keep) {
      if (static_cast<unsigned>(fd) > from) {
        syscall(SYS_close_range, from, static_cast<unsigned>(fd) - 1, 0u);
      }
      from = static_cast<unsigned>(fd) + 1;
    }
    syscall(SYS_close_range, from, ~0u, 0u);
    runOuter(moved, filter, err_fd, uid, gid);
  }
  close(pipefd[1]);
  // SIGTERM, SIGHUP, SIGUSR1/2 sent to guard go to the agent, which decides;
  // guard ends when it does, with its audit trail flushed.
  forwardTermination(outer);
  std::string msg;
  char buf[512];
  bool rooted = false;
  for (;;) {
    ssize_t n = read(pipefd[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    msg.append(buf, static_cast<size_t>(n));
    if (!rooted && !msg.empty() && msg[0] == 'P') {
      rooted = true;
      msg.erase(0, 1);
      on_rooted();
    }
  }
  close(pipefd[0]);
  int status = 0;
  for (;;) {
    // WNOWAIT: notice the watched process's death without reaping it.
    siginfo_t info {};
    if (waitid(P_ALL, 0, &info, WEXITED | WNOWAIT) != 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    if (info.si_pid == outer) {
      while (waitpid(outer, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    if (std::find(watch.begin(), watch.end(), info.si_pid) != watch.end()) {
      if (died != nullptr) {
        *died = info.si_pid;
      }
      kill(outer, SIGKILL);  // the agent must not go on without the view or the proxy
      while (waitpid(outer, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    waitpid(info.si_pid, nullptr, 0);  // some other child of guard's
  }
  g_child = 0;
  for (int sig : {SIGTERM, SIGHUP, SIGUSR1, SIGUSR2}) {
    signal(sig, SIG_DFL);
  }
  signal(SIGINT, SIG_IGN);  // as before the session: guard ends on its own
  signal(SIGQUIT, SIG_IGN);
  if (!msg.empty() && msg[0] == 'E') {
    int step = 0;
    int e = 0;
    char what[400] = {};
    sscanf(msg.c_str() + 1, "%d:%d:%399[^\n]", &step, &e, what);
    std::string hint;
    if (static_cast<JailStep>(step) == JailStep::kUnshare) {
      std::string reason;
      userNamespacesAvailable(&reason);
      hint = "\n  hint: " + reason;
    }
    return Error(ErrorCode::kIo,
                 std::string("cannot ") + jailStepName(static_cast<JailStep>(step)) + " (" +
                     what + "): " + strerror(e) + hint,
                 e);
  }
  return exitCodeOf(status);
}

}  // namespace guard::vmhost
