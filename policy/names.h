// Normalisation of domain names, addresses and paths, and glob matching:
// the one place that decides when two spellings name the same thing.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace guard::policy {

inline constexpr size_t kMaxDomainLen = 253;
inline constexpr size_t kMaxPathLen = 4096;

// normaliseDomain writes the canonical form of NAME into OUT (capacity
// kMaxDomainLen + 1): ASCII lowercase, one trailing dot removed, Unicode
// labels converted to punycode (IDNA 2008, via libidn2). Returns the length,
// or 0 when NAME is not a valid domain name (empty label, label over 63
// bytes, bad characters, over 253 bytes). Allocates only for non-ASCII input.
size_t normaliseDomain(std::string_view name, char* out);

// normaliseDomain returns the canonical form as a string, or "" if invalid.
std::string normaliseDomain(std::string_view name);

// normalisePath writes the lexical normal form of absolute PATH into OUT
// (capacity kMaxPathLen + 1): repeated slashes collapse, "." segments vanish,
// ".." removes the previous segment (and stays at "/"), no trailing slash
// except for "/" itself. Returns the length, or 0 when PATH is not absolute,
// contains a NUL byte or is longer than kMaxPathLen.
size_t normalisePath(std::string_view path, char* out);

// globMatch reports whether TEXT matches PATTERN, where `*` matches any run of
// bytes and `?` any single byte; every other byte matches itself exactly.
// Iterative with backtracking on the last star: linear in practice, no
// recursion, no allocation.
bool globMatch(std::string_view pattern, std::string_view text);

// hasGlob reports whether PATTERN contains `*` or `?`.
bool hasGlob(std::string_view pattern);

}  // namespace guard::policy
