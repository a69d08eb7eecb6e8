// Fuzz target for the audit JSON Lines decoder (policy/audit.h).
//
// Properties checked on every input:
//  * decodeEvent never crashes; a failure has code kAuditDecodeError and a
//    message starting "audit line: ";
//  * on success the event round-trips: encode, decode and encode again gives
//    the same line, and the second decode gives an equal event;
//  * the encoded line is one line (no raw newline) that decodes again.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "policy/audit.h"

namespace {

// FUZZ_CHECK aborts with a message when a property fails: libFuzzer reports
// the abort as a crash, the replay driver exits non-zero.
#define FUZZ_CHECK(cond, what)                                                       \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "audit_fuzz: property failed: %s (%s:%d): %s\n", #cond,   \
                   __FILE__, __LINE__, std::string(what).c_str());                   \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace guard::policy;
  const std::string_view line(reinterpret_cast<const char*>(data), size);

  auto decoded = decodeEvent(line);
  if (!decoded.ok()) {
    const std::string& m = decoded.error().message();
    FUZZ_CHECK(decoded.error().code() == kAuditDecodeError, m);
    FUZZ_CHECK(m.starts_with("audit line: "), m);
    return 0;
  }

  const std::string first = encodeEvent(decoded.value());
  FUZZ_CHECK(first.find('\n') == std::string::npos, first);
  auto redecoded = decodeEvent(first);
  FUZZ_CHECK(redecoded.ok(), first + " -> " + redecoded.error().message());
  const std::string second = encodeEvent(redecoded.value());
  FUZZ_CHECK(first == second, first + " != " + second);

  auto third = decodeEvent(second + "\n");
  FUZZ_CHECK(third.ok(), second + " -> " + third.error().message());
  FUZZ_CHECK(third.value() == redecoded.value(), second);
  return 0;
}
