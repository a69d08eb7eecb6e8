// DNS wire format (RFC 1035): parse one query, build one answer. The agent's
// queries are untrusted input; everything here is bounds-checked and fuzzed.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace guard::proxy {

enum class DnsType : uint16_t { kA = 1, kCname = 5, kAaaa = 28, kAny = 255 };

// DnsQuery is a parsed standard query with exactly one question.
struct DnsQuery {
  uint16_t id = 0;
  uint16_t flags = 0;   // as received (RD is echoed back)
  std::string name;     // lowercase, no trailing dot; labels as received (may hold any byte)
  uint16_t type = 0;
  uint16_t klass = 0;
  size_t question_end = 0;  // offset just past the question in the packet
};

enum class DnsParse { kOk, kMalformed, kNotQuery };

// parseDnsQuery parses PACKET into *OUT. kNotQuery: a response, an opcode
// other than QUERY, or a question count other than one (answered FORMERR or
// NOTIMP by the caller when the header is readable); kMalformed: truncated or
// impossible, including compression pointers in the question (RFC 1035
// 4.1.4 allows them, but a query never needs them).
DnsParse parseDnsQuery(std::span<const uint8_t> packet, DnsQuery* out);

constexpr uint8_t kRcodeNoError = 0;
constexpr uint8_t kRcodeFormErr = 1;
constexpr uint8_t kRcodeServFail = 2;
constexpr uint8_t kRcodeNxDomain = 3;
constexpr uint8_t kRcodeNotImp = 4;
constexpr uint8_t kRcodeRefused = 5;

// DnsRecord is one answer record; the owner is a name from the CNAME chain.
struct DnsRecord {
  std::string owner;
  DnsType type = DnsType::kA;
  std::string data;  // 4 or 16 address bytes, or the CNAME target name
  uint32_t ttl = 0;
};

// buildDnsAnswer returns a response to QUERY with RCODE and ANSWERS (the
// question is echoed; QR, RA and the query's RD set).
std::vector<uint8_t> buildDnsAnswer(const DnsQuery& query, uint8_t rcode,
                                    std::span<const DnsRecord> answers);

// buildDnsError answers a packet whose question could not be used: it echoes
// the id (when PACKET holds one) with RCODE and no question. Empty when the
// packet is too short to carry an id.
std::vector<uint8_t> buildDnsError(std::span<const uint8_t> packet, uint8_t rcode);

}  // namespace guard::proxy
