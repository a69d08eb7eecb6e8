/* wire.c: the conversation with the MCP supervisor (policy/wire.h): one request and one reply per
   connection, the cached candidate list, and the lines the shim writes to descriptor 2.

   Runs between fork (or vfork) and exec: only async-signal-safe calls (socket, connect, sendmsg,
   recvmsg, close, mmap, munmap, write, system calls), no heap, bounded stack. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "interpose/shim.h"

static const char kNoAnswer[] = "the MCP supervisor did not answer";

size_t strLen(const char* s) {
  size_t n = 0;
  while (s && s[n]) {
    n++;
  }
  return n;
}

int strEq(const char* a, const char* b) {
  a = a ? a : "";
  b = b ? b : "";
  while (*a && *a == *b) {
    a++;
    b++;
  }
  return *a == *b;
}

int hasPrefix(const char* s, const char* prefix) {
  s = s ? s : "";
  while (*prefix) {
    if (*s++ != *prefix++) {
      return 0;
    }
  }
  return 1;
}

const char* baseName(const char* path) {
  const char* base = path ? path : "";
  for (const char* p = base; *p; p++) {
    if (*p == '/') {
      base = p + 1;
    }
  }
  return base;
}

/* wireConnect returns a connected socket, kWireNoSession or kWireFailed. */
static int wireConnect(void) {
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s >= 0 && s <= 2) {
    /* Descriptor 0, 1 or 2 was closed: keep the connection off them, so a
       line for descriptor 2 never goes to the supervisor. */
    int moved = fcntl(s, F_DUPFD_CLOEXEC, 3);
    close(s);
    s = moved;
  }
  if (s < 0) {
    return kWireFailed;
  }
  struct sockaddr_un addr;
  socklen_t len = guard_wire_address(&addr);
  /* Safe cast: sockaddr_un is one of the sockaddr types connect accepts. */
  while (connect(s, (const struct sockaddr*)&addr, len) != 0) {
    int err = errno;
    if (err == EINTR) {
      continue; /* an AF_UNIX connect interrupted while queued can be retried */
    }
    close(s);
    return (err == ECONNREFUSED || err == ENOENT) ? kWireNoSession : kWireFailed;
  }
  return s;
}

ssize_t wireExchange(int* out_conn, int* out_fd, char* reply, size_t reply_cap, const char* req,
                     size_t req_len, int send_stdio) {
  *out_fd = -1;
  *out_conn = wireConnect();
  if (*out_conn < 0) {
    int result = *out_conn;
    *out_conn = -1;
    return result;
  }
  int conn = *out_conn;

  /* Safe cast: sendmsg only reads through iov_base. */
  struct iovec iov = {.iov_base = (void*)req, .iov_len = req_len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(2 * sizeof(int))];
  } ctl;
  if (send_stdio) {
    memset(&ctl, 0, sizeof(ctl));
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    const int stdio[2] = {0, 1};
    memcpy(CMSG_DATA(c), stdio, sizeof(stdio));
  }
  ssize_t sent;
  do {
    sent = sendmsg(conn, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent != (ssize_t)req_len) { /* safe cast: req_len <= GUARD_WIRE_MAX_MSG */
    return kWireFailed;
  }

  struct iovec riov = {.iov_base = reply, .iov_len = reply_cap};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(4 * sizeof(int))];
  } rctl;
  struct msghdr rmsg = {.msg_iov = &riov,
                        .msg_iovlen = 1,
                        .msg_control = rctl.buf,
                        .msg_controllen = sizeof(rctl.buf)};
  ssize_t got;
  do {
    /* MSG_CMSG_CLOEXEC: a received socket never leaks into an exec'd program
       except where the shim dup2s it onto 0 and 1. */
    got = recvmsg(conn, &rmsg, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  int extra_fds = 0;
  if (got >= 0) {
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&rmsg); c; c = CMSG_NXTHDR(&rmsg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
        continue;
      }
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
        if (*out_fd < 0) {
          *out_fd = fd;
        } else {
          close(fd);
          extra_fds++;
        }
      }
    }
  }
  if (got <= 0 || (rmsg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || extra_fds) {
    if (*out_fd >= 0) {
      close(*out_fd);
      *out_fd = -1;
    }
    return kWireFailed;
  }
  return got;
}

ssize_t wireAskExec(int* out_conn, int* out_fd, char* reply, size_t reply_cap, const char* file,
                    char* const* argv) {
  *out_conn = -1;
  *out_fd = -1;
  size_t total = 1 + strLen(file) + 1;
  for (size_t i = 0; argv && argv[i] && total <= GUARD_WIRE_MAX_MSG; i++) {
    total += strLen(argv[i]) + 1;
  }
  if (total > GUARD_WIRE_MAX_MSG) {
    return kWireTooBig;
  }
  /* Safe: mmap is a plain system call (no lock, no heap), so usable after
     vfork; the mapping is removed below, before any exec. It keeps up to
     64 KiB off stacks that may be small (threads). */
  char* buf = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) {
    return kWireFailed; /* ENOMEM: deny */
  }
  char* p = buf;
  *p++ = 'E';
  size_t n = strLen(file);
  memcpy(p, file ? file : "", n);
  p += n;
  *p++ = '\0';
  for (size_t i = 0; argv && argv[i]; i++) {
    n = strLen(argv[i]);
    memcpy(p, argv[i], n + 1);
    p += n + 1;
  }
  ssize_t got = wireExchange(out_conn, out_fd, reply, reply_cap, buf, total, 1);
  /* Safe: buf is the mapping made above, no longer referenced. */
  munmap(buf, total);
  return got;
}

/* ---- the candidate list -------------------------------------------------- */

/* State of the list, shared by threads (atomics) and inherited by fork. A
   fork taken while another thread was fetching leaves the child in
   kListFetching: it then asks about every exec, which is correct, only
   slower, until its next exec. */
enum { kListUnknown, kListFetching, kListReady, kListNoSession };
static int list_state;
/* The 'C' reply, valid while list_state is kListReady: 'C' then names, each
   NUL-terminated. */
static char list_buf[GUARD_WIRE_MAX_MSG];
static size_t list_len;

/* listHas says whether name or "*" is in the list. */
static int listHas(const char* name) {
  for (size_t i = 1; i < list_len; i += strLen(list_buf + i) + 1) {
    if (strEq(list_buf + i, "*") || strEq(list_buf + i, name)) {
      return 1;
    }
  }
  return 0;
}

/* fetchList asks 'C' once; returns the new state (kListFetching if the list
   is unavailable, i.e. busy in another thread or the reply was unusable). */
static int fetchList(void) {
  int expected = kListUnknown;
  if (!__atomic_compare_exchange_n(&list_state, &expected, kListFetching, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    return expected;
  }
  int conn;
  int fd;
  ssize_t n = wireExchange(&conn, &fd, list_buf, sizeof(list_buf), "C", 1, 0);
  if (conn >= 0) {
    close(conn);
  }
  if (fd >= 0) {
    close(fd);
  }
  int next = kListUnknown; /* unusable: ask again on the next exec */
  if (n == kWireNoSession) {
    next = kListNoSession;
  } else if (n > 0 && list_buf[0] == 'C' && (n == 1 || list_buf[n - 1] == '\0')) {
    list_len = (size_t)n; /* safe cast: n > 0 */
    next = kListReady;
  }
  __atomic_store_n(&list_state, next, __ATOMIC_RELEASE);
  return next == kListUnknown ? kListFetching : next;
}

int isCandidate(const char* file, const char* argv0) {
  int state = __atomic_load_n(&list_state, __ATOMIC_ACQUIRE);
  if (state == kListUnknown) {
    state = fetchList();
  }
  if (state == kListNoSession) {
    return 0;
  }
  if (state == kListReady) {
    return listHas(baseName(file)) || listHas(baseName(argv0));
  }
  return 1;
}

int sessionKnown(void) { return __atomic_load_n(&list_state, __ATOMIC_ACQUIRE) == kListReady; }

/* ---- messages ------------------------------------------------------------ */

void writeGuardLine(const char* const* parts, size_t num_parts) {
  char line[kReplyMax + 64];
  size_t len = 0;
  const char* prefix = "guard: ";
  for (size_t i = 0; i < strLen(prefix); i++) {
    line[len++] = prefix[i];
  }
  for (size_t i = 0; i < num_parts; i++) {
    for (const char* p = parts[i]; p && *p && len < sizeof(line) - 1; p++) {
      line[len++] = *p;
    }
  }
  line[len++] = '\n';
  ssize_t w;
  do {
    w = write(2, line, len);
  } while (w < 0 && errno == EINTR);
}

void writeDenial(const char* reply, ssize_t reply_len) {
  char msg[kReplyMax];
  size_t len = 0;
  if (reply_len > 1 && reply[0] == 'D') {
    /* One line: stop at NUL or newline; the supervisor's text is trusted.
       The cast is safe: reply_len > 1. */
    while (len + 1 < (size_t)reply_len && len < sizeof(msg) - 1 && reply[1 + len] &&
           reply[1 + len] != '\n') {
      msg[len] = reply[1 + len];
      len++;
    }
  }
  msg[len] = '\0';
  const char* parts[1] = {(reply_len > 0 && reply[0] == 'D') ? msg : kNoAnswer};
  writeGuardLine(parts, 1);
}

void waitForClose(int conn) {
  char buf[256];
  while (conn >= 0) {
    /* Safe: the read system call directly, not the read wrapper (sniff.c). */
    long n = syscall(SYS_read, conn, buf, sizeof(buf));
    if (n > 0 || (n < 0 && errno == EINTR)) {
      continue;
    }
    break;
  }
}
