// Unit tests for the proxy's parsers of untrusted bytes: DNS queries, TLS
// ClientHellos, HTTP/1.1 heads and chunked bodies, and the secret scanner.
#include <openssl/base64.h>
#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "mitm-proxy/dns.h"
#include "mitm-proxy/http.h"
#include "mitm-proxy/secrets.h"
#include "mitm-proxy/sni.h"

namespace guard::proxy {
namespace {

std::vector<uint8_t> query(const std::string& name, uint16_t type, uint16_t id = 0x1234) {
  std::vector<uint8_t> q = {static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  size_t at = 0;
  while (at <= name.size()) {
    size_t dot = name.find('.', at);
    if (dot == std::string::npos) {
      dot = name.size();
    }
    q.push_back(static_cast<uint8_t>(dot - at));
    q.insert(q.end(), name.begin() + static_cast<long>(at), name.begin() + static_cast<long>(dot));
    at = dot + 1;
  }
  q.push_back(0);
  q.push_back(static_cast<uint8_t>(type >> 8));
  q.push_back(static_cast<uint8_t>(type));
  q.push_back(0);
  q.push_back(1);
  return q;
}

TEST_CASE("a DNS query parses and its answer carries the records", "[unit][proxy]") {
  DnsQuery q;
  REQUIRE(parseDnsQuery(query("API.Example.COM", 1), &q) == DnsParse::kOk);
  CHECK(q.name == "api.example.com");
  CHECK(q.type == 1);
  CHECK(q.id == 0x1234);
  std::vector<DnsRecord> answers = {{"api.example.com", DnsType::kCname, "edge.example.net", 60},
                                    {"edge.example.net", DnsType::kA, std::string("\xc6\x12\x00\x01", 4), 60}};
  std::vector<uint8_t> a = buildDnsAnswer(q, kRcodeNoError, answers);
  CHECK(a[0] == 0x12);
  CHECK(a[1] == 0x34);
  CHECK((a[2] & 0x80) != 0);  // QR
  CHECK((a[3] & 0x0f) == kRcodeNoError);
  CHECK(a[7] == 2);  // ANCOUNT
  // The answer's question parses back (as a query it is refused: QR is set).
  DnsQuery back;
  CHECK(parseDnsQuery(a, &back) == DnsParse::kNotQuery);
}

TEST_CASE("malformed DNS queries are refused, never over-read", "[unit][proxy]") {
  DnsQuery q;
  std::vector<uint8_t> good = query("example.com", 1);
  for (size_t len = 0; len < good.size(); ++len) {
    CHECK(parseDnsQuery({good.data(), len}, &q) != DnsParse::kOk);
  }
  std::vector<uint8_t> ptr = good;
  ptr[12] = 0xc0;  // a compression pointer in the question
  CHECK(parseDnsQuery(ptr, &q) == DnsParse::kMalformed);
  std::vector<uint8_t> two = good;
  two[5] = 2;  // QDCOUNT 2
  CHECK(parseDnsQuery(two, &q) == DnsParse::kNotQuery);
  CHECK(buildDnsError(std::vector<uint8_t>{1}, kRcodeFormErr).empty());
  CHECK(buildDnsError(two, kRcodeFormErr).size() == 12);
}

// clientHello makes a real ClientHello with BoringSSL.
std::string clientHello(const char* sni) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx.get()));
  if (sni != nullptr) {
    SSL_set_tlsext_host_name(ssl.get(), sni);
  }
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), rbio, wbio);
  SSL_set_connect_state(ssl.get());
  SSL_do_handshake(ssl.get());
  const uint8_t* data = nullptr;
  size_t len = 0;
  BIO_mem_contents(wbio, &data, &len);
  return std::string(reinterpret_cast<const char*>(data), len);
}

TEST_CASE("the SNI is read from a real ClientHello, byte by byte", "[unit][proxy]") {
  std::string hello = clientHello("Api.GitHub.com");
  std::string name;
  for (size_t len = 0; len < hello.size(); ++len) {
    HelloParse r = peekClientHello({reinterpret_cast<const uint8_t*>(hello.data()), len}, &name);
    CHECK(r == HelloParse::kNeedMore);
  }
  REQUIRE(peekClientHello({reinterpret_cast<const uint8_t*>(hello.data()), hello.size()}, &name) ==
          HelloParse::kOk);
  CHECK(name == "api.github.com");
  std::string none = clientHello(nullptr);
  CHECK(peekClientHello({reinterpret_cast<const uint8_t*>(none.data()), none.size()}, &name) ==
        HelloParse::kOk);
  CHECK(name.empty());
  std::string http = "GET / HTTP/1.1\r\n";
  CHECK(peekClientHello({reinterpret_cast<const uint8_t*>(http.data()), http.size()}, &name) ==
        HelloParse::kNotTls);
  std::string bad = hello;
  bad[7] = '\x7f';  // the hello's own length no longer fits its record
  CHECK(peekClientHello({reinterpret_cast<const uint8_t*>(bad.data()), bad.size()}, &name) ==
        HelloParse::kMalformed);
}

TEST_CASE("HTTP request heads parse and serialize back", "[unit][proxy]") {
  HttpHead h;
  size_t len = 0;
  std::string req = "POST /x?y=1 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello";
  REQUIRE(parseRequestHead(req, &h, &len) == HeadParse::kOk);
  CHECK(len == req.size() - 5);
  CHECK(h.method == "POST");
  CHECK(h.target == "/x?y=1");
  CHECK(*h.find("HOST") == "a.test");
  Framing f;
  REQUIRE(requestFraming(h, &f));
  CHECK(f.kind == Framing::Kind::kLength);
  CHECK(f.length == 5);
  HttpHead again;
  size_t len2 = 0;
  REQUIRE(parseRequestHead(h.serialize(), &again, &len2) == HeadParse::kOk);
  CHECK(again.serialize() == h.serialize());
  CHECK(parseRequestHead("GET / HTTP/1.1\r\nHost: a", &h, &len) == HeadParse::kNeedMore);
}

TEST_CASE("ambiguous or malformed HTTP is refused (request smuggling)", "[unit][proxy]") {
  const char* bad_heads[] = {
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",          // space before colon
      "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  // obs-fold
      "GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n",          // bare CR
      "GET  / HTTP/1.1\r\n\r\n",                       // double space
      "GET / HTTP/2.0\r\n\r\n",                        // not HTTP/1.x
  };
  for (const char* text : bad_heads) {
    HttpHead h;
    size_t len = 0;
    INFO(text);
    CHECK(parseRequestHead(text, &h, &len) == HeadParse::kBad);
  }
  const char* bad_framing[] = {
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
  };
  for (const char* text : bad_framing) {
    HttpHead h;
    size_t len = 0;
    INFO(text);
    REQUIRE(parseRequestHead(text, &h, &len) == HeadParse::kOk);
    Framing f;
    CHECK_FALSE(requestFraming(h, &f));
  }
  std::string huge = "GET / HTTP/1.1\r\nX: " + std::string(kMaxHead, 'a');
  HttpHead h;
  size_t len = 0;
  CHECK(parseRequestHead(huge, &h, &len) == HeadParse::kTooLarge);
}

TEST_CASE("response framing follows RFC 9112 6.3", "[unit][proxy]") {
  HttpHead h;
  size_t len = 0;
  REQUIRE(parseResponseHead("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &h, &len) == HeadParse::kOk);
  Framing f;
  REQUIRE(responseFraming(h, "HEAD", &f));
  CHECK(f.kind == Framing::Kind::kNone);
  REQUIRE(responseFraming(h, "GET", &f));
  CHECK(f.kind == Framing::Kind::kLength);
  REQUIRE(parseResponseHead("HTTP/1.1 200 OK\r\n\r\n", &h, &len) == HeadParse::kOk);
  REQUIRE(responseFraming(h, "GET", &f));
  CHECK(f.kind == Framing::Kind::kUntilClose);
  REQUIRE(parseResponseHead("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", &h, &len) ==
          HeadParse::kOk);
  REQUIRE(responseFraming(h, "GET", &f));
  CHECK(f.kind == Framing::Kind::kNone);
}

TEST_CASE("a chunked body ends exactly where its framing says", "[unit][proxy]") {
  std::string body = "5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nNEXT";
  for (size_t split = 0; split <= body.size(); ++split) {
    ChunkedReader r;
    long a = r.consume(std::string_view(body).substr(0, split));
    REQUIRE(a >= 0);
    long b = r.done() ? 0 : r.consume(std::string_view(body).substr(static_cast<size_t>(a)));
    CHECK(r.done());
    CHECK(static_cast<size_t>(a + b) == body.size() - 4);
  }
  ChunkedReader bad;
  CHECK(bad.consume("zz\r\n") < 0);
  ChunkedReader no_crlf;
  CHECK(no_crlf.consume("3\r\nabcX") < 0);
}

TEST_CASE("secrets are found raw, base64 at any alignment, percent-encoded, in names",
          "[unit][proxy]") {
  std::vector<Secret> secrets(2);
  secrets[0].name = "gh";
  secrets[0].value = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
  secrets[0].placeholder = makePlaceholder("gh", secrets[0].value);
  secrets[1].name = "key";
  secrets[1].value = "k3y/with+special=chars&more";
  secrets[1].placeholder = makePlaceholder("key", secrets[1].value);
  CHECK(secrets[0].placeholder.size() == secrets[0].value.size());
  CHECK(secrets[0].placeholder != secrets[0].value);
  SecretScanner s(secrets);
  auto hit = s.find("Authorization: Bearer " + secrets[0].value);
  REQUIRE(hit);
  CHECK(hit->secret == 0);
  CHECK_FALSE(hit->placeholder);
  CHECK(s.find("x " + secrets[0].placeholder + " y")->placeholder);
  CHECK_FALSE(s.find("x " + secrets[0].value, 1));  // allowed for this destination: skipped
  for (std::string prefix : {"", "a", "ab", "abc"}) {
    std::string text = prefix + secrets[1].value + "tail";
    size_t n = 0;
    EVP_EncodedLength(&n, text.size());
    std::string b64(n, '\0');
    b64.resize(EVP_EncodeBlock(reinterpret_cast<uint8_t*>(b64.data()),
                               reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    INFO(prefix);
    auto b = s.find("X-Token: " + b64);
    REQUIRE(b);
    CHECK(b->secret == 1);
  }
  CHECK(s.find("?t=k3y%2Fwith%2Bspecial%3Dchars%26more"));
  CHECK(s.findInName("GHP_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.evil.test"));
  CHECK_FALSE(s.find("nothing to see here, only ordinary text"));
  std::string reflected = "echo: " + secrets[0].value;
  CHECK(redactValues(secrets, &reflected) == 1);
  CHECK(reflected == "echo: " + secrets[0].placeholder);
}

}  // namespace
}  // namespace guard::proxy
