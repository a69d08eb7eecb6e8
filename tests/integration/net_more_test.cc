// More integration tests for the network: server-first protocols over the
// proxy's raw TCP path (git over SSH to a real sshd, a banner server) and the
// network under an unprivileged user. As in net_test.cc, real clients run
// under `guard --policy FILE -- sh -c SCRIPT` against real servers on
// loopback (tests/net), and every claim is judged from outside: the servers'
// own logs, the DNS upstream's query log, the content of a clone.
//
// Tags [integration][net]. Skipped when a tool is missing or user namespaces
// are unavailable; the unprivileged test also needs root (to switch to user
// guardtest) and /dev/fuse open to that user.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/net/net_fixture.h"
#include "tests/net/raw_servers.h"
#include "tests/testing.h"

namespace guard::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kPath[] = "/usr/local/bin:/usr/bin:/bin";
constexpr char kUnprivUser[] = "guardtest";

bool has(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string guardPath() {
  std::string b = guardBinary();
  return !b.empty() && b[0] != '/' ? fs::absolute(b).string() : b;
}

// Session is one TestNet with a project directory and a policy that allows
// allowed.test on the origin ports plus EXTRA_PORTS, inspect.test
// (intercepted) on the origin ports, and nothing else.
struct Session {
  TestNet net;
  std::string project = net.dir() + "/project";
  std::string policy = net.dir() + "/policy.yaml";
  std::string audit = net.dir() + "/audit.jsonl";

  // DNS_ARGS go to the DNS upstream (e.g. {"--map", "NAME=ADDR"}).
  explicit Session(std::vector<std::string> dns_args = {}) : net(TestNet::defaultSites(), dns_args) {
    fs::create_directories(project);
    fs::permissions(project, fs::perms::all);
  }

  // writePolicy (re)writes the policy; EXTRA_PORTS are further ports allowed
  // for allowed.test only.
  void writePolicy(const std::vector<int>& extra_ports = {}) const {
    int p = net.httpsPort("allowed.test");
    int h = net.httpPort("allowed.test");
    std::ostringstream allowed;
    allowed << p << ", " << h;
    for (int e : extra_ports) {
      allowed << ", " << e;
    }
    std::ofstream(policy) << "version: 1\n"
                             "network:\n"
                             "  default: deny\n"
                             "  rules:\n"
                             "    - id: t.allowed\n"
                             "      allow: [allowed.test]\n"
                             "      ports: ["
                          << allowed.str()
                          << "]\n"
                             "    - id: t.inspect\n"
                             "      allow: [inspect.test]\n"
                             "      ports: ["
                          << p << ", " << h
                          << "]\n"
                             "      inspect: true\n"
                             "filesystem:\n"
                             "  default: read-only\n"
                             "  rules:\n"
                             "    - read-write: "
                          << project << "\n";
  }

  // run runs SCRIPT under guard in the project as the test's own user, with
  // $P (HTTPS port), $H (HTTP port) and $CA (test CA file) exported.
  Run run(const std::string& script, int timeout_ms = 60000) const {
    std::vector<std::string> env = {std::string("PATH=") + kPath, "HOME=" + net.dir()};
    return runProgram(
        {guardPath(), "--policy", policy, "--audit", audit, "--dns-upstream", net.dnsUpstream(),
         "--upstream-ca", net.caFile(), "--", "sh", "-c", prelude() + script},
        project, env, timeout_ms);
  }

  std::string prelude() const {
    return "export P=" + std::to_string(net.httpsPort("allowed.test")) +
           " H=" + std::to_string(net.httpPort("allowed.test")) + " CA=" + net.caFile() + "; ";
  }
};


// sshClone is the agent's script: clone SSHD's repository from USER@NAME
// over ssh into DIR and print "TAG-rc=STATUS". With TUNNEL, ssh reaches NAME
// through the explicit proxy (CONNECT, tests/net/connect_tunnel.py as
// ProxyCommand) instead of the transparent capture of a synthetic address.
std::string sshClone(const TestNet& net, const SshServer& sshd, const std::string& name,
                     const std::string& dir, const std::string& tag, bool tunnel = false) {
  std::string proxy_command =
      tunnel ? " -o ProxyCommand=\"python3 " + net.scripts() + "/connect_tunnel.py %h %p\"" : "";
  return "GIT_SSH_COMMAND='ssh -i " + sshd.clientKey() +
         " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"
         " -o ConnectTimeout=10" +
         proxy_command + " -p " + std::to_string(sshd.port()) + "' git clone -q " + sshd.user() +
         "@" + name + ":" + sshd.repoPath() + " " + dir + "; echo " + tag + "-rc=$?; ";
}

// cloneHead is the commit DIR's clone has checked out, read from outside.
std::string cloneHead(const TestNet& net, const std::string& dir) {
  Run head = runProgram({"git", "-C", dir, "rev-parse", "HEAD"}, "/",
                        {std::string("PATH=") + kPath, "GIT_CONFIG_NOSYSTEM=1",
                         "GIT_CONFIG_GLOBAL=/dev/null", "HOME=" + net.dir()});
  return head.status == 0 ? head.out : "rev-parse failed: " + head.err;
}

TEST_CASE("git over ssh reaches an allowed name through the proxy, not a denied one",
          "[integration][net]") {
  GUARD_NET_READY();
  if (std::string tool = SshServer::missingTool(); !tool.empty()) {
    GUARD_SKIP(tool + " is not installed (Debian: openssh-server, openssh-client)");
  }
  Session s;
  SshServer allowed(s.net, "allowed.test");
  SshServer forbidden(s.net, "forbidden.test");
  // Both ports are allowed, for allowed.test only: forbidden.test is denied
  // by its name.
  s.writePolicy({allowed.port(), forbidden.port()});
  std::string plain = s.project + "/clone";
  std::string tunnel = s.project + "/clone-tunnel";
  std::string bad = s.project + "/clone-forbidden";
  std::string bad_tunnel = s.project + "/clone-forbidden-tunnel";
  Run r = s.run(sshClone(s.net, allowed, "allowed.test", plain, "allowed") +
                sshClone(s.net, allowed, "allowed.test", tunnel, "allowed-tunnel", true) +
                sshClone(s.net, forbidden, "forbidden.test", bad, "forbidden") +
                sshClone(s.net, forbidden, "forbidden.test", bad_tunnel, "forbidden-tunnel", true));
  INFO(r.out << r.err << "\nallowed sshd:\n"
             << allowed.log() << "\nforbidden sshd:\n"
             << forbidden.log());
  CHECK(r.status == 0);
  // The allowed sshd accepted the key twice and served the repository: each
  // clone, read from outside, holds its commit.
  CHECK(has(r.out, "allowed-rc=0"));
  CHECK(has(r.out, "allowed-tunnel-rc=0"));
  CHECK(allowed.waitLog("Accepted publickey for " + allowed.user()));
  CHECK(has(allowed.log(), "Connection from"));
  for (const std::string& dir : {plain, tunnel}) {
    CHECK(cloneHead(s.net, dir) == allowed.repoHead() + "\n");
    CHECK(readFile(dir + "/README") == "guard ssh fixture repository\n");
  }
  // forbidden.test: its sshd saw no connection at all, by name (no answer) or
  // by CONNECT; no clone exists; no query for it left.
  CHECK_FALSE(has(r.out, "forbidden-rc=0"));
  CHECK_FALSE(has(r.out, "forbidden-tunnel-rc=0"));
  usleep(300 * 1000);
  CHECK_FALSE(has(forbidden.log(), "Connection from"));
  CHECK_FALSE(fs::exists(bad + "/README"));
  CHECK_FALSE(fs::exists(bad_tunnel + "/README"));
  CHECK_FALSE(has(s.net.dnsLog(), "forbidden.test"));
}

TEST_CASE("a server-first protocol gets its banner through on an allowed port only",
          "[integration][net]") {
  GUARD_NET_READY();
  Session s;
  BannerServer banner(s.net, "allowed.test", "GUARD-BANNER-c81e5a");
  std::string client =
      "python3 -c \"import socket, sys\n"
      "s = socket.create_connection(('allowed.test', " +
      std::to_string(banner.port()) +
      "), 10)\n"
      "s.settimeout(10)\n"
      "got = b''\n"
      "while not got.endswith(b'\\r\\n'):\n"
      "    b = s.recv(100)\n"
      "    if not b: break\n"
      "    got += b\n"
      "print('got=' + got.decode().strip())\n"
      "s.sendall(b'client-hello-after-banner\\r\\n')\n"
      "s.close()\"";

  // The same through the explicit proxy: CONNECT allowed.test:PORT, with
  // nothing to send (the banner must come anyway).
  std::string tunnel = "; echo client-rc=$?; python3 " + s.net.scripts() +
                       "/connect_tunnel.py allowed.test " + std::to_string(banner.port()) +
                       " </dev/null; rc=$?; echo; echo tunnel-rc=$rc";

  SECTION("port allowed: the agent reads the banner, the server gets the reply") {
    s.writePolicy({banner.port()});
    Run r = s.run(client + tunnel);
    INFO(r.out << r.err << "\nbanner log:\n" << banner.log());
    CHECK(r.status == 0);
    CHECK(has(r.out, "got=GUARD-BANNER-c81e5a"));
    CHECK(has(r.out, "client-rc=0"));
    CHECK(has(r.out, "\nGUARD-BANNER-c81e5a\r\n"));
    CHECK(has(r.out, "tunnel-rc=0"));
    CHECK(banner.waitLog("client-hello-after-banner"));
    CHECK(banner.waitLog("recv 0 b''"));
    std::string log = banner.log();
    CHECK(std::count(log.begin(), log.end(), '\n') == 4);  // 2 accepts, 2 recvs
  }
  SECTION("port not allowed: the server sees no connection") {
    s.writePolicy();
    Run r = s.run(client + tunnel);
    INFO(r.out << r.err << "\nbanner log:\n" << banner.log());
    CHECK(r.status == 0);
    CHECK_FALSE(has(r.out, "GUARD-BANNER"));
    CHECK_FALSE(has(r.out, "client-rc=0"));
    CHECK_FALSE(has(r.out, "tunnel-rc=0"));
    usleep(300 * 1000);
    CHECK(banner.log().empty());
  }
}

// ensureUnprivUser returns "" when user guardtest exists (created here when
// missing, as tests/integration/host_test.cc does) and can run guard: /dev/fuse
// open to it, fusermount3, and user namespaces; else why not.
std::string ensureUnprivUser(uid_t* uid, gid_t* gid) {
  if (geteuid() != 0) {
    return "the unprivileged network test switches users and needs root";
  }
  if (getpwnam(kUnprivUser) == nullptr) {
    runProgram({"useradd", "-m", kUnprivUser});
  }
  struct passwd* pw = getpwnam(kUnprivUser);
  if (pw == nullptr) {
    return std::string("no user ") + kUnprivUser + " and useradd failed";
  }
  *uid = pw->pw_uid;
  *gid = pw->pw_gid;
  std::vector<std::string> env = {std::string("PATH=") + kPath};
  if (runProgram(
          {"runuser", "-u", kUnprivUser, "--", "test", "-r", "/dev/fuse", "-a", "-w", "/dev/fuse"},
          "/", env)
          .status != 0) {
    return std::string("/dev/fuse is not open to ") + kUnprivUser;
  }
  if (runProgram({"sh", "-c", "command -v fusermount3"}, "/", env).status != 0) {
    return "fusermount3 is missing";
  }
  Run ns = runProgram(
      {"runuser", "-u", kUnprivUser, "--", "unshare", "-U", "-r", "-n", "-m", "true"}, "/", env);
  if (ns.status != 0) {
    return std::string(kUnprivUser) + " cannot create user and network namespaces: " + ns.err;
  }
  if (runProgram({"runuser", "-u", kUnprivUser, "--", "test", "-x", guardPath()}, "/", env)
          .status != 0) {
    return std::string(kUnprivUser) + " cannot execute " + guardPath();
  }
  return "";
}

TEST_CASE("the network holds for an unprivileged user: allowed name reached, denied one not",
          "[integration][net]") {
  GUARD_NET_READY();
  uid_t uid = 0;
  gid_t gid = 0;
  if (std::string why = ensureUnprivUser(&uid, &gid); !why.empty()) {
    GUARD_SKIP(why);
  }
  Session s;
  s.writePolicy();
  // What guardtest writes (the audit log, the project) lives in a directory
  // it owns; the policy and the test CA are only read.
  std::string home = s.net.dir() + "/unpriv";
  fs::create_directories(home + "/project");
  REQUIRE(chown(home.c_str(), uid, gid) == 0);
  REQUIRE(chown((home + "/project").c_str(), uid, gid) == 0);
  std::string audit = home + "/audit.jsonl";
  std::string policy = home + "/policy.yaml";
  std::string text = readFile(s.policy);
  // The session's writable path is guardtest's project.
  size_t at = text.find(s.project);
  REQUIRE(at != std::string::npos);
  text.replace(at, s.project.size(), home + "/project");
  std::ofstream(policy) << text;
  fs::permissions(policy, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                              fs::perms::others_read);

  std::string script =
      s.prelude() +
      // intercepted: the session CA is trusted through the agent's view
      "curl --noproxy '*' -sS --max-time 10 https://inspect.test:$P/?via=unpriv-allowed; "
      "echo allowed-rc=$?; "
      "curl --noproxy '*' -sS --max-time 5 -k https://forbidden.test:$P/?via=unpriv-denied; "
      "echo denied-rc=$?; id -u";
  Run r = runProgram({"runuser",
                      "-u",
                      kUnprivUser,
                      "--",
                      "env",
                      "-i",
                      std::string("PATH=") + kPath,
                      "HOME=" + home,
                      guardPath(),
                      "--policy",
                      policy,
                      "--audit",
                      audit,
                      "--dns-upstream",
                      s.net.dnsUpstream(),
                      "--upstream-ca",
                      s.net.caFile(),
                      "--",
                      "sh",
                      "-c",
                      script},
                     home + "/project", {std::string("PATH=") + kPath}, 60000);
  INFO(r.out << r.err);
  CHECK(r.status == 0);
  CHECK(has(r.out, "allowed-rc=0"));
  CHECK_FALSE(has(r.out, "denied-rc=0"));
  CHECK(s.net.waitAccessLog("inspect.test", "via=unpriv-allowed"));
  usleep(300 * 1000);
  CHECK(s.net.accessLog("forbidden.test").empty());
  CHECK_FALSE(has(s.net.dnsLog(), "forbidden.test"));
  // The audit log was written by guardtest, in its own directory.
  struct stat st {};
  REQUIRE(stat(audit.c_str(), &st) == 0);
  CHECK(st.st_uid == uid);
  CHECK(has(readFile(audit), "forbidden.test"));
}

TEST_CASE("an allowed name that resolves to the unspecified address reaches nothing of the host",
          "[integration][net][adversarial]") {
  GUARD_NET_READY();
  if (!TestNet::hasIpv6Loopback()) {
    GUARD_SKIP("no IPv6 loopback: the host-side listener needs ::1");
  }
  // zero.test is allowed, and its upstream answer is "::": a connect to it
  // from the host's namespace would reach the host's own ::1.
  Session s({"--map", "zero.test=::"});
  BannerServer banner(s.net, "allowed.test", "GUARD-BANNER-ZERO");
  std::ofstream(s.policy) << "version: 1\nnetwork:\n  default: deny\n  rules:\n"
                             "    - allow: [zero.test]\n      ports: ["
                          << banner.port() << "]\nfilesystem:\n  default: read-only\n";
  Run r = s.run("python3 -c \"import socket\ns = socket.create_connection(('zero.test', " +
                std::to_string(banner.port()) +
                "), 5)\nprint('got=' + s.recv(100).decode())\"; echo rc=$?");
  INFO(r.out << r.err << "\nbanner log:\n" << banner.log());
  usleep(300 * 1000);
  CHECK(has(s.net.dnsLog(), "zero.test"));  // it was resolved upstream...
  CHECK_FALSE(has(r.out, "GUARD-BANNER-ZERO"));
  CHECK(banner.log().empty());  // ...and never connected to
}

}  // namespace
}  // namespace guard::testing
