// The session's credentials as the proxy sees them: each real value, the
// placeholder the agent holds instead, and every encoding of either that a
// request might smuggle out (RFC 4648 base64 and base64url, percent-encoding).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace guard::proxy {

// Secret is one credential of the session.
struct Secret {
  std::string name;         // the policy's credential name
  std::string value;        // the real value (empty: the source was missing)
  std::string placeholder;  // what the agent sees instead; as long as value
  std::string header;       // inject: header to set on allowed requests (may be empty)
  std::string header_template = "{value}";
};

// makePlaceholder returns a random placeholder as long as VALUE (at least 16
// characters when VALUE is empty), so swapping one for the other keeps every
// Content-Length and chunk size right.
std::string makePlaceholder(std::string_view name, std::string_view value);

// SecretScanner finds secrets (real or placeholder, in any supported
// encoding) in bytes. Cheap to copy; immutable after construction.
class SecretScanner {
 public:
  SecretScanner() = default;
  explicit SecretScanner(const std::vector<Secret>& secrets);

  struct Hit {
    size_t secret;      // index into the secrets given at construction
    bool placeholder;   // the placeholder (true) or the real value (false)
    const char* form;   // "raw", "base64", "base64url", "percent", "lowercase"
  };

  // find returns the first secret found in TEXT. SKIP (a bitmask of secret
  // indexes, bit i = secret i) excludes secrets allowed for the destination.
  std::optional<Hit> find(std::string_view text, uint64_t skip = 0) const;

  // findInName looks for secrets in a DNS name (case-insensitive forms only).
  std::optional<Hit> findInName(std::string_view name) const;

  // longest is the length of the longest pattern, so streaming callers know
  // how many trailing bytes to keep for the next search.
  size_t longest() const { return longest_; }
  bool empty() const { return patterns_.empty(); }

 private:
  struct Pattern {
    std::string bytes;
    Hit hit;
  };
  std::vector<Pattern> patterns_;
  std::vector<Pattern> name_patterns_;
  size_t longest_ = 0;
};

// redactValues replaces, in place, every real value in TEXT by its
// placeholder (same length). With CHUNKED, TEXT is a chunked body and a
// value split by chunk framing is found too (only its own bytes change).
// Returns how many were replaced.
size_t redactValues(const std::vector<Secret>& secrets, std::string* text, bool chunked = false);

// replaceAll replaces every FROM in TEXT by TO; returns the count.
size_t replaceAll(std::string* text, std::string_view from, std::string_view to);

}  // namespace guard::proxy
