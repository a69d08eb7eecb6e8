// ClientHello peeking: record header, handshake header, then the extensions.
#include "mitm-proxy/sni.h"

#include <cctype>

namespace guard::proxy {
namespace {

// Reader walks a byte span; every read is bounds-checked and a failed read
// poisons it, so parsing code can check once at the end of a step.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool ok() const { return ok_; }
  size_t left() const { return ok_ ? b_.size() - at_ : 0; }
  uint32_t num(int bytes) {
    uint32_t v = 0;
    if (!ok_ || left() < static_cast<size_t>(bytes)) {
      ok_ = false;
      return 0;
    }
    for (int i = 0; i < bytes; ++i) {
      v = v << 8 | b_[at_++];
    }
    return v;
  }
  Reader sub(size_t len) {
    if (!ok_ || left() < len) {
      ok_ = false;
      return Reader({});
    }
    Reader r(b_.subspan(at_, len));
    at_ += len;
    return r;
  }
  // vec reads a length-prefixed vector (LEN_BYTES of length).
  Reader vec(int len_bytes) { return sub(num(len_bytes)); }
  std::span<const uint8_t> rest() const { return ok_ ? b_.subspan(at_) : std::span<const uint8_t>(); }

 private:
  std::span<const uint8_t> b_;
  size_t at_ = 0;
  bool ok_ = true;
};

constexpr uint8_t kHandshake = 22;
constexpr uint8_t kClientHello = 1;
constexpr uint16_t kServerName = 0;

}  // namespace

HelloParse peekClientHello(std::span<const uint8_t> bytes, std::string* name) {
  name->clear();
  if (bytes.empty()) {
    return HelloParse::kNeedMore;
  }
  if (bytes[0] != kHandshake) {
    return HelloParse::kNotTls;
  }
  if (bytes.size() < 5) {
    return HelloParse::kNeedMore;
  }
  if (bytes[1] != 3) {
    return HelloParse::kNotTls;
  }
  size_t record_len = static_cast<size_t>(bytes[3] << 8 | bytes[4]);
  if (record_len == 0 || record_len > 16384) {
    return HelloParse::kMalformed;
  }
  if (bytes.size() < 5 + record_len) {
    return HelloParse::kNeedMore;
  }
  Reader rec(bytes.subspan(5, record_len));
  if (rec.num(1) != kClientHello) {
    return HelloParse::kMalformed;
  }
  Reader hello = rec.sub(rec.num(3));
  hello.num(2);                 // legacy_version
  hello.sub(32);                // random
  hello.vec(1);                 // legacy_session_id
  hello.vec(2);                 // cipher_suites
  hello.vec(1);                 // legacy_compression_methods
  if (!hello.ok()) {
    return HelloParse::kMalformed;
  }
  if (hello.left() == 0) {
    return HelloParse::kOk;     // no extensions, no SNI
  }
  Reader exts = hello.vec(2);
  bool seen = false;
  while (exts.ok() && exts.left() > 0) {
    uint32_t type = exts.num(2);
    Reader ext = exts.vec(2);
    if (type != kServerName) {
      continue;
    }
    if (seen) {
      return HelloParse::kMalformed;  // RFC 8446 4.2: one extension of each type
    }
    seen = true;
    Reader list = ext.vec(2);
    while (list.ok() && list.left() > 0) {
      uint32_t kind = list.num(1);
      Reader host = list.vec(2);
      if (!list.ok()) {
        break;
      }
      if (kind != 0) {
        continue;
      }
      if (!name->empty()) {
        return HelloParse::kMalformed;  // RFC 6066 3: one host_name at most
      }
      for (uint8_t c : host.rest()) {
        char lc = static_cast<char>(std::tolower(c));
        if (!(std::isalnum(static_cast<unsigned char>(lc)) || lc == '.' || lc == '-' || lc == '_')) {
          return HelloParse::kMalformed;
        }
        *name += lc;
      }
      if (name->empty() || name->size() > 253) {
        return HelloParse::kMalformed;
      }
    }
    if (!list.ok() || !ext.ok()) {
      return HelloParse::kMalformed;
    }
  }
  if (!exts.ok()) {
    return HelloParse::kMalformed;
  }
  while (!name->empty() && name->back() == '.') {
    name->pop_back();
  }
  return HelloParse::kOk;
}

}  // namespace guard::proxy
