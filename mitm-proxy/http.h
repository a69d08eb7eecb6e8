// HTTP/1.1 message heads and body framing (RFC 9112), strict: anything a
// request smuggler could use to make two parsers disagree is refused.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace guard::proxy {

struct HttpHeader {
  std::string name;   // as received
  std::string value;  // leading and trailing whitespace removed
};

// HttpHead is a parsed request or response head.
struct HttpHead {
  std::string method;   // requests
  std::string target;   // requests: origin-form, absolute-form or authority-form
  int status = 0;       // responses
  std::string reason;   // responses
  int minor = 1;        // HTTP/1.MINOR
  std::vector<HttpHeader> headers;

  // find returns the value of the first header called NAME (any case), or null.
  const std::string* find(std::string_view name) const;
  // erase removes every header called NAME.
  void erase(std::string_view name);
  // serialize renders the head back to wire form, ending in an empty line.
  std::string serialize() const;
};

enum class HeadParse {
  kOk,        // *head_len bytes hold the head
  kNeedMore,  // no complete head yet
  kBad,       // not HTTP/1.x, or malformed (obs-fold, bad token, bare CR, ...)
  kTooLarge,  // no complete head within kMaxHead
};

constexpr size_t kMaxHead = 64 * 1024;

HeadParse parseRequestHead(std::string_view buf, HttpHead* out, size_t* head_len);
HeadParse parseResponseHead(std::string_view buf, HttpHead* out, size_t* head_len);

// Framing is how the body after a head ends.
struct Framing {
  enum class Kind { kNone, kLength, kChunked, kUntilClose } kind = Kind::kNone;
  uint64_t length = 0;
};

// requestFraming decides a request's body framing; false when the head is
// ambiguous (Content-Length with Transfer-Encoding, differing or malformed
// lengths, a transfer coding other than a final "chunked").
bool requestFraming(const HttpHead& head, Framing* out);

// responseFraming decides a response's framing, given the request method it
// answers (RFC 9112 6.3).
bool responseFraming(const HttpHead& head, std::string_view request_method, Framing* out);

// ChunkedReader follows a chunked body (RFC 9112 7.1) to find where it ends.
class ChunkedReader {
 public:
  // consume reads up to IN.size() bytes of the body; returns how many belong
  // to it (fewer when it ended) or -1 when the framing is malformed. DATA,
  // when given, receives the chunks' payload; SPANS, where in IN each piece
  // of it lies (offset, length).
  long consume(std::string_view in, std::string* data = nullptr,
               std::vector<std::pair<size_t, size_t>>* spans = nullptr);
  bool done() const { return state_ == State::kDone; }

 private:
  enum class State { kSize, kSizeExt, kSizeLf, kData, kDataCr, kDataLf, kTrailer,
                     kTrailerLineLf, kTrailerLf, kLineStart, kDone };
  State state_ = State::kSize;
  uint64_t left_ = 0;
  int digits_ = 0;
};

enum class BodyRead {
  kOk,        // *consumed bytes of IN held the whole body; *body is its payload
  kNeedMore,  // the body has not all arrived
  kTooLarge,  // the payload exceeds LIMIT
  kBad,       // malformed chunked framing
};

// readWholeBody collects a whole message body framed by F from IN (the
// bytes after the head); EOF says no more bytes will come (which ends a
// body framed until close).
BodyRead readWholeBody(std::string_view in, const Framing& f, bool eof, size_t limit,
                       size_t* consumed, std::string* body);

}  // namespace guard::proxy
