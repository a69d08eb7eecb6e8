// Tests of the loopback network fixtures themselves (tests/net/), without
// guard: the origins answer over HTTPS and HTTP with the test CA and log what
// reached them, the DNS upstream answers and logs, the untrusted origin fails
// verification, and the fixture leaves nothing behind. Every client here is
// pinned to loopback (curl --resolve and --noproxy, git's curloptResolve, dig
// @127.0.0.1) and runs with a minimal environment, so no proxy variable of the
// machine can send traffic elsewhere.
//
// Tag [netfixture] (also [integration]).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/net/net_fixture.h"
#include "tests/testing.h"

namespace guard::testing {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> &cleanEnv() {
  static const std::vector<std::string> env = {
      "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/nonexistent",
      "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "LC_ALL=C"};
  return env;
}

// curl runs curl against NAME on loopback, trusting CA, with EXTRA arguments
// before URL; stdout is the body.
Run curl(const TestNet &net, const std::string &name, const std::string &path,
         const std::string &ca, const std::vector<std::string> &extra = {},
         bool https = true) {
  std::vector<std::string> argv = {"curl", "-sS",        "--noproxy",
                                   "*",    "--max-time", "20"};
  if (https) {
    argv.insert(argv.end(), {"--cacert", ca});
  }
  for (const std::string &r : net.curlResolve(name, https)) {
    argv.push_back(r);
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(net.url(name, path, https));
  return runProgram(argv, "", cleanEnv(), 60000);
}

Run dig(const TestNet &net, const std::vector<std::string> &args) {
  std::vector<std::string> argv = {"dig",     "@127.0.0.1",
                                   "-p",      std::to_string(net.dnsPort()),
                                   "+time=2", "+tries=1"};
  argv.insert(argv.end(), args.begin(), args.end());
  return runProgram(argv, "", cleanEnv());
}

// accepting says whether something accepts TCP connections on ADDR:PORT (IPv4).
bool accepting(const std::string &addr, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
  bool ok = connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) == 0;
  close(fd);
  return ok;
}

TEST_CASE("netfixture: each trusted site answers over HTTPS and HTTP and logs "
          "the request",
          "[integration][netfixture]") {
  TestNet net;
  for (const char *name : {kAllowedHost, kForbiddenHost, kInspectHost}) {
    INFO(name);
    std::string marker = std::string("/?probe-") + name;
    Run r = curl(net, name, marker, net.caFile(),
                 {"-H", "Authorization: Bearer tok-" + std::string(name)});
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out == std::string(name) + "\n");
    REQUIRE(net.waitAccessLog(name, "uri=\"" + marker + "\""));
    std::string log = net.accessLog(name);
    CHECK(contains(log, "sni=\"" + std::string(name) + "\""));
    CHECK(contains(log,
                   "authorization=\"Bearer tok-" + std::string(name) + "\""));
    CHECK(contains(log, "server=" + net.address(name) + ":" +
                            std::to_string(net.httpsPort(name))));

    Run plain = curl(net, name, "/?plain", "", {}, /*https=*/false);
    REQUIRE(plain.status == 0);
    CHECK(plain.out == std::string(name) + "\n");
    CHECK(net.waitAccessLog(name, "uri=\"/?plain\" status=200"));
  }
  // A request reaches only its own site's log.
  CHECK_FALSE(contains(net.accessLog(kForbiddenHost), "probe-allowed.test"));
  CHECK_FALSE(contains(net.accessLog(kAllowedHost), "probe-forbidden.test"));
}

TEST_CASE("netfixture: allowed.test also answers on ::1",
          "[integration][netfixture]") {
  if (!TestNet::hasIpv6Loopback()) {
    GUARD_SKIP("::1 cannot be bound here");
  }
  TestNet net;
  REQUIRE(net.addresses(kAllowedHost).size() == 2);
  REQUIRE(net.addresses(kAllowedHost)[1] == "::1");
  std::string port = std::to_string(net.httpsPort(kAllowedHost));
  Run r = runProgram({"curl", "-sS", "--noproxy", "*", "--cacert", net.caFile(),
                      "--resolve",
                      std::string(kAllowedHost) + ":" + port + ":[::1]",
                      net.url(kAllowedHost, "/?v6")},
                     "", cleanEnv());
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out == "allowed.test\n");
  CHECK(net.waitAccessLog(kAllowedHost, "server=::1:" + port));
}

TEST_CASE("netfixture: /1k, /big, /echo and keep-alive behave as documented",
          "[integration][netfixture]") {
  TestNet net;
  Run k = curl(net, kAllowedHost, "/1k", net.caFile());
  REQUIRE(k.status == 0);
  CHECK(k.out.size() == 1024);

  std::string big = net.dir() + "/big.download";
  Run b = curl(net, kAllowedHost, "/big", net.caFile(), {"-o", big});
  INFO(b.err);
  REQUIRE(b.status == 0);
  CHECK(static_cast<long long>(fs::file_size(big)) == TestNet::kBigSize);
  Run sum = runProgram({"sha256sum", big}, "", cleanEnv());
  REQUIRE(sum.status == 0);
  REQUIRE(net.bigSha256().size() == 64);
  CHECK(sum.out.substr(0, 64) == net.bigSha256());

  Run e = curl(net, kInspectHost, "/echo?q=1", net.caFile(),
               {"-H", "Authorization: Bearer sk-secret-1", "-H",
                "X-Api-Key: key-2", "-H", "X-Token: tok-3"});
  REQUIRE(e.status == 0);
  CHECK(e.out ==
        "authorization=Bearer "
        "sk-secret-1\nx-api-key=key-2\nx-token=tok-3\nuri=/echo?q=1\n");
  REQUIRE(net.waitAccessLog(kInspectHost, "uri=\"/echo?q=1\""));
  CHECK(contains(net.accessLog(kInspectHost), "x_api_key=\"key-2\""));

  // Two requests in one curl run share one connection: the same client port.
  Run two = curl(net, kForbiddenHost, "/?ka-1", net.caFile(),
                 {"-o", "/dev/null", net.url(kForbiddenHost, "/?ka-2"), "-o",
                  "/dev/null"});
  REQUIRE(two.status == 0);
  REQUIRE(net.waitAccessLog(kForbiddenHost, "/?ka-2"));
  std::string log = net.accessLog(kForbiddenHost);
  auto remoteOf = [&](const std::string &uri) {
    size_t line = log.find("uri=\"" + uri + "\"");
    size_t at = log.find("remote=", line);
    return log.substr(at, log.find(' ', at) - at);
  };
  CHECK(remoteOf("/?ka-1") == remoteOf("/?ka-2"));
}

TEST_CASE("netfixture: the git repository clones over dumb HTTP(S)",
          "[integration][netfixture]") {
  TestNet net;
  std::string port = std::to_string(net.httpsPort(kAllowedHost));
  std::vector<std::string> env = cleanEnv();
  env.push_back("GIT_SSL_CAINFO=" + net.caFile());
  std::string clone = net.dir() + "/clone";
  Run r = runProgram({"git", "-c",
                      "http.curloptResolve=allowed.test:" + port + ":" +
                          net.address(kAllowedHost),
                      "-c", "http.proxy=", "clone", "-q",
                      net.url(kAllowedHost, "/repo.git"), clone},
                     "", env, 60000);
  INFO(r.err);
  REQUIRE(r.status == 0);
  Run head = runProgram({"git", "-C", clone, "rev-parse", "HEAD"}, "", env);
  REQUIRE(head.status == 0);
  REQUIRE(net.repoHead().size() == 40);
  CHECK(head.out == net.repoHead() + "\n");
  CHECK(net.waitAccessLog(kAllowedHost, "uri=\"/repo.git/info/refs"));
}

TEST_CASE("netfixture: untrusted.test fails verification with the test CA",
          "[integration][netfixture]") {
  TestNet net;
  Run bad = curl(net, kUntrustedHost, "/?with-test-ca", net.caFile());
  CHECK(bad.status == 60); // CURLE_PEER_FAILED_VERIFICATION
  CHECK(bad.out.empty());
  // The handshake failed, so no request reached the server.
  CHECK_FALSE(contains(net.accessLog(kUntrustedHost), "with-test-ca"));

  // The origin itself is up: with its own CA the same request succeeds.
  Run good = curl(net, kUntrustedHost, "/?with-own-ca", net.untrustedCaFile());
  INFO(good.err);
  REQUIRE(good.status == 0);
  CHECK(good.out == "untrusted.test\n");
  // And a trusted site's certificate does not verify for another name.
  Run mismatch = runProgram(
      {"curl", "-sS", "--noproxy", "*", "--cacert", net.caFile(), "--resolve",
       "inspect.test:" + std::to_string(net.httpsPort(kAllowedHost)) + ":" +
           net.address(kAllowedHost),
       net.url(kInspectHost, "/")},
      "", cleanEnv());
  CHECK(mismatch.status == 60);
}

TEST_CASE("netfixture: the DNS upstream answers mapped names, NXDOMAIN "
          "otherwise, and logs",
          "[integration][netfixture]") {
  TestNet net(std::vector<NetSite>{{kAllowedHost, {"127.0.0.2", "::1"}},
                                   {kForbiddenHost, {"127.0.0.3"}}},
              {"--cname", "www.allowed.test=allowed.test"});
  REQUIRE(net.dnsUpstream() == "127.0.0.1:" + std::to_string(net.dnsPort()));

  Run a = dig(net, {"allowed.test", "A", "+short"});
  REQUIRE(a.status == 0);
  CHECK(a.out == "127.0.0.2\n");
  CHECK(net.waitDnsLog("allowed.test A udp\n"));

  Run aaaa = dig(net, {"allowed.test", "AAAA", "+short", "+tcp"});
  REQUIRE(aaaa.status == 0);
  CHECK(aaaa.out == "::1\n");
  CHECK(net.waitDnsLog("allowed.test AAAA tcp\n"));

  Run cname = dig(net, {"WWW.Allowed.TEST", "A", "+short"});
  REQUIRE(cname.status == 0);
  CHECK(cname.out == "allowed.test.\n127.0.0.2\n");

  Run nodata = dig(net, {"forbidden.test", "AAAA"});
  REQUIRE(nodata.status == 0);
  CHECK(contains(nodata.out, "status: NOERROR"));
  CHECK(contains(nodata.out, "ANSWER: 0"));

  Run nx = dig(net, {"unmapped.test", "A"});
  REQUIRE(nx.status == 0);
  CHECK(contains(nx.out, "status: NXDOMAIN"));
  CHECK(contains(nx.out, "ANSWER: 0"));
  CHECK(net.waitDnsLog("unmapped.test A udp\n"));

  // inspect.test is not a site of this fixture, so it is not mapped.
  Run other = dig(net, {"inspect.test", "A"});
  CHECK(contains(other.out, "status: NXDOMAIN"));
}

TEST_CASE("netfixture: the fixture stops its servers and removes its directory",
          "[integration][netfixture]") {
  std::string dir;
  int https = 0;
  int http = 0;
  {
    TestNet net;
    dir = net.dir();
    https = net.httpsPort(kForbiddenHost);
    http = net.httpPort(kForbiddenHost);
    REQUIRE(fs::exists(dir));
    REQUIRE(accepting("127.0.0.3", https));
    REQUIRE(accepting("127.0.0.3", http));
  }
  CHECK_FALSE(fs::exists(dir));
  CHECK_FALSE(accepting("127.0.0.3", https));
  CHECK_FALSE(accepting("127.0.0.3", http));
}

TEST_CASE("netfixture: a site with a non-loopback address is refused",
          "[integration][netfixture]") {
  CHECK_THROWS_WITH(
      TestNet(std::vector<NetSite>{{"outside.test", {"192.0.2.1"}}}),
      Catch::Matchers::Contains("non-loopback"));
}

} // namespace
} // namespace guard::testing
