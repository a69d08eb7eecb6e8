// Integration tests for what a host-mode session sets up at start, where
// startup time was cut: the jail's nftables rules, sent as one nf_tables
// batch built without nft's parser (vmhost::installHostRules), must be
// exactly what `nft -f` loads from the ruleset's text, and a refused batch
// must fail; a session then starts with its own hostname, one mapped uid
// and only loopback.
#include <fcntl.h>
#include <linux/capability.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "tests/testing.h"
#include "vmhost/jail.h"
#include "vmhost/netns.h"

namespace guard::testing {
namespace {

// The ruleset of vmhost/netns.cc (hostRules), as nft(8) text.
std::string hostRulesText(uint16_t proxy_port) {
  return "table inet guard {\n"
         "  chain capture {\n"
         "    type nat hook output priority -100; policy accept;\n"
         "    meta l4proto { tcp, udp } th dport 53 redirect to :53\n"
         "    ip daddr 127.0.0.0/8 return\n"
         "    ip6 daddr ::1 return\n"
         "    meta l4proto tcp redirect to :" + std::to_string(proxy_port) + "\n"
         "  }\n"
         "  chain only_loopback {\n"
         "    type filter hook output priority 0; policy drop;\n"
         "    ip daddr 127.0.0.0/8 accept\n"
         "    ip6 daddr ::1 accept\n"
         "    ct status dnat accept\n"
         "    counter log group 7 drop\n"
         "  }\n"
         "}\n";
}

// inNewNetns runs FN in a child in new user and network namespaces (the
// caller's uid mapped) and returns what it wrote to the pipe it is given,
// prefixed by its exit status ("0\n..." when FN returned true).
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
        !write_file("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1") ||
        !write_file("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1")) {
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
  return std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) + "\n" +
         out;
}

// listGuardTable writes the kernel's table `inet guard` to OUT as nft lists
// it, handles and the expressions' bytecode included.
bool listGuardTable(int out) {
  nft_ctx* nft = nft_ctx_new(NFT_CTX_DEFAULT);
  nft_ctx_buffer_output(nft);
  nft_ctx_buffer_error(nft);
  nft_ctx_output_set_flags(nft, NFT_CTX_OUTPUT_HANDLE);
  nft_ctx_output_set_debug(nft, NFT_DEBUG_NETLINK);
  bool ok = nft_run_cmd_from_buffer(nft, "list table inet guard") == 0;
  std::string text = ok ? nft_ctx_get_output_buffer(nft) : nft_ctx_get_error_buffer(nft);
  nft_ctx_free(nft);
  return write(out, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ok;
}

TEST_CASE("startup: the jail's rules sent as one batch are exactly what nft loads from their text",
          "[integration][host][startup]") {
  std::string reason;
  if (!vmhost::userNamespacesAvailable(&reason)) {
    GUARD_SKIP(reason);
  }
  for (uint16_t port : {uint16_t{15001}, uint16_t{8443}}) {
    std::string from_text = inNewNetns([&](int out) {
      nft_ctx* nft = nft_ctx_new(NFT_CTX_DEFAULT);
      nft_ctx_buffer_error(nft);
      bool ok = nft_run_cmd_from_buffer(nft, hostRulesText(port).c_str()) == 0;
      nft_ctx_free(nft);
      return ok && listGuardTable(out);
    });
    std::string from_batch = inNewNetns([&](int out) {
      std::string what;
      return vmhost::installHostRules(port, &what) && listGuardTable(out);
    });
    INFO("nft -f of the text:\n" << from_text << "\nthe batch:\n" << from_batch);
    REQUIRE(from_text.rfind("0\n", 0) == 0);
    REQUIRE(from_batch.rfind("0\n", 0) == 0);
    CHECK(contains(from_text, "redir proto_min reg 1"));  // the bytecode is listed
    CHECK(contains(from_text, "log group 7"));
    CHECK(contains(from_text, ":" + std::to_string(port)));
    CHECK(from_batch == from_text);
  }
}

TEST_CASE("startup: rules the kernel refuses fail the setup", "[integration][host][startup]") {
  std::string reason;
  if (!vmhost::userNamespacesAvailable(&reason)) {
    GUARD_SKIP(reason);
  }
  std::string got = inNewNetns([](int out) {
    // Without CAP_NET_ADMIN in the namespace, nf_tables refuses the batch.
    struct __user_cap_header_struct hdr {};
    hdr.version = _LINUX_CAPABILITY_VERSION_3;
    struct __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capset, &hdr, data) != 0) {
      return false;
    }
    std::string what;
    bool installed = vmhost::installHostRules(15001, &what);
    std::string text = std::to_string(installed) + " " + std::to_string(errno) + " " + what;
    return write(out, text.data(), text.size()) > 0;
  });
  INFO(got);
  REQUIRE(got.rfind("0\n", 0) == 0);
  CHECK(got.rfind("0\n0 " + std::to_string(EPERM) + " ", 0) == 0);
  CHECK(contains(got, "nftables: the kernel refused the rules"));
}

TEST_CASE("startup: the session's command has its own hostname, one mapped uid and only loopback",
          "[integration][host][startup]") {
  std::string reason;
  if (!vmhost::userNamespacesAvailable(&reason)) {
    GUARD_SKIP(reason);
  }
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    GUARD_SKIP("/dev/fuse is not available");
  }
  TempDir dir;
  std::string project = dir.path() + "/project";
  std::string home = dir.path() + "/home";
  std::filesystem::create_directories(project);
  std::filesystem::create_directories(home);
  std::string policy = dir.write("policy.yaml",
                                 "version: 1\n"
                                 "layer: startup-test\n"
                                 "mode: enforce\n"
                                 "network:\n"
                                 "  default: deny\n"
                                 "filesystem:\n"
                                 "  default: hidden\n"
                                 "  rules:\n"
                                 "    - id: startup.system\n"
                                 "      read-only: [/usr, /bin, /sbin, /lib, /lib64, /etc]\n"
                                 "    - id: startup.work\n"
                                 "      read-write: [\"{project}\"]\n"
                                 "env:\n"
                                 "  default: deny\n"
                                 "  rules:\n"
                                 "    - id: startup.env\n"
                                 "      allow: [PATH, HOME, LANG]\n");
  std::string audit = dir.path() + "/audit.jsonl";
  const char* path = getenv("PATH");
  std::vector<std::string> env = {
      "PATH=" + std::string(path != nullptr ? path : "/usr/bin:/bin"), "HOME=" + home,
      "GUARD_SYSTEM_DIR=" + dir.path() + "/no-system-dir", "XDG_CONFIG_HOME=" + home, "LANG=C"};
  std::string uid = std::to_string(geteuid());
  Run r = runProgram({guardBinary(), "--policy", policy, "--audit", audit, "--", "/bin/sh", "-c",
                      "hostname; id -u; cat /proc/self/uid_map; grep -c : /proc/net/dev; "
                      "grep -q '^ *lo:' /proc/net/dev && echo lo"},
                     project, env);
  INFO(describe(r));
  REQUIRE(r.status == 0);
  std::vector<std::string> lines;
  size_t i = 0;
  while (i < r.out.size()) {
    size_t j = r.out.find('\n', i);
    if (j == std::string::npos) {
      j = r.out.size();
    }
    lines.push_back(r.out.substr(i, j - i));
    i = j + 1;
  }
  REQUIRE(lines.size() == 5);
  CHECK(lines[0] == "guard");
  CHECK(lines[1] == uid);
  // One mapped id: the caller's own, to itself.
  std::vector<std::string> map;
  for (size_t k = 0, e; k < lines[2].size(); k = e) {
    k = lines[2].find_first_not_of(' ', k);
    if (k == std::string::npos) {
      break;
    }
    e = lines[2].find(' ', k);
    e = e == std::string::npos ? lines[2].size() : e;
    map.push_back(lines[2].substr(k, e - k));
  }
  CHECK(map == std::vector<std::string>{uid, uid, "1"});
  CHECK(lines[3] == "1");  // one interface
  CHECK(lines[4] == "lo");
}

}  // namespace
}  // namespace guard::testing
