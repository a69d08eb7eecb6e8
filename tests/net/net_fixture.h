// TestNet: real loopback network fixtures for the proxy's tests and benchmark:
// a test PKI, nginx origins and a scripted upstream DNS server.
#pragma once

#include <string>
#include <vector>

namespace guard::testing {

// The names TestNet serves by default, each on its own loopback address.
inline constexpr char kAllowedHost[] =
    "allowed.test"; // 127.0.0.2 and ::1 (if any)
inline constexpr char kForbiddenHost[] = "forbidden.test"; // 127.0.0.3
inline constexpr char kInspectHost[] = "inspect.test";     // 127.0.0.4
inline constexpr char kUntrustedHost[] =
    "untrusted.test"; // 127.0.0.5, untrusted CA

// NetSite is one origin name and the loopback addresses it listens on and
// that the DNS upstream answers for it (IPv4 as A, IPv6 as AAAA).
struct NetSite {
  std::string name;
  std::vector<std::string> addrs;
};

// TestNet starts, in its constructor, everything a proxy test needs upstream,
// all on loopback and all owned by this object:
//  - a temp dir /var/tmp/guard-net-XXXXXX (mode 0755, so nginx's workers can
//    read it when the suite runs as root), removed by the destructor;
//  - a PKI (tests/net/pki.sh) in dir()/pki: test CA, one leaf per site,
//    untrusted.test signed by a second, untrusted CA;
//  - nginx (tests/net/origin.py run) serving every site over HTTPS and HTTP
//    on one HTTPS port and one HTTP port shared by all sites (they differ by
//    address); endpoints /, /1k, /big, /echo, /repo.git (see origin.py);
//  - the DNS upstream (tests/net/dns_upstream.py) on 127.0.0.1, UDP and TCP,
//    mapping each site to its addresses, NXDOMAIN for anything else.
// Child processes die with the test (PR_SET_PDEATHSIG) and are stopped by the
// destructor. On any failure the constructor throws std::runtime_error naming
// the step and quoting the child's stderr (Catch2 reports it as a failure);
// whatever was already started is stopped and the temp dir removed.
// The scripts are found in $GUARD_NET_SCRIPTS, else ./tests/net, else
// tests/net next to the build directory holding this executable.
class TestNet {
public:
  // defaultSites: allowed.test, forbidden.test, inspect.test, untrusted.test,
  // as above; allowed.test gets ::1 only when hasIpv6Loopback().
  static std::vector<NetSite> defaultSites();
  // hasIpv6Loopback says whether ::1 can be bound here (some containers
  // disable IPv6).
  static bool hasIpv6Loopback();

  // TestNet() starts the default sites; TestNet(SITES) starts SITES (the
  // name untrusted.test always gets the untrusted certificate). DNS_ARGS are
  // extra dns_upstream.py arguments, e.g. {"--cname",
  // "www.allowed.test=allowed.test"}.
  TestNet();
  explicit TestNet(std::vector<NetSite> sites,
                   std::vector<std::string> dns_args = {});
  ~TestNet();
  TestNet(const TestNet &) = delete;
  TestNet &operator=(const TestNet &) = delete;

  // missingTool returns the first tool the fixture needs that is not
  // installed (nginx, openssl, python3, git), or "" when all are there.
  static std::string missingTool();

  // usable reports whether network tests can run here: the tools are
  // installed and this user may create user and network namespaces (guard
  // needs both); on false *WHY says what is missing.
  static bool usable(std::string* why);

  // dir is the fixture's temp dir; everything it writes lives below it.
  const std::string &dir() const { return dir_; }
  // scripts is the directory holding the fixture's scripts (origin.py,
  // dns_upstream.py, banner_server.py, ...).
  const std::string &scripts() const { return scripts_; }

  // caFile is the test CA (PEM) that signs every site but untrusted.test;
  // untrustedCaFile the CA that signs untrusted.test.
  std::string caFile() const;
  std::string untrustedCaFile() const;
  std::string certFile(const std::string &name) const;
  std::string keyFile(const std::string &name) const;

  // httpsPort and httpPort are NAME's origin ports (today the same for all
  // sites). addresses are NAME's loopback addresses, address the first.
  // Each throws std::out_of_range for a name that is not a site.
  int httpsPort(const std::string &name) const;
  int httpPort(const std::string &name) const;
  const std::vector<std::string> &addresses(const std::string &name) const;
  const std::string &address(const std::string &name) const;

  // url is "https://NAME:PORT/PATH" (or http:// with the HTTP port); PATH
  // starts with '/'. curlResolve is {"--resolve", "NAME:PORT:ADDR"} for
  // curl, pinning NAME to its first address for that port.
  std::string url(const std::string &name, const std::string &path,
                  bool https = true) const;
  std::vector<std::string> curlResolve(const std::string &name,
                                       bool https = true) const;

  // dnsUpstream is "127.0.0.1:PORT" of the DNS server; dnsPort the port.
  std::string dnsUpstream() const;
  int dnsPort() const { return dns_port_; }

  // accessLog is NAME's nginx access log so far (one line per finished
  // request; format in origin.py), accessLogPath its file. dnsLog is the DNS
  // server's query log ("qname qtype udp|tcp" per line).
  std::string accessLog(const std::string &name) const;
  std::string accessLogPath(const std::string &name) const;
  std::string dnsLog() const;
  // uploads is every body the origins stored from a PUT to /uploads/ (any
  // site), concatenated: what request bodies delivered.
  std::string uploads() const;

  // waitAccessLog / waitDnsLog poll until the log contains NEEDLE (nginx
  // logs a request just after sending the response) and return whether it
  // appeared within TIMEOUT_MS.
  bool waitAccessLog(const std::string &name, const std::string &needle,
                     int timeout_ms = 5000) const;
  bool waitDnsLog(const std::string &needle, int timeout_ms = 5000) const;

  // bigSha256 is the hex SHA-256 of /big, kBigSize its length in bytes;
  // repoHead the commit id of /repo.git's branch main.
  static constexpr long long kBigSize = 64LL << 20;
  std::string bigSha256() const;
  std::string repoHead() const;

private:
  struct Child {
    int pid = -1;
    std::string name;
    std::string err; // the file holding its stderr
  };

  void start(std::vector<std::string> dns_args);
  const NetSite &site(const std::string &name) const;
  Child spawn(const std::string &name, const std::vector<std::string> &argv,
              const std::string &out_path);
  // waitForFile waits until PATH is non-empty, failing when CHILD exits first.
  std::string waitForFile(Child &child, const std::string &path,
                          int timeout_ms);
  void stop(Child &child);
  void cleanup();

  std::vector<NetSite> sites_;
  std::string dir_;
  std::string scripts_;
  Child origin_;
  Child dns_;
  int https_port_ = 0;
  int http_port_ = 0;
  int dns_port_ = 0;
};

} // namespace guard::testing

// GUARD_NET_READY skips the current test (GUARD_SKIP) when TestNet::usable
// says network tests cannot run here.
#define GUARD_NET_READY()                   \
  do {                                      \
    std::string why_;                       \
    if (!::guard::testing::TestNet::usable(&why_)) { \
      GUARD_SKIP(why_);                     \
    }                                       \
  } while (0)
