// Fuzz target for the proxy's parsers of agent and server bytes: DNS
// queries, TLS ClientHello peeking, HTTP/1.1 heads and chunked bodies.
//
// The first input byte picks the parser; properties checked:
//  * DNS: a parsed query yields an answer that is a well-formed response
//    with the query's id, and an error answer is 12 bytes or empty;
//  * ClientHello: never reads past the input; a name found is lowercase
//    and non-empty;
//  * HTTP: a parsed head serializes to text that parses to the same head
//    (round trip), and the framing decision is the same for both;
//  * chunked: consume never claims more bytes than it was given, and
//    feeding the input in two pieces gives the same total and the same
//    decoded payload as in one; readWholeBody agrees with consume.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mitm-proxy/dns.h"
#include "mitm-proxy/http.h"
#include "mitm-proxy/sni.h"

namespace {

#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "wire_fuzz: property failed: %s (%s:%d)\n", #cond, __FILE__,  \
                   __LINE__);                                                              \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

using namespace guard::proxy;

void fuzzDns(std::span<const uint8_t> in) {
  DnsQuery q;
  if (parseDnsQuery(in, &q) == DnsParse::kOk) {
    std::vector<DnsRecord> answers = {{q.name, DnsType::kA, std::string(4, '\1'), 60}};
    std::vector<uint8_t> a = buildDnsAnswer(q, kRcodeNoError, answers);
    FUZZ_CHECK(a.size() >= 12 && a[0] == (q.id >> 8) && a[1] == (q.id & 0xff) && (a[2] & 0x80));
  }
  std::vector<uint8_t> e = buildDnsError(in, kRcodeFormErr);
  FUZZ_CHECK(e.empty() || e.size() == 12);
}

void fuzzHello(std::span<const uint8_t> in) {
  std::string name;
  if (peekClientHello(in, &name) == HelloParse::kOk && !name.empty()) {
    for (char c : name) {
      FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
    }
  }
}

void fuzzHttp(std::string_view in, bool request) {
  HttpHead h;
  size_t len = 0;
  HeadParse r = request ? parseRequestHead(in, &h, &len) : parseResponseHead(in, &h, &len);
  if (r != HeadParse::kOk) {
    return;
  }
  FUZZ_CHECK(len <= in.size());
  std::string text = h.serialize();
  HttpHead again;
  size_t len2 = 0;
  HeadParse r2 = request ? parseRequestHead(text, &again, &len2) : parseResponseHead(text, &again, &len2);
  FUZZ_CHECK(r2 == HeadParse::kOk);
  FUZZ_CHECK(again.serialize() == text);
  Framing f1;
  Framing f2;
  bool ok1 = request ? requestFraming(h, &f1) : responseFraming(h, "GET", &f1);
  bool ok2 = request ? requestFraming(again, &f2) : responseFraming(again, "GET", &f2);
  FUZZ_CHECK(ok1 == ok2);
  FUZZ_CHECK(!ok1 || (f1.kind == f2.kind && f1.length == f2.length));
}

void fuzzChunked(std::string_view in) {
  ChunkedReader whole;
  std::string payload;
  long all = whole.consume(in, &payload);
  FUZZ_CHECK(all <= static_cast<long>(in.size()));
  FUZZ_CHECK(payload.size() <= in.size());
  if (all < 0) {
    return;
  }
  size_t split = in.empty() ? 0 : static_cast<uint8_t>(in[0]) % (in.size() + 1);
  ChunkedReader parts;
  std::string pieces;
  long a = parts.consume(in.substr(0, split), &pieces);
  if (a < 0) {
    return;  // an error seen early is still an error
  }
  long b = parts.done() ? 0 : parts.consume(in.substr(static_cast<size_t>(a)), &pieces);
  FUZZ_CHECK(b >= 0);
  FUZZ_CHECK(a + b == all);
  FUZZ_CHECK(parts.done() == whole.done());
  FUZZ_CHECK(pieces == payload);
  size_t consumed = 0;
  std::string body;
  BodyRead r = readWholeBody(in, Framing{Framing::Kind::kChunked, 0}, false, 1u << 20,
                             &consumed, &body);
  FUZZ_CHECK(r != BodyRead::kOk || (whole.done() && static_cast<long>(consumed) == all &&
                                    body == payload));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  std::span<const uint8_t> in(data + 1, size - 1);
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0:
      fuzzDns(in);
      break;
    case 1:
      fuzzHello(in);
      break;
    case 2:
      fuzzHttp(text, true);
      break;
    case 3:
      fuzzHttp(text, false);
      break;
    default:
      fuzzChunked(text);
      break;
  }
  return 0;
}
