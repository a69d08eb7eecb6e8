/* sniff.c: the read() wrapper and the MCP sniffer (policy/wire.h 'S'): a process whose stdin is
   a pipe or socket and that reads "jsonrpc" from it is reported to the supervisor.

   Thread safety, kept simple: `armed` is an atomic flag; the carry (the last bytes read from
   descriptor 0) is unsynchronised, so two threads reading descriptor 0 at once may see a mixed
   carry and miss, or report twice, a "jsonrpc" split across their two reads. That race is
   benign: a report only asks the supervisor, and every later JSON-RPC message carries
   "jsonrpc" again. Only reads through the read symbol are seen (not readv, recv, stdio's
   internal reads or raw system calls): the sniffer is a soft layer. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "interpose/shim.h"

static const char kNeedle[] = "\"jsonrpc\"";
enum { kNeedleLen = sizeof(kNeedle) - 1, kCarryMax = 16 };

static int armed;
static int report_next; /* the supervisor said 'A': report the next read whatever it holds */
static char** sniff_argv;
static char carry[kCarryMax];
static size_t carry_len;

void armSniffer(char** argv) {
  struct stat st;
  if (fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
    sniff_argv = argv;
    __atomic_store_n(&armed, 1, __ATOMIC_RELAXED);
  }
}

/* hasNeedle says whether data[0, len) contains kNeedle. */
static int hasNeedle(const char* data, size_t len) {
  const char* p = data;
  const char* end = data + len;
  while (end - p >= kNeedleLen) {
    /* Safe cast: end - p >= kNeedleLen here, so the count is positive. */
    p = memchr(p, '"', (size_t)(end - p - kNeedleLen + 1));
    if (!p) {
      return 0;
    }
    if (memcmp(p, kNeedle, kNeedleLen) == 0) {
      return 1;
    }
    p++;
  }
  return 0;
}

/* denySniffed writes the denial, waits in the read for the supervisor to
   close conn and ends the process (wire.h 'S' reply 'D'). */
__attribute__((noreturn)) static void denySniffed(const char* reply, ssize_t reply_len, int conn) {
  writeDenial(reply, reply_len);
  waitForClose(conn);
  _exit(GUARD_WIRE_DENIED_STATUS);
}

/* report sends 'S' with argv, then prev (the carry) and data, and acts on
   the reply. */
static void report(const char* prev, size_t prev_len, const char* data, size_t len) {
  size_t head = 1;
  for (char** a = sniff_argv; a && *a; a++) {
    head += strLen(*a) + 1;
  }
  head += 1;
  if (head >= GUARD_WIRE_MAX_MSG) {
    const char* parts[] = {"stopping: its arguments exceed the MCP supervisor's message limit"};
    writeGuardLine(parts, 1);
    _exit(GUARD_WIRE_DENIED_STATUS); /* cannot be reported: fail closed */
  }
  size_t room = GUARD_WIRE_MAX_MSG - head;
  if (room > GUARD_WIRE_MAX_SNIFF) {
    room = GUARD_WIRE_MAX_SNIFF;
  }
  if (prev_len > room) {
    prev_len = room;
  }
  if (len > room - prev_len) {
    len = room - prev_len;
  }
  size_t total = head + prev_len + len;
  /* Safe: mmap is a plain system call; the mapping is removed below. It
     keeps up to 64 KiB off a reading thread's stack. */
  char* buf = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) {
    const char* parts[] = {"stopping: out of memory while reporting MCP traffic"};
    writeGuardLine(parts, 1);
    _exit(GUARD_WIRE_DENIED_STATUS); /* ENOMEM: fail closed */
  }
  char* p = buf;
  *p++ = 'S';
  for (char** a = sniff_argv; a && *a; a++) {
    size_t n = strLen(*a);
    memcpy(p, *a, n + 1);
    p += n + 1;
  }
  *p++ = '\0';
  memcpy(p, prev, prev_len);
  memcpy(p + prev_len, data, len);
  int conn;
  int fd;
  char reply[kReplyMax];
  ssize_t n = wireExchange(&conn, &fd, reply, sizeof(reply), buf, total, 1);
  /* Safe: buf is the mapping made above, no longer referenced. */
  munmap(buf, total);
  if (fd >= 0) {
    close(fd);
  }
  if ((n == kWireNoSession && !sessionKnown()) || (n > 0 && reply[0] == 'P')) {
    __atomic_store_n(&armed, 0, __ATOMIC_RELAXED); /* stop watching for good */
  } else if (n > 0 && reply[0] == 'A') {
    /* No whole message yet: the rest of it, which need not say "jsonrpc"
       again, goes to the supervisor too. */
    report_next = 1;
  } else {
    denySniffed(reply, n, conn);
  }
  if (conn >= 0) {
    close(conn);
  }
}

/* sniff looks for kNeedle in the carry followed by data, reports it, and
   keeps the last kCarryMax bytes of the stream as the new carry. */
static void sniff(const char* data, size_t len) {
  char prev[kCarryMax];
  size_t prev_len = carry_len < kCarryMax ? carry_len : kCarryMax;
  memcpy(prev, carry, prev_len);
  /* A needle split between the carry and data lies within the last
     kNeedleLen - 1 bytes of the carry and the first kNeedleLen - 1 of data;
     one wholly inside the carry was reported with the previous read. */
  char joint[2 * (kNeedleLen - 1)];
  size_t tail = prev_len < kNeedleLen - 1 ? prev_len : kNeedleLen - 1;
  size_t head = len < kNeedleLen - 1 ? len : kNeedleLen - 1;
  memcpy(joint, prev + prev_len - tail, tail);
  memcpy(joint + tail, data, head);
  if (report_next || hasNeedle(joint, tail + head) || hasNeedle(data, len)) {
    report_next = 0;
    report(prev, prev_len, data, len);
  }
  if (len >= kCarryMax) {
    memcpy(carry, data + len - kCarryMax, kCarryMax);
    carry_len = kCarryMax;
  } else {
    size_t keep = prev_len + len > kCarryMax ? kCarryMax - len : prev_len;
    memcpy(carry, prev + prev_len - keep, keep);
    memcpy(carry + keep, data, len);
    carry_len = keep + len;
  }
}

/* read: fd 0 of an armed process is sniffed; every other call is libc's
   read after one flag check. */
GUARD_EXPORT ssize_t read(int fd, void* buf, size_t count) {
  ssize_t (*real_read)(int, void*, size_t) = realFns()->read;
  if (fd != 0 || !__atomic_load_n(&armed, __ATOMIC_RELAXED)) {
    return real_read(fd, buf, count);
  }
  ssize_t n = real_read(fd, buf, count);
  if (n > 0) {
    int saved_errno = errno;
    sniff(buf, (size_t)n); /* safe cast: n > 0 */
    errno = saved_errno;
  }
  return n;
}
