// Secret patterns: raw, base64 in its three alignments, percent-encoded.
#include "mitm-proxy/secrets.h"

#include <openssl/base64.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>

namespace guard::proxy {
namespace {

// Shorter patterns would match ordinary text by chance.
constexpr size_t kMinPattern = 8;

std::string base64(std::string_view in, bool url) {
  size_t len = 0;
  EVP_EncodedLength(&len, in.size());
  std::string out(len, '\0');
  size_t n = EVP_EncodeBlock(reinterpret_cast<uint8_t*>(out.data()),
                             reinterpret_cast<const uint8_t*>(in.data()), in.size());
  out.resize(n);
  if (url) {
    std::replace(out.begin(), out.end(), '+', '-');
    std::replace(out.begin(), out.end(), '/', '_');
  }
  return out;
}

// base64Cores returns, for each of the three positions S can take relative
// to base64's 3-byte groups, the part of its encoding that does not depend
// on the bytes around it.
std::vector<std::string> base64Cores(std::string_view s, bool url) {
  std::vector<std::string> cores;
  for (size_t skip = 0; skip < 3 && skip < s.size(); ++skip) {
    std::string_view aligned = s.substr(skip);
    aligned = aligned.substr(0, aligned.size() / 3 * 3);
    if (!aligned.empty()) {
      cores.push_back(base64(aligned, url));
    }
  }
  return cores;
}

std::string percentEncode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

bool contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

}  // namespace

std::string makePlaceholder(std::string_view name, std::string_view value) {
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  size_t len = value.empty() ? 32 : value.size();
  // A readable prefix tells whoever finds the placeholder where it came from.
  std::string out = len >= 24 ? "guard-" + std::string(name.substr(0, 8)) + "-" : "";
  uint8_t random[64];
  while (out.size() < len) {
    RAND_bytes(random, sizeof(random));
    for (uint8_t r : random) {
      out += kAlphabet[r % (sizeof(kAlphabet) - 1)];
    }
  }
  out.resize(len);
  return out;
}

SecretScanner::SecretScanner(const std::vector<Secret>& secrets) {
  auto add = [&](std::vector<Pattern>* list, std::string bytes, size_t i, bool ph,
                 const char* form) {
    if (bytes.size() < kMinPattern) {
      return;
    }
    for (const Pattern& p : *list) {
      if (p.bytes == bytes) {
        return;
      }
    }
    longest_ = std::max(longest_, bytes.size());
    list->push_back({std::move(bytes), {i, ph, form}});
  };
  for (size_t i = 0; i < secrets.size() && i < 64; ++i) {
    for (bool ph : {false, true}) {
      const std::string& s = ph ? secrets[i].placeholder : secrets[i].value;
      if (s.empty()) {
        continue;
      }
      add(&patterns_, s, i, ph, "raw");
      for (bool url : {false, true}) {
        for (std::string& core : base64Cores(s, url)) {
          add(&patterns_, std::move(core), i, ph, url ? "base64url" : "base64");
        }
      }
      add(&patterns_, percentEncode(s), i, ph, "percent");
      add(&patterns_, lower(percentEncode(s)), i, ph, "percent");
      add(&name_patterns_, lower(s), i, ph, "lowercase");
    }
  }
}

std::optional<SecretScanner::Hit> SecretScanner::find(std::string_view text, uint64_t skip) const {
  for (const Pattern& p : patterns_) {
    if ((skip >> p.hit.secret & 1) == 0 && contains(text, p.bytes)) {
      return p.hit;
    }
  }
  return std::nullopt;
}

std::optional<SecretScanner::Hit> SecretScanner::findInName(std::string_view name) const {
  std::string l = lower(name);
  for (const Pattern& p : name_patterns_) {
    if (contains(l, p.bytes)) {
      return p.hit;
    }
  }
  return std::nullopt;
}

size_t replaceAll(std::string* text, std::string_view from, std::string_view to) {
  if (from.empty()) {
    return 0;
  }
  size_t n = 0;
  size_t at = 0;
  while ((at = text->find(from, at)) != std::string::npos) {
    text->replace(at, from.size(), to);
    at += to.size();
    ++n;
  }
  return n;
}

namespace {

// framingAt returns the length of a chunk boundary ("\r\n" HEX [";" ext]
// "\r\n", RFC 9112 7.1) at TEXT[AT], or 0.
size_t framingAt(std::string_view text, size_t at) {
  if (text.substr(at, 2) != "\r\n") {
    return 0;
  }
  size_t i = at + 2;
  size_t digits = 0;
  while (i < text.size() && std::isxdigit(static_cast<unsigned char>(text[i])) && digits < 16) {
    ++i;
    ++digits;
  }
  if (digits == 0) {
    return 0;
  }
  while (i < text.size() && text[i] != '\r' && i - at < 256) {
    ++i;  // chunk extensions
  }
  return text.substr(i, 2) == "\r\n" ? i + 2 - at : 0;
}

}  // namespace

size_t redactValues(const std::vector<Secret>& secrets, std::string* text, bool chunked) {
  size_t n = 0;
  for (const Secret& s : secrets) {
    if (s.value.empty() || s.value.size() != s.placeholder.size()) {
      continue;
    }
    n += replaceAll(text, s.value, s.placeholder);
    if (!chunked) {
      continue;
    }
    // A value split by chunk framing: match it with the framing skipped,
    // and overwrite only its own bytes.
    for (size_t start = text->find(s.value[0]); start != std::string::npos;
         start = text->find(s.value[0], start + 1)) {
      std::vector<size_t> where;
      size_t k = start;
      for (size_t j = 0; j < s.value.size() && k < text->size();) {
        if ((*text)[k] == s.value[j]) {
          where.push_back(k++);
          ++j;
        } else if (size_t f = j > 0 ? framingAt(*text, k) : 0; f > 0) {
          k += f;
        } else {
          break;
        }
      }
      if (where.size() == s.value.size()) {
        for (size_t j = 0; j < where.size(); ++j) {
          (*text)[where[j]] = s.placeholder[j];
        }
        ++n;
      }
    }
  }
  return n;
}

}  // namespace guard::proxy
