// Normalisation of domain names, addresses and paths, and glob matching.
#include "policy/names.h"

#include <arpa/inet.h>
#include <idn2.h>

#include <cstdlib>
#include <cstring>

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

}  // namespace

size_t normaliseDomain(std::string_view name, char* out) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
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

std::string normaliseDomain(std::string_view name) {
  char buf[kMaxDomainLen + 1];
  size_t n = normaliseDomain(name, buf);
  return std::string(buf, n);
}

size_t normalisePath(std::string_view path, char* out) {
  if (path.empty() || path[0] != '/' || path.size() > kMaxPathLen) {
    return 0;
  }
  size_t len = 0;  // out[0..len) is the normalised prefix, never ends in '/'
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') {
      ++i;
    }
    size_t start = i;
    while (i < path.size() && path[i] != '/') {
      if (path[i] == '\0') {
        return 0;
      }
      ++i;
    }
    std::string_view seg = path.substr(start, i - start);
    if (seg.empty() || seg == ".") {
      continue;
    }
    if (seg == "..") {
      while (len > 0 && out[len - 1] != '/') {
        --len;
      }
      if (len > 0) {
        --len;  // drop the slash before the removed segment
      }
      continue;
    }
    out[len++] = '/';
    memcpy(out + len, seg.data(), seg.size());
    len += seg.size();
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
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
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
