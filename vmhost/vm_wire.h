// The framed protocol of the VM's control port, shared by guard (vm.cc) and
// the guest's PID 1 (guest_init.cc). Folder-internal; header-only so the
// static guest init needs nothing else of guard.
//
// One virtio-serial port ("guard.ctl") carries everything between guard and
// the guest after boot: the session spec, stdin, window size and signals
// host -> guest; stdout, stderr, the exit status and setup errors
// guest -> host. One ordered stream means the exit status arrives after the
// last byte of output, EOF on stdin is explicit, stdout and stderr stay
// apart, and nothing depends on QEMU's console handling of a terminal.
//
// A frame is a 1-byte type, a 4-byte little-endian payload length and the
// payload. Payloads are at most kMaxFrame bytes; a longer one is a protocol
// error on either side.
#pragma once

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace guard::vmhost::wire {

// kPortName is the virtio-serial port's name (the guest finds its device
// through /sys/class/virtio-ports/*/name).
constexpr const char* kPortName = "guard.ctl";
// kRootTag is the virtiofs tag of the guest's root filesystem (the view).
constexpr const char* kRootTag = "guardroot";
// The guest's network (when the host gives it a device): kGuestAddr/24,
// gateway and DNS server kHostAddr, the address of the tap in QEMU's
// network namespace where guard's proxy listens (netns.h).
constexpr const char* kHostAddr = "10.0.2.2";
constexpr const char* kGuestAddr = "10.0.2.15";
constexpr size_t kHeaderLen = 5;
// kMaxFrame bounds one frame, and so the spec (argv + environment + cwd):
// 4 MiB, above what the kernel lets one exec carry (about 2 MiB).
constexpr uint32_t kMaxFrame = 4u << 20;

enum class Frame : uint8_t {
  // host -> guest
  kSpec = 1,         // the session spec, see encodeSpec
  kStdin = 2,        // bytes for the command's stdin; an empty payload is EOF
  kWinsize = 3,      // 4 bytes: rows, cols (16-bit little-endian each)
  kSignal = 4,       // 1 byte: a signal for the command's process group
  kCloseOutput = 5,  // 1 byte: 1 or 2, the host can no longer write that stream
  kMcpAnswer = 6,    // 4 bytes: the id of a kMcpAsk, then the reply (policy/wire.h)
  // guest -> host
  kHello = 16,    // the control port is open (boot finished)
  kStarted = 17,  // the command was started
  kStdout = 18,   // bytes the command wrote to stdout
  kStderr = 19,   // bytes the command wrote to stderr
  kExit = 20,     // 4 bytes: the exit status as guard reports it (128+N for signal N)
  kError = 21,    // a setup error, one line of text; the guest powers off after it
  kMcpAsk = 22,   // 4 bytes: an id, then one request of the guest's preload shim
                  // (policy/wire.h, without its descriptors), for the host to answer
};

// writeAll writes N bytes of P to FD, waiting while a non-blocking FD is
// full; false when the peer is gone. Both ends of the control port use it.
inline bool writeAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w < 0 && errno == EAGAIN) {
      struct pollfd pfd = {fd, POLLOUT, 0};
      poll(&pfd, 1, -1);
      continue;
    }
    if (w <= 0) {
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

inline void putLe32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) {
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
}

inline uint32_t getLe32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  }
  return v;
}

// appendFrame appends one frame of TYPE with PAYLOAD to *OUT.
inline void appendFrame(std::string* out, Frame type, std::string_view payload) {
  out->push_back(static_cast<char>(type));
  putLe32(out, static_cast<uint32_t>(payload.size()));
  out->append(payload.data(), payload.size());
}

// ParseResult says what takeFrame found at the start of a buffer.
enum class ParseResult { kFrame, kNeedMore, kTooLarge };

// takeFrame removes the first whole frame from *IN into *TYPE and *PAYLOAD.
// kNeedMore leaves *IN untouched; kTooLarge means the peer broke the
// protocol (the caller ends the session).
inline ParseResult takeFrame(std::string* in, Frame* type, std::string* payload) {
  if (in->size() < kHeaderLen) {
    return ParseResult::kNeedMore;
  }
  uint32_t len = getLe32(in->data() + 1);
  if (len > kMaxFrame) {
    return ParseResult::kTooLarge;
  }
  if (in->size() < kHeaderLen + len) {
    return ParseResult::kNeedMore;
  }
  *type = static_cast<Frame>(static_cast<uint8_t>((*in)[0]));
  payload->assign(in->data() + kHeaderLen, len);
  in->erase(0, kHeaderLen + len);
  return ParseResult::kFrame;
}

// The spec is a sequence of entries, each a one-letter key, the value and a
// NUL: 'A' one argument (in order), 'E' one NAME=VALUE, 'C' the working
// directory, 'H' the hostname, 'T' which of fds 0, 1, 2 are terminals on the
// host (a digit, bit N for fd N), 'W' the window size as "ROWS COLS".
// Arguments and variables cannot hold a NUL, so no escaping is needed.
inline void addSpecEntry(std::string* out, char key, std::string_view value) {
  out->push_back(key);
  out->append(value.data(), value.size());
  out->push_back('\0');
}

}  // namespace guard::vmhost::wire
