// Unit tests for policy/parse.cc: every class of error parseLayer reports, with
// its code, exact file:line:col and hint; the limits; ids and layer names.
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "policy/document.h"
#include "policy/policy.h"
#include "tests/testing.h"

namespace guard::policy {
namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

Result<std::shared_ptr<const Layer>> parse(std::string_view text, std::string_view layer = "test") {
  return parseLayer(text, "p.yaml", layer);
}

// ErrorCase is one document that must be rejected: ERROR is the exact first
// line ("p.yaml:L:C: error: message"), HINT a substring of the hint line.
struct ErrorCase {
  const char* what;
  std::string yaml;
  ErrorCode code;
  std::string error;
  std::string hint;  // empty: no hint is checked
};

void expectErrors(const std::vector<ErrorCase>& cases) {
  for (const ErrorCase& c : cases) {
    INFO("case: " << c.what);
    INFO("yaml:\n" << c.yaml);
    auto r = parse(c.yaml);
    CHECK_FALSE(r.ok());
    if (r.ok()) {
      continue;
    }
    const std::string& msg = r.error().message();
    INFO("message:\n" << msg);
    CHECK(r.error().code() == c.code);
    CHECK_THAT(msg, StartsWith(c.error));
    if (!c.hint.empty()) {
      size_t hint = msg.find("\n  hint: ");
      REQUIRE(hint != std::string::npos);
      std::string hint_line = msg.substr(hint + 9, msg.find('\n', hint + 1) - hint - 9);
      CHECK_THAT(hint_line, Contains(c.hint));
    }
  }
}

// denyRule wraps TARGET as the only target of a deny rule: TARGET starts at
// line 3, column 13.
std::string denyRule(const std::string& target) {
  return "network:\n  rules:\n    - deny: " + target + "\n";
}

const Layer& layerOf(const Result<std::shared_ptr<const Layer>>& r) {
  if (!r.ok()) {
    FAIL("unexpected error: " << r.error().message());
  }
  return *r.value();
}

// ---- YAML syntax -----------------------------------------------------------

TEST_CASE("YAML syntax errors are kPolicySyntax with the position yaml-cpp reports", "[unit]") {
  expectErrors({
      {"unterminated flow list", "a: [b\n", ErrorCode::kPolicySyntax,
       "p.yaml:2:1: error: end of sequence flow not found", ""},
      {"unterminated flow mapping", "{a: 1\n", ErrorCode::kPolicySyntax,
       "p.yaml:2:1: error: end of map flow not found", ""},
      {"map value after a scalar", "a: b: c\n", ErrorCode::kPolicySyntax,
       "p.yaml:1:5: error: illegal map value", ""},
      {"bad indentation", "network:\n  default: deny\n bad: x\n", ErrorCode::kPolicySyntax,
       "p.yaml:3:2: error: end of map not found", ""},
      {"tab indentation", "network:\n\tdefault: deny\n", ErrorCode::kPolicySyntax,
       "p.yaml:2:9: error: illegal map value", ""},
  });
}

TEST_CASE("unquoted *.example.com is an alias error with a quoting hint", "[unit]") {
  expectErrors({
      {"scalar", "network:\n  rules:\n    - allow: *.example.com\n", ErrorCode::kPolicySyntax,
       "p.yaml:3:14: error: ", "quote patterns that start with '*', e.g. \"*.example.com\""},
      {"in a flow list", "network:\n  rules:\n    - allow: [a.com, *.example.com]\n",
       ErrorCode::kPolicySyntax, "p.yaml:3:22: error: ", "quote patterns that start with '*'"},
  });
  // The same name quoted is a wildcard target.
  auto r = parse("network:\n  rules:\n    - allow: \"*.example.com\"\n");
  const Layer& l = layerOf(r);
  REQUIRE(l.net_rules.size() == 1);
  REQUIRE(l.net_rules[0].targets.size() == 1);
  CHECK(l.net_rules[0].targets[0].kind == NetTargetKind::kWildcard);
  CHECK(l.net_rules[0].targets[0].text == "example.com");
}

// ---- keys and types --------------------------------------------------------

TEST_CASE("unknown keys are errors that list the expected keys", "[unit]") {
  expectErrors({
      {"top level", "foo: 1\n", ErrorCode::kPolicyInvalid,
       "p.yaml:1:1: error: unknown key 'foo' in policy",
       "expected one of: version, layer, mode, network, filesystem, env, credentials, mcp"},
      {"in network", "network:\n  rulez: []\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:3: error: unknown key 'rulez' in network",
       "expected one of: default, default_locked, inspect, rules"},
      {"in a network rule", "network:\n  rules:\n    - allow: a.com\n      port: 1\n",
       ErrorCode::kPolicyInvalid, "p.yaml:4:7: error: unknown key 'port' in network rule",
       "expected one of: allow, deny, ports, inspect, id, locked, mode, reason"},
      {"in a filesystem rule", "filesystem:\n  rules:\n    - hidden: /a\n      ports: [1]\n",
       ErrorCode::kPolicyInvalid, "p.yaml:4:7: error: unknown key 'ports' in filesystem rule",
       "expected one of: hidden, read-only, read-write, id, locked, mode, reason"},
      {"in an env rule", "env:\n  rules:\n    - allow: PATH\n      when: now\n",
       ErrorCode::kPolicyInvalid, "p.yaml:4:7: error: unknown key 'when' in env rule",
       "expected one of: allow, deny, id, locked, mode, reason"},
      {"in a credential source",
       "credentials:\n  - name: gh\n    source: {vault: x}\n    destinations: a.com\n",
       ErrorCode::kPolicyInvalid, "p.yaml:3:14: error: unknown key 'vault' in credential source",
       "expected one of: env, file, command"},
      {"in mcp tools",
       "mcp:\n  servers:\n    - name: a\n      url: https://a\n      tools: {permit: [x]}\n",
       ErrorCode::kPolicyInvalid, "p.yaml:5:15: error: unknown key 'permit' in tools",
       "expected one of: allow, deny"},
  });
}

TEST_CASE("wrong value types are errors naming what was found", "[unit]") {
  expectErrors({
      {"list where a scalar is expected", "network:\n  default: [allow]\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:2:12: error: network.default must be a single value, found a list", ""},
      {"mapping where a list is expected", "network:\n  rules: {a: b}\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:2:10: error: network.rules must be a list, found a mapping", ""},
      {"non-bool for locked", "network:\n  rules:\n    - deny: a.com\n      locked: yes\n",
       ErrorCode::kPolicyInvalid, "p.yaml:4:15: error: locked must be true or false, found 'yes'",
       ""},
      {"list for a section", "network: [a]\n", ErrorCode::kPolicyInvalid,
       "p.yaml:1:10: error: network must be a mapping, found a list", ""},
      {"document is a list", "[1, 2]\n", ErrorCode::kPolicyInvalid,
       "p.yaml:1:1: error: policy must be a mapping, found a list", ""},
      {"document is a scalar", "just words\n", ErrorCode::kPolicyInvalid,
       "p.yaml:1:1: error: policy must be a mapping, found a scalar", ""},
      {"rule is a scalar", "network:\n  rules:\n    - a.com\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: network rule must be a mapping, found a scalar", ""},
      {"bad network default", "network:\n  default: maybe\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:12: error: network.default must be 'allow' or 'deny', found 'maybe'", ""},
      {"bad filesystem default", "filesystem:\n  default: readonly\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:12: error: filesystem mode must be hidden, read-only or read-write, found "
       "'readonly'",
       ""},
      {"bad mode", "mode: strict\n", ErrorCode::kPolicyInvalid,
       "p.yaml:1:7: error: mode must be 'enforce' or 'audit', found 'strict'", ""},
      {"empty target list", "network:\n  rules:\n    - deny: []\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: deny is an empty list", "remove the rule or name at least one value"},
      {"nested list target", "network:\n  rules:\n    - deny: [[a.com]]\n",
       ErrorCode::kPolicyInvalid, "p.yaml:3:14: error: deny must be a single value, found a list",
       ""},
  });
}

TEST_CASE("duplicate keys are errors at the second key", "[unit]") {
  expectErrors({
      {"top level", "network: {}\nnetwork: {}\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:1: error: duplicate key 'network' in policy", "each key may appear once"},
      {"in network", "network:\n  default: deny\n  default: allow\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:3: error: duplicate key 'default' in network", "each key may appear once"},
      {"in a rule", "network:\n  rules:\n    - deny: a.com\n      deny: b.com\n",
       ErrorCode::kPolicyInvalid, "p.yaml:4:7: error: duplicate key 'deny' in network rule",
       "each key may appear once"},
      {"in env.set", "env:\n  set:\n    A: x\n    A: y\n", ErrorCode::kPolicyInvalid,
       "p.yaml:4:5: error: duplicate key 'A' in env.set", ""},
  });
}

TEST_CASE("duplicate rule ids, credential names and MCP server names are errors", "[unit]") {
  expectErrors({
      {"rule id within a surface",
       "network:\n  rules:\n    - deny: a.com\n      id: x\n    - deny: b.com\n      id: x\n",
       ErrorCode::kPolicyInvalid, "p.yaml:6:11: error: duplicate rule id 'x'",
       "ids must be unique within a file"},
      {"rule id across surfaces",
       "network:\n  rules:\n    - deny: a.com\n      id: x\nfilesystem:\n  rules:\n    - "
       "hidden: /a\n      id: x\n",
       ErrorCode::kPolicyInvalid, "p.yaml:8:11: error: duplicate rule id 'x'",
       "ids must be unique within a file"},
      {"credential name",
       "credentials:\n  - name: gh\n    source: {env: GH}\n    destinations: a.com\n  - name: "
       "gh\n    source: {env: GH}\n    destinations: a.com\n",
       ErrorCode::kPolicyInvalid, "p.yaml:5:11: error: duplicate credential name 'gh'",
       "each credential is defined once per file"},
      {"MCP server name",
       "mcp:\n  servers:\n    - name: a\n      url: https://a\n    - name: a\n      url: "
       "https://b\n",
       ErrorCode::kPolicyInvalid, "p.yaml:5:13: error: duplicate MCP server name 'a'", ""},
      {"id with a space", "network:\n  rules:\n    - deny: a.com\n      id: \"a b\"\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:4:11: error: id must be a non-empty word without spaces or quotes", ""},
  });
}

TEST_CASE("an explicit rule id may not repeat a generated default id", "[unit]") {
  // Two rules answering to one id make audit events ambiguous, whichever
  // of them got its id by default.
  struct Case {
    const char* what;
    const char* yaml;
    const char* id;
  };
  const Case cases[] = {
      {"explicit after default",
       "network:\n  rules:\n    - deny: a.com\n    - deny: b.com\n      id: test.network.1\n",
       "test.network.1"},
      {"explicit before default",
       "network:\n  rules:\n    - deny: a.com\n      id: test.network.2\n    - deny: b.com\n",
       "test.network.2"},
      {"filesystem",
       "filesystem:\n  rules:\n    - hidden: /a\n    - hidden: /b\n      id: test.filesystem.1\n",
       "test.filesystem.1"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    auto r = parse(c.yaml);
    CHECK_FALSE(r.ok());
    if (r.ok()) {
      std::vector<std::string> ids;
      for (const NetRule& n : r.value()->net_rules) {
        ids.push_back(n.meta.id);
      }
      for (const FsRule& f : r.value()->fs_rules) {
        ids.push_back(f.meta.id);
      }
      INFO("ids: " << ids.at(0) << ", " << ids.at(1));
      CHECK(ids.at(0) != ids.at(1));
      continue;
    }
    CHECK(r.error().code() == ErrorCode::kPolicyInvalid);
    CHECK_THAT(r.error().message(), Contains(std::string("duplicate rule id '") + c.id + "'"));
  }
}

// ---- network targets -------------------------------------------------------

TEST_CASE("bad CIDR prefixes are errors naming the family's range", "[unit]") {
  expectErrors({
      {"/33", denyRule("10.0.0.0/33"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad CIDR prefix in '10.0.0.0/33'", "the prefix length is 0-32"},
      {"/129", denyRule("\"::/129\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad CIDR prefix in '::/129'", "the prefix length is 0-128"},
      {"/-1", denyRule("10.0.0.0/-1"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad CIDR prefix in '10.0.0.0/-1'", "the prefix length is 0-32"},
      {"/abc", denyRule("10.0.0.0/abc"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad CIDR prefix in '10.0.0.0/abc'", "the prefix length is 0-32"},
      {"empty prefix", denyRule("10.0.0.0/"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad CIDR prefix in '10.0.0.0/'", ""},
      {"prefix with a sign", denyRule("10.0.0.0/+8"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad CIDR prefix in '10.0.0.0/+8'", ""},
      {"domain with a prefix", denyRule("a.com/8"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: 'a.com/8' is neither a domain nor a CIDR",
       "write a network as ADDRESS/PREFIX"},
  });
}

TEST_CASE("a CIDR with host bits set is an error suggesting the network", "[unit]") {
  expectErrors({
      {"IPv4", denyRule("10.0.0.1/8"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '10.0.0.1/8' has host bits set", "did you mean 10.0.0.0/8?"},
      {"IPv4 inside a byte", denyRule("192.168.1.129/25"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '192.168.1.129/25' has host bits set",
       "did you mean 192.168.1.128/25?"},
      {"IPv4 /0", denyRule("1.0.0.0/0"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '1.0.0.0/0' has host bits set", "did you mean 0.0.0.0/0?"},
      {"IPv6", denyRule("\"2001:db8::1/32\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '2001:db8::1/32' has host bits set", "did you mean 2001:db8::/32?"},
  });
}

TEST_CASE("valid addresses and CIDRs are normalised network targets", "[unit]") {
  struct Case {
    const char* target;
    bool v4;
    int prefix;
    const char* text;
  };
  const Case cases[] = {
      {"10.0.0.0/8", true, 8, "10.0.0.0/8"},
      {"0.0.0.0/0", true, 0, "0.0.0.0/0"},
      {"192.0.2.10", true, 32, "192.0.2.10/32"},
      {"192.0.2.10/32", true, 32, "192.0.2.10/32"},
      {"\"2001:db8::/32\"", false, 32, "2001:db8::/32"},
      {"\"::/0\"", false, 0, "::/0"},
      {"\"::1\"", false, 128, "::1/128"},
      {"\"2001:DB8::1\"", false, 128, "2001:db8::1/128"},
  };
  for (const Case& c : cases) {
    INFO(c.target);
    auto r = parse(denyRule(c.target));
    const Layer& l = layerOf(r);
    REQUIRE(l.net_rules.size() == 1);
    REQUIRE(l.net_rules[0].targets.size() == 1);
    const NetTarget& t = l.net_rules[0].targets[0];
    CHECK(t.kind == NetTargetKind::kAddress);
    CHECK(t.addr.v4 == c.v4);
    CHECK(int(t.prefix) == c.prefix);
    CHECK(t.text == c.text);
    CHECK(t.loc.line == 3);
    CHECK(t.loc.col == 13);
  }
}

TEST_CASE("an IPv4-mapped IPv6 address in a rule is the IPv4 address", "[unit]") {
  auto r = parse(denyRule("\"::ffff:10.1.2.3\""));
  const Layer& l = layerOf(r);
  REQUIRE(l.net_rules.size() == 1);
  const NetTarget& t = l.net_rules[0].targets.at(0);
  CHECK(t.kind == NetTargetKind::kAddress);
  CHECK(t.addr.v4);
  CHECK(int(t.prefix) == 32);
  CHECK(t.text == "10.1.2.3/32");
}

TEST_CASE("an IPv4-mapped IPv6 CIDR in a rule becomes the IPv4 network", "[unit]") {
  // ::ffff:10.0.0.0/104 is 10.0.0.0/8 written in the mapped range.
  struct Case {
    const char* target;
    int prefix;
    const char* text;
  };
  const Case cases[] = {
      {"\"::ffff:10.0.0.0/104\"", 8, "10.0.0.0/8"},
      {"\"::ffff:10.1.2.3/128\"", 32, "10.1.2.3/32"},
      {"\"::ffff:0.0.0.0/96\"", 0, "0.0.0.0/0"},
  };
  for (const Case& c : cases) {
    INFO(c.target);
    auto r = parse(denyRule(c.target));
    CHECK(r.ok());
    if (!r.ok()) {
      INFO(r.error().message());
      CHECK(r.error().message().empty());
      continue;
    }
    const NetTarget& t = r.value()->net_rules.at(0).targets.at(0);
    CHECK(t.addr.v4);
    CHECK(int(t.prefix) == c.prefix);
    CHECK(t.text == c.text);
  }
}

TEST_CASE("an IPv4-mapped CIDR wider than the mapped range or with host bits is an error",
          "[unit]") {
  expectErrors({
      {"/95 reaches outside ::ffff:0:0/96", denyRule("\"::ffff:10.0.0.0/95\""),
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: IPv4-mapped CIDR '::ffff:10.0.0.0/95' is wider than the mapped range",
       "write the IPv4 network instead"},
      {"/8 counts from the IPv6 start", denyRule("\"::ffff:10.0.0.0/8\""),
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: IPv4-mapped CIDR '::ffff:10.0.0.0/8' is wider than the mapped range",
       "write the IPv4 network instead"},
      {"host bits", denyRule("\"::ffff:10.0.0.1/104\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '::ffff:10.0.0.1/104' has host bits set", "did you mean 10.0.0.0/8?"},
      {"/129", denyRule("\"::ffff:10.0.0.0/129\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad CIDR prefix in '::ffff:10.0.0.0/129'", "0-128"},
  });
}

TEST_CASE("IPv4 shorthand in a rule is an error, not a domain that never matches", "[unit]") {
  // parse.cc: "10" or "1.2" must not silently mean 0.0.0.10 -- nor may it
  // silently become a domain rule that no connection by address can match.
  expectErrors({
      {"single number", denyRule("10"), ErrorCode::kPolicyInvalid, "p.yaml:3:13: error: ", ""},
      {"two parts", denyRule("\"1.2\""), ErrorCode::kPolicyInvalid, "p.yaml:3:13: error: ", ""},
      {"three parts", denyRule("10.0.0"), ErrorCode::kPolicyInvalid, "p.yaml:3:13: error: ", ""},
      {"octet over 255", denyRule("256.1.1.1"), ErrorCode::kPolicyInvalid, "p.yaml:3:13: error: ",
       ""},
  });
}

TEST_CASE("a rule address with a leading zero is an error, not octal", "[unit]") {
  // inet_aton reads 010 as 8: "deny: 010.0.0.0/8" must not deny 8.0.0.0/8.
  auto r = parse(denyRule("010.0.0.0/8"));
  if (r.ok()) {
    const NetTarget& t = r.value()->net_rules.at(0).targets.at(0);
    INFO("parsed as " << t.text);
    CHECK(t.text == "10.0.0.0/8");
  } else {
    CHECK(r.error().code() == ErrorCode::kPolicyInvalid);
    CHECK_THAT(r.error().message(), StartsWith("p.yaml:3:13: error: "));
  }
}

TEST_CASE("bad domain names are errors", "[unit]") {
  const std::string label64(64, 'a');
  const std::string long_name =
      std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
      std::string(62, 'd');  // 254 bytes
  expectErrors({
      {"label over 63 bytes", denyRule(label64 + ".com"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '" + label64 + ".com' is not a valid domain name",
       "labels are 1-63 letters, digits, '-' or '_', 253 bytes in all"},
      {"empty label", denyRule("a..b"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: 'a..b' is not a valid domain name", "labels are 1-63"},
      {"leading dot", denyRule(".a.com"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '.a.com' is not a valid domain name", ""},
      {"bad character", denyRule("a$b.com"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: 'a$b.com' is not a valid domain name", ""},
      {"space", denyRule("\"a b.com\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: 'a b.com' is not a valid domain name", ""},
      {"over 253 bytes", denyRule(long_name), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '" + long_name + "' is not a valid domain name", ""},
      {"two trailing dots", denyRule("a.com.."), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: 'a.com..' is not a valid domain name", ""},
      {"empty string", denyRule("\"\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: deny must not be empty", ""},
  });
}

TEST_CASE("wildcards other than a whole first label are errors", "[unit]") {
  expectErrors({
      {"middle label", denyRule("\"a.*.com\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad wildcard in 'a.*.com'",
       "a wildcard is allowed only as a whole first label: \"*.example.com\""},
      {"partial first label", denyRule("\"*foo.com\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad wildcard in '*foo.com'", "only as a whole first label"},
      {"two wildcards", denyRule("\"*.*.com\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad wildcard in '*.*.com'", "only as a whole first label"},
      {"trailing star", denyRule("\"a.com*\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: bad wildcard in 'a.com*'", ""},
      {"wildcard of nothing", denyRule("\"*.\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '*.' is not a valid domain name", ""},
  });
}

TEST_CASE("a domain with a port is an error pointing at 'ports:'", "[unit]") {
  expectErrors({
      {"name:port", denyRule("example.com:443"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: 'example.com:443' is not a domain",
       "give ports in a separate 'ports:' list"},
      {"wildcard:port", denyRule("\"*.example.com:443\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:13: error: '*.example.com:443' is not a domain", "ports:"},
  });
}

TEST_CASE("domain targets are normalised", "[unit]") {
  struct Case {
    const char* target;
    NetTargetKind kind;
    const char* text;
  };
  const Case cases[] = {
      {"Example.COM", NetTargetKind::kDomain, "example.com"},
      {"example.com.", NetTargetKind::kDomain, "example.com"},
      {"\"*.Example.com.\"", NetTargetKind::kWildcard, "example.com"},
      {"\"*\"", NetTargetKind::kAny, "*"},
      {"\"B\xC3\xBC" "cher.example\"", NetTargetKind::kDomain, "xn--bcher-kva.example"},
      {"_dmarc.example.com", NetTargetKind::kDomain, "_dmarc.example.com"},
  };
  for (const Case& c : cases) {
    INFO(c.target);
    auto r = parse(denyRule(c.target));
    const Layer& l = layerOf(r);
    const NetTarget& t = l.net_rules.at(0).targets.at(0);
    CHECK(t.kind == c.kind);
    CHECK(t.text == c.text);
  }
}

TEST_CASE("a target listed twice in one rule is an error", "[unit]") {
  expectErrors({
      {"same spelling", denyRule("[a.com, a.com]"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:21: error: 'a.com' is listed twice in this rule", ""},
      {"same after normalising", denyRule("[a.com, A.COM.]"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:21: error: 'A.COM.' is listed twice in this rule", ""},
  });
}

TEST_CASE("bad ports are errors at the offending port", "[unit]") {
  auto portsRule = [](const std::string& ports) {
    return "network:\n  rules:\n    - allow: a.com\n      ports: " + ports + "\n";
  };
  expectErrors({
      {"0", portsRule("0"), ErrorCode::kPolicyInvalid, "p.yaml:4:14: error: bad port '0'",
       "ports are 1-65535, or a range \"8000-8100\""},
      {"65536", portsRule("65536"), ErrorCode::kPolicyInvalid,
       "p.yaml:4:14: error: bad port '65536'", "ports are 1-65535"},
      {"reversed range", portsRule("\"9-3\""), ErrorCode::kPolicyInvalid,
       "p.yaml:4:14: error: bad port '9-3'", ""},
      {"word", portsRule("x"), ErrorCode::kPolicyInvalid, "p.yaml:4:14: error: bad port 'x'", ""},
      {"open range", portsRule("\"1-\""), ErrorCode::kPolicyInvalid,
       "p.yaml:4:14: error: bad port '1-'", ""},
      {"negative", portsRule("\"-5\""), ErrorCode::kPolicyInvalid,
       "p.yaml:4:14: error: bad port '-5'", ""},
      {"range end over 65535", portsRule("\"1-65536\""), ErrorCode::kPolicyInvalid,
       "p.yaml:4:14: error: bad port '1-65536'", ""},
      {"second item of a list", portsRule("[443, 0]"), ErrorCode::kPolicyInvalid,
       "p.yaml:4:20: error: bad port '0'", ""},
      {"fraction", portsRule("1.5"), ErrorCode::kPolicyInvalid,
       "p.yaml:4:14: error: bad port '1.5'", ""},
  });
}

TEST_CASE("valid ports and ranges parse", "[unit]") {
  auto r = parse(
      "network:\n  rules:\n    - allow: a.com\n      ports: [1, 443, \"8000-8100\", \"80-80\", "
      "65535]\n");
  const Layer& l = layerOf(r);
  const std::vector<PortRange>& p = l.net_rules.at(0).ports;
  REQUIRE(p.size() == 5);
  CHECK((p[0].lo == 1 && p[0].hi == 1));
  CHECK((p[1].lo == 443 && p[1].hi == 443));
  CHECK((p[2].lo == 8000 && p[2].hi == 8100));
  CHECK((p[3].lo == 80 && p[3].hi == 80));
  CHECK((p[4].lo == 65535 && p[4].hi == 65535));
}

// ---- rule shapes -----------------------------------------------------------

TEST_CASE("a rule needs exactly one action", "[unit]") {
  expectErrors({
      {"network: both", "network:\n  rules:\n    - deny: a.com\n      allow: b.com\n",
       ErrorCode::kPolicyInvalid, "p.yaml:3:7: error: network rule has both 'allow' and 'deny'",
       "write one action per rule, e.g. - allow: example.com"},
      {"network: neither", "network:\n  rules:\n    - id: foo\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: network rule has neither 'allow' nor 'deny'", "one action per rule"},
      {"filesystem: two modes", "filesystem:\n  rules:\n    - hidden: /a\n      read-only: /b\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: filesystem rule needs exactly one of hidden, read-only, read-write",
       "e.g. - read-only: /usr"},
      {"filesystem: none", "filesystem:\n  rules:\n    - id: x\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: filesystem rule needs exactly one of hidden, read-only, read-write",
       ""},
      {"env: both", "env:\n  rules:\n    - allow: A\n      deny: B\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: env rule needs exactly one of allow, deny", ""},
      {"env: neither", "env:\n  rules:\n    - reason: none\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: env rule needs exactly one of allow, deny", ""},
  });
}

TEST_CASE("inspect on a deny rule is an error", "[unit]") {
  expectErrors({
      {"inspect: true", "network:\n  rules:\n    - deny: a.com\n      inspect: true\n",
       ErrorCode::kPolicyInvalid, "p.yaml:3:7: error: 'inspect' applies to allow rules only", ""},
      {"inspect: false", "network:\n  rules:\n    - deny: a.com\n      inspect: false\n",
       ErrorCode::kPolicyInvalid, "p.yaml:3:7: error: 'inspect' applies to allow rules only", ""},
  });
}

TEST_CASE("locked on the loosest rules is an error", "[unit]") {
  expectErrors({
      {"network allow", "network:\n  rules:\n    - allow: a.com\n      locked: true\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: locked: true on an allow rule has no effect",
       "later layers may always narrow; lock the deny rules instead"},
      {"filesystem read-write", "filesystem:\n  rules:\n    - read-write: /a\n      locked: true\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: locked: true on a read-write rule has no effect",
       "lock hidden or read-only rules instead"},
      {"env allow", "env:\n  rules:\n    - allow: A\n      locked: true\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: locked: true on an allow rule has no effect", ""},
      {"MCP server allowing every tool",
       "mcp:\n  servers:\n    - name: a\n      url: https://a\n      locked: true\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: locked: true on a server that allows every tool has no effect",
       "list the denied tools, or set allow: false"},
  });
  // Locked deny, hidden and read-only rules are fine.
  CHECK(parse("network:\n  rules:\n    - deny: a.com\n      locked: true\n").ok());
  CHECK(parse("filesystem:\n  rules:\n    - hidden: /a\n      locked: true\n    - read-only: "
              "/b\n      locked: true\n")
            .ok());
  CHECK(parse("mcp:\n  servers:\n    - name: a\n      url: https://a\n      allow: false\n      "
              "locked: true\n")
            .ok());
}

TEST_CASE("default_locked on the loosest default is an error", "[unit]") {
  expectErrors({
      {"network allow", "network:\n  default: allow\n  default_locked: true\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:3: error: default_locked on the loosest default has no effect",
       "later layers may always narrow; lock a deny default instead"},
      {"filesystem read-write", "filesystem:\n  default: read-write\n  default_locked: true\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:3: error: default_locked on the loosest default has no effect", ""},
      {"env allow", "env:\n  default: allow\n  default_locked: true\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:3: error: default_locked on the loosest default has no effect", ""},
      {"mcp allow", "mcp:\n  default: allow\n  default_locked: true\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:3: error: default_locked on the loosest default has no effect", ""},
  });
  auto r = parse("network:\n  default: deny\n  default_locked: true\nfilesystem:\n  default: "
                 "read-only\n  default_locked: true\n");
  const Layer& l = layerOf(r);
  CHECK(l.network.default_locked);
  CHECK(l.filesystem.default_locked);
}

TEST_CASE("default_locked on the loosest default is an error whichever key comes first",
          "[unit]") {
  expectErrors({
      {"network", "network:\n  default_locked: true\n  default: allow\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:2:3: error: default_locked on the loosest default has no effect", ""},
      {"filesystem", "filesystem:\n  default_locked: true\n  default: read-write\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:2:3: error: default_locked on the loosest default has no effect", ""},
      {"env", "env:\n  default_locked: true\n  default: allow\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:3: error: default_locked on the loosest default has no effect", ""},
      {"mcp", "mcp:\n  default_locked: true\n  default: allow\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:3: error: default_locked on the loosest default has no effect", ""},
  });
}

// ---- filesystem, env, credentials, MCP ------------------------------------

TEST_CASE("bad filesystem patterns are errors", "[unit]") {
  auto hidden = [](const std::string& p) {
    return "filesystem:\n  rules:\n    - hidden: " + p + "\n";
  };
  expectErrors({
      {"** inside a segment", hidden("\"a**b\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: bad glob 'a**b'",
       "'**' must be a whole path segment, as in \"a/**/b\""},
      {"** as a segment prefix", hidden("\"/a/**b\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: bad glob '/a/**b'", "whole path segment"},
      {"bare ..", hidden(".."), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: '..' in path pattern '..'", "write the path without '..'"},
      {".. inside", hidden("/a/../b"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: '..' in path pattern '/a/../b'", ""},
      {"relative", hidden("foo/bar"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: relative path 'foo/bar'",
       "start with '/', '~', '{project}' or '**/'"},
      {"~user", hidden("\"~user/x\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: '~user/x': only '~' (the user's home) is supported, not '~user'", ""},
      {"unknown placeholder with a path", hidden("\"{proj}/x\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: ", ""},
      {"unknown placeholder alone", hidden("\"{proj}\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: unknown placeholder in '{proj}'", "the only placeholder is {project}"},
      {"placeholder not at the start", hidden("\"/a/{project}\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: unknown placeholder in '/a/{project}'", ""},
      {"{project} glued to a name", hidden("\"{project}x\""), ErrorCode::kPolicyInvalid,
       "p.yaml:3:15: error: '{project}' must be followed by '/' or nothing in '{project}x'", ""},
      {"second item of a list", hidden("[/a, \"a**b\"]"), ErrorCode::kPolicyInvalid,
       "p.yaml:3:20: error: bad glob 'a**b'", ""},
  });
  // The forms the language documents are accepted.
  auto r = parse(hidden("[/usr, \"~\", \"~/.ssh\", \"{project}\", \"{project}/.git/hooks\", "
                        "\"**/.env\", \"*.pem\", \"/a/**/b\", \"/a/?.txt\", .env]"));
  const Layer& l = layerOf(r);
  CHECK(l.fs_rules.at(0).paths.size() == 10);
  CHECK(l.fs_rules.at(0).path_locs.size() == 10);
}

TEST_CASE("bad environment variable names are errors", "[unit]") {
  expectErrors({
      {"dash", "env:\n  rules:\n    - allow: A-B\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:14: error: 'A-B' is not a variable name",
       "letters, digits and '_', with '*' or '?' as globs"},
      {"space", "env:\n  rules:\n    - allow: \"A B\"\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:14: error: 'A B' is not a variable name", ""},
      {"equals", "env:\n  rules:\n    - deny: [PATH, \"A=B\"]\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:20: error: 'A=B' is not a variable name", ""},
      {"non-ASCII", "env:\n  rules:\n    - allow: \xC3\xA9\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:14: error: '\xC3\xA9' is not a variable name", ""},
      {"set: bad name", "env:\n  set: {\"A-B\": x}\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:9: error: 'A-B' is not a variable name", ""},
      {"set: glob name", "env:\n  set: {\"A*\": x}\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:9: error: 'A*' is not a variable name", ""},
      {"set: list value", "env:\n  set: {A: [x]}\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:12: error: env.set.A must be a single value, found a list", ""},
  });
  auto r = parse("env:\n  set: {EDITOR: vi}\n  rules:\n    - allow: [PATH, \"LC_*\", \"X?\"]\n");
  const Layer& l = layerOf(r);
  REQUIRE(l.env_set.size() == 1);
  CHECK(l.env_set[0] == std::make_pair(std::string("EDITOR"), std::string("vi")));
  CHECK(l.env_rules.at(0).names == std::vector<std::string>{"PATH", "LC_*", "X?"});
}

TEST_CASE("credential errors", "[unit]") {
  expectErrors({
      {"no source", "credentials:\n  - name: gh\n    destinations: [a.com]\n",
       ErrorCode::kPolicyInvalid, "p.yaml:2:5: error: credential 'gh' has no source",
       "e.g. source: {env: GITHUB_TOKEN}"},
      {"no destinations", "credentials:\n  - name: gh\n    source: {env: GH}\n",
       ErrorCode::kPolicyInvalid, "p.yaml:2:5: error: credential 'gh' has no destinations",
       "name the hosts it may be sent to"},
      {"no name", "credentials:\n  - source: {env: GH}\n    destinations: a.com\n",
       ErrorCode::kPolicyInvalid, "p.yaml:2:5: error: credential has no name", ""},
      {"source with two kinds",
       "credentials:\n  - name: gh\n    source: {env: GH, file: /x}\n    destinations: a.com\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:5: error: credential source needs exactly one of env, file, command", ""},
      {"source with no kind",
       "credentials:\n  - name: gh\n    source: {}\n    destinations: a.com\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:5: error: credential source needs exactly one of env, file, command", ""},
      {"template without {value}",
       "credentials:\n  - name: gh\n    source: {env: GH}\n    destinations: a.com\n    inject: "
       "{header: Authorization, template: \"Bearer\"}\n",
       ErrorCode::kPolicyInvalid, "p.yaml:5:47: error: inject.template must contain {value}",
       "e.g. \"Bearer {value}\""},
      {"relative source file",
       "credentials:\n  - name: gh\n    source: {file: rel/x}\n    destinations: a.com\n",
       ErrorCode::kPolicyInvalid,
       "p.yaml:3:20: error: credential file must be an absolute path or start with ~/", ""},
      {"bad source env name",
       "credentials:\n  - name: gh\n    source: {env: \"A-B\"}\n    destinations: a.com\n",
       ErrorCode::kPolicyInvalid, "p.yaml:3:19: error: 'A-B' is not a variable name", ""},
      {"bad destination",
       "credentials:\n  - name: gh\n    source: {env: GH}\n    destinations: [a.com, "
       "\"a.*.com\"]\n",
       ErrorCode::kPolicyInvalid, "p.yaml:4:27: error: bad wildcard in 'a.*.com'", ""},
  });
  auto r = parse(
      "credentials:\n  - name: gh\n    source: {command: [gh, auth, token]}\n    variable: "
      "GH_TOKEN\n    destinations: [api.github.com, \"*.githubusercontent.com\", 10.0.0.0/8]\n    "
      "inject: {header: Authorization, template: \"Bearer {value}\"}\n    required: true\n");
  const Layer& l = layerOf(r);
  REQUIRE(l.credentials.size() == 1);
  const Credential& c = l.credentials[0];
  CHECK(c.name == "gh");
  CHECK(c.meta.id == "test.credentials.gh");
  CHECK(c.source.kind == CredentialSource::Kind::kCommand);
  CHECK(c.source.argv == std::vector<std::string>{"gh", "auth", "token"});
  CHECK(c.variable == "GH_TOKEN");
  CHECK(c.destinations.size() == 3);
  CHECK(c.header == "Authorization");
  CHECK(c.header_template == "Bearer {value}");
  CHECK(c.required);
}

TEST_CASE("MCP server errors", "[unit]") {
  expectErrors({
      {"both command and url",
       "mcp:\n  servers:\n    - name: a\n      command: [x]\n      url: https://a\n",
       ErrorCode::kPolicyInvalid, "p.yaml:3:7: error: MCP server 'a' needs exactly one of command, url",
       ""},
      {"neither command nor url", "mcp:\n  servers:\n    - name: a\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: MCP server 'a' needs exactly one of command, url", ""},
      {"bad url scheme", "mcp:\n  servers:\n    - name: a\n      url: ftp://a\n",
       ErrorCode::kPolicyInvalid, "p.yaml:4:12: error: MCP url must start with https:// or http://",
       ""},
      {"no name", "mcp:\n  servers:\n    - url: https://a\n", ErrorCode::kPolicyInvalid,
       "p.yaml:3:7: error: MCP server has no name", ""},
      {"servers is a mapping", "mcp:\n  servers: {a: b}\n", ErrorCode::kPolicyInvalid,
       "p.yaml:2:12: error: mcp.servers must be a list, found a mapping", ""},
  });
  // A blocked server needs neither.
  auto r = parse("mcp:\n  servers:\n    - name: a\n      allow: false\n");
  const Layer& l = layerOf(r);
  REQUIRE(l.mcp_servers.size() == 1);
  CHECK_FALSE(l.mcp_servers[0].allow);
  CHECK(l.mcp_servers[0].meta.id == "test.mcp.a");
}

TEST_CASE("only policy version 1 exists", "[unit]") {
  expectErrors({
      {"version 2", "version: 2\n", ErrorCode::kPolicyInvalid,
       "p.yaml:1:10: error: unsupported policy version '2'", "this guard understands version: 1"},
      {"version 1.0", "version: 1.0\n", ErrorCode::kPolicyInvalid,
       "p.yaml:1:10: error: unsupported policy version '1.0'", ""},
  });
  CHECK(parse("version: 1\n").ok());
}

// ---- limits ----------------------------------------------------------------

TEST_CASE("a document over 1 MiB is a limit error", "[unit]") {
  std::string big = "# " + std::string(kMaxDocumentBytes, 'x') + "\n";
  auto r = parse(big);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(r.error().message(), StartsWith("p.yaml:1:1: error: policy file is larger than 1 MiB"));

  std::string exact = "#" + std::string(kMaxDocumentBytes - 2, 'x') + "\n";
  REQUIRE(exact.size() == kMaxDocumentBytes);
  CHECK(parse(exact).ok());
}

TEST_CASE("loadLayerFile refuses a file over 1 MiB", "[unit]") {
  testing::TempDir dir;
  std::string path = dir.write("big.yaml", "# " + std::string(kMaxDocumentBytes, 'x') + "\n");
  auto r = loadLayerFile(path, "user");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(r.error().message(), StartsWith(path + ":1:1: error: policy file is larger"));

  std::string ok = dir.write("ok.yaml", "network:\n  default: deny\n");
  auto good = loadLayerFile(ok, "user");
  REQUIRE(good.ok());
  CHECK(good.value()->file == ok);
  CHECK(good.value()->name == "user");
}

TEST_CASE("flow nesting deeper than 32 levels is a limit error", "[unit]") {
  // 32 levels are allowed (the document is then rejected for its key).
  auto at32 = parse("a: " + std::string(32, '[') + std::string(32, ']') + "\n");
  REQUIRE_FALSE(at32.ok());
  CHECK(at32.error().code() == ErrorCode::kPolicyInvalid);

  auto at33 = parse("a: " + std::string(33, '[') + std::string(33, ']') + "\n");
  REQUIRE_FALSE(at33.ok());
  CHECK(at33.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(at33.error().message(),
             StartsWith("p.yaml:1:36: error: nesting deeper than 32 levels"));

  auto mappings = parse("a: " + std::string(40, '{'));
  REQUIRE_FALSE(mappings.ok());
  CHECK(mappings.error().code() == ErrorCode::kPolicyLimit);

  // A hostile depth neither crashes nor takes long.
  auto hostile = parse("a: " + std::string(200000, '['));
  REQUIRE_FALSE(hostile.ok());
  CHECK(hostile.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(hostile.error().message(), StartsWith("p.yaml:1:36: error: nesting deeper"));
}

TEST_CASE("one-line block sequence nesting deeper than 32 levels is a limit error", "[unit]") {
  std::string dashes32;
  std::string dashes33;
  for (int i = 0; i < 32; ++i) {
    dashes32 += "- ";
  }
  dashes33 = dashes32 + "- ";
  auto at32 = parse("a:\n  " + dashes32 + "x\n");
  REQUIRE_FALSE(at32.ok());
  CHECK(at32.error().code() == ErrorCode::kPolicyInvalid);

  auto at33 = parse("a:\n  " + dashes33 + "x\n");
  REQUIRE_FALSE(at33.ok());
  CHECK(at33.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(at33.error().message(),
             StartsWith("p.yaml:2:67: error: nesting deeper than 32 levels"));

  std::string hostile;
  for (int i = 0; i < 100000; ++i) {
    hostile += "- ";
  }
  auto r = parse(hostile + "x\n");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(r.error().message(), StartsWith("p.yaml:1:65: error: nesting deeper"));
}

TEST_CASE("an apostrophe in a plain scalar does not hide later nesting from the limit",
          "[unit]") {
  // "don't" is a plain scalar: the quote does not open a quoted string.
  std::string doc = "network:\n  rules:\n    - deny: a.com\n      reason: don't\nx: " +
                    std::string(40, '[') + std::string(40, ']') + "\n";
  auto r = parse(doc);
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(r.error().message(), Contains("nesting deeper than 32 levels"));
}

TEST_CASE("a '#' inside a flow scalar does not hide later nesting from the limit", "[unit]") {
  // In YAML '#' starts a comment only after whitespace: a#b is a scalar.
  std::string doc = "x: [a#b, " + std::string(40, '[') + std::string(41, ']') + "\n";
  auto r = parse(doc);
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(r.error().message(), Contains("nesting deeper than 32 levels"));
}

TEST_CASE("block and flow nesting add up against the 32-level limit", "[unit]") {
  std::string doc = "x:\n  ";
  for (int i = 0; i < 20; ++i) {
    doc += "- ";
  }
  doc += std::string(20, '[') + std::string(20, ']') + "\n";
  auto r = parse(doc);
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
}

TEST_CASE("block mappings nested deeper than 32 levels by indentation are a limit error",
          "[unit]") {
  std::string doc;
  for (int i = 0; i < 40; ++i) {
    doc += std::string(static_cast<size_t>(2 * i), ' ') + "k" + std::to_string(i) + ":\n";
  }
  doc += std::string(80, ' ') + "v: 1\n";
  auto r = parse(doc);
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
}

TEST_CASE("more than 200,000 values through aliases is a limit error", "[unit]") {
  // Billion-laughs style: a list of 1,000 targets, a rule that names it and
  // a list of 250 such rules, each level an alias of the one before: 250,000
  // values the walker would visit, from a few kilobytes of text.
  std::string list;
  for (int i = 0; i < 1000; ++i) {
    list += (i == 0 ? "" : ", ") + std::string("h") + std::to_string(i) + ".example.com";
  }
  // Anchors must be defined before use, inside keys the parser walks.
  std::string laughs = "network:\n  default: deny\n  rules: [{deny: &t [" + list +
                       "]}, &r {deny: *t}";
  for (int i = 1; i < 250; ++i) {
    laughs += ", *r";
  }
  laughs += "]\n";
  REQUIRE(laughs.size() < 64 * 1024);
  auto start = std::chrono::steady_clock::now();
  auto r = parse(laughs);
  auto elapsed = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kPolicyLimit);
  CHECK_THAT(r.error().message(), Contains("error: policy has more than 200000 values"));
  CHECK_THAT(r.error().message(), Contains("hint: aliases that repeat large lists multiply"));
  CHECK(elapsed < std::chrono::seconds(10));
}

TEST_CASE("nested aliases under keys the parser never walks are rejected without expanding",
          "[unit]") {
  // a: &a [x x10], b: &b [*a x10] ... g: 10^7 values if expanded.
  std::string doc = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  const char* names = "abcdefg";
  for (int i = 1; i < 7; ++i) {
    std::string prev(1, names[i - 1]);
    doc += std::string(1, names[i]) + ": &" + names[i] + " [";
    for (int j = 0; j < 10; ++j) {
      doc += (j == 0 ? "*" : ", *") + prev;
    }
    doc += "]\n";
  }
  auto start = std::chrono::steady_clock::now();
  auto r = parse(doc);
  auto elapsed = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(r.ok());
  CHECK((r.error().code() == ErrorCode::kPolicyInvalid ||
         r.error().code() == ErrorCode::kPolicyLimit));
  CHECK(elapsed < std::chrono::seconds(5));

  // The same lists where rules are expected fail on their shape.
  auto nested = parse(doc + "network:\n  rules: *g\n");
  REQUIRE_FALSE(nested.ok());
  CHECK((nested.error().code() == ErrorCode::kPolicyInvalid ||
         nested.error().code() == ErrorCode::kPolicyLimit));
}

// ---- reporting, empty documents, ids ---------------------------------------

TEST_CASE("several errors in one document are reported together, in order", "[unit]") {
  auto r = parse(
      "foo: 1\nnetwork:\n  bar: 2\n  rules:\n    - deny: 10.0.0.1/8\n      ports: [0]\n");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kPolicyInvalid);
  const std::string& m = r.error().message();
  size_t a = m.find("p.yaml:1:1: error: unknown key 'foo' in policy");
  size_t b = m.find("p.yaml:3:3: error: unknown key 'bar' in network");
  size_t c = m.find("p.yaml:5:13: error: '10.0.0.1/8' has host bits set");
  size_t d = m.find("p.yaml:6:15: error: bad port '0'");
  CHECK(a != std::string::npos);
  CHECK(b != std::string::npos);
  CHECK(c != std::string::npos);
  CHECK(d != std::string::npos);
  CHECK(a < b);
  CHECK(b < c);
  CHECK(c < d);
  CHECK(m.back() != '\n');
}

TEST_CASE("an empty document is a valid empty layer", "[unit]") {
  for (const char* text : {"", "\n", "# only a comment\n", "---\n", "version: 1\n"}) {
    INFO("text: '" << text << "'");
    auto r = parse(text, "org");
    const Layer& l = layerOf(r);
    CHECK(l.name == "org");
    CHECK(l.file == "p.yaml");
    CHECK_FALSE(l.mode.has_value());
    CHECK_FALSE(l.network.default_value.has_value());
    CHECK_FALSE(l.filesystem.default_value.has_value());
    CHECK_FALSE(l.env.default_value.has_value());
    CHECK_FALSE(l.mcp.default_value.has_value());
    CHECK(l.net_rules.empty());
    CHECK(l.fs_rules.empty());
    CHECK(l.env_rules.empty());
    CHECK(l.env_set.empty());
    CHECK(l.credentials.empty());
    CHECK(l.mcp_servers.empty());
  }
}

TEST_CASE("default rule ids are <layer>.<surface>.<n> counting from 1", "[unit]") {
  auto r = parse(
      "network:\n  rules:\n    - deny: a.com\n    - deny: b.com\n      id: mine\n    - allow: "
      "c.com\nfilesystem:\n  rules:\n    - hidden: /a\nenv:\n  rules:\n    - allow: A\n    - "
      "deny: B\n",
      "org");
  const Layer& l = layerOf(r);
  REQUIRE(l.net_rules.size() == 3);
  CHECK(l.net_rules[0].meta.id == "org.network.1");
  CHECK(l.net_rules[1].meta.id == "mine");
  CHECK(l.net_rules[2].meta.id == "org.network.3");
  CHECK(l.net_rules[0].meta.loc.line == 3);
  CHECK(l.net_rules[0].meta.loc.col == 7);
  REQUIRE(l.fs_rules.size() == 1);
  CHECK(l.fs_rules[0].meta.id == "org.filesystem.1");
  REQUIRE(l.env_rules.size() == 2);
  CHECK(l.env_rules[0].meta.id == "org.env.1");
  CHECK(l.env_rules[1].meta.id == "org.env.2");
}

TEST_CASE("the layer key names the layer only when parseLayer gets no layer name", "[unit]") {
  const char* doc = "layer: team\nnetwork:\n  rules:\n    - deny: a.com\n";
  SECTION("empty layer name: the document's layer key renames ids") {
    auto r = parseLayer(doc, "/etc/x/p.yaml", "");
    const Layer& l = layerOf(r);
    CHECK(l.name == "team");
    CHECK(l.net_rules.at(0).meta.id == "team.network.1");
  }
  SECTION("a role name wins over the layer key") {
    auto r = parseLayer(doc, "/etc/x/p.yaml", "project");
    const Layer& l = layerOf(r);
    CHECK(l.name == "project");
    CHECK(l.net_rules.at(0).meta.id == "project.network.1");
  }
  SECTION("without a layer key the file stem names the layer") {
    auto r = parseLayer("network:\n  rules:\n    - deny: a.com\n", "/etc/x/team-web.policy.yaml",
                        "");
    const Layer& l = layerOf(r);
    CHECK(l.name == "team-web");
    CHECK(l.net_rules.at(0).meta.id == "team-web.network.1");
  }
  SECTION("a bad layer key is an error, whatever the role") {
    for (const char* role : {"", "project"}) {
      auto r = parseLayer("layer: \"a.b\"\n", "p.yaml", role);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == ErrorCode::kPolicyInvalid);
      CHECK_THAT(r.error().message(),
                 StartsWith("p.yaml:1:8: error: layer must be a word without spaces, dots or "
                            "quotes"));
    }
  }
}

TEST_CASE("rule metadata is parsed", "[unit]") {
  auto r = parse(
      "mode: audit\nnetwork:\n  default: deny\n  inspect: true\n  rules:\n    - allow: a.com\n   "
      "   reason: because\n      mode: enforce\n      inspect: false\n    - deny: b.com\n      "
      "locked: true\n");
  const Layer& l = layerOf(r);
  CHECK(l.mode == Mode::kAudit);
  CHECK(l.network.default_value == false);
  CHECK(l.network.default_loc.line == 3);
  CHECK(l.network.default_loc.col == 12);
  CHECK(l.network_inspect == true);
  REQUIRE(l.net_rules.size() == 2);
  CHECK(l.net_rules[0].allow);
  CHECK(l.net_rules[0].meta.reason == "because");
  CHECK(l.net_rules[0].meta.mode == Mode::kEnforce);
  CHECK(l.net_rules[0].inspect == false);
  CHECK_FALSE(l.net_rules[1].allow);
  CHECK(l.net_rules[1].meta.locked);
}

}  // namespace
}  // namespace guard::policy
