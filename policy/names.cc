// Normalisation of domain names, addresses and paths, and glob matching.
#include "policy/names.h"

#include <arpa/inet.h>
#include <idn2.h>

#include <cstdlib>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "policy/policy.h"

namespace guard::policy {
namespace {

bool isLdh(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// checkLabels validates lowercase ASCII NAME of length LEN in place.
bool checkLabels(const char* name, size_t len) {
  if (len == 0 || len > kMaxDomainLen) {
    return false;
  }
  size_t label = 0;
  for (size_t i = 0; i < len; ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
      continue;
    }
    if (!isLdh(c) || ++label > 63) {
      return false;
    }
  }
  return label != 0;
}

#if !defined(__SSE2__)
// kDomainByte maps each byte of an ASCII name to its canonical form: a
// lowercase letter, digit, '-', '_' or '.'; 0 for every other byte (NUL,
// other ASCII, non-ASCII), which the fast path hands to the general one.
constexpr auto kDomainByte = [] {
  struct Table {
    char map[256] = {};
  } t;
  for (int c = 'a'; c <= 'z'; ++c) {
    t.map[c] = static_cast<char>(c);
    t.map[c - 'a' + 'A'] = static_cast<char>(c);
  }
  for (int c = '0'; c <= '9'; ++c) {
    t.map[c] = static_cast<char>(c);
  }
  t.map['-'] = '-';
  t.map['_'] = '_';
  t.map['.'] = '.';
  return t;
}();
#endif

// normaliseSlow is the general case: NUL bytes, non-ASCII (IDNA), invalid
// names. NAME has had its trailing dot removed.
size_t normaliseSlow(std::string_view name, char* out) {
  if (name.empty() || name.size() > 1024) {
    return 0;
  }
  bool ascii = true;
  for (unsigned char c : name) {
    if (c == 0) {
      return 0;  // libidn2 would stop at it and judge a shorter name
    }
    ascii = ascii && c < 0x80;
  }
  if (ascii) {
    if (name.size() > kMaxDomainLen) {
      return 0;
    }
    for (size_t i = 0; i < name.size(); ++i) {
      char c = name[i];
      out[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    }
    return checkLabels(out, name.size()) ? name.size() : 0;
  }
  // Non-ASCII: IDNA 2008 with the usual transitional-free mapping (lowercase,
  // NFC). libidn2 needs a NUL-terminated copy.
  std::string copy(name);
  char* ace = nullptr;
  int rc = idn2_to_ascii_8z(copy.c_str(), &ace, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
  if (rc != IDN2_OK || ace == nullptr) {
    return 0;
  }
  size_t len = strlen(ace);
  bool ok = len <= kMaxDomainLen;
  if (ok) {
    for (size_t i = 0; i < len; ++i) {
      char c = ace[i];
      out[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    }
    ok = checkLabels(out, len);
  }
  free(ace);  // allocated by libidn2
  return ok ? len : 0;
}

#if defined(__SSE2__)
// fastAscii writes the lowercase form of the N (1..kMaxDomainLen) bytes at
// S to OUT and returns true when every byte is in [A-Za-z0-9._-] and every
// label has 1 to 63 bytes; otherwise false (OUT then holds some prefix).
// 16 bytes at a time.
bool fastAscii(const char* s, size_t n, char* out) {
  const __m128i kAm1 = _mm_set1_epi8('A' - 1), kZp1 = _mm_set1_epi8('Z' + 1);
  const __m128i kam1 = _mm_set1_epi8('a' - 1), kzp1 = _mm_set1_epi8('z' + 1);
  const __m128i k0m1 = _mm_set1_epi8('0' - 1), k9p1 = _mm_set1_epi8('9' + 1);
  const __m128i kCase = _mm_set1_epi8(0x20);
  const __m128i kDash = _mm_set1_epi8('-'), kUnder = _mm_set1_epi8('_');
  const __m128i kDot = _mm_set1_epi8('.');
  size_t label_start = 0;
  for (size_t i = 0; i < n; i += 16) {
    // V holds bytes [at, at + 16); bit j of a mask >> SHIFT is byte i + j.
    __m128i v;
    size_t at = i;
    alignas(16) char tmp[16] = {};
    if (n - i >= 16) {
      v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    } else if (n >= 16) {
      at = n - 16;
      v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + at));
    } else {
      memcpy(tmp, s, n);
      v = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
    }
    unsigned shift = static_cast<unsigned>(i - at);
    uint32_t valid = n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1;
    // Bytes >= 0x80 compare as negative: neither letter nor digit.
    __m128i upper = _mm_and_si128(_mm_cmpgt_epi8(v, kAm1), _mm_cmplt_epi8(v, kZp1));
    __m128i lower = _mm_or_si128(v, _mm_and_si128(upper, kCase));
    __m128i ok = _mm_or_si128(
        _mm_and_si128(_mm_cmpgt_epi8(lower, kam1), _mm_cmplt_epi8(lower, kzp1)),
        _mm_and_si128(_mm_cmpgt_epi8(v, k0m1), _mm_cmplt_epi8(v, k9p1)));
    __m128i dot = _mm_cmpeq_epi8(v, kDot);
    ok = _mm_or_si128(ok, _mm_or_si128(dot, _mm_or_si128(_mm_cmpeq_epi8(v, kDash),
                                                          _mm_cmpeq_epi8(v, kUnder))));
    uint32_t bad = (~static_cast<uint32_t>(_mm_movemask_epi8(ok)) >> shift) & valid;
    if (bad != 0) {
      return false;
    }
    if (n >= 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + at), lower);
    } else {
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), lower);
      memcpy(out, tmp, n);
    }
    for (uint32_t dots = (static_cast<uint32_t>(_mm_movemask_epi8(dot)) >> shift) & valid;
         dots != 0; dots &= dots - 1) {
      size_t pos = i + static_cast<size_t>(__builtin_ctz(dots));
      if (pos == label_start || pos - label_start > 63) {
        return false;
      }
      label_start = pos + 1;
    }
  }
  return n != label_start && n - label_start <= 63;
}
#else
bool fastAscii(const char* s, size_t n, char* out) {
  const auto* in = reinterpret_cast<const unsigned char*>(s);
  size_t label = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = kDomainByte.map[in[i]];
    out[i] = c;
    if (c == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
    } else if (c == 0 || ++label > 63) {
      return false;
    }
  }
  return label != 0;
}
#endif

}  // namespace

size_t normaliseDomain(std::string_view name, char* out) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  // Fast path, one pass: lowercase and check each byte, and check label
  // lengths as we go. Anything it does not accept outright (a byte outside
  // [A-Za-z0-9._-], an empty or long label, a long name) is decided by the
  // general path, so both give the same answer.
  size_t n = name.size();
  if (n - 1 < kMaxDomainLen && fastAscii(name.data(), n, out)) {  // 1 <= n <= kMaxDomainLen
    return n;
  }
  return normaliseSlow(name, out);
}

std::string normaliseDomain(std::string_view name) {
  char buf[kMaxDomainLen + 1];
  size_t n = normaliseDomain(name, buf);
  return std::string(buf, n);
}

namespace {

#if !defined(__SSE2__)
// zeroBytes flags (0x80) exactly the zero bytes of V.
uint64_t zeroBytes(uint64_t v) {
  constexpr uint64_t kLow7 = 0x7f7f7f7f7f7f7f7fULL;
  return ~(((v & kLow7) + kLow7) | v) & ~kLow7;
}
#endif

// Scan is what scanPath found.
enum class Scan { kNormal, kNotNormal, kNul };

// scanPath looks at absolute PATH of N bytes (N >= 1) a word at a time:
// kNul if it has a NUL byte, kNormal if it is its own normal form (no
// empty, "." or ".." segment, no trailing slash), else kNotNormal. A NUL
// is found only when the scan gets that far: kNotNormal may hide one.
Scan scanPath(const char* s, size_t n) {
  if (n == 1) {
    return Scan::kNormal;  // "/"
  }
  if (s[n - 1] == '/') {
    return Scan::kNotNormal;
  }
  // A slash followed by '/' or '.' needs a closer look: "/." and "/.." as
  // whole segments are not normal, "/.git" is.
  auto closer = [&](size_t i) {  // the slash at I, which is not the last byte
    char c = s[i + 1];
    if (c == '/' || (c == '.' && (i + 2 == n || s[i + 2] == '/'))) {
      return false;
    }
    return !(c == '.' && s[i + 2] == '.' && (i + 3 == n || s[i + 3] == '/'));
  };
  bool slash_at_end = false;  // the previous block ended in '/'
#if defined(__SSE2__)
  // 16 bytes at a time: a bit per byte for NUL, '/' and '.'.
  for (size_t i = 0; i < n; i += 16) {
    __m128i v;
    unsigned shift = 0;  // bits to drop: bytes before I in an overlapping load
    if (n - i >= 16) {
      v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    } else if (n >= 16) {
      v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + n - 16));
      shift = static_cast<unsigned>(16 - (n - i));
    } else {
      alignas(16) char tmp[16] = {};
      memcpy(tmp, s, n);
      v = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
    }
    auto bits = [&](char c) {
      return static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c)))) >>
             shift;
    };
    uint32_t valid = n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1;
    if ((bits('\0') & valid) != 0) {
      return Scan::kNul;
    }
    uint32_t slash = bits('/') & valid;
    uint32_t slash_or_dot = slash | (bits('.') & valid);
    uint32_t look = slash & (slash_or_dot >> 1);  // a slash before '/' or '.'
    if (look != 0 || (slash_at_end && (slash_or_dot & 1) != 0)) {
      if (slash_at_end && (slash_or_dot & 1) != 0 && !closer(i - 1)) {
        return Scan::kNotNormal;
      }
      for (; look != 0; look &= look - 1) {
        if (!closer(i + static_cast<size_t>(__builtin_ctz(look)))) {
          return Scan::kNotNormal;
        }
      }
    }
    slash_at_end = ((slash >> 15) & 1) != 0;
  }
#else
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w;
    uint64_t valid = ~uint64_t{0};
    if (n - i >= 8) {
      memcpy(&w, s + i, 8);
    } else if (n >= 8) {
      // The last 8 bytes, shifted so byte I comes first; the top is zero.
      memcpy(&w, s + n - 8, 8);
      w >>= (8 - (n - i)) * 8;
      valid = ~uint64_t{0} >> ((8 - (n - i)) * 8);
    } else {
      w = 0;
      memcpy(&w, s + i, n - i);
      valid = ~uint64_t{0} >> ((8 - (n - i)) * 8);
    }
    if ((zeroBytes(w) & valid) != 0) {
      return Scan::kNul;
    }
    uint64_t slash = zeroBytes(w ^ (kOnes * '/'));
    uint64_t slash_or_dot = slash | zeroBytes(w ^ (kOnes * '.'));
    uint64_t look = slash & (slash_or_dot >> 8);  // a slash before '/' or '.'
    if ((look != 0 || (slash_at_end && (slash_or_dot & 0x80) != 0))) {
      if (slash_at_end && !closer(i - 1)) {
        return Scan::kNotNormal;
      }
      for (; look != 0; look &= look - 1) {
        if (!closer(i + (static_cast<size_t>(__builtin_ctzll(look)) >> 3))) {
          return Scan::kNotNormal;
        }
      }
    }
    slash_at_end = (slash >> 63) != 0;
  }
#endif
  return Scan::kNormal;
}

}  // namespace

size_t normalisePath(std::string_view path, char* out) {
  if (path.empty() || path[0] != '/' || path.size() > kMaxPathLen) {
    return 0;
  }
  const char* p = path.data();
  const char* const end = p + path.size();
  switch (scanPath(p, path.size())) {
    case Scan::kNul:
      return 0;
    case Scan::kNormal:
      memcpy(out, p, path.size());
      out[path.size()] = '\0';
      return path.size();
    case Scan::kNotNormal:
      break;
  }
  if (memchr(p, '\0', path.size()) != nullptr) {
    return 0;
  }
  size_t len = 0;  // out[0..len) is the normalised prefix, never ends in '/'
  while (p < end) {
    while (p < end && *p == '/') {
      ++p;
    }
    if (p == end) {
      break;
    }
    const char* slash = static_cast<const char*>(memchr(p, '/', static_cast<size_t>(end - p)));
    const char* seg_end = slash != nullptr ? slash : end;
    size_t n = static_cast<size_t>(seg_end - p);
    if (p[0] == '.' && (n == 1 || (n == 2 && p[1] == '.'))) {
      if (n == 2) {  // "..": drop the last segment and its slash
        while (len > 0 && out[len - 1] != '/') {
          --len;
        }
        if (len > 0) {
          --len;
        }
      }
    } else {
      out[len++] = '/';
      memcpy(out + len, p, n);
      len += n;
    }
    p = seg_end;
  }
  if (len == 0) {
    out[len++] = '/';
  }
  out[len] = '\0';
  return len;
}

bool globMatch(std::string_view pattern, std::string_view text) {
  size_t p = 0;
  size_t t = 0;
  size_t star = std::string_view::npos;
  size_t resume = 0;
  while (t < text.size()) {
    // A '*' in the pattern is always a wildcard, also where the text holds
    // a '*' of its own: matching it literally there would lose the
    // backtrack point, and "SECRET_*r" would escape "SECRET_*".
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

bool hasGlob(std::string_view pattern) {
  return pattern.find_first_of("*?") != std::string_view::npos;
}

bool IpAddr::parse(std::string_view text, IpAddr* out) {
  if (text.empty() || text.size() > 64) {
    return false;
  }
  if (text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  char buf[65];
  memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddr a;
  if (strchr(buf, ':') != nullptr) {
    if (inet_pton(AF_INET6, buf, a.bytes) != 1) {
      return false;
    }
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a.bytes, kMapped, 12) == 0) {
      memmove(a.bytes, a.bytes + 12, 4);
      memset(a.bytes + 4, 0, 12);
      a.v4 = true;
    }
  } else {
    // inet_aton accepts "127.1", "2130706433", "0x7f.0.0.1" and octal: the
    // spellings a program may use to dodge a dotted-quad check.
    struct in_addr in {};
    if (inet_aton(buf, &in) == 0) {
      return false;
    }
    memcpy(a.bytes, &in.s_addr, 4);
    a.v4 = true;
  }
  *out = a;
  return true;
}

std::string IpAddr::toString() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(v4 ? AF_INET : AF_INET6, bytes, buf, sizeof(buf));
  return buf;
}

}  // namespace guard::policy
