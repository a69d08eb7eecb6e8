// Unit tests for policy/matchers.cc and policy/evaluate.cc within one layer:
// which rule decides each surface's requests, and that deciding allocates
// nothing.
#include "policy/matchers.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "policy/document.h"
#include "policy/policy.h"

// ---- allocation counting ---------------------------------------------------
//
// These replace the global allocation functions for the whole test binary:
// every form passes through to malloc/free, and each allocation bumps a
// per-thread counter the no-allocation test reads.

namespace {

thread_local unsigned long t_allocations = 0;

void* countedAlloc(std::size_t size) {
  ++t_allocations;
  if (size == 0) {
    size = 1;
  }
  for (;;) {
    if (void* p = std::malloc(size)) {
      return p;
    }
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) {
      throw std::bad_alloc();
    }
    handler();
  }
}

void* countedAlignedAlloc(std::size_t size, std::align_val_t alignment) {
  ++t_allocations;
  std::size_t align = static_cast<std::size_t>(alignment);
  if (align < sizeof(void*)) {
    align = sizeof(void*);
  }
  if (size == 0) {
    size = 1;
  }
  for (;;) {
    void* p = nullptr;
    if (posix_memalign(&p, align, size) == 0) {
      return p;
    }
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) {
      throw std::bad_alloc();
    }
    handler();
  }
}

}  // namespace

void* operator new(std::size_t size) { return countedAlloc(size); }
void* operator new[](std::size_t size) { return countedAlloc(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return countedAlloc(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return countedAlloc(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t size, std::align_val_t al) { return countedAlignedAlloc(size, al); }
void* operator new[](std::size_t size, std::align_val_t al) {
  return countedAlignedAlloc(size, al);
}
void* operator new(std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return countedAlignedAlloc(size, al);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return countedAlignedAlloc(size, al);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace guard::policy {
namespace {

Context testContext() {
  Context ctx;
  ctx.user = "alice";
  ctx.home = "/home/alice";
  ctx.project = "/work/proj";
  ctx.host = "test-host";
  return ctx;
}

// compileYaml parses YAML as layer "t" of file "t.yaml" and compiles it alone.
Policy compileYaml(std::string_view yaml) {
  auto layer = parseLayer(yaml, "t.yaml", "t");
  if (!layer.ok()) {
    FAIL("parse failed: " << layer.error().message());
  }
  auto policy = compile({layer.value()}, testContext());
  if (!policy.ok()) {
    FAIL("compile failed: " << policy.error().message());
  }
  return std::move(policy).value();
}

IpAddr ip(std::string_view text) {
  IpAddr a;
  if (!IpAddr::parse(text, &a)) {
    FAIL("not an address: " << text);
  }
  return a;
}

// NetCase is one connection: NAME (may be empty) and ADDR (may be empty: no
// address) on PORT, and the decision and rule id expected.
struct NetCase {
  const char* name;
  const char* addr;
  uint16_t port;
  Decision decision;
  const char* rule;
};

void checkConnect(const Policy& p, std::span<const NetCase> cases) {
  for (const NetCase& c : cases) {
    INFO("connect name='" << c.name << "' addr='" << c.addr << "' port=" << c.port);
    IpAddr a;
    bool has_addr = c.addr[0] != '\0';
    if (has_addr) {
      a = ip(c.addr);
    }
    Verdict v = p.connect(c.name, has_addr ? &a : nullptr, c.port);
    CHECK(decisionName(v.decision) == std::string(decisionName(c.decision)));
    CHECK(v.rule.id == c.rule);
  }
}

// HostCase is one Policy::host request.
struct HostCase {
  const char* host;
  uint16_t port;
  Decision decision;
  const char* rule;
};

void checkHost(const Policy& p, std::span<const HostCase> cases) {
  for (const HostCase& c : cases) {
    INFO("host '" << c.host << "' port " << c.port);
    Verdict v = p.host(c.host, c.port);
    CHECK(decisionName(v.decision) == std::string(decisionName(c.decision)));
    CHECK(v.rule.id == c.rule);
  }
}

constexpr Decision kAllow = Decision::kAllow;
constexpr Decision kDeny = Decision::kDeny;

// ---- network: names --------------------------------------------------------

TEST_CASE("domain rules: exact beats wildcard beats '*'", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: deny
  rules:
    - allow: example.com
      id: exact
    - deny: "*.example.com"
      id: wild
    - allow: "*.a.example.com"
      id: deeper
    - allow: api.example.com
      id: api
    - deny: "*"
      id: any
)");
  const HostCase cases[] = {
      {"example.com", 443, kAllow, "exact"},
      {"x.example.com", 443, kDeny, "wild"},
      {"x.y.example.com", 443, kDeny, "wild"},
      {"a.example.com", 443, kDeny, "wild"},  // "*.a.example.com" does not match its apex
      {"b.a.example.com", 443, kAllow, "deeper"},
      {"c.b.a.example.com", 443, kAllow, "deeper"},
      {"api.example.com", 443, kAllow, "api"},
      {"x.api.example.com", 443, kDeny, "wild"},
      {"other.org", 443, kDeny, "any"},
      {"example.com.evil.org", 443, kDeny, "any"},
      {"notexample.com", 443, kDeny, "any"},
      {"com", 443, kDeny, "any"},
  };
  checkHost(p, cases);
}

TEST_CASE("a wildcard does not match its apex; '*' matches every name", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: deny
  rules:
    - allow: "*.example.com"
      id: wild
)");
  const HostCase cases[] = {
      {"a.example.com", 80, kAllow, "wild"},
      {"a.b.example.com", 80, kAllow, "wild"},
      {"example.com", 80, kDeny, "t.network.default"},
      {"xexample.com", 80, kDeny, "t.network.default"},
      {"example.com.", 80, kDeny, "t.network.default"},
  };
  checkHost(p, cases);

  Policy any = compileYaml(R"(
network:
  default: deny
  rules:
    - allow: "*"
      id: any
)");
  const HostCase any_cases[] = {
      {"example.com", 80, kAllow, "any"},
      {"a", 1, kAllow, "any"},
      {"10.1.2.3", 22, kAllow, "any"},
      {"::1", 22, kAllow, "any"},
  };
  checkHost(any, any_cases);
}

TEST_CASE("requested names are normalised: case, trailing dot, punycode", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: deny
  rules:
    - allow: [example.com, "B\u00fccher.example"]
      id: names
    - allow: "*.xn--caf-dma.example"
      id: cafe
)");
  const HostCase cases[] = {
      {"EXAMPLE.com", 443, kAllow, "names"},
      {"example.com.", 443, kAllow, "names"},
      {"Example.Com.", 443, kAllow, "names"},
      {"xn--bcher-kva.example", 443, kAllow, "names"},
      {"b\xC3\xBC" "cher.example", 443, kAllow, "names"},
      {"B\xC3\x9C" "CHER.EXAMPLE", 443, kAllow, "names"},
      {"www.caf\xC3\xA9.example", 443, kAllow, "cafe"},
      {"example.com..", 443, kDeny, "builtin.network.default"},
      {"bad name.com", 443, kDeny, "builtin.network.default"},
  };
  checkHost(p, cases);
  Verdict v = p.host("a..b", 443);
  CHECK(v.decision == kDeny);
  CHECK(v.reason == "not a valid domain name");
}

TEST_CASE("ports: rules whose ports exclude the request are skipped", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: deny
  rules:
    - allow: p.com
      ports: [443, "8000-8100"]
      id: p
    - deny: "*.q.com"
      id: q-wild
    - allow: x.q.com
      ports: [443]
      id: x-q
    - allow: "*"
      ports: [22]
      id: ssh-any
)");
  const HostCase cases[] = {
      {"p.com", 443, kAllow, "p"},
      {"p.com", 442, kDeny, "t.network.default"},
      {"p.com", 444, kDeny, "t.network.default"},
      {"p.com", 7999, kDeny, "t.network.default"},
      {"p.com", 8000, kAllow, "p"},
      {"p.com", 8050, kAllow, "p"},
      {"p.com", 8100, kAllow, "p"},
      {"p.com", 8101, kDeny, "t.network.default"},
      {"p.com", 22, kAllow, "ssh-any"},
      {"x.q.com", 443, kAllow, "x-q"},
      {"x.q.com", 80, kDeny, "q-wild"},  // the exact rule is skipped, the wildcard decides
      {"x.q.com", 22, kDeny, "q-wild"},
      {"other.org", 22, kAllow, "ssh-any"},
      {"other.org", 23, kDeny, "t.network.default"},
  };
  checkHost(p, cases);
}

TEST_CASE("two rules at the same level: the deny wins", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: allow
  rules:
    - allow: t.com
      id: t-allow
    - deny: t.com
      id: t-deny
    - allow: t.com
      id: t-allow-again
    - allow: "*.w.com"
      id: w-allow
    - deny: "*.w.com"
      ports: [25]
      id: w-deny-25
    - deny: 10.0.0.0/8
      id: ten-deny
    - allow: 10.0.0.0/8
      id: ten-allow
)");
  const HostCase cases[] = {
      {"t.com", 443, kDeny, "t-deny"},
      {"a.w.com", 443, kAllow, "w-allow"},
      {"a.w.com", 25, kDeny, "w-deny-25"},
      {"10.1.2.3", 443, kDeny, "ten-deny"},
  };
  checkHost(p, cases);
}

TEST_CASE("a rule in audit mode denies as would_deny", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: allow
  rules:
    - deny: a.com
      mode: audit
      id: a-audit
    - deny: b.com
      mode: audit
      id: b-audit
    - deny: b.com
      id: b-enforce
)");
  Verdict a = p.host("a.com", 443);
  CHECK(a.decision == Decision::kWouldDeny);
  CHECK(a.allowed());
  CHECK(a.rule.id == "a-audit");
  Verdict b = p.host("b.com", 443);
  CHECK(b.decision == kDeny);  // at one level, the enforced deny is stricter
  CHECK(b.rule.id == "b-enforce");
}

TEST_CASE("a verdict carries the rule's position, reason and inspect flag", "[unit]") {
  Policy p = compileYaml(R"(network:
  inspect: true
  rules:
    - allow: a.com
      reason: the a host
    - allow: b.com
      inspect: false
    - deny: c.com
      locked: true
      reason: never c
)");
  Verdict a = p.host("a.com", 443);
  CHECK(a.decision == kAllow);
  CHECK(a.rule.id == "t.network.1");
  CHECK(a.rule.layer == "t");
  CHECK(a.rule.file == "t.yaml");
  CHECK(a.rule.line == 4);
  CHECK(a.rule.col == 7);
  CHECK(a.rule.source() == "t.yaml:4:7");
  CHECK(a.reason == "the a host");
  CHECK(a.inspect);
  Verdict b = p.host("b.com", 443);
  CHECK(b.rule.id == "t.network.2");
  CHECK_FALSE(b.inspect);
  Verdict c = p.host("c.com", 443);
  CHECK(c.decision == kDeny);
  CHECK(c.locked);
  CHECK(c.reason == "never c");
  CHECK_FALSE(c.inspect);
  // No default in any layer: the built-in fail-closed default decides.
  Verdict d = p.host("d.com", 443);
  CHECK(d.decision == kDeny);
  CHECK(d.rule.id == "builtin.network.default");
  CHECK(d.rule.line == 0);
}

// ---- network: addresses ----------------------------------------------------

TEST_CASE("CIDR rules: the longest prefix decides", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: allow
  rules:
    - deny: 10.0.0.0/8
      id: ten
    - allow: 10.1.0.0/16
      id: ten-one
    - deny: 10.1.2.3
      id: host
    - deny: 10.1.2.128/25
      id: upper-half
    - allow: 192.168.0.0/16
      id: private-ok
    - deny: 0.0.0.0/0
      id: all4
    - allow: "2001:db8::/32"
      id: doc6
    - deny: "2001:db8:1::/48"
      id: doc6-1
    - deny: "::1"
      id: lo6
)");
  const NetCase cases[] = {
      {"", "10.0.0.0", 80, kDeny, "ten"},
      {"", "10.255.255.255", 80, kDeny, "ten"},
      {"", "11.0.0.0", 80, kDeny, "all4"},
      {"", "9.255.255.255", 80, kDeny, "all4"},
      {"", "10.1.0.0", 80, kAllow, "ten-one"},
      {"", "10.1.255.255", 80, kAllow, "ten-one"},
      {"", "10.2.0.0", 80, kDeny, "ten"},
      {"", "10.1.2.3", 80, kDeny, "host"},
      {"", "10.1.2.4", 80, kAllow, "ten-one"},
      {"", "10.1.2.127", 80, kAllow, "ten-one"},
      {"", "10.1.2.128", 80, kDeny, "upper-half"},
      {"", "10.1.2.255", 80, kDeny, "upper-half"},
      {"", "192.168.1.1", 80, kAllow, "private-ok"},
      {"", "8.8.8.8", 80, kDeny, "all4"},
      {"", "2001:db8::1", 80, kAllow, "doc6"},
      {"", "2001:db8:ffff::1", 80, kAllow, "doc6"},
      {"", "2001:db8:1::5", 80, kDeny, "doc6-1"},
      {"", "2001:db8:2::5", 80, kAllow, "doc6"},
      {"", "2001:db9::", 80, kAllow, "t.network.default"},
      {"", "::1", 80, kDeny, "lo6"},
      {"", "::2", 80, kAllow, "t.network.default"},
      // IPv4-mapped IPv6 is the IPv4 address.
      {"", "::ffff:10.1.2.3", 80, kDeny, "host"},
      {"", "::ffff:10.1.9.9", 80, kAllow, "ten-one"},
      {"", "::ffff:8.8.8.8", 80, kDeny, "all4"},
  };
  checkConnect(p, cases);
}

TEST_CASE("/0 matches every address of its family only", "[unit]") {
  Policy v4 = compileYaml(R"(
network:
  default: allow
  rules:
    - deny: 0.0.0.0/0
      id: all4
)");
  const NetCase v4_cases[] = {
      {"", "0.0.0.0", 1, kDeny, "all4"},
      {"", "255.255.255.255", 65535, kDeny, "all4"},
      {"", "::1", 1, kAllow, "t.network.default"},
      {"", "2001:db8::1", 1, kAllow, "t.network.default"},
  };
  checkConnect(v4, v4_cases);
  Policy v6 = compileYaml(R"(
network:
  default: allow
  rules:
    - deny: "::/0"
      id: all6
    - allow: 192.0.2.10/32
      id: one
)");
  const NetCase v6_cases[] = {
      {"", "::", 1, kDeny, "all6"},
      {"", "ffff::ffff", 1, kDeny, "all6"},
      {"", "10.0.0.1", 1, kAllow, "t.network.default"},
      {"", "192.0.2.10", 1, kAllow, "one"},
      {"", "192.0.2.11", 1, kAllow, "t.network.default"},
  };
  checkConnect(v6, v6_cases);
}

TEST_CASE("address rules honour ports", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: deny
  rules:
    - allow: 192.0.2.10
      ports: [22, "8000-8100"]
      id: ssh
    - allow: 192.0.2.0/24
      ports: [443]
      id: net-443
)");
  const NetCase cases[] = {
      {"", "192.0.2.10", 22, kAllow, "ssh"},
      {"", "192.0.2.10", 8080, kAllow, "ssh"},
      {"", "192.0.2.10", 443, kAllow, "net-443"},
      {"", "192.0.2.10", 80, kDeny, "t.network.default"},
      {"", "192.0.2.11", 22, kDeny, "t.network.default"},
      {"", "192.0.2.11", 443, kAllow, "net-443"},
  };
  checkConnect(p, cases);
}

TEST_CASE("IP literals in every inet_aton spelling are the address they spell", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: allow
  rules:
    - deny: 127.0.0.0/8
      id: loopback
    - deny: 10.1.2.3
      id: host
    - deny: "::1"
      id: lo6
)");
  const HostCase cases[] = {
      {"127.0.0.1", 80, kDeny, "loopback"},
      {"2130706433", 80, kDeny, "loopback"},
      {"0x7f000001", 80, kDeny, "loopback"},
      {"0x7F.1", 80, kDeny, "loopback"},
      {"127.1", 80, kDeny, "loopback"},
      {"0177.0.0.1", 80, kDeny, "loopback"},
      {"017700000001", 80, kDeny, "loopback"},
      {"167838211", 80, kDeny, "host"},
      {"0x0a010203", 80, kDeny, "host"},
      {"10.1.515", 80, kDeny, "host"},
      {"::ffff:10.1.2.3", 80, kDeny, "host"},
      {"[::ffff:127.0.0.1]", 80, kDeny, "loopback"},
      {"[::1]", 80, kDeny, "lo6"},
      {"::1", 80, kDeny, "lo6"},
      {"0:0:0:0:0:0:0:1", 80, kDeny, "lo6"},
      {"128.0.0.1", 80, kAllow, "t.network.default"},
  };
  checkHost(p, cases);
}

// ---- network: name and address together -----------------------------------

TEST_CASE("a connection with a name and an address is decided on both", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: deny
  rules:
    - allow: github.com
      id: gh
    - deny: 10.0.0.0/8
      id: internal
    - allow: 192.0.2.0/24
      id: doc-net
    - deny: evil.com
      id: evil
)");
  const NetCase cases[] = {
      // An allowed name in a denied network is denied.
      {"github.com", "10.1.1.1", 443, kDeny, "internal"},
      // An address no rule names adds nothing: the name decides.
      {"github.com", "140.82.112.3", 443, kAllow, "gh"},
      {"unknown.org", "140.82.112.3", 443, kDeny, "t.network.default"},
      // An allowed address does not rescue a name the policy does not allow.
      {"unknown.org", "192.0.2.5", 443, kDeny, "t.network.default"},
      {"evil.com", "192.0.2.5", 443, kDeny, "evil"},
      {"github.com", "192.0.2.5", 443, kAllow, "gh"},
      // A bare address is decided by the address rules and the default.
      {"", "192.0.2.5", 443, kAllow, "doc-net"},
      {"", "10.0.0.1", 443, kDeny, "internal"},
      {"", "140.82.112.3", 443, kDeny, "t.network.default"},
      // Neither: the default.
      {"", "", 443, kDeny, "t.network.default"},
  };
  checkConnect(p, cases);
}

TEST_CASE("a '*' deny does not override an allowed name's connection by address", "[unit]") {
  // The usual allow-list: allow some names, deny everything else with "*".
  // The proxy connects with both the name and its resolved address; the
  // address is named by no rule of its own, so the name decides.
  Policy p = compileYaml(R"(
network:
  rules:
    - allow: github.com
      id: gh
    - deny: "*"
      id: everything-else
)");
  const NetCase cases[] = {
      {"github.com", "", 443, kAllow, "gh"},
      {"github.com", "140.82.112.3", 443, kAllow, "gh"},
      {"github.com", "2606:50c0::1", 443, kAllow, "gh"},
      {"evil.com", "140.82.112.3", 443, kDeny, "everything-else"},
      {"", "140.82.112.3", 443, kDeny, "everything-else"},
  };
  checkConnect(p, cases);
}

// ---- DNS -------------------------------------------------------------------

TEST_CASE("dns: a name resolves when some port could be allowed", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: deny
  rules:
    - allow: p.com
      ports: [443]
      id: p-443
    - deny: q.com
      ports: [25]
      id: q-25
    - allow: q.com
      id: q
    - deny: r.com
      id: r
    - allow: "*.s.com"
      id: s-wild
    - deny: x.s.com
      ports: [25]
      id: x-s-25
    - deny: 10.0.0.0/8
      id: internal
)");
  struct Case {
    const char* name;
    Decision decision;
    const char* rule;
  };
  const Case cases[] = {
      {"p.com", kAllow, "p-443"},    // a port-limited allow permits resolution
      {"q.com", kAllow, "q"},        // a port-limited deny does not stop it
      {"r.com", kDeny, "r"},
      {"a.s.com", kAllow, "s-wild"},
      {"x.s.com", kAllow, "s-wild"},
      {"other.org", kDeny, "t.network.default"},
      {"P.COM.", kAllow, "p-443"},
  };
  for (const Case& c : cases) {
    INFO("dns " << c.name);
    Verdict v = p.dns(c.name);
    CHECK(decisionName(v.decision) == std::string(decisionName(c.decision)));
    CHECK(v.rule.id == c.rule);
  }
  Verdict bad = p.dns("a..b");
  CHECK(bad.decision == kDeny);
  CHECK(bad.reason == "not a valid domain name");
  // The connections themselves still honour the ports.
  CHECK(p.host("p.com", 80).decision == kDeny);
  CHECK(p.host("q.com", 25).decision == kDeny);
  CHECK(p.host("q.com", 443).decision == kAllow);
}

TEST_CASE("dns: a port-limited deny over a default allow does not block resolution", "[unit]") {
  Policy p = compileYaml(R"(
network:
  default: allow
  rules:
    - deny: mail.com
      ports: [25, 587]
      id: smtp
    - deny: "*.blocked.com"
      id: blocked
)");
  CHECK(p.dns("mail.com").decision == kAllow);
  CHECK(p.dns("mail.com").rule.id == "t.network.default");
  CHECK(p.dns("a.blocked.com").decision == kDeny);
  CHECK(p.dns("a.blocked.com").rule.id == "blocked");
}

// ---- filesystem ------------------------------------------------------------

constexpr const char* kFsPolicy = R"(
filesystem:
  default: hidden
  rules:
    - read-only: [/usr, /etc, "~"]
      id: ro
    - read-write: ["{project}", /tmp]
      id: rw
    - hidden: ["~/.ssh", "**/.env", "*.pem"]
      id: secret
      reason: keys
    - read-only: "{project}/.git/hooks"
      id: hooks
    - read-only: "/data/file?.txt"
      id: question
    - read-write: "/srv/lit/*"
      id: lit-glob
    - hidden: /srv/lit/b
      id: lit-literal
    - hidden: "/srv/open/*"
      id: open-glob
    - read-write: /srv/open/ok
      id: open-literal
    - read-write: /srv/tie
      id: tie-rw
    - hidden: /srv/tie
      id: tie-hidden
    - read-only: /srv/tie2
      id: tie2-ro
    - read-write: /srv/tie2
      id: tie2-rw
    - read-only: "/opt/**/bin"
      id: any-bin
    - hidden: "/opt/**/secret/*.key"
      id: deep-key
)";

struct FsCase {
  const char* path;
  Access access;
  const char* rule;
};

void checkFiles(const Policy& p, std::span<const FsCase> cases) {
  for (const FsCase& c : cases) {
    INFO("file '" << c.path << "'");
    Verdict r = p.file(c.path, FileOp::kRead);
    Verdict w = p.file(c.path, FileOp::kWrite);
    CHECK(accessName(r.access) == std::string(accessName(c.access)));
    CHECK(r.rule.id == c.rule);
    CHECK(w.rule.id == c.rule);
    CHECK(w.access == r.access);
    // Reads are denied only on hidden paths; writes on hidden and read-only.
    CHECK(r.allowed() == (c.access != Access::kHidden));
    CHECK(w.allowed() == (c.access == Access::kReadWrite));
  }
}

TEST_CASE("filesystem: a rule names a subtree and the deepest ancestor decides", "[unit]") {
  Policy p = compileYaml(kFsPolicy);
  const FsCase cases[] = {
      {"/", Access::kHidden, "t.filesystem.default"},
      {"/usr", Access::kReadOnly, "ro"},
      {"/usr/bin/cc", Access::kReadOnly, "ro"},
      {"/usrx", Access::kHidden, "t.filesystem.default"},
      {"/us", Access::kHidden, "t.filesystem.default"},
      {"/etc/passwd", Access::kReadOnly, "ro"},
      {"/home/alice", Access::kReadOnly, "ro"},
      {"/home/alice/notes.txt", Access::kReadOnly, "ro"},
      {"/home/alice2", Access::kHidden, "t.filesystem.default"},
      {"/home/bob", Access::kHidden, "t.filesystem.default"},
      {"/home/alice/.ssh", Access::kHidden, "secret"},
      {"/home/alice/.ssh/id_ed25519", Access::kHidden, "secret"},
      {"/home/alice/.sshx", Access::kReadOnly, "ro"},
      {"/work/proj", Access::kReadWrite, "rw"},
      {"/work/proj/src/main.cc", Access::kReadWrite, "rw"},
      {"/work", Access::kHidden, "t.filesystem.default"},
      {"/work/project", Access::kHidden, "t.filesystem.default"},
      {"/tmp/x", Access::kReadWrite, "rw"},
      {"/work/proj/.git/hooks", Access::kReadOnly, "hooks"},
      {"/work/proj/.git/hooks/pre-commit", Access::kReadOnly, "hooks"},
      {"/work/proj/.git/config", Access::kReadWrite, "rw"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: **/.env is hidden at any depth, even inside read-write", "[unit]") {
  Policy p = compileYaml(kFsPolicy);
  const FsCase cases[] = {
      {"/work/proj/.env", Access::kHidden, "secret"},
      {"/work/proj/sub/dir/.env", Access::kHidden, "secret"},
      {"/work/proj/.env/inside", Access::kHidden, "secret"},
      {"/tmp/.env", Access::kHidden, "secret"},
      {"/.env", Access::kHidden, "secret"},
      {"/usr/.env", Access::kHidden, "secret"},
      {"/work/proj/.envrc", Access::kReadWrite, "rw"},
      {"/work/proj/x.env", Access::kReadWrite, "rw"},
      {"/work/proj/.env.local", Access::kReadWrite, "rw"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: a bare glob like *.pem matches that name at any depth", "[unit]") {
  Policy p = compileYaml(kFsPolicy);
  const FsCase cases[] = {
      {"/work/proj/server.pem", Access::kHidden, "secret"},
      {"/work/proj/certs/deep/ca.pem", Access::kHidden, "secret"},
      {"/etc/ssl/key.pem", Access::kHidden, "secret"},
      {"/key.pem", Access::kHidden, "secret"},
      {"/work/proj/.pem", Access::kHidden, "secret"},
      {"/work/proj/dir.pem/file", Access::kHidden, "secret"},
      {"/work/proj/pem", Access::kReadWrite, "rw"},
      {"/work/proj/key.pem.bak", Access::kReadWrite, "rw"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: ? matches one byte within a segment; ** spans segments", "[unit]") {
  Policy p = compileYaml(kFsPolicy);
  const FsCase cases[] = {
      {"/data/file1.txt", Access::kReadOnly, "question"},
      {"/data/fileX.txt", Access::kReadOnly, "question"},
      {"/data/file1.txt/x", Access::kReadOnly, "question"},
      {"/data/file10.txt", Access::kHidden, "t.filesystem.default"},
      {"/data/file.txt", Access::kHidden, "t.filesystem.default"},
      {"/data/file/.txt", Access::kHidden, "t.filesystem.default"},
      {"/opt/bin", Access::kReadOnly, "any-bin"},
      {"/opt/a/bin/tool", Access::kReadOnly, "any-bin"},
      {"/opt/a/b/c/bin", Access::kReadOnly, "any-bin"},
      {"/opt/a/binx", Access::kHidden, "t.filesystem.default"},
      {"/opt/x/secret/a.key", Access::kHidden, "deep-key"},
      {"/opt/secret/a.key", Access::kHidden, "deep-key"},
      {"/opt/bin/secret/a.key", Access::kHidden, "deep-key"},
      {"/opt/bin/secret/a.txt", Access::kReadOnly, "any-bin"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: at the same depth a literal beats a glob, then stricter wins", "[unit]") {
  Policy p = compileYaml(kFsPolicy);
  const FsCase cases[] = {
      {"/srv/lit/a", Access::kReadWrite, "lit-glob"},
      {"/srv/lit/b", Access::kHidden, "lit-literal"},
      {"/srv/lit/b/c", Access::kHidden, "lit-literal"},
      {"/srv/open/x", Access::kHidden, "open-glob"},
      {"/srv/open/ok", Access::kReadWrite, "open-literal"},  // looser, but more literal
      {"/srv/open/ok/y", Access::kReadWrite, "open-literal"},
      {"/srv/tie", Access::kHidden, "tie-hidden"},
      {"/srv/tie/x", Access::kHidden, "tie-hidden"},
      {"/srv/tie2", Access::kReadOnly, "tie2-ro"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: globs with equal literals at one depth tie to the stricter", "[unit]") {
  Policy p = compileYaml(R"(
filesystem:
  default: read-write
  rules:
    - hidden: "/srv/x*"
      id: prefix-hidden
    - read-write: "/srv/*x"
      id: suffix-rw
    - read-only: "/srv/?y"
      id: q-ro
    - read-write: "/srv/y?"
      id: q-rw
)");
  const FsCase cases[] = {
      {"/srv/xx", Access::kHidden, "prefix-hidden"},
      {"/srv/xa", Access::kHidden, "prefix-hidden"},
      {"/srv/ax", Access::kReadWrite, "suffix-rw"},
      {"/srv/yy", Access::kReadOnly, "q-ro"},
      {"/srv/ay", Access::kReadOnly, "q-ro"},
      {"/srv/ya", Access::kReadWrite, "q-rw"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: a ** pattern matching consecutive segments counts at the deeper one",
          "[unit]") {
  // "**/.env" matches /work/proj/.env/.env itself (depth 4), deeper than the
  // read-write rule for /work/proj/.env (depth 3), exactly as it does for
  // /work/proj/.env/x/.env (depth 5).
  Policy p = compileYaml(R"(
filesystem:
  default: hidden
  rules:
    - read-write: "{project}"
      id: rw
    - read-write: "{project}/.env"
      id: env-dir
    - hidden: "**/.env"
      id: dotenv
    - read-write: /data/secret
      id: data-secret
    - hidden: "**/secret"
      id: any-secret
)");
  const FsCase cases[] = {
      {"/work/proj/.env", Access::kReadWrite, "env-dir"},  // same depth: more literals
      {"/work/proj/.env/x", Access::kReadWrite, "env-dir"},
      {"/work/proj/.env/x/.env", Access::kHidden, "dotenv"},
      {"/work/proj/.env/.env", Access::kHidden, "dotenv"},
      {"/work/proj/.env/.env/x", Access::kHidden, "dotenv"},
      {"/data/secret", Access::kReadWrite, "data-secret"},
      {"/data/secret/a/secret", Access::kHidden, "any-secret"},
      {"/data/secret/secret", Access::kHidden, "any-secret"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: a rule for / covers everything below it", "[unit]") {
  Policy p = compileYaml(R"(
filesystem:
  rules:
    - read-only: /
      id: root
    - read-write: "~"
      id: home
    - hidden: "/home/alice/**/cache"
      id: caches
)");
  const FsCase cases[] = {
      {"/", Access::kReadOnly, "root"},
      {"/anything/at/all", Access::kReadOnly, "root"},
      {"/home", Access::kReadOnly, "root"},
      {"/home/alice", Access::kReadWrite, "home"},
      {"/home/alice/cache", Access::kHidden, "caches"},
      {"/home/alice/a/b/cache/x", Access::kHidden, "caches"},
      {"/home/bob/cache", Access::kReadOnly, "root"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: requested paths are normalised lexically", "[unit]") {
  Policy p = compileYaml(kFsPolicy);
  const FsCase cases[] = {
      {"/work/proj/../../home/alice/.ssh/id_rsa", Access::kHidden, "secret"},
      {"/work/proj/./../proj/.env", Access::kHidden, "secret"},
      {"//work//proj///src", Access::kReadWrite, "rw"},
      {"/work/proj/", Access::kReadWrite, "rw"},
      {"/../../work/proj", Access::kReadWrite, "rw"},
      {"/usr/../home/alice/.ssh", Access::kHidden, "secret"},
      {"/tmp/../etc/shadow", Access::kReadOnly, "ro"},
      {"/work/proj/..", Access::kHidden, "t.filesystem.default"},
      {"/work/proj/.git/./hooks/../hooks/x", Access::kReadOnly, "hooks"},
  };
  checkFiles(p, cases);
}

TEST_CASE("filesystem: a relative or malformed request path is hidden and denied", "[unit]") {
  Policy p = compileYaml(kFsPolicy);
  for (std::string_view path :
       {std::string_view("work/proj"), std::string_view(""), std::string_view("./x"),
        std::string_view("~/x"), std::string_view("/work/proj/\0x", 13)}) {
    INFO("path '" << path << "'");
    for (FileOp op : {FileOp::kRead, FileOp::kWrite}) {
      Verdict v = p.file(path, op);
      CHECK(v.decision == kDeny);
      CHECK(v.access == Access::kHidden);
      CHECK(v.reason == "not an absolute path");
    }
  }
  std::string too_long = "/work/proj/" + std::string(kMaxPathLen, 'a');
  CHECK(p.file(too_long, FileOp::kRead).decision == kDeny);
}

TEST_CASE("filesystem: a verdict carries the rule's reason and mode", "[unit]") {
  Policy p = compileYaml(R"(
filesystem:
  default: read-write
  rules:
    - hidden: /secret
      reason: keys
      mode: audit
      id: audit-hidden
    - read-only: /ro
      mode: audit
      id: audit-ro
)");
  Verdict r = p.file("/secret/a", FileOp::kRead);
  CHECK(r.decision == Decision::kWouldDeny);
  CHECK(r.access == Access::kHidden);
  CHECK(r.reason == "keys");
  CHECK(r.rule.id == "audit-hidden");
  Verdict ro_read = p.file("/ro/a", FileOp::kRead);
  CHECK(ro_read.decision == kAllow);
  Verdict ro_write = p.file("/ro/a", FileOp::kWrite);
  CHECK(ro_write.decision == Decision::kWouldDeny);
  CHECK(ro_write.access == Access::kReadOnly);
  Verdict other = p.file("/other", FileOp::kWrite);
  CHECK(other.decision == kAllow);
  CHECK(other.rule.id == "t.filesystem.default");
}

TEST_CASE("filesystem: no default anywhere is the built-in hidden", "[unit]") {
  Policy p = compileYaml("filesystem:\n  rules:\n    - read-only: /usr\n");
  Verdict v = p.file("/etc", FileOp::kRead);
  CHECK(v.decision == kDeny);
  CHECK(v.access == Access::kHidden);
  CHECK(v.rule.id == "builtin.filesystem.default");
  CHECK(p.file("/usr/lib", FileOp::kRead).decision == kAllow);
}

TEST_CASE("filesystem: too many simultaneous glob states fail closed", "[unit]") {
  // Seventy distinct globs that all match one segment exceed the walk's
  // fixed bound of active states: the path is treated as hidden.
  std::string yaml = "filesystem:\n  default: read-write\n  rules:\n    - read-write: [";
  for (int i = 0; i < 70; ++i) {
    yaml += (i == 0 ? "\"/" : ", \"/") + std::string(static_cast<size_t>(i), '?') + "*\"";
  }
  yaml += "]\n      id: many\n";
  Policy p = compileYaml(yaml);
  Verdict v = p.file("/" + std::string(100, 'x'), FileOp::kRead);
  CHECK(v.decision == kDeny);
  CHECK(v.access == Access::kHidden);
  CHECK(v.rule.id == "builtin.filesystem.default");
  CHECK(v.reason == "path matched too many patterns to decide");
  // A short segment matches few of them and is decided normally.
  Verdict short_seg = p.file("/x", FileOp::kRead);
  CHECK(short_seg.decision == kAllow);
  CHECK(short_seg.rule.id == "many");
}

// ---- env -------------------------------------------------------------------

TEST_CASE("env: exact names beat globs, more literal globs beat fewer, ties deny", "[unit]") {
  Policy p = compileYaml(R"(
env:
  default: deny
  rules:
    - allow: [PATH, HOME, "LC_*", "GITHUB_*", MY_TOKEN, "A*", "X?"]
      id: allow
    - deny: ["*_TOKEN", "*Z", LC_SECRET]
      id: deny
)");
  struct Case {
    const char* name;
    Decision decision;
    const char* rule;
  };
  const Case cases[] = {
      {"PATH", kAllow, "allow"},
      {"HOME", kAllow, "allow"},
      {"path", kDeny, "t.env.default"},  // byte for byte
      {"PATHX", kDeny, "t.env.default"},
      {"LC_ALL", kAllow, "allow"},
      {"LC_", kAllow, "allow"},
      {"LC_SECRET", kDeny, "deny"},  // exact deny beats the allow glob
      {"MY_TOKEN", kAllow, "allow"},  // exact allow beats the deny glob
      {"NPM_TOKEN", kDeny, "deny"},
      {"GITHUB_TOKEN", kAllow, "allow"},  // "GITHUB_*" has 7 literals, "*_TOKEN" 6
      {"AZ", kDeny, "deny"},              // "A*" and "*Z" tie at 1 literal
      {"AB", kAllow, "allow"},
      {"XY", kAllow, "allow"},
      {"XYZ", kDeny, "deny"},
      {"X", kDeny, "t.env.default"},
      {"", kDeny, "t.env.default"},
  };
  for (const Case& c : cases) {
    INFO("env " << c.name);
    Verdict v = p.env(c.name);
    CHECK(decisionName(v.decision) == std::string(decisionName(c.decision)));
    CHECK(v.rule.id == c.rule);
  }
  Policy none = compileYaml("env:\n  rules:\n    - allow: PATH\n");
  CHECK(none.env("HOME").decision == kDeny);
  CHECK(none.env("HOME").rule.id == "builtin.env.default");
}

// ---- MCP -------------------------------------------------------------------

constexpr const char* kMcpPolicy = R"(
mcp:
  default: deny
  servers:
    - name: files
      command: [npx, "-y", "@modelcontextprotocol/server-filesystem", "**"]
      tools:
        allow: ["read_*", list_directory]
        deny: [read_secret, "*_all"]
    - name: docs
      url: https://mcp.example.com/mcp/
    - name: shell
      command: ["**/mcp-shell", "**"]
      allow: false
    - name: pinned
      command: [node, "/opt/*/server.js", "--port", "?????"]
      tools:
        deny: [danger]
    - name: sandwich
      command: [wrap, "**", "--", "**", end]
)";

TEST_CASE("mcpTool: deny globs win, unlisted tools are denied, allow: false blocks", "[unit]") {
  Policy p = compileYaml(kMcpPolicy);
  struct Case {
    const char* server;
    const char* tool;
    Decision decision;
    const char* rule;
  };
  const Case cases[] = {
      {"files", "read_file", kAllow, "t.mcp.files"},
      {"files", "read_", kAllow, "t.mcp.files"},
      {"files", "list_directory", kAllow, "t.mcp.files"},
      {"files", "read_secret", kDeny, "t.mcp.files"},
      {"files", "read_all", kDeny, "t.mcp.files"},
      {"files", "write_file", kDeny, "t.mcp.files"},
      {"files", "READ_FILE", kDeny, "t.mcp.files"},
      {"files", "list_directory2", kDeny, "t.mcp.files"},
      {"docs", "anything", kAllow, "t.mcp.docs"},
      {"docs", "", kAllow, "t.mcp.docs"},
      {"shell", "run", kDeny, "t.mcp.shell"},
      {"pinned", "ok", kAllow, "t.mcp.pinned"},
      {"pinned", "danger", kDeny, "t.mcp.pinned"},
      {"unknown", "read_file", kDeny, "t.mcp.default"},
      {"Files", "read_file", kDeny, "t.mcp.default"},
  };
  for (const Case& c : cases) {
    INFO("mcp " << c.server << "/" << c.tool);
    Verdict v = p.mcpTool(c.server, c.tool);
    CHECK(decisionName(v.decision) == std::string(decisionName(c.decision)));
    CHECK(v.rule.id == c.rule);
  }
  Policy none = compileYaml("network: {}\n");
  CHECK(none.mcpTool("files", "read_file").decision == kDeny);
  CHECK(none.mcpTool("files", "read_file").rule.id == "builtin.mcp.default");
}

TEST_CASE("mcpServerForCommand matches argv globs where ** spans arguments", "[unit]") {
  Policy p = compileYaml(kMcpPolicy);
  struct Case {
    std::vector<std::string> argv;
    const char* server;
  };
  const Case cases[] = {
      {{"npx", "-y", "@modelcontextprotocol/server-filesystem"}, "files"},
      {{"npx", "-y", "@modelcontextprotocol/server-filesystem", "/work/proj"}, "files"},
      {{"npx", "-y", "@modelcontextprotocol/server-filesystem", "/a", "/b", "/c"}, "files"},
      {{"npx", "@modelcontextprotocol/server-filesystem", "/a"}, ""},
      {{"npx", "-y", "@modelcontextprotocol/server-other"}, ""},
      {{"/usr/local/bin/mcp-shell"}, "shell"},
      {{"/usr/local/bin/mcp-shell", "--x", "y"}, "shell"},
      {{"./tools/mcp-shell"}, "shell"},
      {{"mcp-shell"}, ""},  // "**/mcp-shell" needs a '/' before the name
      {{"/usr/bin/mcp-shell-evil"}, ""},
      {{"node", "/opt/a/b/server.js", "--port", "12345"}, "pinned"},  // '*' crosses '/'
      {{"node", "/opt/x/server.js", "--port", "1234"}, ""},
      {{"node", "/opt/x/server.js", "--port", "12345", "extra"}, ""},
      {{"wrap", "--", "end"}, "sandwich"},
      {{"wrap", "a", "b", "--", "c", "d", "end"}, "sandwich"},
      {{"wrap", "a", "--", "end", "--", "end"}, "sandwich"},
      {{"wrap", "a", "b", "c", "end"}, ""},
      {{"wrap", "--", "end", "x"}, ""},
      {{}, ""},
  };
  for (const Case& c : cases) {
    std::string joined;
    for (const std::string& a : c.argv) {
      joined += "[" + a + "]";
    }
    INFO("argv " << joined);
    CHECK(p.mcpServerForCommand(c.argv) == c.server);
  }
}

TEST_CASE("argvMatch: ** spans any number of arguments", "[unit]") {
  using V = std::vector<std::string>;
  struct Case {
    V pattern;
    V argv;
    bool match;
  };
  const Case cases[] = {
      {{}, {}, true},
      {{}, {"a"}, false},
      {{"**"}, {}, true},
      {{"**"}, {"a", "b"}, true},
      {{"a"}, {"a"}, true},
      {{"a"}, {"a", "b"}, false},
      {{"a", "**"}, {"a"}, true},
      {{"**", "a"}, {"b", "a"}, true},
      {{"**", "a"}, {"a", "b"}, false},
      {{"**", "x", "**"}, {"a", "x", "b"}, true},
      {{"**", "x", "**", "y"}, {"x", "y", "x", "z"}, false},
      {{"**", "x", "**", "y"}, {"x", "z", "x", "y"}, true},
      {{"*"}, {""}, true},
      {{"*"}, {}, false},
      {{"a*"}, {"a/b/c"}, true},
      {{"?"}, {"ab"}, false},
  };
  for (const Case& c : cases) {
    std::string pat;
    std::string arg;
    for (const std::string& s : c.pattern) {
      pat += "[" + s + "]";
    }
    for (const std::string& s : c.argv) {
      arg += "[" + s + "]";
    }
    INFO("pattern " << pat << " argv " << arg);
    CHECK(argvMatch(c.pattern, c.argv) == c.match);
  }
}

TEST_CASE("mcpServerForUrl ignores trailing slashes", "[unit]") {
  Policy p = compileYaml(kMcpPolicy);
  CHECK(p.mcpServerForUrl("https://mcp.example.com/mcp") == "docs");
  CHECK(p.mcpServerForUrl("https://mcp.example.com/mcp/") == "docs");
  CHECK(p.mcpServerForUrl("https://mcp.example.com/mcp//") == "docs");
  CHECK(p.mcpServerForUrl("https://mcp.example.com/mc") == "");
  CHECK(p.mcpServerForUrl("https://mcp.example.com/mcp/x") == "");
  CHECK(p.mcpServerForUrl("http://mcp.example.com/mcp") == "");
  CHECK(p.mcpServerForUrl("") == "");
}

// ---- credentials -----------------------------------------------------------

TEST_CASE("credential destinations: exact, wildcard and address targets", "[unit]") {
  Policy p = compileYaml(R"(
credentials:
  - name: github
    source: {env: GITHUB_TOKEN}
    destinations: [api.github.com, "*.githubusercontent.com", 192.0.2.10, 10.0.0.0/8, "2001:db8::/32"]
  - name: anywhere
    source: {env: ANY_TOKEN}
    destinations: "*"
)");
  struct Case {
    const char* cred;
    const char* host;
    Decision decision;
    const char* rule;
  };
  const Case cases[] = {
      {"github", "api.github.com", kAllow, "t.credentials.github"},
      {"github", "API.GitHub.com.", kAllow, "t.credentials.github"},
      {"github", "github.com", kDeny, "t.credentials.github"},
      {"github", "x.api.github.com", kDeny, "t.credentials.github"},
      {"github", "raw.githubusercontent.com", kAllow, "t.credentials.github"},
      {"github", "a.b.githubusercontent.com", kAllow, "t.credentials.github"},
      {"github", "githubusercontent.com", kDeny, "t.credentials.github"},
      {"github", "evilgithubusercontent.com", kDeny, "t.credentials.github"},
      {"github", "192.0.2.10", kAllow, "t.credentials.github"},
      {"github", "192.0.2.11", kDeny, "t.credentials.github"},
      {"github", "10.1.2.3", kAllow, "t.credentials.github"},
      {"github", "0x0a010203", kAllow, "t.credentials.github"},
      {"github", "::ffff:10.1.2.3", kAllow, "t.credentials.github"},
      {"github", "11.0.0.1", kDeny, "t.credentials.github"},
      {"github", "2001:db8::5", kAllow, "t.credentials.github"},
      {"github", "[2001:db8::5]", kAllow, "t.credentials.github"},
      {"github", "2001:db9::5", kDeny, "t.credentials.github"},
      {"github", "evil.com", kDeny, "t.credentials.github"},
      {"github", "a..b", kDeny, "builtin.network.default"},
      {"anywhere", "evil.com", kAllow, "t.credentials.anywhere"},
      {"anywhere", "10.0.0.1", kAllow, "t.credentials.anywhere"},
      {"missing", "api.github.com", kDeny, "builtin.credentials.default"},
      {"GitHub", "api.github.com", kDeny, "builtin.credentials.default"},
  };
  for (const Case& c : cases) {
    INFO("credential " << c.cred << " -> " << c.host);
    Verdict v = p.credential(c.cred, c.host);
    CHECK(decisionName(v.decision) == std::string(decisionName(c.decision)));
    CHECK(v.rule.id == c.rule);
  }
}

// ---- no allocation ---------------------------------------------------------

TEST_CASE("evaluation does not allocate", "[unit]") {
  std::string yaml = R"(
network:
  default: deny
  rules:
    - allow: [example.com, "*.example.com", registry.npmjs.org]
      ports: [443, "8000-8100"]
    - deny: ["*.evil.example.com", 10.0.0.0/8, "fc00::/7"]
    - allow: "*"
      ports: [22]
)";
  yaml += std::string(kFsPolicy) + std::string(kMcpPolicy) + R"(
env:
  default: deny
  rules:
    - allow: [PATH, "LC_*", "GITHUB_*"]
    - deny: ["*_TOKEN"]
credentials:
  - name: github
    source: {env: GITHUB_TOKEN}
    destinations: [api.github.com, "*.githubusercontent.com", 10.0.0.0/8]
)";
  Policy p = compileYaml(yaml);
  const IpAddr v4 = ip("10.1.2.3");
  const IpAddr v6 = ip("2001:db8::1");
  const IpAddr pub = ip("93.184.216.34");
  const std::vector<std::string> argv_files = {"npx", "-y",
                                               "@modelcontextprotocol/server-filesystem", "/a"};
  const std::vector<std::string> argv_shell = {"/usr/bin/mcp-shell", "-c", "x"};
  const std::vector<std::string> argv_none = {"python3", "server.py"};
  const std::string long_path = "/work/proj/" + std::string(3000, 'a') + "/../b/./c//d";

  unsigned long allowed = 0;
  unsigned long before = t_allocations;
  for (int i = 0; i < 200; ++i) {
    allowed += p.connect("example.com", nullptr, 443).allowed();
    allowed += p.connect("A.B.Example.COM.", &pub, 8050).allowed();
    allowed += p.connect("x.evil.example.com", &v4, 443).allowed();
    allowed += p.connect("", &v4, 443).allowed();
    allowed += p.connect("", &v6, 22).allowed();
    allowed += p.connect("unknown.org", &pub, 80).allowed();
    allowed += p.connect("bad..name", nullptr, 80).allowed();
    allowed += p.host("0x7f000001", 80).allowed();
    allowed += p.host("[::1]", 80).allowed();
    allowed += p.host("registry.npmjs.org", 443).allowed();
    allowed += p.dns("example.com").allowed();
    allowed += p.dns("x.y.z.evil.example.com").allowed();
    allowed += p.dns("nope.org").allowed();
    allowed += p.file("/work/proj/src/main.cc", FileOp::kWrite).allowed();
    allowed += p.file("/work/proj/sub/.env", FileOp::kRead).allowed();
    allowed += p.file("/home/alice/.ssh/id_rsa", FileOp::kRead).allowed();
    allowed += p.file("/opt/a/b/c/bin/tool", FileOp::kRead).allowed();
    allowed += p.file("/work/proj/certs/key.pem", FileOp::kRead).allowed();
    allowed += p.file("//usr/./lib/../bin", FileOp::kRead).allowed();
    allowed += p.file(long_path, FileOp::kWrite).allowed();
    allowed += p.file("relative/path", FileOp::kRead).allowed();
    allowed += p.env("PATH").allowed();
    allowed += p.env("LC_ALL").allowed();
    allowed += p.env("GITHUB_TOKEN").allowed();
    allowed += p.env("NPM_TOKEN").allowed();
    allowed += p.env("UNLISTED").allowed();
    allowed += p.mcpTool("files", "read_file").allowed();
    allowed += p.mcpTool("files", "write_file").allowed();
    allowed += p.mcpTool("shell", "run").allowed();
    allowed += p.mcpTool("unknown", "x").allowed();
    allowed += p.credential("github", "api.github.com").allowed();
    allowed += p.credential("github", "10.9.9.9").allowed();
    allowed += p.credential("missing", "api.github.com").allowed();
    allowed += !p.mcpServerForCommand(argv_files).empty();
    allowed += !p.mcpServerForCommand(argv_shell).empty();
    allowed += !p.mcpServerForCommand(argv_none).empty();
    allowed += !p.mcpServerForUrl("https://mcp.example.com/mcp").empty();
  }
  unsigned long allocations = t_allocations - before;
  CHECK(allocations == 0);
  CHECK(allowed > 0);

  // The counter does see allocations, so zero above means something.
  before = t_allocations;
  auto* probe = new std::string(100, 'x');
  delete probe;
  CHECK(t_allocations - before >= 1);
}

TEST_CASE("filesystem: subtree tells uniform trees from split and mixed ones", "[unit]") {
  using S = Policy::Subtree;
  Policy p = compileYaml(R"(
filesystem:
  default: hidden
  rules:
    - read-only: [/usr, /home/u]
    - read-write: [/home/u/project, /var/tmp]
    - hidden: [/home/u/.ssh, "/srv/**/.env", "/opt/app/*.pem"]
)");
  CHECK(p.subtree("/usr") == S::kUniform);
  CHECK(p.subtree("/usr/lib/") == S::kUniform);
  CHECK(p.subtree("/home/u/project") == S::kUniform);
  CHECK(p.subtree("/home/u") == S::kSplit);      // project and .ssh below
  CHECK(p.subtree("/home") == S::kSplit);
  CHECK(p.subtree("/") == S::kSplit);
  CHECK(p.subtree("/srv") == S::kMixed);         // the glob matches at any depth
  CHECK(p.subtree("/srv/a/b") == S::kMixed);
  CHECK(p.subtree("/opt") == S::kSplit);         // the glob starts below /opt
  CHECK(p.subtree("/opt/app") == S::kMixed);
  CHECK(p.subtree("/opt/other") == S::kUniform);
  CHECK(p.subtree("/home/u/projectx") == S::kUniform);  // a sibling, not below

  Policy anywhere = compileYaml("filesystem:\n  rules:\n    - read-only: /usr\n    - hidden: \"**/.env\"\n");
  CHECK(anywhere.subtree("/usr") == S::kMixed);
  CHECK(anywhere.subtree("/") == S::kMixed);
}

}  // namespace
}  // namespace guard::policy
