// DNS wire format: one-question queries in, answers out (RFC 1035 4.1).
#include "mitm-proxy/dns.h"

#include <cctype>

namespace guard::proxy {
namespace {

constexpr size_t kHeader = 12;
constexpr size_t kMaxName = 253;

uint16_t get16(std::span<const uint8_t> p, size_t at) {
  return static_cast<uint16_t>(p[at] << 8 | p[at + 1]);
}

void put16(std::vector<uint8_t>* out, uint16_t v) {
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

void put32(std::vector<uint8_t>* out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v >> 16));
  put16(out, static_cast<uint16_t>(v));
}

// putName writes NAME as labels; names here were parsed or policy-checked,
// so every label is 1..63 bytes.
void putName(std::vector<uint8_t>* out, const std::string& name) {
  size_t i = 0;
  while (i < name.size()) {
    size_t dot = name.find('.', i);
    if (dot == std::string::npos) {
      dot = name.size();
    }
    size_t len = std::min<size_t>(dot - i, 63);
    out->push_back(static_cast<uint8_t>(len));
    out->insert(out->end(), name.begin() + static_cast<long>(i),
                name.begin() + static_cast<long>(i + len));
    i = dot + 1;
  }
  out->push_back(0);
}

}  // namespace

DnsParse parseDnsQuery(std::span<const uint8_t> p, DnsQuery* out) {
  if (p.size() < kHeader) {
    return DnsParse::kMalformed;
  }
  out->id = get16(p, 0);
  out->flags = get16(p, 2);
  bool qr = (out->flags & 0x8000) != 0;
  uint16_t opcode = (out->flags >> 11) & 0xf;
  if (qr || opcode != 0 || get16(p, 4) != 1) {
    return DnsParse::kNotQuery;
  }
  out->name.clear();
  size_t at = kHeader;
  for (;;) {
    if (at >= p.size()) {
      return DnsParse::kMalformed;
    }
    uint8_t len = p[at++];
    if (len == 0) {
      break;
    }
    if (len > 63 || at + len > p.size()) {
      return DnsParse::kMalformed;  // 0xc0 pointers land here too
    }
    if (!out->name.empty()) {
      out->name += '.';
    }
    for (size_t i = 0; i < len; ++i) {
      out->name += static_cast<char>(std::tolower(p[at + i]));
    }
    at += len;
    if (out->name.size() > kMaxName) {
      return DnsParse::kMalformed;
    }
  }
  if (at + 4 > p.size()) {
    return DnsParse::kMalformed;
  }
  out->type = get16(p, at);
  out->klass = get16(p, at + 2);
  out->question_end = at + 4;
  return DnsParse::kOk;
}

std::vector<uint8_t> buildDnsAnswer(const DnsQuery& q, uint8_t rcode,
                                    std::span<const DnsRecord> answers) {
  std::vector<uint8_t> out;
  out.reserve(64 + answers.size() * 32);
  put16(&out, q.id);
  put16(&out, static_cast<uint16_t>(0x8000 | 0x0080 | (q.flags & 0x0100) | (rcode & 0xf)));
  put16(&out, 1);
  put16(&out, static_cast<uint16_t>(answers.size()));
  put16(&out, 0);
  put16(&out, 0);
  putName(&out, q.name);
  put16(&out, q.type);
  put16(&out, q.klass);
  for (const DnsRecord& r : answers) {
    putName(&out, r.owner);
    put16(&out, static_cast<uint16_t>(r.type));
    put16(&out, 1);  // IN
    put32(&out, r.ttl);
    if (r.type == DnsType::kCname) {
      std::vector<uint8_t> target;
      putName(&target, r.data);
      put16(&out, static_cast<uint16_t>(target.size()));
      out.insert(out.end(), target.begin(), target.end());
    } else {
      put16(&out, static_cast<uint16_t>(r.data.size()));
      out.insert(out.end(), r.data.begin(), r.data.end());
    }
  }
  return out;
}

std::vector<uint8_t> buildDnsError(std::span<const uint8_t> p, uint8_t rcode) {
  std::vector<uint8_t> out;
  if (p.size() < 2) {
    return out;
  }
  out = {p[0], p[1], 0x80, static_cast<uint8_t>(0x80 | (rcode & 0xf)), 0, 0, 0, 0, 0, 0, 0, 0};
  if (p.size() >= 3) {
    out[2] = static_cast<uint8_t>(0x80 | (p[2] & 0x79));  // QR, opcode and RD echoed
  }
  return out;
}

}  // namespace guard::proxy
