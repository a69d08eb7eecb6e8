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
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
  kStdinAck = 23,  // 4 bytes: this many more stdin bytes left the guest's buffer (written
                   // to the command, or dropped). Sent once with 0 after kHello: the host
                   // then keeps at most kStdinWindow unacknowledged bytes in flight, so
                   // the guest never stops reading the port and signals never wait
                   // behind stdin.
  // both ways
  kMcpData = 30,  // 4 bytes: the id of a kMcpAsk answered "W", 1 byte: the end ('c' the
                  // client's stdio, 's' the server's), then bytes for that end; empty: EOF
};

inline constexpr size_t kStdinWindow = 1u << 20;

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

inline std::string le32(uint32_t v) {
  std::string s;
  putLe32(&s, v);
  return s;
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

// McpChannel is an approved MCP server of the guest wrapped across the VM
// boundary, as each side of the control port holds it. In the guest its
// ends are the client's stdio (read the client's stdin pipe, write its
// stdout pipe) and the server's socket; on the host they are the two
// sockets of guard's filter (proxy::McpGuestRelays). What one side reads
// from an end goes as kMcpData to the same end on the other side, which
// writes it there; an empty payload is EOF, after which the other side
// shuts that end for writing once its queue is flushed.
struct McpChannel {
  struct End {
    int rd = -1;            // -1 once it reached EOF
    int wr = -1;            // -1 once shut
    int sock = -1;          // when rd and wr are one socket: it, closed by release()
    std::string pending;    // bytes for wr
    bool eof_seen = false;  // the other side's reader ended: shut wr when pending is out
  };
  uint32_t id = 0;
  End ends[2];  // [0] 'c', [1] 's'

  static constexpr size_t kMaxPending = 8u << 20;  // a peer flooding an end ends the channel
  static constexpr char kEnds[2] = {'c', 's'};

  // done: both readers ended and both writers shut.
  bool done() const {
    return ends[0].rd < 0 && ends[1].rd < 0 && ends[0].wr < 0 && ends[1].wr < 0;
  }

  // readEnd reads what end I has and appends it to *OUT as one frame (an
  // empty one at EOF or error).
  void readEnd(int i, std::string* out) {
    char buf[65536];
    ssize_t n = read(ends[i].rd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return;
    }
    std::string payload;
    putLe32(&payload, id);
    payload.push_back(kEnds[i]);
    if (n > 0) {
      payload.append(buf, static_cast<size_t>(n));
    } else {
      closeRead(i);
    }
    appendFrame(out, Frame::kMcpData, payload);
  }

  // deliver takes one kMcpData payload's end and bytes (after the id);
  // false when the peer broke the protocol or flooded the end.
  bool deliver(std::string_view data) {
    if (data.empty() || (data[0] != 'c' && data[0] != 's')) {
      return false;
    }
    End& e = ends[data[0] == 'c' ? 0 : 1];
    data.remove_prefix(1);
    if (data.empty()) {
      e.eof_seen = true;
    } else if (e.wr >= 0 && !e.eof_seen) {
      e.pending.append(data.data(), data.size());
      if (e.pending.size() > kMaxPending) {
        return false;
      }
    }
    flush();
    return true;
  }

  // flush writes what it can of each end's queue (the ends are
  // non-blocking) and shuts an end whose peer's reader ended.
  void flush() {
    for (End& e : ends) {
      while (e.wr >= 0 && !e.pending.empty()) {
        ssize_t n = write(e.wr, e.pending.data(), e.pending.size());
        if (n < 0 && errno == EINTR) {
          continue;
        }
        if (n < 0 && errno == EAGAIN) {
          break;
        }
        if (n <= 0) {
          e.pending.clear();  // the reader is gone
          shutWrite(&e);
          break;
        }
        e.pending.erase(0, static_cast<size_t>(n));
      }
      if (e.wr >= 0 && e.eof_seen && e.pending.empty()) {
        shutWrite(&e);
      }
    }
  }

  // release closes every descriptor the channel holds.
  void release() {
    for (int i = 0; i < 2; ++i) {
      closeRead(i);
      shutWrite(&ends[i]);
      if (ends[i].sock >= 0) {
        close(ends[i].sock);
        ends[i].sock = -1;
      }
    }
  }

 private:
  void closeRead(int i) {
    End& e = ends[i];
    if (e.rd >= 0 && e.rd == e.sock) {
      shutdown(e.rd, SHUT_RD);  // its writing half lives on
    } else if (e.rd >= 0) {
      close(e.rd);
    }
    e.rd = -1;
  }
  static void shutWrite(End* e) {
    if (e->wr >= 0 && e->wr == e->sock) {
      shutdown(e->wr, SHUT_WR);
    } else if (e->wr >= 0) {
      close(e->wr);
    }
    e->wr = -1;
  }
};

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
