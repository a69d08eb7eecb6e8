// Unit tests for policy/names.cc: domain, address and path normalisation, and
// glob matching.
#include "policy/names.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <string>
#include <string_view>

#include "policy/policy.h"

namespace guard::policy {
namespace {

using namespace std::string_literals;

// ---- normaliseDomain -------------------------------------------------------

TEST_CASE("normaliseDomain lowercases ASCII and removes one trailing dot", "[unit]") {
  struct Case {
    std::string in;
    std::string out;  // "" means invalid
  };
  const Case cases[] = {
      {"example.com", "example.com"},
      {"Example.COM", "example.com"},
      {"EXAMPLE.COM.", "example.com"},
      {"a", "a"},
      {"a.", "a"},
      {"xn--bcher-kva.example", "xn--bcher-kva.example"},
      {"XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"},
      {"_dmarc.example.com", "_dmarc.example.com"},
      {"a-b.c-d", "a-b.c-d"},
      {"123.example", "123.example"},
      // invalid
      {"", ""},
      {".", ""},
      {"..", ""},
      {"example.com..", ""},
      {".example.com", ""},
      {"a..b", ""},
      {"a b.com", ""},
      {"a$b.com", ""},
      {"a/b.com", ""},
      {"a:443", ""},
      {"*.example.com", ""},
      {"a\tb", ""},
  };
  for (const Case& c : cases) {
    INFO("'" << c.in << "'");
    CHECK(normaliseDomain(c.in) == c.out);
    char buf[kMaxDomainLen + 1];
    CHECK(normaliseDomain(c.in, buf) == c.out.size());
  }
}

TEST_CASE("normaliseDomain converts Unicode labels to punycode", "[unit]") {
  struct Case {
    std::string in;
    std::string out;
  };
  const Case cases[] = {
      {"b\xC3\xBC" "cher.example", "xn--bcher-kva.example"},
      {"B\xC3\xBC" "cher.example", "xn--bcher-kva.example"},
      {"B\xC3\xBC" "cher.Example.", "xn--bcher-kva.example"},
      {"www.b\xC3\xBC" "cher.example", "www.xn--bcher-kva.example"},
      // NFC: u + combining diaeresis is the same name as u-umlaut.
      {"bu\xCC\x88" "cher.example", "xn--bcher-kva.example"},
  };
  for (const Case& c : cases) {
    INFO(c.in);
    CHECK(normaliseDomain(c.in) == c.out);
  }
  // Invalid UTF-8 is not a name.
  CHECK(normaliseDomain("b\xFF" "cher.example") == "");
  // A Unicode label whose punycode is longer than 63 bytes is invalid.
  std::string long_label;
  for (int i = 0; i < 60; ++i) {
    long_label += "\xC3\xBC";
  }
  CHECK(normaliseDomain(long_label + ".example") == "");
}

TEST_CASE("normaliseDomain enforces the 63-byte label limit", "[unit]") {
  CHECK(normaliseDomain(std::string(63, 'a') + ".com") == std::string(63, 'a') + ".com");
  CHECK(normaliseDomain(std::string(64, 'a') + ".com") == "");
  CHECK(normaliseDomain("com." + std::string(63, 'b')) == "com." + std::string(63, 'b'));
  CHECK(normaliseDomain("com." + std::string(64, 'b')) == "");
}

TEST_CASE("normaliseDomain enforces the 253-byte name limit", "[unit]") {
  // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 bytes.
  std::string n253 = std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                     std::string(63, 'c') + "." + std::string(61, 'd');
  REQUIRE(n253.size() == 253);
  std::string n254 = n253 + "d";
  CHECK(normaliseDomain(n253) == n253);
  CHECK(normaliseDomain(n253 + ".") == n253);  // the trailing dot does not count
  CHECK(normaliseDomain(n254) == "");
  CHECK(normaliseDomain(n254 + ".") == "");
  CHECK(normaliseDomain(std::string(2000, 'a')) == "");

  char buf[kMaxDomainLen + 1];
  CHECK(normaliseDomain(n253, buf) == 253);
  CHECK(std::string_view(buf, 253) == n253);
}

TEST_CASE("normaliseDomain rejects a NUL byte anywhere", "[unit]") {
  CHECK(normaliseDomain("a\0b.com"s) == "");
  CHECK(normaliseDomain("example.com\0"s) == "");
  CHECK(normaliseDomain("\0"s) == "");
  // After a non-ASCII byte too: libidn2 would stop at the NUL and accept the
  // prefix as the whole name.
  CHECK(normaliseDomain("b\xC3\xBC" "cher.example\0.evil.com"s) == "");
  CHECK(normaliseDomain("\xC3\xBC.example\0"s) == "");
}

// ---- IpAddr::parse ---------------------------------------------------------

struct IpCase {
  const char* text;
  bool ok;
  bool v4;
  const char* canonical;  // toString()
};

TEST_CASE("IpAddr::parse reads IPv4 in every form inet_aton accepts", "[unit]") {
  const IpCase cases[] = {
      {"127.0.0.1", true, true, "127.0.0.1"},
      {"2130706433", true, true, "127.0.0.1"},
      {"0x7f000001", true, true, "127.0.0.1"},
      {"0X7F000001", true, true, "127.0.0.1"},
      {"127.1", true, true, "127.0.0.1"},
      {"127.0.1", true, true, "127.0.0.1"},
      {"0177.0.0.1", true, true, "127.0.0.1"},
      {"0x7f.0.0.1", true, true, "127.0.0.1"},
      {"10.1.515", true, true, "10.1.2.3"},
      {"0", true, true, "0.0.0.0"},
      {"255.255.255.255", true, true, "255.255.255.255"},
      {"4294967295", true, true, "255.255.255.255"},
  };
  for (const IpCase& c : cases) {
    INFO(c.text);
    IpAddr a;
    REQUIRE(IpAddr::parse(c.text, &a) == c.ok);
    CHECK(a.v4 == c.v4);
    CHECK(a.toString() == c.canonical);
  }
  IpAddr a;
  REQUIRE(IpAddr::parse("10.1.2.3", &a));
  CHECK(a.bytes[0] == 10);
  CHECK(a.bytes[1] == 1);
  CHECK(a.bytes[2] == 2);
  CHECK(a.bytes[3] == 3);
  for (int i = 4; i < 16; ++i) {
    CHECK(a.bytes[i] == 0);
  }
}

TEST_CASE("IpAddr::parse reads IPv6, bracketed IPv6 and mapped IPv4", "[unit]") {
  const IpCase cases[] = {
      {"::1", true, false, "::1"},
      {"[::1]", true, false, "::1"},
      {"::", true, false, "::"},
      {"2001:db8::1", true, false, "2001:db8::1"},
      {"2001:DB8:0:0:0:0:0:1", true, false, "2001:db8::1"},
      {"[2001:db8::1]", true, false, "2001:db8::1"},
      {"fe80::1", true, false, "fe80::1"},
      {"::ffff:10.1.2.3", true, true, "10.1.2.3"},
      {"::FFFF:10.1.2.3", true, true, "10.1.2.3"},
      {"::ffff:a01:203", true, true, "10.1.2.3"},
      {"[::ffff:10.1.2.3]", true, true, "10.1.2.3"},
      // Not mapped: the IPv4-compatible and translated forms stay IPv6.
      {"::10.1.2.3", true, false, "::10.1.2.3"},
      {"64:ff9b::10.1.2.3", true, false, "64:ff9b::a01:203"},
  };
  for (const IpCase& c : cases) {
    INFO(c.text);
    IpAddr a;
    REQUIRE(IpAddr::parse(c.text, &a) == c.ok);
    CHECK(a.v4 == c.v4);
    CHECK(a.toString() == c.canonical);
  }
  IpAddr mapped;
  REQUIRE(IpAddr::parse("::ffff:10.1.2.3", &mapped));
  IpAddr plain;
  REQUIRE(IpAddr::parse("10.1.2.3", &plain));
  CHECK(memcmp(mapped.bytes, plain.bytes, 16) == 0);
}

TEST_CASE("IpAddr::parse rejects garbage and leaves the output alone", "[unit]") {
  const char* bad[] = {
      "",
      "example.com",
      "1.2.3.4.5",
      "256.0.0.1",
      "1.2.3.256",
      "0x1g",
      "::g",
      ":::",
      "1::2::3",
      "[::1",
      "::1]",
      "[]",
      "1.2.3.4/8",
      "::1/128",
      "-1",
      "1.2.3.4:80",
      "[::1]:80",
      "12345678901234567890",
  };
  for (const char* text : bad) {
    INFO("'" << text << "'");
    IpAddr a;
    a.bytes[0] = 0xAB;
    a.v4 = true;
    CHECK_FALSE(IpAddr::parse(text, &a));
    CHECK(a.bytes[0] == 0xAB);
    CHECK(a.v4);
  }
  IpAddr a;
  CHECK_FALSE(IpAddr::parse(std::string(65, '1'), &a));
  CHECK_FALSE(IpAddr::parse(std::string(200, ':'), &a));
}

// ---- normalisePath ---------------------------------------------------------

std::string norm(std::string_view path) {
  char buf[kMaxPathLen + 1];
  size_t n = normalisePath(path, buf);
  if (n == 0) {
    return "<invalid>";
  }
  CHECK(buf[n] == '\0');
  return std::string(buf, n);
}

TEST_CASE("normalisePath collapses slashes, dots and dot-dots lexically", "[unit]") {
  struct Case {
    std::string in;
    std::string out;
  };
  const Case cases[] = {
      {"/", "/"},
      {"//", "/"},
      {"///", "/"},
      {"/a", "/a"},
      {"/a/", "/a"},
      {"//a//b/", "/a/b"},
      {"/a/./b", "/a/b"},
      {"/a/b/.", "/a/b"},
      {"/./a", "/a"},
      {"/.", "/"},
      {"/a/..", "/"},
      {"/a/../b", "/b"},
      {"/a/../../b", "/b"},
      {"/..", "/"},
      {"/../..", "/"},
      {"/../a", "/a"},
      {"/a/b/../../c/./d/..", "/c"},
      {"/a/b/c/../../..", "/"},
      {"/a/.b/..c/...", "/a/.b/..c/..."},
      {"/a..", "/a.."},
      {"/home/alice/../bob/.ssh", "/home/bob/.ssh"},
      {"/a b/c", "/a b/c"},
      // relative and empty paths are not paths here
      {"", "<invalid>"},
      {"a", "<invalid>"},
      {"a/b", "<invalid>"},
      {"./a", "<invalid>"},
      {"../a", "<invalid>"},
      {"~/a", "<invalid>"},
  };
  for (const Case& c : cases) {
    INFO("'" << c.in << "'");
    CHECK(norm(c.in) == c.out);
  }
}

TEST_CASE("normalisePath rejects a NUL byte", "[unit]") {
  CHECK(norm("/a\0b"s) == "<invalid>");
  CHECK(norm("/a/\0"s) == "<invalid>");
  CHECK(norm("/\0/.."s) == "<invalid>");
  CHECK(norm("/a/..\0"s) == "<invalid>");
}

TEST_CASE("normalisePath accepts 4096 bytes and rejects 4097", "[unit]") {
  std::string p4096 = "/" + std::string(kMaxPathLen - 1, 'a');
  REQUIRE(p4096.size() == 4096);
  CHECK(norm(p4096) == p4096);
  CHECK(norm(p4096 + "b") == "<invalid>");
  // The limit is on the request, before normalisation shortens it.
  std::string dots = "/a";
  while (dots.size() < kMaxPathLen + 1) {
    dots += "/.";
  }
  CHECK(norm(dots.substr(0, kMaxPathLen)) == "/a");
  CHECK(norm(dots) == "<invalid>");
}

// ---- globMatch -------------------------------------------------------------

TEST_CASE("globMatch: * matches any run, ? one byte, the rest itself", "[unit]") {
  struct Case {
    const char* pattern;
    const char* text;
    bool match;
  };
  const Case cases[] = {
      {"", "", true},
      {"", "a", false},
      {"*", "", true},
      {"*", "anything/at/all", true},
      {"**", "", true},
      {"?", "", false},
      {"?", "a", true},
      {"?", "ab", false},
      {"??", "ab", true},
      {"a", "a", true},
      {"a", "A", false},
      {"a", "ab", false},
      {"ab", "a", false},
      {"a*", "a", true},
      {"a*", "abc", true},
      {"a*", "ba", false},
      {"*a", "a", true},
      {"*a", "bca", true},
      {"*a", "ab", false},
      {"a*b", "ab", true},
      {"a*b", "axxb", true},
      {"a*b", "axxbx", false},
      {"a*b*c", "aXbYbZc", true},
      {"a*b*c", "abc", true},
      {"a*b*c", "aXbYbZ", false},
      {"a*b*c", "acb", false},
      {"*b*", "abc", true},
      {"*?", "", false},
      {"*?", "a", true},
      {"?*?", "a", false},
      {"?*?", "ab", true},
      {"a?c", "abc", true},
      {"a?c", "ac", false},
      {"*.pem", "key.pem", true},
      {"*.pem", "key.pem.bak", false},
      {"*.pem", ".pem", true},
      {"LC_*", "LC_ALL", true},
      {"LC_*", "LC", false},
      {"*_TOKEN", "GITHUB_TOKEN", true},
      {"*_TOKEN", "_TOKEN", true},
      {"*_TOKEN", "TOKEN", false},
      {"read_*", "read_file", true},
      {"read_*", "write_file", false},
      {"*ab*ab*", "abab", true},
      {"*ab*ab*", "aabb", false},
      {"*aab", "aaab", true},
      {"mis*is*ip*i", "mississippi", true},
      {"mis*is*ip*x", "mississippi", false},
      // a '*' or '?' in the text is an ordinary byte: a pattern's '*' still
      // spans it (found by the policy fuzzer: "SECRET_*r" escaped "SECRET_*")
      {"SECRET_*", "SECRET_*r", true},
      {"SECRET_*", "SECRET_*", true},
      {"delete_*", "delete_*all", true},
      {"x*.pem", "x*.pem.pem", true},
      {"*a", "*ba", true},
      {"a*", "*a", false},
      {"?", "*", true},
      {"a\\*", "a\\", true},  // no escapes: the backslash is a byte
  };
  for (const Case& c : cases) {
    INFO("pattern '" << c.pattern << "' text '" << c.text << "'");
    CHECK(globMatch(c.pattern, c.text) == c.match);
  }
}

TEST_CASE("globMatch compares bytes, including non-ASCII and NUL", "[unit]") {
  CHECK(globMatch("\xC3\xBC", "\xC3\xBC"));
  CHECK_FALSE(globMatch("?", "\xC3\xBC"));  // one byte, not one character
  CHECK(globMatch("??", "\xC3\xBC"));
  CHECK(globMatch("a*"s, "a\0b"s));
  CHECK_FALSE(globMatch("ab"s, "a\0b"s));
  CHECK(globMatch("a?b"s, "a\0b"s));
}

TEST_CASE("globMatch is fast on pathological patterns", "[unit]") {
  const std::string as(100000, 'a');
  auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(globMatch("a*a*a*a*b", as));
  CHECK_FALSE(globMatch("*a*a*a*a*a*a*a*a*a*a*b", as));
  CHECK(globMatch("a*a*a*a*a", as));
  CHECK_FALSE(globMatch("*?????????????????????????b", as));
  std::string many_stars;
  for (int i = 0; i < 1000; ++i) {
    many_stars += "*a";
  }
  CHECK_FALSE(globMatch(many_stars + "b", as));
  CHECK(globMatch(many_stars, as));
  auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed < std::chrono::seconds(2));
}

TEST_CASE("hasGlob reports * and ?", "[unit]") {
  CHECK(hasGlob("*"));
  CHECK(hasGlob("a?"));
  CHECK(hasGlob("LC_*"));
  CHECK_FALSE(hasGlob(""));
  CHECK_FALSE(hasGlob("PATH"));
  CHECK_FALSE(hasGlob("[ab]"));
}

}  // namespace
}  // namespace guard::policy
