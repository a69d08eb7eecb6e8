// Integration tests for the nftables rules guard installs (vmhost/netns.cc,
// one netlink batch built with libnftnl): what the kernel holds in a live
// session's namespace, listed by nft(8) with handles and bytecode, must be
// exactly what `nft -f` loads from the reference text below into a fresh
// namespace, in host mode (the agent's namespace) and in VM mode (QEMU's).
// A change to either the rules or the reference fails here. Refusals by the
// kernel must fail the batch and name the refused message.
//
// Tags [integration][net]. Listing another session's namespace needs root;
// the VM case needs VM mode (GUARD_VM_REQUIRE).
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/netfilter.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing.h"
#include "vmhost/jail.h"
#include "vmhost/nftables.h"

namespace guard::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kPath[] = "/usr/local/bin:/usr/bin:/bin";

// The rulesets as nft(8) text, with the values a session uses: the proxy's
// port 15001, the tap guard0 and its address 10.0.2.2 (vmhost/vm_wire.h).
constexpr char kHostText[] =
    "table inet guard {\n"
    "  chain capture {\n"
    "    type nat hook output priority -100; policy accept;\n"
    "    meta l4proto { tcp, udp } th dport 53 redirect to :53\n"
    "    ip daddr 127.0.0.0/8 return\n"
    "    ip6 daddr ::1 return\n"
    "    meta l4proto tcp redirect to :15001\n"
    "  }\n"
    "  chain only_loopback {\n"
    "    type filter hook output priority 0; policy drop;\n"
    "    ip daddr 127.0.0.0/8 accept\n"
    "    ip6 daddr ::1 accept\n"
    "    ct status dnat accept\n"
    "    counter log group 7 drop\n"
    "  }\n"
    "}\n";

constexpr char kVmText[] =
    "table inet guard {\n"
    "  chain guest_only {\n"
    "    type filter hook prerouting priority -150; policy accept;\n"
    "    iifname != \"guard0\" accept\n"
    "    meta nfproto ipv4 meta l4proto tcp accept\n"
    "    meta nfproto ipv4 meta l4proto udp udp dport 53 accept\n"
    "    counter log group 7 drop\n"
    "  }\n"
    "  chain capture {\n"
    "    type nat hook prerouting priority -100; policy accept;\n"
    "    iifname \"guard0\" meta l4proto { tcp, udp } th dport 53 redirect to :53\n"
    "    iifname \"guard0\" meta l4proto tcp redirect to :15001\n"
    "  }\n"
    "  chain only_proxy {\n"
    "    type filter hook input priority 0; policy drop;\n"
    "    iifname \"lo\" accept\n"
    "    ct status dnat accept\n"
    "    iifname \"guard0\" ip daddr 10.0.2.2 tcp dport { 15001, 53 } accept\n"
    "    iifname \"guard0\" ip daddr 10.0.2.2 udp dport 53 accept\n"
    "    counter log group 7 drop\n"
    "  }\n"
    "}\n";

constexpr char kList[] = "nft -a --debug=netlink list ruleset";

// nftMissing says why the nft CLI cannot list rules here, or "".
std::string nftMissing() {
  Run r = runProgram({"sh", "-c", "command -v nft"}, "", {std::string("PATH=") + kPath + ":/usr/sbin:/sbin"});
  return r.status == 0 ? "" : "nft is not installed (package nftables; scripts/install-deps.sh)";
}

std::string guardPath() {
  std::string b = guardBinary();
  return !b.empty() && b[0] != '/' ? fs::absolute(b).string() : b;
}

// normalised zeroes the counters: a session's packets may have hit them.
std::string normalised(const std::string& listing) {
  static const std::regex counters("(packets|pkts) [0-9]+ bytes [0-9]+");
  return std::regex_replace(listing, counters, "$1 0 bytes 0");
}

// referenceListing loads TEXT with `nft -f` into fresh user and network
// namespaces and lists the ruleset there.
Run referenceListing(const char* text) {
  return runProgram({"unshare", "-Urn", "sh", "-c", std::string("nft -f - && ") + kList}, "",
                    {std::string("PATH=") + kPath + ":/usr/sbin:/sbin"}, 20000, text);
}

std::string netnsOf(const std::string& pid) {
  std::error_code ec;
  return fs::read_symlink("/proc/" + pid + "/ns/net", ec).string();
}

std::string cmdline(const std::string& pid) {
  std::string s = readFile("/proc/" + pid + "/cmdline");
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

std::string parentOf(const std::string& pid) {
  std::string stat = readFile("/proc/" + pid + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos) {
    return "";
  }
  // ") S PPID ..."
  size_t start = stat.find(' ', close + 2);
  return start == std::string::npos ? "" : stat.substr(start + 1, stat.find(' ', start + 1) - start - 1);
}

// sessionNetns finds a process of the session that lives in another
// network namespace than the test and is started only once the rules are
// in place: the agent (`sh -c SCRIPT`, SCRIPT holding MARKER; not the
// jail's first process, a copy of guard that is in the namespace before it
// installs them), or with QEMU set the QEMU process whose ancestors include
// the session. Waits up to TIMEOUT; returns its pid, or "".
std::string sessionNetns(const std::string& marker, bool qemu, std::chrono::seconds timeout) {
  std::string own = netnsOf("self");
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& entry : fs::directory_iterator("/proc")) {
      std::string pid = entry.path().filename();
      if (pid.find_first_not_of("0123456789") != std::string::npos) {
        continue;
      }
      std::string ns = netnsOf(pid);
      if (ns.empty() || ns == own) {
        continue;
      }
      if (!qemu) {
        std::string cmd = cmdline(pid);
        if (cmd.rfind("sh -c ", 0) == 0 && contains(cmd, marker)) {
          return pid;
        }
        continue;
      }
      if (readFile("/proc/" + pid + "/comm").rfind("qemu-system", 0) != 0) {
        continue;
      }
      for (std::string p = parentOf(pid); !p.empty() && p != "0" && p != "1"; p = parentOf(p)) {
        if (contains(cmdline(p), marker)) {
          return pid;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return "";
}

// Session runs `guard [FLAGS] -- sh -c SCRIPT` in a thread, SCRIPT tagged
// with a marker that finds the session's processes.
struct Session {
  TempDir dir;
  std::string project = dir.path() + "/project";
  std::string marker = "guard-nft-test-" + std::to_string(getpid());
  Run result;
  std::thread thread;

  Session(const std::vector<std::string>& flags, const std::string& script, int timeout_ms) {
    fs::create_directories(project);
    std::string policy = dir.write("policy.yaml",
                                   "version: 1\n"
                                   "network:\n"
                                   "  default: deny\n"
                                   "filesystem:\n"
                                   "  default: read-only\n"
                                   "  rules:\n"
                                   "    - read-write: " + project + "\n");
    std::vector<std::string> argv = {guardPath()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    for (const std::string& a : {std::string("--policy"), policy, std::string("--audit"),
                                 dir.path() + "/audit.jsonl", std::string("--"), std::string("sh"),
                                 std::string("-c"), script + " # " + marker}) {
      argv.push_back(a);
    }
    std::vector<std::string> env = {std::string("PATH=") + kPath, "HOME=" + dir.path()};
    thread = std::thread([this, argv, env, timeout_ms] { result = runProgram(argv, project, env, timeout_ms); });
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() { finish(); }

  // finish lets a waiting script end (it waits for the file "listed") and
  // joins the session.
  const Run& finish() {
    if (thread.joinable()) {
      std::ofstream(project + "/listed") << "1\n";
      thread.join();
    }
    return result;
  }
};

Run listNetnsOf(const std::string& pid) {
  return runProgram({"nsenter", "-t", pid, "-n", "sh", "-c", kList}, "",
                    {std::string("PATH=") + kPath + ":/usr/sbin:/sbin"});
}

// checkLiveRuleset runs a session (FLAGS, SCRIPT) and compares the nftables
// listing of its namespace (the agent's; QEMU's when VM) with what nft -f
// makes of TEXT in a fresh namespace; EXPECT must be in the reference.
void checkLiveRuleset(const char* text, const std::string& expect,
                      const std::vector<std::string>& flags, const std::string& script,
                      int timeout_ms, bool vm, std::chrono::seconds wait) {
  if (geteuid() != 0) {
    GUARD_SKIP("listing another namespace's nftables ruleset needs root");
  }
  if (std::string missing = nftMissing(); !missing.empty()) {
    GUARD_SKIP(missing);
  }
  Run ref = referenceListing(text);
  INFO("reference: " << describe(ref));
  REQUIRE(ref.status == 0);
  CHECK(contains(ref.out, expect));

  Session s(flags, script, timeout_ms);
  std::string pid = sessionNetns(s.marker, vm, wait);
  Run live = pid.empty() ? Run{} : listNetnsOf(pid);
  const Run& r = s.finish();
  INFO("session: " << describe(r));
  REQUIRE(!pid.empty());
  INFO("live: " << describe(live));
  REQUIRE(live.status == 0);
  CHECK(normalised(live.out) == normalised(ref.out));
  CHECK(r.status == 0);
}

TEST_CASE("the agent's nftables ruleset is exactly what nft loads from the reference text",
          "[integration][net]") {
  // "redir proto_min reg 1": the bytecode is listed too.
  checkLiveRuleset(kHostText, "redir proto_min reg 1", {},
                   "while [ ! -e listed ]; do sleep 0.05; done", 60000, false,
                   std::chrono::seconds(30));
}

TEST_CASE("vm: the nftables ruleset of QEMU's namespace is exactly what nft loads from the reference text",
          "[integration][net][vm]") {
  GUARD_VM_REQUIRE();
  // The rules are in place before QEMU starts; the guest need not boot.
  checkLiveRuleset(kVmText, "tcp dport { 53, 15001 } accept", {"--vm", "--vm-memory", "512"},
                   "true", 180000, true, std::chrono::seconds(60));
}

// inNewNetns runs FN in a child in new user and network namespaces (the
// caller's ids mapped to root, so that programs it runs keep the
// namespace's capabilities) and returns what it wrote to the pipe it is given,
// after its exit status and a newline ("0\n..." when FN returned true).
std::string inNewNetns(const std::function<bool(int out)>& fn) {
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  uid_t uid = geteuid();
  gid_t gid = getegid();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
      _exit(2);
    }
    auto write_file = [](const char* path, const std::string& text) {
      int fd = open(path, O_WRONLY | O_CLOEXEC);
      bool ok = fd >= 0 && write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      if (fd >= 0) {
        close(fd);
      }
      return ok;
    };
    if (!write_file("/proc/self/setgroups", "deny") ||
        !write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
        !write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) {
      _exit(3);
    }
    _exit(fn(p[1]) ? 0 : 1);
  }
  close(p[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(p[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) + "\n" + out;
}

// commitReport commits B and writes "<ok> <errno> <why>" to OUT (errno 0
// when the commit succeeded).
bool commitReport(vmhost::nft::Batch& b, int out) {
  std::string why;
  bool ok = b.commit(&why);
  std::string text = std::to_string(ok) + " " + std::to_string(ok ? 0 : errno) + " " + why;
  return write(out, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

TEST_CASE("an nftables batch the kernel refuses fails and names what was refused", "[integration][net]") {
  std::string reason;
  if (!vmhost::userNamespacesAvailable(&reason)) {
    GUARD_SKIP(reason);
  }
  using vmhost::nft::Batch;
  using vmhost::nft::Rule;
  SECTION("without CAP_NET_ADMIN the whole batch is refused") {
    std::string got = inNewNetns([](int out) {
      struct __user_cap_header_struct hdr {};
      hdr.version = _LINUX_CAPABILITY_VERSION_3;
      struct __user_cap_data_struct data[2] = {};
      if (syscall(SYS_capset, &hdr, data) != 0) {
        return false;
      }
      Batch b("guard");
      b.chain("capture", "nat", NF_INET_LOCAL_OUT, -100, NF_ACCEPT);
      b.rule("capture", Rule().counter().drop());
      return commitReport(b, out);
    });
    INFO(got);
    CHECK(got == "0\n0 " + std::to_string(EPERM) + " nftables: the kernel refused the batch");
  }
  SECTION("a chain of an unknown type is refused, and named") {
    std::string got = inNewNetns([](int out) {
      Batch b("guard");
      b.chain("capture", "nat", NF_INET_LOCAL_OUT, -100, NF_ACCEPT);
      b.chain("odd", "no-such-type", NF_INET_LOCAL_OUT, 0, NF_ACCEPT);
      b.rule("odd", Rule().counter().drop());
      return commitReport(b, out);
    });
    INFO(got);
    CHECK(got.rfind("0\n0 ", 0) == 0);
    CHECK(contains(got, " nftables: the kernel refused chain odd"));
  }
  SECTION("a rule for a chain the batch does not have fails before the kernel sees it") {
    std::string got = inNewNetns([](int out) {
      Batch b("guard");
      b.chain("capture", "nat", NF_INET_LOCAL_OUT, -100, NF_ACCEPT);
      b.rule("elsewhere", Rule().counter().drop());
      return commitReport(b, out);
    });
    INFO(got);
    CHECK(got == "0\n0 " + std::to_string(EINVAL) +
                     " nftables: rule 1 of chain elsewhere is for a chain the batch does not have");
  }
  SECTION("address prefixes are listed as nft lists them from their text") {
    if (std::string missing = nftMissing(); !missing.empty()) {
      GUARD_SKIP(missing);
    }
    std::string got = inNewNetns([](int out) {
      Batch b("guard");
      b.chain("only_loopback", "filter", NF_INET_LOCAL_OUT, 0, NF_DROP);
      b.rule("only_loopback", Rule().ipDaddr(htonl(0x7f000000), 8).accept());
      b.rule("only_loopback", Rule().ipDaddr(htonl(0x0a000000), 12).accept());  // ends inside a byte
      b.rule("only_loopback", Rule().ipDaddr(htonl(0x0a000202), 32).accept());
      b.rule("only_loopback", Rule().counter().log(7).drop());
      if (!commitReport(b, out)) {
        return false;
      }
      std::string list = "\n" + runProgram({"sh", "-c", kList}, "", {std::string("PATH=") + kPath + ":/usr/sbin:/sbin"}).out;
      return write(out, list.data(), list.size()) == static_cast<ssize_t>(list.size());
    });
    Run ref = referenceListing(
        "table inet guard {\n"
        "  chain only_loopback {\n"
        "    type filter hook output priority 0; policy drop;\n"
        "    ip daddr 127.0.0.0/8 accept\n"
        "    ip daddr 10.0.0.0/12 accept\n"
        "    ip daddr 10.0.2.2 accept\n"
        "    counter log group 7 drop\n"
        "  }\n"
        "}\n");
    INFO(got << "\nreference: " << describe(ref));
    REQUIRE(ref.status == 0);
    CHECK(contains(ref.out, "ip daddr 10.0.0.0/12 accept # handle 3"));
    CHECK(got == "0\n1 0 \n" + ref.out);
  }
}

}  // namespace
}  // namespace guard::testing
