// Integration tests for VM mode: `guard --vm -- CMD` boots a real QEMU
// microvm (TCG where there is no KVM) rooted in the policy view, judged from
// outside: exit status, the stdout and stderr guard passes on, the host's
// files afterwards and the audit log.
//
// Each boot costs seconds under TCG (about 2.5 s here), so the tests boot
// four times in all: one script that checks most things at once, one
// session on a pseudo-terminal (Ctrl-C reaches the command), one as the
// unprivileged user guardtest (when the suite runs as root), one command
// that does not exist. A fifth case needs no boot (the guest image missing).
//
// The tests need QEMU, virtiofsd and the guest image (scripts/install-deps.sh,
// then scripts/vm-prepare.sh, which `make check` runs). Without them they
// fail, except outside CI, where they skip with the reason.
//
// Tags [integration][vm].
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing.h"
#include "vmhost/vm.h"

namespace guard::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kSecret[] = "GUARD-VM-CANARY-SECRET-71c2";
constexpr char kRoCanary[] = "GUARD-VM-CANARY-READONLY-5d0e\n";
constexpr char kPath[] = "/usr/local/bin:/usr/bin:/bin";
constexpr int kTimeoutMs = 90000;  // one TCG boot and a command, with margin

std::string guardPath() {
  std::string b = guardBinary();
  return !b.empty() && b[0] != '/' ? fs::absolute(b).string() : b;
}

// runFed runs ARGV with INPUT on stdin, at the VM tests' deadline.
Run runFed(const std::vector<std::string>& argv, const std::string& cwd,
           const std::vector<std::string>& env, const std::string& input) {
  return runProgram(argv, cwd, env, kTimeoutMs, input);
}

// VmWorkspace: a project (read-write, the working directory), a hidden
// secret and a read-only canary, below /var/tmp.
class VmWorkspace {
 public:
  VmWorkspace() {
    std::string dir = access("/var/tmp", W_OK | X_OK) == 0 ? "/var/tmp" : "/tmp";
    std::string tmpl = dir + "/guard-vm-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    REQUIRE(mkdtemp(buf.data()) != nullptr);
    base = buf.data();
    REQUIRE(chmod(base.c_str(), 0755) == 0);
    project = base + "/project";
    fs::create_directories(project);
    secret = base + "/secret/key";
    ro = base + "/ro/canary";
    policy = base + "/policy.yaml";
    audit = base + "/audit.jsonl";
    writeText(secret, std::string(kSecret) + "\n");
    writeText(ro, kRoCanary);
    writeText(policy,
              "version: 1\n"
              "layer: vm-test\n"
              "filesystem:\n"
              "  default: hidden\n"
              "  rules:\n"
              "    - id: vm-test.system\n"
              "      read-only: [/usr, /bin, /lib, /lib64, /etc]\n"
              "    - id: vm-test.project\n"
              "      read-write: [\"{project}\"]\n"
              "    - id: vm-test.secret\n"
              "      hidden: [\"" +
                  base +
                  "/secret\"]\n"
                  "    - id: vm-test.readonly\n"
                  "      read-only: [\"" +
                  base +
                  "/ro\"]\n"
                  "env:\n"
                  "  default: deny\n"
                  "  set: {GUARD_SET: from-policy}\n"
                  "  rules:\n"
                  "    - allow: [PATH, HOME, LANG]\n");
  }
  ~VmWorkspace() {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  VmWorkspace(const VmWorkspace&) = delete;
  VmWorkspace& operator=(const VmWorkspace&) = delete;

  std::vector<std::string> env(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> e = {std::string("PATH=") + kPath,
                                  "HOME=" + project,
                                  "LANG=C",
                                  "GUARD_SYSTEM_DIR=" + base + "/etc-guard",
                                  "XDG_CONFIG_HOME=" + base + "/xdg",
                                  std::string("FOO_SECRET=") + kSecret};
    e.insert(e.end(), extra.begin(), extra.end());
    return e;
  }

  std::vector<std::string> argv(const std::vector<std::string>& cmd) const {
    std::vector<std::string> a = {guardPath(), "--vm",    "--vm-memory", "512", "--policy",
                                  policy,      "--audit", audit,         "--"};
    a.insert(a.end(), cmd.begin(), cmd.end());
    return a;
  }

  std::vector<nlohmann::json> auditEvents() const {
    std::vector<nlohmann::json> out;
    std::istringstream in(readFile(audit));
    std::string l;
    while (std::getline(in, l)) {
      auto j = nlohmann::json::parse(l, nullptr, false);
      if (!j.is_discarded()) {
        out.push_back(j);
      }
    }
    return out;
  }

  std::string base;
  std::string project;
  std::string secret;
  std::string ro;
  std::string policy;
  std::string audit;
};

TEST_CASE("vm: the command runs in the view with the policy's environment and its status",
          "[integration][vm]") {
  GUARD_VM_REQUIRE();
  VmWorkspace w;
  // One boot checks many things; each line of output is judged below, the
  // files from the host.
  std::string script =
      "pwd; echo \"set=$GUARD_SET\"; echo \"foo=${FOO_SECRET:-unset}\"\n"
      "echo to-stdout; echo to-stderr >&2\n"
      "cat > stdin.txt\n"
      "ls '" +
      w.base +
      "/secret' >/dev/null 2>&1 && echo SECRET-DIR-VISIBLE\n"
      "cat '" +
      w.secret +
      "' 2>/dev/null\n"
      "echo overwritten 2>/dev/null > '" +
      w.ro +
      "' && echo RO-WRITTEN\n"
      "rm -f '" +
      w.ro + "' 2>/dev/null; mv '" + w.ro +
      "' ro-moved 2>/dev/null\n"
      "test -d /proc/self && echo proc-ok\n"
      "sed -n 's/^ *\\([^:]*\\):.*/iface:\\1/p' /proc/net/dev\n"
      "echo made-in-vm > made.txt\n"
      "exit 7\n";
  // The command is found along PATH as the view shows it: the first
  // directory's copy is hidden by the policy, the second's is a shell.
  writeText(w.base + "/secret/gvm-sh", "#!/bin/sh\necho PATH-HIDDEN-RAN\n");
  REQUIRE(chmod((w.base + "/secret/gvm-sh").c_str(), 0755) == 0);
  fs::create_directories(w.project + "/bin");
  fs::create_symlink("/bin/sh", w.project + "/bin/gvm-sh");
  std::vector<std::string> env = w.env();
  env[0] = "PATH=" + w.base + "/secret:" + w.project + "/bin:" + kPath;
  Run r = runFed(w.argv({"gvm-sh", "-c", script}), w.project, env, "line one\nline two\n");
  INFO(describe(r));
  CHECK(r.status == 7);
  CHECK_FALSE(contains(r.out, "PATH-HIDDEN-RAN"));
  // Without KVM guard says so, in exactly one line; with it, not at all,
  // unless KVM then fails to boot the guest (one line too: TCG boots it).
  std::string why;
  size_t warnings = 0;
  for (size_t at = r.err.find("the VM runs under TCG emulation"); at != std::string::npos;
       at = r.err.find("the VM runs under TCG emulation", at + 1)) {
    ++warnings;
  }
  bool kvm = vmhost::kvmUsable(&why);
  CHECK(warnings == (kvm ? (contains(r.err, "KVM could not boot the VM") ? 1u : 0u) : 1u));
  CHECK(contains(r.err, "KVM is not usable") == !kvm);
  CHECK(contains(r.out, w.project + "\n"));
  CHECK(contains(r.out, "set=from-policy\n"));
  CHECK(contains(r.out, "foo=unset\n"));
  CHECK(contains(r.out, "to-stdout\n"));
  CHECK_FALSE(contains(r.out, "to-stderr"));
  CHECK(contains(r.err, "to-stderr\n"));
  CHECK(contains(r.out, "proc-ok\n"));
  // The guest has loopback and one network device, the tap to the proxy
  // (tests/integration/net_test.cc judges what leaves through it).
  CHECK(contains(r.out, "iface:lo\n"));
  CHECK(contains(r.out, "iface:eth0\n"));
  size_t ifaces = 0;
  for (size_t at = r.out.find("iface:"); at != std::string::npos;
       at = r.out.find("iface:", at + 1)) {
    ++ifaces;
  }
  CHECK(ifaces == 2);
  // stdin reached the command, EOF included (cat ended); a write landed.
  CHECK(readFile(w.project + "/stdin.txt") == "line one\nline two\n");
  CHECK(readFile(w.project + "/made.txt") == "made-in-vm\n");
  // The hidden file is absent, the read-only one unchanged (judged here).
  CHECK_FALSE(contains(r.out, "SECRET-DIR-VISIBLE"));
  CHECK_FALSE(contains(r.out, kSecret));
  CHECK_FALSE(contains(r.err, kSecret));
  CHECK_FALSE(contains(r.out, "RO-WRITTEN"));
  CHECK(readFile(w.ro) == kRoCanary);
  CHECK_FALSE(fs::exists(w.project + "/ro-moved"));

  bool start = false;
  bool ended = false;
  for (const auto& e : w.auditEvents()) {
    if (e.value("surface", "") != "session") {
      continue;
    }
    if (e.value("action", "") == "start") {
      start = true;
      CHECK(e["details"].value("mode", "") == "vm");
    } else if (e.value("action", "") == "exit") {
      ended = true;
      CHECK(e["details"].value("mode", "") == "vm");
      CHECK(e["details"].value("exit_code", -1) == 7);
    }
  }
  CHECK(start);
  CHECK(ended);
}

TEST_CASE("vm: a signal reaches the command while megabytes of its stdin wait unread",
          "[integration][vm]") {
  // Stdin and signals share the control port. The command never reads its
  // 16 MiB of stdin; SIGTERM sent to guard must still reach it at once.
  GUARD_VM_REQUIRE();
  VmWorkspace w;
  std::string input = w.base + "/stdin.bin";
  {
    std::ofstream f(input, std::ios::binary);
    std::string mib(1u << 20, 'x');
    for (int i = 0; i < 16; ++i) {
      f << mib;
    }
  }
  std::vector<std::string> argv = w.argv(
      {"sh", "-c", "trap 'echo got > got-term; exit 3' TERM\ntouch ready\nwhile :; do sleep 0.2; done"});
  std::vector<std::string> env = w.env();
  std::vector<char*> args = cStrings(argv);
  std::vector<char*> envp = cStrings(env);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int in = open(input.c_str(), O_RDONLY);
    int null = open("/dev/null", O_WRONLY);
    if (in < 0 || null < 0 || dup2(in, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 ||
        chdir(w.project.c_str()) != 0) {
      _exit(126);
    }
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (!fs::exists(w.project + "/ready") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  bool ready = fs::exists(w.project + "/ready");
  std::this_thread::sleep_for(std::chrono::seconds(2));  // stdin fills every buffer on the way
  kill(pid, SIGTERM);
  int status = 0;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  pid_t got = 0;
  while ((got = waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (got == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  CHECK(ready);
  CHECK(got == pid);  // ended by the relayed signal, not by our SIGKILL
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  CHECK(readFile(w.project + "/got-term") == "got\n");
}

TEST_CASE("vm: on a terminal the command gets one, and Ctrl-C reaches it, not QEMU",
          "[integration][vm]") {
  GUARD_VM_REQUIRE();
  VmWorkspace w;
  std::vector<std::string> argv =
      w.argv({"sh", "-c",
              "trap 'echo got-sigint; exit 3' INT; test -t 0 && test -t 1 && echo on-a-tty; "
              "stty size; echo ready; while :; do sleep 0.2; done"});
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
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTimeoutMs);
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
  CHECK(contains(out, "30 100"));  // the caller's window size
  CHECK(sent);
  CHECK(contains(out, "got-sigint"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
}

TEST_CASE("vm: an unprivileged caller's session runs, and what it writes is the caller's",
          "[integration][vm]") {
  GUARD_VM_REQUIRE();
  if (geteuid() != 0) {
    GUARD_SKIP(
        "switching to the unprivileged user needs root (this suite already runs unprivileged)");
  }
  constexpr char kUser[] = "guardtest";  // the host tests' unprivileged user
  if (getpwnam(kUser) == nullptr) {
    runProgram({"useradd", "-m", kUser}, "/", {std::string("PATH=") + kPath});
  }
  struct passwd* pw = getpwnam(kUser);
  if (pw == nullptr) {
    GUARD_SKIP("no user guardtest and useradd failed");
  }
  Run ns = runProgram({"runuser", "-u", kUser, "--", "unshare", "-U", "-m", "true"}, "/",
                      {std::string("PATH=") + kPath});
  if (ns.status != 0) {
    GUARD_SKIP("guardtest cannot create user namespaces: " + ns.err);
  }
  VmWorkspace w;
  for (auto& e : fs::recursive_directory_iterator(w.base)) {
    REQUIRE(lchown(e.path().c_str(), pw->pw_uid, pw->pw_gid) == 0);
  }
  REQUIRE(chown(w.base.c_str(), pw->pw_uid, pw->pw_gid) == 0);
  std::vector<std::string> argv = {"/usr/sbin/runuser", "-u", kUser, "--", "/usr/bin/env", "-i"};
  std::vector<std::string> env = w.env();
  argv.insert(argv.end(), env.begin(), env.end());
  std::vector<std::string> g = w.argv({"sh", "-c",
                                       "echo made-unprivileged > made.txt; "
                                       "echo x 2>/dev/null > '" +
                                           w.ro + "'; exit 5"});
  argv.insert(argv.end(), g.begin(), g.end());
  Run r = runFed(argv, w.project, env, "");
  INFO(describe(r));
  CHECK(r.status == 5);
  struct stat st {};
  REQUIRE(stat((w.project + "/made.txt").c_str(), &st) == 0);
  CHECK(st.st_uid == pw->pw_uid);
  CHECK(readFile(w.project + "/made.txt") == "made-unprivileged\n");
  CHECK(readFile(w.ro) == kRoCanary);
}

TEST_CASE("vm: a command that does not exist is a clear error", "[integration][vm]") {
  GUARD_VM_REQUIRE();
  VmWorkspace w;
  Run r = runFed(w.argv({"no-such-command-guard-vm"}), w.project, w.env(), "");
  INFO(describe(r));
  CHECK(r.status == 1);
  CHECK(contains(r.err, "no-such-command-guard-vm"));
  CHECK(contains(r.err, "No such file or directory"));
  bool ended = false;
  for (const auto& e : w.auditEvents()) {
    if (e.value("surface", "") == "session" && e.value("action", "") == "exit") {
      ended = true;
      CHECK(e.value("decision", "") == "setup_error");
      CHECK(e["details"].value("mode", "") == "vm");
    }
  }
  CHECK(ended);
}

TEST_CASE("vm: without the guest image guard names the preparation step", "[integration][vm]") {
  VmWorkspace w;
  Run r =
      runFed(w.argv({"true"}), w.project, w.env({"GUARD_VM_DIR=" + w.base + "/no-image-here"}), "");
  INFO(describe(r));
  CHECK(r.status == 1);
  CHECK(contains(r.err, "scripts/vm-prepare.sh"));
}

}  // namespace
}  // namespace guard::testing
