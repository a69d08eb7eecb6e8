// Reads the server name from a TLS ClientHello without consuming it, so the
// proxy can decide a connection before choosing to tunnel or intercept.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace guard::proxy {

enum class HelloParse {
  kOk,         // a ClientHello; *name is its SNI host_name (empty: none sent)
  kNeedMore,   // a TLS handshake record, not yet complete
  kNotTls,     // the first bytes are not a TLS handshake record
  kMalformed,  // a TLS record that is not a well-formed ClientHello
};

// peekClientHello parses the ClientHello at the start of BYTES (RFC 8446
// 4.1.2, SNI from RFC 6066 3). Only the first handshake record is read; a
// ClientHello split over several records is kMalformed (no client does it
// for hellos under 16 KiB, and refusing keeps the parser small). The name is
// lowercased; a name with bytes outside [a-z0-9.-_] is kMalformed.
HelloParse peekClientHello(std::span<const uint8_t> bytes, std::string* name);

}  // namespace guard::proxy
