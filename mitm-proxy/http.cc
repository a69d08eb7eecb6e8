// HTTP/1.1 head parsing and body framing.
#include "mitm-proxy/http.h"

#include <strings.h>

#include <charconv>

namespace guard::proxy {
namespace {

// RFC 9110 5.6.2: token characters.
bool isTchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
    return true;
  }
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool isToken(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (!isTchar(c)) {
      return false;
    }
  }
  return true;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// splitHead finds the end of the head and checks the bytes: lines end in
// CRLF, no bare CR, no NUL, no other control bytes but TAB.
HeadParse splitHead(std::string_view buf, std::vector<std::string_view>* lines, size_t* head_len) {
  size_t end = buf.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return buf.size() > kMaxHead ? HeadParse::kTooLarge : HeadParse::kNeedMore;
  }
  if (end + 4 > kMaxHead) {
    return HeadParse::kTooLarge;
  }
  std::string_view head = buf.substr(0, end + 2);
  size_t at = 0;
  while (at < head.size()) {
    size_t eol = head.find("\r\n", at);
    std::string_view line = head.substr(at, eol - at);
    for (char c : line) {
      auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) {
        return HeadParse::kBad;
      }
    }
    lines->push_back(line);
    at = eol + 2;
  }
  *head_len = end + 4;
  return HeadParse::kOk;
}

bool parseVersion(std::string_view v, int* minor) {
  if (v.size() != 8 || v.substr(0, 7) != "HTTP/1." || v[7] < '0' || v[7] > '9') {
    return false;
  }
  *minor = v[7] - '0';
  return true;
}

HeadParse parseFields(const std::vector<std::string_view>& lines, HttpHead* out) {
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    size_t colon = line.find(':');
    // RFC 9112 5.1: no whitespace before the colon; 5.2: obs-fold refused.
    if (colon == std::string_view::npos || !isToken(line.substr(0, colon))) {
      return HeadParse::kBad;
    }
    out->headers.push_back({std::string(line.substr(0, colon)),
                            std::string(trim(line.substr(colon + 1)))});
  }
  return HeadParse::kOk;
}

bool parseLength(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 18) {
    return false;
  }
  for (char c : s) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return std::from_chars(s.data(), s.data() + s.size(), *out).ec == std::errc();
}

// lengthOf reads every Content-Length header (a comma list counts as many);
// all must agree (RFC 9112 6.3 item 5).
bool lengthOf(const HttpHead& head, bool* present, uint64_t* length) {
  *present = false;
  for (const HttpHeader& h : head.headers) {
    if (!iequals(h.name, "content-length")) {
      continue;
    }
    std::string_view v = h.value;
    while (true) {
      size_t comma = v.find(',');
      uint64_t n = 0;
      if (!parseLength(trim(v.substr(0, comma)), &n) || (*present && n != *length)) {
        return false;
      }
      *present = true;
      *length = n;
      if (comma == std::string_view::npos) {
        break;
      }
      v.remove_prefix(comma + 1);
    }
  }
  return true;
}

// chunkedOf reports whether Transfer-Encoding is present; false (bad) when it
// is present but its final coding is not "chunked" or it repeats "chunked".
bool chunkedOf(const HttpHead& head, bool* present) {
  *present = false;
  std::string all;
  for (const HttpHeader& h : head.headers) {
    if (iequals(h.name, "transfer-encoding")) {
      all += (all.empty() ? "" : ",") + h.value;
      *present = true;
    }
  }
  if (!*present) {
    return true;
  }
  std::string_view v = all;
  size_t count = 0;
  bool last_chunked = false;
  while (true) {
    size_t comma = v.find(',');
    std::string_view coding = trim(v.substr(0, comma));
    last_chunked = iequals(coding, "chunked");
    count += last_chunked ? 1 : 0;
    if (comma == std::string_view::npos) {
      break;
    }
    v.remove_prefix(comma + 1);
  }
  return last_chunked && count == 1;
}

}  // namespace

const std::string* HttpHead::find(std::string_view name) const {
  for (const HttpHeader& h : headers) {
    if (iequals(h.name, name)) {
      return &h.value;
    }
  }
  return nullptr;
}

void HttpHead::erase(std::string_view name) {
  std::erase_if(headers, [&](const HttpHeader& h) { return iequals(h.name, name); });
}

std::string HttpHead::serialize() const {
  std::string out;
  out.reserve(256 + headers.size() * 48);
  if (status == 0) {
    out += method + " " + target + " HTTP/1." + std::to_string(minor) + "\r\n";
  } else {
    out += "HTTP/1." + std::to_string(minor) + " " + std::to_string(status) + " " + reason + "\r\n";
  }
  for (const HttpHeader& h : headers) {
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

HeadParse parseRequestHead(std::string_view buf, HttpHead* out, size_t* head_len) {
  std::vector<std::string_view> lines;
  HeadParse r = splitHead(buf, &lines, head_len);
  if (r != HeadParse::kOk) {
    return r;
  }
  *out = HttpHead();
  std::string_view start = lines[0];
  size_t sp1 = start.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : start.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || start.find(' ', sp2 + 1) != std::string_view::npos) {
    return HeadParse::kBad;
  }
  std::string_view method = start.substr(0, sp1);
  std::string_view target = start.substr(sp1 + 1, sp2 - sp1 - 1);
  if (!isToken(method) || target.empty() || !parseVersion(start.substr(sp2 + 1), &out->minor)) {
    return HeadParse::kBad;
  }
  out->method = method;
  out->target = target;
  return parseFields(lines, out);
}

HeadParse parseResponseHead(std::string_view buf, HttpHead* out, size_t* head_len) {
  std::vector<std::string_view> lines;
  HeadParse r = splitHead(buf, &lines, head_len);
  if (r != HeadParse::kOk) {
    return r;
  }
  *out = HttpHead();
  std::string_view start = lines[0];
  if (start.size() < 12 || !parseVersion(start.substr(0, 8), &out->minor) || start[8] != ' ' ||
      (start.size() > 12 && start[12] != ' ')) {
    return HeadParse::kBad;
  }
  int status = 0;
  for (char c : start.substr(9, 3)) {
    if (c < '0' || c > '9') {
      return HeadParse::kBad;
    }
    status = status * 10 + (c - '0');
  }
  if (status < 100) {
    return HeadParse::kBad;
  }
  out->status = status;
  out->reason = start.size() > 13 ? start.substr(13) : "";
  return parseFields(lines, out);
}

bool requestFraming(const HttpHead& head, Framing* out) {
  bool has_length = false;
  bool has_te = false;
  uint64_t length = 0;
  if (!lengthOf(head, &has_length, &length) || !chunkedOf(head, &has_te) ||
      (has_length && has_te) || (has_te && head.minor == 0)) {
    return false;  // HTTP/1.0 has no chunked: a 1.0 server would misread the body
  }
  if (has_te) {
    *out = {Framing::Kind::kChunked, 0};
  } else if (has_length && length > 0) {
    *out = {Framing::Kind::kLength, length};
  } else {
    *out = {Framing::Kind::kNone, 0};
  }
  return true;
}

bool responseFraming(const HttpHead& head, std::string_view request_method, Framing* out) {
  if (iequals(request_method, "HEAD") || head.status < 200 || head.status == 204 ||
      head.status == 304) {
    *out = {Framing::Kind::kNone, 0};
    return true;
  }
  bool has_length = false;
  bool has_te = false;
  uint64_t length = 0;
  if (!lengthOf(head, &has_length, &length) || !chunkedOf(head, &has_te) ||
      (has_length && has_te)) {
    return false;
  }
  if (has_te) {
    *out = {Framing::Kind::kChunked, 0};
  } else if (has_length) {
    *out = {length > 0 ? Framing::Kind::kLength : Framing::Kind::kNone, length};
  } else {
    *out = {Framing::Kind::kUntilClose, 0};
  }
  return true;
}

long ChunkedReader::consume(std::string_view in, std::string* data,
                            std::vector<std::pair<size_t, size_t>>* spans) {
  size_t i = 0;
  while (i < in.size() && state_ != State::kDone) {
    char c = in[i];
    switch (state_) {
      case State::kSize: {
        int d = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (d >= 0) {
          if (++digits_ > 15) {
            return -1;
          }
          left_ = left_ * 16 + static_cast<uint64_t>(d);
        } else if (digits_ > 0 && (c == ';' || c == ' ' || c == '\t')) {
          state_ = State::kSizeExt;
        } else if (digits_ > 0 && c == '\r') {
          state_ = State::kSizeLf;
        } else {
          return -1;
        }
        ++i;
        break;
      }
      case State::kSizeExt:
        if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (c == '\n') {
          return -1;
        }
        ++i;
        break;
      case State::kSizeLf:
        if (c != '\n') {
          return -1;
        }
        state_ = left_ == 0 ? State::kLineStart : State::kData;
        ++i;
        break;
      case State::kData: {
        uint64_t take = std::min<uint64_t>(left_, in.size() - i);
        if (data != nullptr) {
          data->append(in.substr(i, take));
        }
        if (spans != nullptr && take > 0) {
          spans->emplace_back(i, static_cast<size_t>(take));
        }
        left_ -= take;
        i += take;
        if (left_ == 0) {
          state_ = State::kDataCr;
        }
        break;
      }
      case State::kDataCr:
        if (c != '\r') {
          return -1;
        }
        state_ = State::kDataLf;
        ++i;
        break;
      case State::kDataLf:
        if (c != '\n') {
          return -1;
        }
        state_ = State::kSize;
        digits_ = 0;
        ++i;
        break;
      case State::kLineStart:
        state_ = c == '\r' ? State::kTrailerLf : State::kTrailer;
        if (c == '\n') {
          return -1;
        }
        ++i;
        break;
      case State::kTrailer:
        if (c == '\r') {
          state_ = State::kTrailerLineLf;
        } else if (c == '\n') {
          return -1;  // bare LF: CRLF only, as in the size lines
        }
        ++i;
        break;
      case State::kTrailerLineLf:
        if (c != '\n') {
          return -1;
        }
        state_ = State::kLineStart;
        ++i;
        break;
      case State::kTrailerLf:
        if (c != '\n') {
          return -1;
        }
        state_ = State::kDone;
        ++i;
        break;
      case State::kDone:
        break;
    }
  }
  return static_cast<long>(i);
}

BodyRead readWholeBody(std::string_view in, const Framing& f, bool eof, size_t limit,
                       size_t* consumed, std::string* body) {
  body->clear();
  switch (f.kind) {
    case Framing::Kind::kNone:
      *consumed = 0;
      return BodyRead::kOk;
    case Framing::Kind::kLength:
      if (f.length > limit) {
        return BodyRead::kTooLarge;
      }
      if (in.size() < f.length) {
        return BodyRead::kNeedMore;
      }
      body->assign(in.substr(0, f.length));
      *consumed = f.length;
      return BodyRead::kOk;
    case Framing::Kind::kChunked: {
      ChunkedReader r;
      long n = r.consume(in, body);
      if (n < 0) {
        return BodyRead::kBad;
      }
      if (body->size() > limit) {
        return BodyRead::kTooLarge;
      }
      if (!r.done()) {
        return BodyRead::kNeedMore;
      }
      *consumed = static_cast<size_t>(n);
      return BodyRead::kOk;
    }
    case Framing::Kind::kUntilClose:
      if (in.size() > limit) {
        return BodyRead::kTooLarge;
      }
      if (!eof) {
        return BodyRead::kNeedMore;
      }
      body->assign(in);
      *consumed = in.size();
      return BodyRead::kOk;
  }
  return BodyRead::kBad;
}

}  // namespace guard::proxy
