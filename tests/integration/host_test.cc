// Integration tests for host mode: `guard --policy FILE --audit FILE -- CMD`
// run for real (guard::testing::guardBinary()), judged only from outside the
// session: what the host's files, canaries, sockets and processes look like
// afterwards, the audit log and the exit code. What the sandboxed program
// prints is trusted for one thing only: the secret must not appear in it.
//
// Each test builds a Workspace: a base directory holding the project (the
// working directory, read-write), a hidden "secret" directory with a canary,
// a read-only "ro" directory with another canary, and "bin" (read-only) with
// the C helpers of tests/helpers/. The base lives below /var/tmp: with
// /tmp hidden, guard cannot enter a project below /tmp (see the test
// "a project below a hidden /tmp can be entered").
//
// Every script here must stay harmless if guard ever fails open and it runs
// unconfined, as root, on the host: it touches only the workspace and the
// processes the test started (never `kill -1`, never a mount of a host path).
//
// Tags [integration][host]. The unprivileged variants run as user guardtest
// (created when missing and the suite runs as root) and skip when that user
// cannot use /dev/fuse or user namespaces.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <termios.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing.h"

extern char** environ;

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif

namespace guard::testing {
namespace {

namespace fs = std::filesystem;

// The canaries. kSecret sits in every hidden file and in the host variable
// FOO_SECRET, which no policy here lets through.
constexpr char kSecret[] = "GUARD-CANARY-SECRET-4b1e7d2f";
constexpr char kRoCanary[] = "GUARD-CANARY-READONLY-9c03aa\n";
constexpr char kUnprivUser[] = "guardtest";
constexpr char kPath[] = "/usr/local/bin:/usr/bin:/bin";

std::string guardPath() {
  std::string b = guardBinary();
  return !b.empty() && b[0] != '/' ? fs::absolute(b).string() : b;
}

bool isRoot() { return geteuid() == 0; }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    out.push_back(line);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Processes: runProgram cannot feed stdin, keep descriptors or run in the
// background, so the tests start their own children. Every child runs in its
// own process group (or session), killed when its deadline passes.
// ---------------------------------------------------------------------------

struct RunOptions {
  bool feed_input = false;  // write INPUT to stdin, then close it
  std::string input;
  int stdin_fd = -1;             // else /dev/null (or the INPUT pipe)
  bool controlling_tty = false;  // setsid() and make STDIN_FD the controlling terminal
  int timeout_ms = 30000;
};

class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    closeFds();
  }

  // start forks and execs ARGV (looked up in PATH) in CWD with exactly ENV.
  void start(const std::vector<std::string>& argv, const std::string& cwd,
             const std::vector<std::string>& env, const RunOptions& o) {
    timeout_ms_ = o.timeout_ms;
    std::vector<char*> args = cStrings(argv);
    std::vector<char*> envp = cStrings(env);
    int out[2];
    int err[2];
    int in[2] = {-1, -1};
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    REQUIRE(pipe2(err, O_CLOEXEC) == 0);
    if (o.feed_input) {
      REQUIRE(pipe2(in, O_CLOEXEC) == 0);
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(devnull >= 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      signal(SIGPIPE, SIG_DFL);
      if (o.controlling_tty) {
        setsid();
      } else {
        setpgid(0, 0);
      }
      int stdin_src = o.stdin_fd >= 0 ? o.stdin_fd : (o.feed_input ? in[0] : devnull);
      if (dup2(stdin_src, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0) {
        _exit(126);
      }
      if (o.controlling_tty && ioctl(0, TIOCSCTTY, 0) != 0) {
        _exit(126);
      }
      if (!cwd.empty() && chdir(cwd.c_str()) != 0) {
        _exit(126);
      }
      execvpe(args[0], args.data(), envp.data());
      _exit(127);
    }
    pid_ = pid;
    if (!o.controlling_tty) {
      setpgid(pid, pid);  // both sides, so a kill(-pid) never misses
    }                     // (else the child's setsid() would fail on a group it already leads)
    close(devnull);
    close(out[1]);
    close(err[1]);
    out_ = out[0];
    err_ = err[0];
    if (o.feed_input) {
      close(in[0]);
      signal(SIGPIPE, SIG_IGN);  // the child may exit without reading
      size_t off = 0;
      while (off < o.input.size()) {
        ssize_t n = write(in[1], o.input.data() + off, o.input.size() - off);
        if (n <= 0) {
          break;
        }
        off += static_cast<size_t>(n);
      }
      close(in[1]);
    }
    deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
  }

  pid_t pid() const { return pid_; }

  // finish collects stdout and stderr until both close (killing the group at
  // the deadline), then reaps the child.
  Run finish() {
    Run r;
    struct pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
    int open_fds = 2;
    char buf[65536];
    bool killed = false;
    while (open_fds > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline_ - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) {
        kill(-pid_, SIGKILL);
        killed = true;
        break;
      }
      if (poll(fds, 2, static_cast<int>(left)) < 0) {
        continue;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
          ssize_t n = read(fds[i].fd, buf, sizeof(buf));
          if (n <= 0) {
            fds[i].fd = -1;
            --open_fds;
          } else {
            (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
          }
        }
      }
    }
    closeFds();
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (killed) {
      r.err += "\n[host_test: killed at the " + std::to_string(timeout_ms_) + " ms deadline]";
    }
    return r;
  }

 private:
  void closeFds() {
    for (int* fd : {&out_, &err_}) {
      if (*fd >= 0) {
        close(*fd);
        *fd = -1;
      }
    }
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
  int timeout_ms_ = 0;
  std::chrono::steady_clock::time_point deadline_;
};

Run runChild(const std::vector<std::string>& argv, const std::string& cwd,
             const std::vector<std::string>& env, const RunOptions& o = {}) {
  Child c;
  c.start(argv, cwd, env, o);
  return c.finish();
}

// waitFor polls for PATH to exist, up to TIMEOUT_MS.
bool waitFor(const std::string& path, int timeout_ms = 15000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (exists(path)) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

void sleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// ---------------------------------------------------------------------------
// Who runs guard: the test's own user, or the unprivileged guardtest.
// ---------------------------------------------------------------------------

// kVm: the caller, with the command in a VM (guard --vm): the same checks,
// the same verdicts read from outside.
enum class As { kCaller, kUnprivileged, kVm };

struct UnprivUser {
  uid_t uid = 0;
  gid_t gid = 0;
};

// ensureUnprivUser returns guardtest, creating it when running as root; an
// empty reason means it is usable. It probes, never assumes: /dev/fuse open
// to it, fusermount3, and user namespaces.
std::string ensureUnprivUser(UnprivUser* out) {
  if (!isRoot()) {
    return "the unprivileged tests switch users and need root";
  }
  if (getpwnam(kUnprivUser) == nullptr) {
    runProgram({"useradd", "-m", kUnprivUser});
  }
  struct passwd* pw = getpwnam(kUnprivUser);
  if (pw == nullptr) {
    return std::string("no user ") + kUnprivUser + " and useradd failed";
  }
  out->uid = pw->pw_uid;
  out->gid = pw->pw_gid;
  std::vector<std::string> env = {std::string("PATH=") + kPath};
  Run dev = runProgram(
      {"runuser", "-u", kUnprivUser, "--", "test", "-r", "/dev/fuse", "-a", "-w", "/dev/fuse"}, "/",
      env);
  if (dev.status != 0) {
    return std::string("/dev/fuse is not open to ") + kUnprivUser + " (chmod 0666 /dev/fuse)";
  }
  if (runProgram({"sh", "-c", "command -v fusermount3"}, "/", env).status != 0) {
    return "fusermount3 is missing";
  }
  Run ns =
      runProgram({"runuser", "-u", kUnprivUser, "--", "unshare", "-U", "-m", "true"}, "/", env);
  if (ns.status != 0) {
    return std::string(kUnprivUser) + " cannot create user namespaces: " + ns.err;
  }
  return "";
}

// removeTree deletes DIR without descending into anything mounted below it
// (a bind mount of the same filesystem included: mount ids, not devices, are
// compared): should a session ever mount a host path onto the workspace, the
// clean-up must not delete what is mounted there.
bool mountId(const std::string& path, uint64_t* id) {
  struct statx stx {};
  if (statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) != 0 ||
      (stx.stx_mask & STATX_MNT_ID) == 0) {
    return false;
  }
  *id = stx.stx_mnt_id;
  return true;
}

void removeBelow(const std::string& dir, uint64_t mnt) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d)) {
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
        names.push_back(e->d_name);
      }
    }
    closedir(d);
  }
  for (const std::string& n : names) {
    std::string p = dir + "/" + n;
    struct stat st {};
    if (lstat(p.c_str(), &st) != 0) {
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      unlink(p.c_str());  // a file mount point refuses (EBUSY); its content is safe
      continue;
    }
    uint64_t id = 0;
    if (!mountId(p, &id) || id != mnt) {
      std::fprintf(stderr, "host_test: leaving %s: something is mounted there\n", p.c_str());
      continue;
    }
    removeBelow(p, mnt);
    rmdir(p.c_str());
  }
}

void removeTree(const std::string& dir) {
  uint64_t mnt = 0;
  if (mountId(dir, &mnt)) {
    removeBelow(dir, mnt);
    rmdir(dir.c_str());
  }
}

// ---------------------------------------------------------------------------
// Workspace: one test's world.
//
//   BASE/               0755, hidden by default (shown bare, to reach below)
//     policy.yaml audit.jsonl
//     project/          the working directory: read-write
//     secret/key        hidden, holds kSecret
//     secret/id.pem     hidden twice over
//     ro/canary         read-only, holds kRoCanary
//     bin/              read-only: the helpers
// ---------------------------------------------------------------------------

class Workspace {
 public:
  explicit Workspace(As as = As::kCaller, const std::string& parent = "") : as_(as) {
    std::string dir = parent;
    if (dir.empty()) {
      dir = access("/var/tmp", W_OK | X_OK) == 0 ? "/var/tmp" : "/tmp";
    }
    std::string tmpl = dir + "/guard-host-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    REQUIRE(mkdtemp(buf.data()) != nullptr);
    base = buf.data();
    REQUIRE(chmod(base.c_str(), 0755) == 0);
    project = base + "/project";
    secret = base + "/secret";
    ro = base + "/ro";
    bin = base + "/bin";
    policy = base + "/policy.yaml";
    audit = base + "/audit.jsonl";
    fs::create_directories(project);
    fs::create_directories(bin);
    writeText(secretKey(), std::string(kSecret) + "\n");
    writeText(secret + "/id.pem", std::string(kSecret) + "\n");
    writeText(roFile(), kRoCanary);
    plant(secretKey());
    plant(secret + "/id.pem");
    writePolicy();
    if (as == As::kVm) {
      flags = {"--vm", "--vm-memory", "512"};
    }
  }

  ~Workspace() { removeTree(base); }

  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  std::string secretKey() const { return secret + "/key"; }
  std::string roFile() const { return ro + "/canary"; }
  std::string at(const std::string& rel) const { return project + "/" + rel; }
  std::string read(const std::string& rel) const { return readFile(at(rel)); }

  // writePolicy writes the suite's policy, plus EXTRA_RULES (YAML list items
  // under filesystem.rules, each starting "    - ").
  void writePolicy(const std::string& extra_rules = "") const {
    std::string y =
        "version: 1\n"
        "layer: host-test\n"
        "filesystem:\n"
        "  default: hidden\n"
        "  rules:\n"
        "    - id: host-test.system\n"
        "      read-only: [/usr, /bin, /lib, /lib64, /etc]\n"
        "    - id: host-test.project\n"
        "      read-write: [\"{project}\"]\n"
        "    - id: host-test.secrets\n"
        "      hidden: [\"**/.env\", \"*.pem\", \"" +
        secret +
        "\"]\n"
        "    - id: host-test.readonly\n"
        "      read-only: [\"" +
        ro + "\", \"" + bin + "\"]\n" + extra_rules +
        "env:\n"
        "  default: deny\n"
        "  set: {GUARD_SET: from-policy, TERM: set-by-policy}\n"
        "  rules:\n"
        "    - allow: [PATH, HOME, LANG, TERM]\n";
    writeText(policy, y);
  }

  // plant records PATH as a host-made holder of kSecret: leaks() ignores it
  // (and every other name of the same inode).
  void plant(const std::string& path) {
    struct stat st {};
    REQUIRE(stat(path.c_str(), &st) == 0);
    planted_.insert({st.st_dev, st.st_ino});
  }

  // leaks lists files below the project holding kSecret that the host did
  // not put there: what the agent managed to copy out.
  std::vector<std::string> leaks() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(project, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      struct stat st {};
      if (lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
        continue;
      }
      if (planted_.count({st.st_dev, st.st_ino}) != 0) {
        continue;
      }
      if (contains(readFile(it->path().string()), kSecret)) {
        out.push_back(it->path().string());
      }
    }
    return out;
  }

  // handOver gives the tree to the unprivileged user, so the host's own
  // permissions would allow everything the tests try: only guard refuses.
  // handOver gives the user what is not theirs yet below the base (a chown
  // of what already is would change its ctime, which snapshots compare).
  void handOver(const UnprivUser& u) const {
    auto give = [&](const fs::path& p) {
      struct stat st {};
      REQUIRE(lstat(p.c_str(), &st) == 0);
      if (st.st_uid != u.uid || st.st_gid != u.gid) {
        REQUIRE(lchown(p.c_str(), u.uid, u.gid) == 0);
      }
    };
    for (auto& e : fs::recursive_directory_iterator(base)) {
      give(e.path());
    }
    give(base);
  }

  // helper copies helper NAME into bin/ and returns its path there, or ""
  // when it was neither built (tests/helpers/module.mk) nor can be compiled.
  std::string helper(const std::string& name) const {
    std::string dst = bin + "/" + name;
    if (exists(dst)) {
      return dst;
    }
    std::string built = fs::path(guardPath()).parent_path().string() + "/tests/helpers/" + name;
    std::error_code ec;
    if (access(built.c_str(), X_OK) == 0) {
      fs::copy_file(built, dst, ec);
    } else {
      // Not built by make: compile the source, found next to this file.
      std::string src =
          fs::path(__FILE__).parent_path().parent_path().string() + "/helpers/" + name + ".c";
      if (!exists(src)) {
        src = "tests/helpers/" + name + ".c";
      }
      std::vector<std::string> cc = {"cc", "-std=gnu11", "-O2", "-o", dst, src};
      if (name == "rawsys") {
        cc.insert(cc.begin() + 1, "-static");
      }
      Run r = runProgram(cc, "", {std::string("PATH=") + kPath});
      if (r.status != 0) {
        WARN("cannot compile helper " << name << ": " << r.err);
        return "";
      }
    }
    if (!exists(dst) || chmod(dst.c_str(), 0755) != 0) {
      return "";
    }
    if (as_ == As::kUnprivileged) {
      chown(dst.c_str(), unpriv_.uid, unpriv_.gid);
    }
    return dst;
  }

  void setUnpriv(const UnprivUser& u) { unpriv_ = u; }

  std::vector<std::string> env(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> e = {std::string("PATH=") + kPath,
                                  "HOME=" + project,
                                  "LANG=C",
                                  "TERM=dumb",
                                  "GUARD_SYSTEM_DIR=" + base + "/etc-guard",
                                  "XDG_CONFIG_HOME=" + base + "/xdg",
                                  std::string("FOO_SECRET=") + kSecret};
    e.insert(e.end(), extra.begin(), extra.end());
    return e;
  }

  // argv is the command line that runs CMD under guard, as the workspace's
  // user.
  std::vector<std::string> argv(const std::vector<std::string>& cmd) const {
    std::vector<std::string> a;
    if (as_ == As::kUnprivileged) {
      a = {"runuser", "-u", kUnprivUser, "--", "env", "-i"};
      std::vector<std::string> e = env();
      a.insert(a.end(), e.begin(), e.end());
    }
    a.push_back(guardPath());
    a.insert(a.end(), flags.begin(), flags.end());
    for (const std::string& s : {std::string("--policy"), policy, std::string("--audit"), audit,
                                 std::string("--")}) {
      a.push_back(s);
    }
    a.insert(a.end(), cmd.begin(), cmd.end());
    return a;
  }

  // guard runs `sh -c SCRIPT` in the session, in the project.
  Run guard(const std::string& script, const RunOptions& o = {}) const {
    return guardArgv({"sh", "-c", script}, o);
  }
  Run guardArgv(const std::vector<std::string>& cmd, const RunOptions& o = {}) const {
    RunOptions vo = o;
    if (as_ == As::kVm) {
      vo.timeout_ms = std::max(o.timeout_ms, 180000);  // a boot under TCG emulation
    }
    if (as_ == As::kUnprivileged) {
      handOver(unpriv_);  // what the test made since is the user's too
    }
    return runChild(argv(cmd), project, env(), vo);
  }
  void start(Child* c, const std::string& script, const RunOptions& o = {}) const {
    if (as_ == As::kUnprivileged) {
      handOver(unpriv_);
    }
    c->start(argv({"sh", "-c", script}), project, env(), o);
  }

  // auditEvents parses the audit log; malformed lines fail the test.
  std::vector<nlohmann::json> auditEvents() const {
    std::vector<nlohmann::json> out;
    for (const std::string& l : lines(readFile(audit))) {
      if (l.empty()) {
        continue;
      }
      auto j = nlohmann::json::parse(l, nullptr, false);
      CHECK_FALSE(j.is_discarded());
      if (!j.is_discarded()) {
        out.push_back(j);
      }
    }
    return out;
  }

  std::vector<std::string> flags;  // guard options before --policy
  std::string base;
  std::string project;
  std::string secret;
  std::string ro;
  std::string bin;
  std::string policy;
  std::string audit;

 private:
  As as_;
  UnprivUser unpriv_;
  std::set<std::pair<dev_t, ino_t>> planted_;
};

// noSecret checks that kSecret reached neither the output of R nor a file
// of the project the host did not put it in.
void checkNoSecret(const Workspace& w, const Run& r) {
  INFO(describe(r));
  CHECK_FALSE(contains(r.out, kSecret));
  CHECK_FALSE(contains(r.err, kSecret));
  std::vector<std::string> leaked = w.leaks();
  std::string where;
  for (const std::string& f : leaked) {
    where += "\n  " + f;
  }
  INFO("the secret was copied into:" << where);
  CHECK(leaked.empty());
}

// hostHandle computes PATH's file handle on the host, as "TYPE:HEX"; "" when
// the filesystem has none.
std::string hostHandle(const std::string& path) {
  std::vector<char> storage(sizeof(struct file_handle) + MAX_HANDLE_SZ);
  auto* fh = reinterpret_cast<struct file_handle*>(storage.data());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), fh, &mount_id, 0) != 0) {
    return "";
  }
  std::string s = std::to_string(fh->handle_type) + ":";
  char hex[3];
  for (unsigned i = 0; i < fh->handle_bytes; ++i) {
    snprintf(hex, sizeof(hex), "%02x", fh->f_handle[i]);
    s += hex;
  }
  return s;
}

// ---------------------------------------------------------------------------
// Read-only snapshots: everything about a file the host can observe, except
// its access time (reading is allowed).
// ---------------------------------------------------------------------------

struct Snapshot {
  bool present = false;
  std::string content;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  ino_t ino = 0;
  nlink_t nlink = 0;
  off_t size = 0;
  struct timespec mtime {};
  struct timespec ctime {};
  std::string xattrs;

  bool operator==(const Snapshot& o) const {
    return present == o.present && content == o.content && mode == o.mode && uid == o.uid &&
           gid == o.gid && ino == o.ino && nlink == o.nlink && size == o.size &&
           mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec &&
           ctime.tv_sec == o.ctime.tv_sec && ctime.tv_nsec == o.ctime.tv_nsec && xattrs == o.xattrs;
  }

  std::string str() const {
    std::ostringstream s;
    s << "present=" << present << " mode=" << std::oct << mode << std::dec << " uid=" << uid
      << " gid=" << gid << " ino=" << ino << " nlink=" << nlink << " size=" << size
      << " mtime=" << mtime.tv_sec << "." << mtime.tv_nsec << " ctime=" << ctime.tv_sec << "."
      << ctime.tv_nsec << " xattrs=[" << xattrs << "] content=[" << content << "]";
    return s.str();
  }
};

Snapshot snapshot(const std::string& path) {
  Snapshot s;
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    return s;
  }
  s.present = true;
  s.mode = st.st_mode;
  s.uid = st.st_uid;
  s.gid = st.st_gid;
  s.ino = st.st_ino;
  s.nlink = st.st_nlink;
  s.size = st.st_size;
  s.mtime = st.st_mtim;
  s.ctime = st.st_ctim;
  if (S_ISDIR(st.st_mode)) {
    std::set<std::string> names;
    for (auto& e : fs::directory_iterator(path)) {
      names.insert(e.path().filename().string());
    }
    for (const std::string& n : names) {
      s.content += n + "\n";
    }
  } else {
    s.content = readFile(path);
  }
  char names[4096];
  ssize_t len = llistxattr(path.c_str(), names, sizeof(names));
  for (ssize_t i = 0; i < len;) {
    std::string name(names + i);
    char value[1024];
    ssize_t vlen = lgetxattr(path.c_str(), name.c_str(), value, sizeof(value));
    s.xattrs += name + "=" + (vlen > 0 ? std::string(value, static_cast<size_t>(vlen)) : "") + ";";
    i += static_cast<ssize_t>(name.size()) + 1;
  }
  return s;
}

bool haveHostTool(const std::string& name) {
  return runProgram({"sh", "-c", "command -v " + name}, "/", {std::string("PATH=") + kPath})
             .status == 0;
}

// ===========================================================================
// Things that must work.
// ===========================================================================

void checkCoreutilsWork(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  writeText(w.at("given.txt"), "from the host\n");
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
    w.handOver(u);
  }
  Run r = w.guard(
      "set -e\n"
      "mkdir -p d/e\n"
      "echo hello > d/a\n"
      "cp d/a d/b\n"
      "mv d/b d/c\n"
      "rm d/a\n"
      "rmdir d/e\n"
      "ls d > listing\n"
      "cat given.txt d/c > joined\n"
      "echo appended >> given.txt\n"
      "cat " +
      w.roFile() + " > ro-copy\n");
  INFO(describe(r));
  CHECK(r.status == 0);
  CHECK(w.read("d/c") == "hello\n");
  CHECK_FALSE(exists(w.at("d/a")));
  CHECK_FALSE(exists(w.at("d/b")));
  CHECK_FALSE(exists(w.at("d/e")));
  CHECK(w.read("listing") == "c\n");
  CHECK(w.read("joined") == "from the host\nhello\n");
  CHECK(w.read("given.txt") == "from the host\nappended\n");
  CHECK(w.read("ro-copy") == kRoCanary);
  checkNoSecret(w, r);
  if (as == As::kUnprivileged) {
    struct stat st {};
    REQUIRE(stat(w.at("d/c").c_str(), &st) == 0);
    CHECK(st.st_uid == u.uid);  // made by the user, not by a privileged daemon
  }
}

TEST_CASE("host: sh and coreutils work in the project and their writes land on the host",
          "[integration][host]") {
  checkCoreutilsWork(As::kCaller);
}

TEST_CASE("host: git init, add, commit and status work in the project", "[integration][host]") {
  if (!haveHostTool("git")) {
    GUARD_SKIP("git is not installed");
  }
  Workspace w;
  writeText(w.at("README"), "readme\n");
  Run r = w.guard(
      "set -e\n"
      "G='git -c user.name=Guard -c user.email=guard@example.com -c init.defaultBranch=main'\n"
      "$G init -q .\n"
      "$G add README\n"
      "$G commit -q -m 'first commit'\n"
      "$G status --porcelain > status.txt\n");
  INFO(describe(r));
  CHECK(r.status == 0);
  CHECK(exists(w.at(".git/HEAD")));
  CHECK(w.read("status.txt") == "?? status.txt\n");
  std::vector<std::string> env = {std::string("PATH=") + kPath, "HOME=" + w.project};
  Run log = runProgram({"git", "-c", "safe.directory=*", "-C", w.project, "log", "--format=%s %an"},
                       w.project, env);
  INFO(describe(log));
  CHECK(log.out == "first commit Guard\n");
  Run files =
      runProgram({"git", "-c", "safe.directory=*", "-C", w.project, "ls-files"}, w.project, env);
  CHECK(files.out == "README\n");
}

TEST_CASE("host: python3 runs inside the session", "[integration][host]") {
  if (!haveHostTool("python3") || !exists("/usr/bin/python3")) {
    GUARD_SKIP("python3 is not installed in /usr/bin");
  }
  Workspace w;
  Run r = w.guardArgv({"python3", "-c",
                       "import os, sys\n"
                       "open('py.txt', 'w').write('python ok %d' % (6 * 7))\n"
                       "sys.exit(0 if os.getcwd() == " +
                           std::string("'") + w.project + "' else 5)\n"});
  INFO(describe(r));
  CHECK(r.status == 0);
  CHECK(w.read("py.txt") == "python ok 42");
}

TEST_CASE("host: node runs inside the session", "[integration][host]") {
  if (!haveHostTool("node")) {
    GUARD_SKIP("node is not installed");
  }
  Workspace w;
  Run r =
      w.guardArgv({"node", "-e", "require('fs').writeFileSync('node.txt', 'node ok ' + 6 * 7)"});
  INFO(describe(r));
  CHECK(r.status == 0);
  CHECK(w.read("node.txt") == "node ok 42");
}

void checkExitCodes(As as) {
  Workspace w(as);
  struct Case {
    const char* script;
    int status;
  };
  // In a VM each case is a boot: the ones that say most.
  std::vector<Case> cases = {{"exit 7", 7}, {"kill -TERM $$", 128 + SIGTERM},
                             {"kill -KILL $$", 128 + SIGKILL}};
  if (as != As::kVm) {
    cases.insert(cases.begin(), {{"true", 0}, {"exit 255", 255}});
  }
  std::vector<int> want;
  for (const Case& c : cases) {
    Run r = w.guard(c.script);
    INFO(c.script << "\n" << describe(r));
    CHECK(r.status == c.status);
    want.push_back(c.status);
  }
  // The audit log's exit events say the same.
  std::vector<int> codes;
  for (const auto& e : w.auditEvents()) {
    if (e.value("surface", "") == "session" && e.value("action", "") == "exit") {
      codes.push_back(e["details"].value("exit_code", -1));
    }
  }
  CHECK(codes == want);
}

TEST_CASE("host: exit codes and deaths by signal pass through guard", "[integration][host]") {
  checkExitCodes(As::kCaller);
}

TEST_CASE("host (vm): exit codes and deaths by signal pass through guard", "[integration][host][vm]") {
  GUARD_VM_REQUIRE();
  checkExitCodes(As::kVm);
}

TEST_CASE("host: stdin passes through to the command", "[integration][host]") {
  Workspace w;
  RunOptions o;
  o.feed_input = true;
  o.input = "line one\nline two\n";
  Run cat = w.guardArgv({"cat"}, o);
  INFO(describe(cat));
  CHECK(cat.status == 0);
  CHECK(cat.out == o.input);
  Run saved = w.guard("cat > stdin.txt", o);
  CHECK(saved.status == 0);
  CHECK(w.read("stdin.txt") == o.input);
}

TEST_CASE("host: only the variables the policy allows reach the command", "[integration][host]") {
  Workspace w;
  Run r = w.guard(
      "env > env.txt\n"
      "cat /proc/self/environ /proc/1/environ /proc/[0-9]*/environ > environ.txt 2>/dev/null\n"
      "true");
  INFO(describe(r));
  CHECK(r.status == 0);
  std::string env = w.read("env.txt");
  INFO(env);
  CHECK(contains(env, std::string("PATH=") + kPath + "\n"));
  CHECK(contains(env, "LANG=C\n"));
  // env.set adds variables and overrides host ones.
  CHECK(contains(env, "GUARD_SET=from-policy\n"));
  CHECK(contains(env, "TERM=set-by-policy\n"));
  CHECK_FALSE(contains(env, "TERM=dumb\n"));
  CHECK_FALSE(contains(env, "FOO_SECRET"));
  // No process of the session, guard's own PID 1 included, shows guard's
  // environment (which held the secret) in /proc/PID/environ.
  std::string environ_dump = w.read("environ.txt");
  CHECK_FALSE(contains(environ_dump, kSecret));
  CHECK_FALSE(contains(environ_dump, "FOO_SECRET"));
  CHECK_FALSE(contains(env, "GUARD_SYSTEM_DIR"));
  CHECK_FALSE(contains(env, "XDG_CONFIG_HOME"));
  checkNoSecret(w, r);
  // And the audit log records the refusal by name, never by value.
  bool denied = false;
  for (const auto& e : w.auditEvents()) {
    if (e.value("surface", "") == "env" && e.value("target", "") == "FOO_SECRET") {
      denied = e.value("decision", "") == "deny";
    }
    CHECK_FALSE(contains(e.dump(), kSecret));
  }
  CHECK(denied);
}

// ===========================================================================
// Hidden paths do not exist.
// ===========================================================================

void checkHiddenDirect(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
    w.handOver(u);
  }
  Run r = w.guard("cat " + w.secretKey() + " >> loot 2>&1\n" +    //
                  "cat " + w.secret + "/id.pem >> loot 2>&1\n" +  //
                  "ls -la " + w.secret + " >> loot 2>&1\n" +      //
                  "test -e " + w.secret + " && echo visible > secret-visible\n" + "cat " +
                  w.secretKey());
  INFO(describe(r));
  CHECK(r.status != 0);
  CHECK_FALSE(exists(w.at("secret-visible")));
  checkNoSecret(w, r);
  // The refusal is audited on the filesystem surface, and every event of the
  // session (guard's own environment decisions included) names its mode.
  bool found = false;
  const std::string mode = as == As::kVm ? "vm" : "host";
  for (const auto& e : w.auditEvents()) {
    INFO(e.dump());
    CHECK((e.contains("details") && e["details"].value("mode", "") == mode));
    if (e.value("surface", "") == "filesystem" && e.value("decision", "") == "deny" &&
        e.value("target", "").rfind(w.secret, 0) == 0) {
      found = true;
      CHECK(e.value("component", "") == "fusefs");
      CHECK(e["rule"].value("id", "") == "host-test.secrets");
    }
  }
  CHECK(found);
}

TEST_CASE("host: a hidden file cannot be read and the refusal is audited", "[integration][host]") {
  checkHiddenDirect(As::kCaller);
}

TEST_CASE("host: a hidden directory is absent from its parent's listing", "[integration][host]") {
  Workspace w;
  writeText(w.at(".env"), std::string(kSecret) + "\n");
  writeText(w.at("host.pem"), std::string(kSecret) + "\n");
  writeText(w.at("visible.txt"), "v\n");
  w.plant(w.at(".env"));
  w.plant(w.at("host.pem"));
  Run r = w.guard("ls -a " + w.base + " > base.txt; ls -a . > project.txt; find " + w.base +
                  " > find.txt 2>&1; true");
  INFO(describe(r));
  std::set<std::string> base_names;
  for (const std::string& l : lines(w.read("base.txt"))) {
    base_names.insert(l);
  }
  CHECK(base_names.count("project") == 1);
  CHECK(base_names.count("ro") == 1);
  CHECK(base_names.count("secret") == 0);
  CHECK(base_names.count("policy.yaml") == 0);
  CHECK(base_names.count("audit.jsonl") == 0);
  std::string listing = w.read("project.txt");
  CHECK(contains(listing, "visible.txt"));
  CHECK_FALSE(contains(listing, ".env"));
  CHECK_FALSE(contains(listing, "host.pem"));
  std::string found = w.read("find.txt");
  CHECK_FALSE(contains(found, "/secret"));
  CHECK_FALSE(contains(found, ".env"));
  CHECK_FALSE(contains(found, ".pem"));
  checkNoSecret(w, r);
}

void checkHiddenViaLinks(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  // Made on the host before the session: a symlink to the file, one to its
  // directory, and a hard link (same filesystem: both are below BASE).
  REQUIRE(symlink(w.secretKey().c_str(), w.at("host-symlink").c_str()) == 0);
  REQUIRE(symlink(w.secret.c_str(), w.at("host-dirlink").c_str()) == 0);
  REQUIRE(symlink("../secret/key", w.at("host-rellink").c_str()) == 0);
  REQUIRE(link(w.secretKey().c_str(), w.at("host-hardlink").c_str()) == 0);
  w.plant(w.at("host-hardlink"));
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
    w.handOver(u);
  }
  Run r = w.guard("ln -s " + w.secretKey() + " my-symlink\n" +  //
                  "ln -s ../secret/key my-rellink\n" +          //
                  "ln -s " + w.secret + " my-dirlink\n" +       //
                  "for f in my-symlink my-rellink my-dirlink/key host-symlink host-rellink "
                  "host-dirlink/key host-hardlink; do\n"
                  "  cat $f >> loot 2>&1\n"
                  "  cp $f copy-$(echo $f | tr / -) 2>/dev/null\n"
                  "done\n"
                  "ls -la host-dirlink/ my-dirlink/ >> loot 2>&1\n"
                  "ln host-hardlink my-hardlink >> loot 2>&1\n"
                  "cat my-hardlink >> loot 2>&1\n"
                  "cat host-hardlink");
  checkNoSecret(w, r);
  // The host's names are untouched.
  CHECK(readFile(w.at("host-hardlink")) == std::string(kSecret) + "\n");
  CHECK_FALSE(exists(w.at("my-hardlink")));
}

TEST_CASE("host: symlinks and a hard link made on the host or inside do not reveal a hidden file",
          "[integration][host]") {
  checkHiddenViaLinks(As::kCaller);
}

// checkLateHardLink starts a session that keeps reading "late-link" in the
// project while the host makes it, mid-session, a hard link to the hidden
// key: no read may show the key. The agent first saves its mount table to
// "mounts" in the project.
void checkLateHardLink(Workspace& w, const std::string& hidden = "") {
  const std::string target = hidden.empty() ? w.secretKey() : hidden;
  Child c;
  w.start(&c,
          "cat /proc/self/mountinfo > mounts\n"
          "touch ready\n"
          "i=0\n"
          "while [ ! -e stop ] && [ $i -lt 200 ]; do\n"
          "  cat late-link >> loot 2>/dev/null\n"
          "  cat late-link 2>/dev/null\n"
          "  i=$((i+1)); sleep 0.02\n"
          "done\n"
          "cat late-link\n");
  REQUIRE(waitFor(w.at("ready")));
  REQUIRE(link(target.c_str(), w.at("late-link").c_str()) == 0);
  w.plant(w.at("late-link"));
  sleepMs(1500);  // past the kernel's one-second entry cache, many tries
  writeText(w.at("stop"), "");
  Run r = c.finish();
  CHECK(r.status != 0);  // the last cat found nothing
  checkNoSecret(w, r);
}

TEST_CASE("host: a hard link the host makes during the session does not reveal a hidden file",
          "[integration][host]") {
  Workspace w;
  checkLateHardLink(w);
}

TEST_CASE("host: a hard link the host makes during the session to a **/.env file does not reveal it",
          "[integration][host]") {
  // The .env file has one name when the session starts; the glob hides it,
  // and the link gets a second name that no rule hides.
  Workspace w;
  writeText(w.at(".env"), std::string(kSecret) + "\n");
  w.plant(w.at(".env"));
  checkLateHardLink(w, w.at(".env"));
}

void checkHiddenViaDotDot(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  std::string rel = fs::path(w.secretKey()).lexically_relative(w.project).string();
  Run r = w.guard(
      "cat ../secret/key >> loot 2>&1\n"
      "cat " +
      w.project +
      "/../secret/key >> loot 2>&1\n"
      "cat " +
      w.project + "/../../" + fs::path(w.base).filename().string() +
      "/secret/key >> loot 2>&1\n"
      "cat /../../../" +
      w.secretKey() +
      " >> loot 2>&1\n"
      "cd .. && cat secret/key >> project/loot 2>&1\n"
      "cd " +
      w.project + " && cat ./././../secret/./key " + rel);
  INFO(describe(r));
  CHECK(r.status != 0);
  checkNoSecret(w, r);
}

TEST_CASE("host: .. traversal does not reach a hidden file", "[integration][host]") {
  checkHiddenViaDotDot(As::kCaller);
}

void checkHiddenViaProcRoot(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
    w.handOver(u);
  }
  Run r = w.guard(
      "for p in /proc/self/root /proc/1/root /proc/$$/root /proc/thread-self/root; do\n"
      "  cat $p" +
      w.secretKey() +
      " >> loot 2>&1\n"
      "  ls $p" +
      w.secret +
      " >> loot 2>&1\n"
      "done\n"
      "cat /proc/self/cwd/../secret/key >> loot 2>&1\n"
      "cat /proc/1/cwd/../secret/key >> loot 2>&1\n"
      "cat /proc/self/root" +
      w.secretKey());
  INFO(describe(r));
  CHECK(r.status != 0);
  checkNoSecret(w, r);
}

TEST_CASE("host: /proc/self/root and /proc/1/root do not reach a hidden file",
          "[integration][host]") {
  checkHiddenViaProcRoot(As::kCaller);
}

// The helpers below report on their own attempts through their exit status;
// that report is a verdict in host mode, where seccomp refuses the calls. In
// VM mode the guest kernel is the agent's own and allows them: the verdict
// there is the evidence from outside alone (no secret in the output or the
// project), which holds in both modes.
void checkFileHandles(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  std::string h = w.helper("fhandle");
  if (h.empty()) {
    GUARD_SKIP("the fhandle helper is neither built nor compilable");
  }
  std::vector<std::string> cmd = {h, w.secretKey(), w.base, "secret/key"};
  std::string handle = hostHandle(w.secretKey());
  if (!handle.empty()) {
    cmd.push_back(handle);  // a handle the host computed: no lookup needed at all
  }
  Run r = w.guardArgv(cmd);
  INFO(describe(r));
  if (as != As::kVm) {
    CHECK(r.status == 0);  // every attempt refused (the helper's own report)
  }
  checkNoSecret(w, r);
}

TEST_CASE("host: file handles cannot open a hidden file", "[integration][host]") {
  checkFileHandles(As::kCaller);
}

void checkOpenat2(As as) {
  Workspace w(as);
  std::string h = w.helper("openat2");
  if (h.empty()) {
    GUARD_SKIP("the openat2 helper is neither built nor compilable");
  }
  Run r = w.guardArgv({h, w.secretKey(), w.base, "secret/key"});
  INFO(describe(r));
  if (as != As::kVm) {
    CHECK(r.status == 0);
  }
  checkNoSecret(w, r);
}

TEST_CASE("host: openat2 with any RESOLVE flag cannot open a hidden file", "[integration][host]") {
  checkOpenat2(As::kCaller);
}

void checkIoUring(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  std::string h = w.helper("iouring");
  if (h.empty()) {
    GUARD_SKIP("the iouring helper is neither built nor compilable");
  }
  Run r = w.guardArgv({h, w.secretKey()});
  INFO(describe(r));
  if (as != As::kVm) {
    CHECK(r.status == 0);  // io_uring_setup failed
  }
  checkNoSecret(w, r);
}

TEST_CASE("host: io_uring is refused inside the session", "[integration][host]") {
  checkIoUring(As::kCaller);
}

void checkRawSyscalls(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  std::string h = w.helper("rawsys");
  if (h.empty()) {
    GUARD_SKIP("the static rawsys helper is neither built nor compilable (libc.a?)");
  }
  Run r = w.guard(h + " " + w.secret + " " + w.secretKey() + " " + w.base + " > listing.txt");
  INFO(describe(r));
  CHECK(r.status == 0);
  std::string listing = w.read("listing.txt");
  INFO(listing);
  CHECK(contains(listing, "entry " + w.base + "/project\n"));  // the helper did run
  CHECK_FALSE(contains(listing, "/secret"));
  CHECK_FALSE(contains(listing, "key"));
  checkNoSecret(w, r);
}

TEST_CASE("host: a static binary's raw open, openat and getdents64 do not see a hidden directory",
          "[integration][host]") {
  checkRawSyscalls(As::kCaller);
}

void checkLateGlobMatches(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  fs::create_directories(w.at("sub"));
  Child c;
  w.start(&c,
          "touch ready\n"
          "i=0\n"
          "while [ ! -e stop ] && [ $i -lt 200 ]; do\n"
          "  for f in .env sub/.env late.pem sub/late.pem; do cat $f >> loot 2>/dev/null; done\n"
          "  ls -a . sub >> listing\n"
          "  i=$((i+1)); sleep 0.02\n"
          "done\n");
  REQUIRE(waitFor(w.at("ready")));
  for (const char* f : {".env", "sub/.env", "late.pem", "sub/late.pem"}) {
    writeText(w.at(f), std::string(kSecret) + "\n");
    w.plant(w.at(f));
  }
  sleepMs(1500);
  writeText(w.at("stop"), "");
  Run r = c.finish();
  checkNoSecret(w, r);
  std::string listing = w.read("listing");
  CHECK(contains(listing, "ready"));
  CHECK_FALSE(contains(listing, ".env"));
  CHECK_FALSE(contains(listing, ".pem"));
  // The host's files are untouched.
  CHECK(readFile(w.at(".env")) == std::string(kSecret) + "\n");
}

TEST_CASE("host: .env and *.pem files the host creates during the session stay hidden",
          "[integration][host]") {
  checkLateGlobMatches(As::kCaller);
}

void checkNoHiddenNames(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  Run r = w.guard(
      "mkdir -p d\n"
      "echo agent > .env\n"
      "echo agent > d/.env\n"
      "echo agent > made.pem\n"
      "touch d/touched.pem\n"
      "echo plain > plain.txt\n"
      "mv plain.txt .env\n"
      "cp plain.txt d/copied.pem\n"
      "ln plain.txt linked.pem\n"
      "ln -s plain.txt sym.pem\n"
      "mkdir dir.pem\n"
      "true");
  INFO(describe(r));
  for (const char* f : {".env", "d/.env", "made.pem", "d/touched.pem", "d/copied.pem", "linked.pem",
                        "sym.pem", "dir.pem"}) {
    INFO(f);
    CHECK_FALSE(exists(w.at(f)));
  }
  CHECK(w.read("plain.txt") == "plain\n");
}

TEST_CASE("host: the command cannot create or rename anything to a .env or *.pem name",
          "[integration][host]") {
  checkNoHiddenNames(As::kCaller);
}

// ===========================================================================
// Read-only paths refuse every change.
// ===========================================================================

struct RoCase {
  const char* name;
  const char* script;  // RO is the read-only file, RODIR its directory
  bool python = false;
};

const RoCase kRoCases[] = {
    {"rename over", "echo evil > other && mv -f other \"$RO\""},
    {"rename away", "mv \"$RO\" moved"},
    {"rename within", "mv \"$RO\" \"$RODIR/renamed\""},
    {"rename the directory", "mv \"$RODIR\" \"$HOME/rodir\""},
    {"hard link from", "ln \"$RO\" hardlink && echo evil >> hardlink"},
    {"hard link into", "echo evil > planted && ln planted \"$RODIR/planted\""},
    {"truncate -s0", "truncate -s0 \"$RO\""},
    {"O_TRUNC", ": > \"$RO\""},
    {"chmod", "chmod 0777 \"$RO\""},
    {"chown", "chown $(id -u):$(id -g) \"$RO\""},
    {"touch -d", "touch -d '2001-02-03 04:05:06' \"$RO\""},
    {"touch", "touch \"$RO\""},
    {"unlink", "rm -f \"$RO\""},
    {"append", "echo evil >> \"$RO\""},
    {"overwrite", "echo evil > \"$RO\""},
    {"dd conv=notrunc", "echo evil | dd of=\"$RO\" conv=notrunc 2>/dev/null"},
    {"create in directory", "echo evil > \"$RODIR/new\""},
    {"mkdir in directory", "mkdir \"$RODIR/newdir\""},
    {"symlink in directory", "ln -s /etc/passwd \"$RODIR/sym\""},
    {"rm -rf directory", "rm -rf \"$RODIR\""},
    {"chmod directory", "chmod 0777 \"$RODIR\""},
    {"setxattr",
     "python3 -c 'import os,sys; os.setxattr(sys.argv[1], \"user.evil\", b\"1\")' \"$RO\"", true},
    {"removexattr",
     "python3 -c 'import os,sys; os.removexattr(sys.argv[1], \"user.keep\")' \"$RO\"", true},
    {"writable shared mmap",
     "python3 - \"$RO\" <<'EOF'\n"
     "import mmap, os, sys\n"
     "try:\n"
     "    fd = os.open(sys.argv[1], os.O_RDWR)\n"
     "except OSError:\n"
     "    sys.exit(3)\n"
     "m = mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE)\n"
     "m[0:4] = b'EVIL'\n"
     "m.flush()\n"
     "EOF",
     true},
};

void checkReadOnly(As as, const UnprivUser& u, const std::set<std::string>& only) {
  bool python = exists("/usr/bin/python3");
  for (const RoCase& c : kRoCases) {
    if (!only.empty() && only.count(c.name) == 0) {
      continue;
    }
    if (c.python && !python) {
      WARN("skipping read-only case " << c.name << ": no /usr/bin/python3");
      continue;
    }
    Workspace w(as);
    if (as == As::kUnprivileged) {
      w.setUnpriv(u);
      w.handOver(u);  // the host's permissions would allow every change
    }
    bool has_xattr = lsetxattr(w.roFile().c_str(), "user.keep", "1", 1, 0) == 0;
    Snapshot file_before = snapshot(w.roFile());
    Snapshot dir_before = snapshot(w.ro);
    REQUIRE(file_before.present);
    std::string script = std::string("RO=") + w.roFile() + "; RODIR=" + w.ro + "\n" + c.script;
    Run r = w.guard(script);
    INFO("case: " << c.name << "\n" << describe(r));
    CHECK(r.status != 0);  // the command itself failed
    if (c.name == std::string("writable shared mmap")) {
      CHECK(r.status == 3);  // already the read-write open failed
    }
    Snapshot file_after = snapshot(w.roFile());
    Snapshot dir_after = snapshot(w.ro);
    INFO("file before: " << file_before.str() << "\nfile after:  " << file_after.str());
    INFO("dir before: " << dir_before.str() << "\ndir after:  " << dir_after.str());
    CHECK(file_after == file_before);
    CHECK(dir_after == dir_before);
    CHECK(readFile(w.roFile()) == kRoCanary);
    if (has_xattr) {
      CHECK(contains(file_after.xattrs, "user.keep=1"));
    }
    CHECK_FALSE(exists(w.at("rodir")));
    CHECK_FALSE(exists(w.at("moved")));
  }
}

TEST_CASE("host: read-only files and directories refuse every change", "[integration][host]") {
  checkReadOnly(As::kCaller, {}, {});
}

void checkRenameAboveReadOnly(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  // The shape of the default policy's "{project}/.git/hooks".
  w.writePolicy(
      "    - id: host-test.project-readonly\n"
      "      read-only: [\"{project}/outer/inner\"]\n");
  writeText(w.at("outer/inner/guarded.txt"), kRoCanary);
  Snapshot before = snapshot(w.at("outer/inner/guarded.txt"));
  Run r = w.guard(
      "echo evil >> outer/inner/guarded.txt\n"
      "mv outer outer2\n"
      "sleep 1.5\n"  // past the kernel's cached verdict of the old names
      "echo evil >> outer2/inner/guarded.txt\n"
      "echo evil > outer2/inner/planted\n"
      "mv outer2 outer\n"
      "true");
  INFO(describe(r));
  std::string where = exists(w.at("outer")) ? "outer" : "outer2";
  Snapshot after = snapshot(w.at(where + "/inner/guarded.txt"));
  INFO("before: " << before.str() << "\nafter:  " << after.str());
  CHECK(readFile(w.at(where + "/inner/guarded.txt")) == kRoCanary);
  CHECK_FALSE(exists(w.at(where + "/inner/planted")));
}

TEST_CASE("host: renaming a directory above a read-only path does not make it writable",
          "[integration][host]") {
  checkRenameAboveReadOnly(As::kCaller);
}

void checkRenameAboveHidden(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  w.writePolicy(
      "    - id: host-test.project-hidden\n"
      "      hidden: [\"{project}/conf/secret.txt\"]\n");
  writeText(w.at("conf/secret.txt"), std::string(kSecret) + "\n");
  writeText(w.at("conf/public.txt"), "public\n");
  w.plant(w.at("conf/secret.txt"));
  Run r = w.guard(
      "cat conf/secret.txt >> loot 2>&1\n"
      "mv conf conf2\n"
      "cat conf2/secret.txt >> loot 2>&1\n"
      "cp conf2/secret.txt stolen 2>/dev/null\n"
      "mv conf2 conf\n"
      "cat conf/public.txt");
  checkNoSecret(w, r);
}

TEST_CASE("host: renaming a directory above a hidden path does not reveal it",
          "[integration][host]") {
  checkRenameAboveHidden(As::kCaller);
}

void checkExchangeAboveProtected(As as, const UnprivUser& u = {}) {
  // renameat2(RENAME_EXCHANGE) moves both objects: a plain file swapped with
  // a directory carries the directory to the file's name, away from the
  // rules on the paths below it, unless the view judges both moves. The
  // directory is named etc, so that a view which lost track of where it
  // went and judged it as /etc would show what is below it.
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
  }
  w.writePolicy(
      "    - id: host-test.project-hidden\n"
      "      hidden: [\"{project}/etc/secret.txt\"]\n"
      "    - id: host-test.project-hooks\n"
      "      read-only: [\"{project}/repo/hooks\"]\n");
  writeText(w.at("etc/secret.txt"), std::string(kSecret) + "\n");
  writeText(w.at("repo/hooks/pre-commit"), kRoCanary);
  w.plant(w.at("etc/secret.txt"));
  std::string h = w.helper("exchange");
  REQUIRE_FALSE(h.empty());
  Run r = w.guard(
      "touch f g\n" +
      h + " f etc; echo etc-swap=$?\n"
      "cat f/secret.txt >> loot 2>&1; cp f/secret.txt stolen 2>/dev/null; ls f\n" +
      h + " etc f\n" +
      h + " g repo; echo repo-swap=$?\n"
      "echo changed > g/hooks/pre-commit 2>/dev/null\n"
      "echo added > g/hooks/post-commit 2>/dev/null\n" +
      h + " repo g\n"
      "ls etc repo/hooks");
  INFO(describe(r));
  checkNoSecret(w, r);
  CHECK(w.read("repo/hooks/pre-commit") == kRoCanary);
  CHECK_FALSE(exists(w.at("repo/hooks/post-commit")));
  CHECK(exists(w.at("etc/secret.txt")));  // everything is where it was
  CHECK(contains(r.out, "etc-swap=1"));
  CHECK(contains(r.out, "repo-swap=1"));
}

TEST_CASE("host: exchanging a file with a directory above protected paths is refused",
          "[integration][host]") {
  checkExchangeAboveProtected(As::kCaller);
}

TEST_CASE("host: a hard link made before the session to a **/.env file does not reveal it",
          "[integration][host]") {
  Workspace w;
  writeText(w.at(".env"), std::string(kSecret) + "\n");
  REQUIRE(link(w.at(".env").c_str(), w.at("env-backup").c_str()) == 0);
  w.plant(w.at(".env"));
  Run r = w.guard("cat env-backup >> loot 2>&1; cp env-backup stolen; cat env-backup");
  checkNoSecret(w, r);
}

// checkCredentialSources: a credential read from a file lying in a tree the
// agent may read and write: the file, a symbolic link the policy names as the
// source (and the file it points at), and a hard link made before the session
// show nothing, and the agent can neither copy nor replace them.
void checkCredentialSources(As as) {
  Workspace w(as);
  writeText(w.at("tokens/gh"), std::string(kSecret) + "\n");
  w.plant(w.at("tokens/gh"));
  REQUIRE(link(w.at("tokens/gh").c_str(), w.at("gh-backup").c_str()) == 0);
  writeText(w.at("keys/real-npm"), std::string(kSecret) + "-npm\n");
  w.plant(w.at("keys/real-npm"));
  REQUIRE(symlink("keys/real-npm", w.at("npm-token").c_str()) == 0);
  // "via/../pip" names deep/pip: the kernel follows the link before "..".
  writeText(w.at("deep/pip"), std::string(kSecret) + "-pip\n");
  w.plant(w.at("deep/pip"));
  REQUIRE(mkdir(w.at("deep/in").c_str(), 0755) == 0);
  REQUIRE(symlink("deep/in", w.at("via").c_str()) == 0);
  w.writePolicy();
  std::string y = readFile(w.policy);
  y += "credentials:\n"
       "  - name: gh\n"
       "    source: {file: \"" + w.at("tokens/gh") + "\"}\n"
       "    variable: GH_TOKEN\n"
       "    destinations: [api.github.com]\n"
       "  - name: npm\n"
       "    source: {file: \"" + w.at("npm-token") + "\"}\n"
       "    variable: NPM_TOKEN\n"
       "    destinations: [registry.npmjs.org]\n"
       "  - name: pip\n"
       "    source: {file: \"" + w.at("via/../pip") + "\"}\n"
       "    variable: PIP_TOKEN\n"
       "    destinations: [pypi.org]\n";
  writeText(w.policy, y);
  Run r = w.guard(
      "for f in tokens/gh gh-backup npm-token keys/real-npm deep/pip; do cat $f >> loot 2>&1; cp $f "
      "copy-$(basename $f) 2>>loot; done; ls tokens keys >> loot 2>&1; "
      "echo replaced > tokens/gh; echo replaced > keys/real-npm; "
      "cat tokens/gh gh-backup keys/real-npm");
  checkNoSecret(w, r);
  CHECK(readFile(w.at("tokens/gh")) == std::string(kSecret) + "\n");
  CHECK(readFile(w.at("keys/real-npm")) == std::string(kSecret) + "-npm\n");
  CHECK(readFile(w.at("deep/pip")) == std::string(kSecret) + "-pip\n");
  // The agent got placeholders, and the denials name the credentials' rules.
  bool gh = false;
  bool npm = false;
  for (const nlohmann::json& e : w.auditEvents()) {
    if (e.value("surface", "") == "filesystem" && e.value("decision", "") == "deny") {
      std::string rule = e["rule"].value("id", "");
      gh |= rule == "host-test.credentials.gh.source";
      npm |= rule == "host-test.credentials.npm.source";
    }
  }
  CHECK(gh);
  CHECK(npm);
}

TEST_CASE("host: a credential's source file is hidden, under any name, whatever the rules allow",
          "[integration][host]") {
  checkCredentialSources(As::kCaller);
}

// ===========================================================================
// No way out of the namespaces.
// ===========================================================================

void checkMountRefused(As as, const UnprivUser& u = {}) {
  Workspace w(as);
  if (as == As::kUnprivileged) {
    w.setUnpriv(u);
    w.handOver(u);
  }
  struct Case {
    const char* name;
    const char* script;
  };
  const Case cases[] = {
      {"mount tmpfs", "mkdir -p m && mount -t tmpfs none m"},
      {"bind mount", "mkdir -p m src && mount --bind src m"},
      {"unshare -m", "unshare -m true"},
      {"unshare -U", "unshare -U true"},
      {"unshare -r mount", "unshare -r -m sh -c 'mount -t tmpfs none m'"},
      {"unshare -n", "unshare -n true"},
      {"unshare -p", "unshare -p -f true"},
  };
  for (const Case& c : cases) {
    Run r = w.guard(c.script);
    INFO(c.name << "\n" << describe(r));
    CHECK(r.status != 0);
    // Had it worked, the mount would be on the host: take it away again (the
    // scripts only ever mount onto the project's "m").
    if (umount2(w.at("m").c_str(), MNT_DETACH) == 0) {
      FAIL_CHECK("a mount made in the session appeared on the host at " << w.at("m"));
    }
  }
}

TEST_CASE("host: mount and new namespaces are refused", "[integration][host]") {
  checkMountRefused(As::kCaller);
}

bool processAlive(pid_t pid, char* state) {
  std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  if (stat.empty() || paren == std::string::npos || paren + 2 >= stat.size()) {
    return false;
  }
  *state = stat[paren + 2];
  return *state != 'Z' && *state != 'X';
}

TEST_CASE("host: signals sent to guard reach the agent, SIGINT and SIGQUIT included",
          "[integration][host]") {
  // A CI runner cancels a step with kill -INT (or TERM) to guard's pid: the
  // agent must hear it. The terminal's own ^C reaches the agent directly
  // (same foreground group), so guard passes on only what kill() sent.
  for (int sig : {SIGINT, SIGQUIT, SIGTERM}) {
    Workspace w;
    Child c;
    w.start(&c,
            "trap 'echo got > got-signal; exit 3' INT QUIT TERM\n"
            "touch ready\n"
            "i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n");
    REQUIRE(waitFor(w.at("ready")));
    REQUIRE(kill(c.pid(), sig) == 0);
    Run r = c.finish();
    INFO("signal " << sig << "\n" << describe(r));
    CHECK(r.status == 3);
    CHECK(w.read("got-signal") == "got\n");
  }
}

TEST_CASE("host: on a terminal the agent gets one of its size, and Ctrl-C reaches it once",
          "[integration][host]") {
  Workspace w;
  std::vector<std::string> argv = w.argv(
      {"sh", "-c",
       "n=0; trap 'n=$((n+1)); echo got-sigint-$n' INT\n"
       "test -t 0 && test -t 1 && echo on-a-tty; stty size\n"
       "echo ready; i=0; while [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done\n"
       "echo done-$n; exit 3"});
  std::vector<std::string> env = w.env();
  std::vector<char*> args = cStrings(argv);
  std::vector<char*> envp = cStrings(env);
  int master = -1;
  struct winsize ws = {};
  ws.ws_row = 30;
  ws.ws_col = 100;
  pid_t pid = forkpty(&master, nullptr, nullptr, &ws);
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (chdir(w.project.c_str()) != 0) {
      _exit(126);
    }
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  std::string out;
  bool sent = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    struct pollfd p = {master, POLLIN, 0};
    if (poll(&p, 1, 200) > 0) {
      char buf[4096];
      ssize_t n = read(master, buf, sizeof(buf));
      if (n <= 0) {
        break;  // EIO: guard and everything on the terminal is gone
      }
      out.append(buf, static_cast<size_t>(n));
    }
    if (!sent && contains(out, "ready")) {
      sent = true;
      REQUIRE(write(master, "\x03", 1) == 1);  // what the terminal sends for Ctrl-C
    }
  }
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  close(master);
  INFO(out);
  CHECK(contains(out, "on-a-tty"));
  CHECK(contains(out, "30 100"));
  CHECK(sent);
  CHECK(contains(out, "got-sigint-1"));
  CHECK_FALSE(contains(out, "got-sigint-2"));  // not once more, passed on by guard
  CHECK(contains(out, "done-1"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
}

TEST_CASE("host: the command cannot signal or trace a host process", "[integration][host]") {
  Workspace w;
  Child victim;
  victim.start({"sleep", "100"}, "/", {std::string("PATH=") + kPath}, {});
  pid_t pid = victim.pid();
  std::string p = std::to_string(pid);
  sleepMs(50);
  // Never `kill -1` here: should the PID namespace ever fail open, the test
  // must not take the machine down with it.
  std::string script = "kill -9 " + p + "; kill -STOP " + p + "; kill -9 -" + p + "; true\n";
  std::string h = w.helper("ptrace_attach");
  if (!h.empty()) {
    script += h + " " + p + " 1 > ptrace.txt 2>&1; echo $? > ptrace.status\n";
  }
  if (haveHostTool("strace")) {
    script += "timeout 5 strace -p " + p + " > strace.txt 2>&1; echo $? > strace.status\n";
  }
  Run r = w.guard(script);
  INFO(describe(r) << "\nptrace: " << w.read("ptrace.txt") << "\nstrace: " << w.read("strace.txt"));
  char state = '?';
  CHECK(processAlive(pid, &state));
  CHECK(state != 'T');
  CHECK(state != 't');
  std::string status = readFile("/proc/" + p + "/status");
  CHECK(contains(status, "TracerPid:\t0\n"));
  if (!h.empty()) {
    CHECK(w.read("ptrace.status") == "0\n");  // every attach refused
  }
  if (haveHostTool("strace")) {
    CHECK(w.read("strace.status") != "0\n");
  }
}

TEST_CASE("host: TIOCSTI cannot push input into the controlling terminal", "[integration][host]") {
  Workspace w;
  std::string h = w.helper("tiocsti");
  if (h.empty()) {
    GUARD_SKIP("the tiocsti helper is neither built nor compilable");
  }
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(master >= 0);
  REQUIRE(grantpt(master) == 0);
  REQUIRE(unlockpt(master) == 0);
  std::string slave_name = ptsname(master);
  int slave = open(slave_name.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  REQUIRE(slave >= 0);
  struct termios t {};
  REQUIRE(tcgetattr(slave, &t) == 0);
  cfmakeraw(&t);
  REQUIRE(tcsetattr(slave, TCSANOW, &t) == 0);
  // drain reads what was pushed; the tty delivers it from a work queue, so
  // wait a little for the first byte.
  auto drain = [&] {
    std::string got;
    char buf[256];
    struct pollfd p = {slave, POLLIN, 0};
    poll(&p, 1, 300);
    for (;;) {
      ssize_t n = read(slave, buf, sizeof(buf));
      if (n <= 0) {
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  };
  RunOptions o;
  o.stdin_fd = slave;
  o.controlling_tty = true;
  o.timeout_ms = 10000;
  // Control: the same helper outside guard, on the same terminal.
  Run control = runChild({h, "Q"}, w.project, w.env(), o);
  std::string pushed = drain();
  bool kernel_allows = control.status == 1 && pushed == "Q";
  INFO("control run: " << describe(control) << "\nread back: [" << pushed << "]");
  if (!kernel_allows) {
    WARN(
        "outside guard TIOCSTI did not push either (dev.tty.legacy_tiocsti=0?), so the check "
        "below shows only that the ioctl fails under guard too\ncontrol run: "
        << describe(control) << "\nread back: [" << pushed << "]");
  }
  Run r = runChild(w.argv({h, "echo pwned > /tmp/tiocsti\n"}), w.project, w.env(), o);
  std::string typed = drain();
  INFO("guarded run: " << describe(r) << "\nread back: [" << typed << "]");
  CHECK(r.status == 0);  // EPERM
  CHECK(typed.empty());
  close(slave);
  close(master);
}

TEST_CASE("host: the session has only its own loopback network", "[integration][host]") {
  if (!exists("/usr/bin/python3")) {
    GUARD_SKIP("python3 is not installed in /usr/bin");
  }
  Workspace w;
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  struct sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(listen(listener, 8) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  std::string port = std::to_string(ntohs(addr.sin_port));
  Run r = w.guard(
      "cat /proc/net/dev > netdev.txt\n"
      "python3 - <<'EOF'\n"
      "import socket, sys\n"
      "s = socket.socket()\n"
      "s.settimeout(3)\n"
      "try:\n"
      "    s.connect(('127.0.0.1', " +
      port +
      "))\n"
      "    s.sendall(b'hello from the jail')\n"
      "    open('connected', 'w').write('yes')\n"
      "except OSError as e:\n"
      "    sys.exit(3)\n"
      "EOF\n");
  INFO(describe(r));
  CHECK(r.status == 3);  // the connect failed
  CHECK_FALSE(exists(w.at("connected")));
  int conn = accept(listener, nullptr, nullptr);
  int e = errno;
  CHECK(conn < 0);
  CHECK((e == EAGAIN || e == EWOULDBLOCK));
  if (conn >= 0) {
    close(conn);
  }
  close(listener);
  std::set<std::string> ifaces;
  for (const std::string& l : lines(w.read("netdev.txt"))) {
    size_t colon = l.find(':');
    if (colon != std::string::npos && l.find('|') == std::string::npos) {
      std::string name = l.substr(0, colon);
      name.erase(0, name.find_first_not_of(' '));
      ifaces.insert(name);
    }
  }
  CHECK(ifaces == std::set<std::string>{"lo"});
}

TEST_CASE("host: unix sockets the host listens on are unreachable, in the project or abstract",
          "[integration][host]") {
  if (!exists("/usr/bin/python3")) {
    GUARD_SKIP("python3 is not installed in /usr/bin");
  }
  Workspace w;
  int path_sock = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int abstract_sock = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(path_sock >= 0);
  REQUIRE(abstract_sock >= 0);
  struct sockaddr_un a {};
  a.sun_family = AF_UNIX;
  std::string sock_path = w.at("sock");
  REQUIRE(sock_path.size() < sizeof(a.sun_path));
  strcpy(a.sun_path, sock_path.c_str());
  REQUIRE(bind(path_sock, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(chmod(sock_path.c_str(), 0777) == 0);
  REQUIRE(listen(path_sock, 8) == 0);
  std::string abstract_name = "guard-host-test-" + std::to_string(getpid());
  struct sockaddr_un b {};
  b.sun_family = AF_UNIX;
  memcpy(b.sun_path + 1, abstract_name.data(), abstract_name.size());
  socklen_t blen =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + abstract_name.size());
  REQUIRE(bind(abstract_sock, reinterpret_cast<sockaddr*>(&b), blen) == 0);
  REQUIRE(listen(abstract_sock, 8) == 0);
  Run r = w.guard(
      "python3 - <<'EOF'\n"
      "import socket, sys\n"
      "ok = 0\n"
      "for addr in ['sock', '" +
      sock_path + "', '\\0" + abstract_name +
      "']:\n"
      "    s = socket.socket(socket.AF_UNIX)\n"
      "    s.settimeout(3)\n"
      "    try:\n"
      "        s.connect(addr)\n"
      "        s.sendall(b'hello')\n"
      "        ok += 1\n"
      "    except OSError as e:\n"
      "        pass\n"
      "sys.exit(10 + ok)\n"
      "EOF\n");
  INFO(describe(r));
  CHECK(r.status == 10);  // no connect succeeded
  for (int s : {path_sock, abstract_sock}) {
    int conn = accept(s, nullptr, nullptr);
    CHECK(conn < 0);
    if (conn >= 0) {
      close(conn);
    }
    close(s);
  }
}

TEST_CASE("host: descriptors the caller leaks do not reach the command", "[integration][host]") {
  Workspace w;
  // Without O_CLOEXEC: guard inherits these; the session must not.
  int low = open(w.secretKey().c_str(), O_RDONLY);
  REQUIRE(low >= 0);
  int high = fcntl(low, F_DUPFD, 42);
  REQUIRE(high >= 42);
  std::string fds = std::to_string(low) + " " + std::to_string(high);
  Run r = w.guard(
      "ls /proc/self/fd > fds.txt\n"
      "for n in " +
      fds +
      "; do cat /proc/self/fd/$n >> loot 2>&1; done\n"
      "cat /proc/self/fd/" +
      std::to_string(high));
  close(low);
  close(high);
  INFO(describe(r));
  std::set<std::string> seen;
  for (const std::string& l : lines(w.read("fds.txt"))) {
    seen.insert(l);
  }
  // 0-2, plus the descriptor ls opened to read the directory.
  CHECK(seen.count("0") == 1);
  CHECK(seen.count("1") == 1);
  CHECK(seen.count("2") == 1);
  CHECK(seen.size() <= 4);
  CHECK(seen.count(std::to_string(high)) == 0);
  checkNoSecret(w, r);
}

TEST_CASE("host: guard's setup processes inside the session hold only stdio and no environment",
          "[integration][host]") {
  // The jail's outer process and its init live in the session's user
  // namespace for as long as the agent runs. Judged from the host: their
  // descriptors (none may be the error pipe, the proxy's socket, a layer's
  // memfd or anything the caller leaked) and their /proc/PID/environ.
  Workspace w;
  int leaked = open(w.secretKey().c_str(), O_RDONLY);  // no O_CLOEXEC: guard inherits it
  REQUIRE(leaked >= 0);
  Child c;
  w.start(&c, "touch ready\nwhile [ ! -e go ]; do sleep 0.02; done\n");
  close(leaked);
  REQUIRE(waitFor(w.at("ready")));
  auto field = [](const std::string& pid, int n) {
    std::string stat = readFile("/proc/" + pid + "/stat");
    size_t at = stat.rfind(')');  // the command name may hold spaces
    std::istringstream rest(at == std::string::npos ? "" : stat.substr(at + 2));
    std::string f;
    for (int i = 3; i <= n && rest >> f; ++i) {
    }
    return f;
  };
  auto userNs = [](const std::string& pid) {
    std::error_code ec;
    return fs::read_symlink("/proc/" + pid + "/ns/user", ec).string();
  };
  // guard's descendants, by parent links.
  std::set<std::string> tree = {std::to_string(c.pid())};
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& entry : fs::directory_iterator("/proc")) {
      std::string pid = entry.path().filename();
      if (pid.find_first_not_of("0123456789") == std::string::npos && tree.count(pid) == 0 &&
          tree.count(field(pid, 4)) == 1) {
        tree.insert(pid);
        grew = true;
      }
    }
  }
  // The setup processes run guard's code in another user namespace than
  // guard's (the proxy and the view stay in guard's).
  std::string host_ns = userNs(std::to_string(c.pid()));
  std::vector<std::string> setup;
  for (const std::string& pid : tree) {
    if (readFile("/proc/" + pid + "/comm") == "guard\n" && userNs(pid) != host_ns) {
      setup.push_back(pid);
    }
  }
  CHECK(setup.size() == 2);  // the outer process and init
  for (const std::string& pid : setup) {
    std::set<std::string> fds;
    for (const auto& fd : fs::directory_iterator("/proc/" + pid + "/fd")) {
      fds.insert(fd.path().filename());
    }
    INFO("process " << pid << " holds " << fds.size() << " descriptors");
    CHECK(fds == std::set<std::string>{"0", "1", "2"});
    std::string env = readFile("/proc/" + pid + "/environ");
    CHECK_FALSE(contains(env, kSecret));
    CHECK_FALSE(contains(env, "FOO_SECRET"));
  }
  writeText(w.at("go"), "");
  Run r = c.finish();
  INFO(describe(r));
  CHECK(r.status == 0);
}

TEST_CASE("host: a read-write path that does not exist yet can be created, and nothing beside it",
          "[integration][host]") {
  // An agent's own state (~/.claude.json, ~/.codex) is often missing before
  // its first run, below a read-only home: the view allows creating exactly
  // those names, and Landlock must not refuse them underneath.
  Workspace w;
  w.writePolicy("    - id: host-test.later\n"
                "      read-write: [\"" + w.ro + "/later-dir\", \"" + w.ro + "/later-file\"]\n");
  Run r = w.guard("mkdir " + w.ro + "/later-dir && echo in > " + w.ro + "/later-dir/f\n"
                  "echo file > " + w.ro + "/later-file\n"
                  "echo no > " + w.ro + "/other 2>/dev/null; mkdir " + w.ro + "/other-dir 2>/dev/null\n"
                  "true");
  INFO(describe(r));
  CHECK(r.status == 0);
  CHECK(readFile(w.ro + "/later-dir/f") == "in\n");
  CHECK(readFile(w.ro + "/later-file") == "file\n");
  CHECK_FALSE(exists(w.ro + "/other"));
  CHECK_FALSE(exists(w.ro + "/other-dir"));
}

// ===========================================================================
// guard's own setup.
// ===========================================================================

TEST_CASE("host: a project below a hidden /tmp can be entered", "[integration][host]") {
  // The suite's policy hides /tmp (default hidden, /tmp not listed); the
  // project is below it, so /tmp must be shown bare, as other hidden
  // ancestors of the project are.
  Workspace w(As::kCaller, "/tmp");
  Run r = w.guard("echo ok > made-here");
  INFO(describe(r));
  CHECK(r.status == 0);
  CHECK(w.read("made-here") == "ok\n");
}

// ===========================================================================
// The same, as an unprivileged user.
// ===========================================================================

TEST_CASE("host (unprivileged): sh and coreutils work and their writes land on the host",
          "[integration][host]") {
  UnprivUser u;
  std::string why = ensureUnprivUser(&u);
  if (!why.empty()) {
    GUARD_SKIP(why);
  }
  checkCoreutilsWork(As::kUnprivileged, u);
}

TEST_CASE("host (unprivileged): hidden files stay hidden directly, via links and /proc roots",
          "[integration][host]") {
  UnprivUser u;
  std::string why = ensureUnprivUser(&u);
  if (!why.empty()) {
    GUARD_SKIP(why);
  }
  checkHiddenDirect(As::kUnprivileged, u);
  checkHiddenViaLinks(As::kUnprivileged, u);
  checkHiddenViaProcRoot(As::kUnprivileged, u);
}

TEST_CASE("host (unprivileged): read-only files refuse rename and truncate",
          "[integration][host]") {
  UnprivUser u;
  std::string why = ensureUnprivUser(&u);
  if (!why.empty()) {
    GUARD_SKIP(why);
  }
  checkReadOnly(As::kUnprivileged, u,
                {"rename over", "rename away", "truncate -s0", "O_TRUNC", "append"});
}

TEST_CASE("host (unprivileged): hidden files stay hidden via .. and file handles",
          "[integration][host]") {
  UnprivUser u;
  std::string why = ensureUnprivUser(&u);
  if (!why.empty()) {
    GUARD_SKIP(why);
  }
  checkHiddenViaDotDot(As::kUnprivileged, u);
  checkFileHandles(As::kUnprivileged, u);
}

TEST_CASE("host (unprivileged): io_uring and raw system calls reach nothing hidden",
          "[integration][host]") {
  UnprivUser u;
  std::string why = ensureUnprivUser(&u);
  if (!why.empty()) {
    GUARD_SKIP(why);
  }
  checkIoUring(As::kUnprivileged, u);
  checkRawSyscalls(As::kUnprivileged, u);
}

TEST_CASE("host (unprivileged): files matching a hiding glob late, and hidden names, stay hidden",
          "[integration][host]") {
  UnprivUser u;
  std::string why = ensureUnprivUser(&u);
  if (!why.empty()) {
    GUARD_SKIP(why);
  }
  checkLateGlobMatches(As::kUnprivileged, u);
  checkNoHiddenNames(As::kUnprivileged, u);
}

TEST_CASE("host (unprivileged): renaming or exchanging a directory above protected paths changes nothing",
          "[integration][host]") {
  UnprivUser u;
  std::string why = ensureUnprivUser(&u);
  if (!why.empty()) {
    GUARD_SKIP(why);
  }
  checkRenameAboveReadOnly(As::kUnprivileged, u);
  checkRenameAboveHidden(As::kUnprivileged, u);
  checkExchangeAboveProtected(As::kUnprivileged, u);
}

TEST_CASE("host (unprivileged): mount and new namespaces are refused", "[integration][host]") {
  UnprivUser u;
  std::string why = ensureUnprivUser(&u);
  if (!why.empty()) {
    GUARD_SKIP(why);
  }
  checkMountRefused(As::kUnprivileged, u);
}

TEST_CASE("host: if the filesystem view dies the agent loses access and guard ends the session",
          "[integration][host]") {
  Workspace w;
  Child c;
  w.start(&c,
          "touch ready\n"
          "i=0\n"
          "while [ $i -lt 300 ]; do\n"
          "  ls / >/dev/null 2>&1 && echo seen >> project-log\n"
          "  i=$((i+1)); sleep 0.02\n"
          "done\n");
  REQUIRE(waitFor(w.at("ready")));
  // guard's children are the view process and the jail; the view is the
  // one holding /dev/fuse.
  pid_t view = -1;
  for (int tries = 0; tries < 50 && view < 0; ++tries) {
    for (const auto& entry : fs::directory_iterator("/proc")) {
      std::string pid = entry.path().filename();
      if (pid.find_first_not_of("0123456789") != std::string::npos) {
        continue;
      }
      std::string fds = "/proc/" + pid + "/fd";
      std::error_code ec;
      for (const auto& fd : fs::directory_iterator(fds, ec)) {
        std::error_code ec2;
        if (fs::read_symlink(fd.path(), ec2) == "/dev/fuse") {
          std::string status = readFile("/proc/" + pid + "/cmdline");
          if (status.find(w.audit) != std::string::npos) {
            view = std::stoi(pid);
          }
          break;
        }
      }
      if (view > 0) {
        break;
      }
    }
    if (view < 0) {
      sleepMs(50);
    }
  }
  REQUIRE(view > 0);
  REQUIRE(kill(view, SIGKILL) == 0);
  Run r = c.finish();
  INFO(r.err);
  CHECK(r.status == 1);  // guard's own failure, not the agent's status
  CHECK(r.err.find("the filesystem view died") != std::string::npos);
  std::string audit = readFile(w.audit);
  CHECK(audit.find("\"decision\":\"internal_error\"") != std::string::npos);
}

// ---------------------------------------------------------------------------
// Bind mounts: trees that one rule decides alike are bound from the host
// instead of served by the view (fusefs::planBinds). The policies here have
// no glob, which would keep every tree on the view.
// ---------------------------------------------------------------------------

// bindPolicy is the suite's policy without its globs; HIDE_SECRET adds the
// literal rule that hides the secret directory (else it is hidden by the
// default only).
std::string bindPolicy(const Workspace& w, bool hide_secret) {
  std::string y =
      "version: 1\n"
      "filesystem:\n"
      "  default: hidden\n"
      "  rules:\n"
      "    - read-only: [/usr, /bin, /lib, /lib64, /etc]\n"
      "    - read-write: [\"{project}\"]\n"
      "    - read-only: [\"" + w.ro + "\", \"" + w.bin + "\"]\n";
  if (hide_secret) {
    y += "    - hidden: [\"" + w.secret + "\"]\n";
  }
  return y + "env:\n  default: deny\n  rules:\n    - allow: [PATH, HOME, LANG, TERM]\n";
}

// mountedAt reports whether the session's mount table (saved by the agent
// to FILE in the project) has a mount at PATH.
bool mountedAt(const Workspace& w, const std::string& file, const std::string& path) {
  for (const std::string& l : lines(w.read(file))) {
    std::istringstream in(l);
    std::string id, parent, devno, root, point;
    in >> id >> parent >> devno >> root >> point;
    if (point == path) {
      return true;
    }
  }
  return false;
}

TEST_CASE("host: a bound read-only tree refuses every change in the kernel",
          "[integration][host][binds]") {
  if (!isRoot()) {
    GUARD_SKIP("read-only trees are bound only when root owns them: run as root");
  }
  Workspace w;
  writeText(w.policy, bindPolicy(w, true));
  struct stat before {};
  REQUIRE(stat(w.roFile().c_str(), &before) == 0);
  Run r = w.guard("cat /proc/self/mountinfo > mounts\n"
                  "cat " + w.roFile() + " > seen\n"
                  "cat /etc/ld.so.preload > preload\n"
                  "cd " + w.ro + "\n"
                  "echo x > canary; echo x >> canary; true > canary; truncate -s 0 canary\n"
                  "dd if=/dev/zero of=canary bs=1 count=4 conv=notrunc\n"
                  "chmod 777 canary; touch -d 2001-01-01 canary\n"
                  "rm -f canary; mv canary moved; ln canary hard; ln -s canary soft\n"
                  "touch new; mkdir dir; mkfifo fifo\n"
                  "python3 -c 'import mmap,os; f=os.open(\"canary\", os.O_RDWR); "
                  "m=mmap.mmap(f,4); m[0:1]=b\"X\"' 2>/dev/null\n"
                  "true");
  INFO(describe(r));
  REQUIRE(r.status == 0);
  REQUIRE(mountedAt(w, "mounts", w.ro));  // the kernel, not the view, served it
  CHECK(w.read("seen") == kRoCanary);
  CHECK(contains(w.read("preload"), "libguard-interpose.so"));  // /etc keeps the overlay
  CHECK(mountedAt(w, "mounts", "/etc"));  // ... as a read-only overlayfs over the host's /etc
  CHECK(readFile(w.roFile()) == kRoCanary);
  struct stat after {};
  REQUIRE(stat(w.roFile().c_str(), &after) == 0);
  CHECK(after.st_mode == before.st_mode);
  CHECK(after.st_mtime == before.st_mtime);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(w.ro)) {
    names.push_back(e.path().filename().string());
  }
  CHECK(names == std::vector<std::string>{"canary"});
}

TEST_CASE("host: a tree holding a hard link to a hidden file is served by the view",
          "[integration][host][binds]") {
  Workspace w;
  writeText(w.policy, bindPolicy(w, true));
  REQUIRE(link(w.secretKey().c_str(), (w.ro + "/key-link").c_str()) == 0);
  Run r = w.guard("cat /proc/self/mountinfo > mounts\n"
                  "cat " + w.ro + "/key-link >> loot 2>&1\n"
                  "cp " + w.ro + "/key-link copy 2>/dev/null\n"
                  "ls " + w.ro + " > listing\n");
  INFO(describe(r));
  CHECK_FALSE(mountedAt(w, "mounts", w.ro));
  CHECK_FALSE(contains(w.read("listing"), "key-link"));
  checkNoSecret(w, r);
}

TEST_CASE("host: --bind-writable binds the project read-write; --serve-all binds nothing",
          "[integration][host][binds]") {
  Workspace w;
  w.flags = {"--audit-allowed", "none", "--bind-writable"};
  writeText(w.policy, bindPolicy(w, false));
  Run r = w.guard("cat /proc/self/mountinfo > mounts\n"
                  "mkdir -p sub && echo written-inside > sub/out\n");
  INFO(describe(r));
  REQUIRE(r.status == 0);
  CHECK(mountedAt(w, "mounts", w.project));
  CHECK(readFile(w.at("sub/out")) == "written-inside\n");

  w.flags = {"--serve-all"};
  Run all = w.guard("cat /proc/self/mountinfo > mounts-all\n");
  INFO(describe(all));
  REQUIRE(all.status == 0);
  CHECK_FALSE(mountedAt(w, "mounts-all", w.project));
  CHECK_FALSE(mountedAt(w, "mounts-all", "/usr"));
  CHECK_FALSE(mountedAt(w, "mounts-all", w.ro));

  w.flags = {"--bind-writable"};  // the audit of allowed writes would silently stop
  Run refused = w.guard("echo ran > ran\n");
  CHECK(refused.status != 0);
  CHECK(contains(refused.err, "--audit-allowed none"));
  CHECK_FALSE(exists(w.at("ran")));
}

TEST_CASE("host: the project is not bound where a hidden file shares its device, so a late hard "
          "link stays hidden",
          "[integration][host][binds]") {
  Workspace w;
  w.flags = {"--audit-allowed", "none", "--bind-writable"};
  writeText(w.policy, bindPolicy(w, true));
  checkLateHardLink(w);
  CHECK_FALSE(mountedAt(w, "mounts", w.project));
}

// ---------------------------------------------------------------------------
// VM mode: the same adversarial checks with the command inside the VM.
// ---------------------------------------------------------------------------

TEST_CASE("host (vm): hidden files stay hidden directly, via links and /proc roots",
          "[integration][host][vm]") {
  GUARD_VM_REQUIRE();
  SECTION("directly") { checkHiddenDirect(As::kVm); }
  SECTION("via links") { checkHiddenViaLinks(As::kVm); }
  SECTION("via /proc roots") { checkHiddenViaProcRoot(As::kVm); }
}

TEST_CASE("host (vm): a credential's source file is hidden, under any name",
          "[integration][host][vm]") {
  GUARD_VM_REQUIRE();
  checkCredentialSources(As::kVm);
}

TEST_CASE("host (vm): read-only files and directories refuse every change",
          "[integration][host][vm]") {
  GUARD_VM_REQUIRE();
  checkReadOnly(As::kVm, {}, {});
}

TEST_CASE("host (vm): hidden files stay hidden via .., file handles, openat2, io_uring and raw "
          "system calls",
          "[integration][host][vm]") {
  GUARD_VM_REQUIRE();
  SECTION("..") { checkHiddenViaDotDot(As::kVm); }
  SECTION("file handles") { checkFileHandles(As::kVm); }
  SECTION("openat2") { checkOpenat2(As::kVm); }
  SECTION("io_uring") { checkIoUring(As::kVm); }
  SECTION("a static binary's raw system calls") { checkRawSyscalls(As::kVm); }
}

TEST_CASE("host (vm): hiding globs hold for late files and new names; renames above a rule do "
          "not escape it",
          "[integration][host][vm]") {
  GUARD_VM_REQUIRE();
  SECTION("files the host creates during the session") { checkLateGlobMatches(As::kVm); }
  SECTION("names the command creates") { checkNoHiddenNames(As::kVm); }
  SECTION("rename above a read-only path") { checkRenameAboveReadOnly(As::kVm); }
  SECTION("rename above a hidden path") { checkRenameAboveHidden(As::kVm); }
}

// descendants lists the processes below ROOT, with their command names.
std::vector<std::pair<pid_t, std::string>> descendants(pid_t root) {
  std::map<pid_t, std::pair<pid_t, std::string>> procs;  // pid -> (ppid, comm)
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::string stat = readFile(entry.path().string() + "/stat");
    size_t open = stat.find('(');
    size_t close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 4 > stat.size()) {
      continue;
    }
    pid_t ppid = std::atoi(stat.c_str() + stat.find(' ', close + 2) + 1);
    procs[std::stoi(name)] = {ppid, stat.substr(open + 1, close - open - 1)};
  }
  std::vector<std::pair<pid_t, std::string>> out;
  for (const auto& [pid, info] : procs) {
    for (pid_t up = info.first; up > 1; up = procs.count(up) ? procs[up].first : 0) {
      if (up == root) {
        out.emplace_back(pid, info.second);
        break;
      }
    }
  }
  return out;
}

// Fail closed: whichever of guard's helpers dies while the command runs in
// the guest, the session ends at once with guard's own status and a line
// naming it; the command gets no further (its heartbeat file stops).
TEST_CASE("host (vm): if QEMU, virtiofsd, the view or the proxy dies, the session ends and says so",
          "[integration][host][vm]") {
  GUARD_VM_REQUIRE();
  // Which process is which: QEMU and virtiofsd by name; guard's own two
  // are the view (it holds /dev/fuse) and the proxy.
  auto holdsFuse = [](pid_t pid) {
    std::error_code ec;
    for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
      std::error_code ec2;
      if (fs::read_symlink(fd.path(), ec2) == "/dev/fuse") {
        return true;
      }
    }
    return false;
  };
  struct Case {
    const char* section;
    const char* said;  // what guard's error line holds
  };
  for (const Case& k : {Case{"QEMU", "QEMU"}, Case{"virtiofsd", "virtiofsd"},
                        Case{"the view", "view"}, Case{"the proxy", "proxy"}}) {
    DYNAMIC_SECTION(k.section) {
      Workspace w(As::kVm);
      Child c;
      RunOptions o;
      o.timeout_ms = 180000;
      w.start(&c,
              "touch ready\n"
              "while true; do date +%s%N >> heartbeat; sleep 0.2; done\n",
              o);
      REQUIRE(waitFor(w.at("ready"), 120000));
      pid_t victim = -1;
      std::string seen;
      for (const auto& [pid, comm] : descendants(c.pid())) {
        seen += " " + comm;
        if ((k.said == std::string("QEMU") && comm == "qemu-system-x86") ||
            (k.said == std::string("virtiofsd") && comm == "virtiofsd") ||
            (k.said == std::string("view") && comm == "guard" && holdsFuse(pid)) ||
            (k.said == std::string("proxy") && comm == "guard" && !holdsFuse(pid))) {
          victim = pid;
        }
      }
      INFO("guard's processes:" << seen);
      REQUIRE(victim > 0);
      REQUIRE(kill(victim, SIGKILL) == 0);
      auto t0 = std::chrono::steady_clock::now();
      Run r = c.finish();
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      INFO(describe(r));
      CHECK(r.status != 0);
      CHECK(contains(r.err, k.said));
      CHECK(secs < 30);
      // The command stopped with the session.
      std::string before = w.read("heartbeat");
      sleepMs(1000);
      CHECK(w.read("heartbeat") == before);
    }
  }
}

// The agent is root of its guest and may mount what it likes there: a second
// mount of the view (the only filesystem device the guest has) is the same
// view, and a tmpfs over a read-only directory changes the guest alone.
TEST_CASE("host (vm): root of the guest mounting the view again reaches nothing more",
          "[integration][host][vm]") {
  GUARD_VM_REQUIRE();
  Workspace w(As::kVm);
  Snapshot before = snapshot(w.roFile());
  Run r = w.guard(
      "mkdir -p /tmp/again && mount -t virtiofs guardroot /tmp/again && echo mounted > mounted\n"
      "cat /tmp/again" +
      w.secretKey() +
      " >> loot 2>&1\n"
      "ls -a /tmp/again" +
      w.secret +
      " >> loot 2>&1\n"
      "echo evil >> /tmp/again" +
      w.roFile() +
      "\n"
      "mount -t tmpfs none " +
      w.ro +
      " && echo evil > " + w.roFile() +
      "\n"
      "mount -o remount,rw /tmp/again\n"
      "echo evil >> /tmp/again" +
      w.roFile() + "\ntrue");
  INFO(describe(r));
  CHECK(w.read("mounted") == "mounted\n");  // the remount itself worked: the test tried
  checkNoSecret(w, r);
  CHECK(readFile(w.roFile()) == kRoCanary);
  CHECK(snapshot(w.roFile()) == before);
}

}  // namespace
}  // namespace guard::testing
