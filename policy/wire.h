/* The shim wire format: how libguard-interpose.so, inside the agent's
   sandbox, asks the session's MCP supervisor about programs it starts and
   about MCP traffic it sees. C-compatible and header-only: the shim (C, no
   C++ runtime) and the supervisor (C++, mitm-proxy/) both include it.

   Transport: a SOCK_SEQPACKET Unix socket bound to the abstract name
   GUARD_WIRE_NAME inside the agent's network namespace (abstract names are
   per network namespace, so no host process can reach it and no agent
   process can bind it first: it is bound before the agent starts). One
   connection per exchange: the shim connects, sends one request message,
   reads one reply message. Strings are NUL-terminated and concatenated.

   Requests (first byte):
     'C'  candidates. Reply 'C' then program names, each NUL-terminated:
          the last path component of the first element of every stdio
          server pattern in the policy. A name "*" means every program is a
          candidate. The shim caches the list for the life of the process
          image (fork inherits it) and asks about an exec only when the
          basename of the file or of argv[0] is in it.
     'E'  exec. Payload: file NUL, then argv[0] NUL argv[1] NUL ...; carries
          the caller's descriptors 0 and 1 with SCM_RIGHTS (in that order).
          Reply:
            'P'  start the program as asked.
            'W'  wrap: carries one socket with SCM_RIGHTS; the shim makes it
                 the program's stdin and stdout (dup2 onto 0 and 1) and
                 starts the program. The supervisor filters between the
                 caller's descriptors and that socket.
            'D'  deny; payload is a one-line message. The shim writes
                 "guard: <message>\n" to descriptor 2 and does not start the
                 program; the supervisor answers every request on the
                 caller's descriptors with a JSON-RPC error until the client
                 closes them, then closes this connection. So that a client
                 waiting for its spawn to succeed (libuv, Python) goes on to
                 send `initialize` and gets the error, the shim makes this
                 connection descriptor 0 and /dev/null descriptor 1 and
                 executes libguard-interpose.so itself: its entry point
                 waits for the connection to close and exits with status
                 GUARD_WIRE_DENIED_STATUS.
     'S'  sniffed. Sent once the shim, watching the reads of descriptor 0 of
          a process whose stdin is a pipe or socket, sees the text
          "jsonrpc". Payload: argv[0] NUL ... argv[n] NUL NUL, then the
          bytes read so far (the current read, up to GUARD_WIRE_MAX_SNIFF,
          preceded by the carry of the previous read); carries descriptors
          0 and 1 with SCM_RIGHTS. Reply:
            'P'  not an MCP server that needs a decision (the stream is not
                 MCP, or stdin already is a supervisor's wrap socket): stop
                 watching for the life of the process.
            'A'  undecided (no complete message yet): keep watching, and
                 report the next read whatever it holds (the rest of a
                 message need not say "jsonrpc" again).
            'D'  an MCP server no approved entry covers: the supervisor now
                 answers the client; the shim writes the message, waits in
                 the read for the connection to close and exits with
                 GUARD_WIRE_DENIED_STATUS.
   A reply that is missing, truncated or unknown is treated as 'D' with
   the message "the MCP supervisor did not answer". When the name cannot be
   connected to (ECONNREFUSED, ENOENT), the process is not in a guard
   session and the shim does nothing. */
#ifndef GUARD_POLICY_WIRE_H
#define GUARD_POLICY_WIRE_H

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* The abstract socket name, without its leading NUL byte. */
#define GUARD_WIRE_NAME "guard-mcp-supervisor"
/* Largest request or reply, in bytes; an exec whose file and argv do not
   fit is refused (E2BIG) rather than started unchecked. */
#define GUARD_WIRE_MAX_MSG 65536
/* Most bytes of sniffed stdin a 'S' request carries. */
#define GUARD_WIRE_MAX_SNIFF 49152
/* Exit status of a process the supervisor denied. */
#define GUARD_WIRE_DENIED_STATUS 126

/* guard_wire_address fills ADDR with the abstract name (sun_path[0] stays 0)
   and returns the address length, which covers the name only: sizeof counts
   the name's NUL, which stands for the leading 0. For bind and connect. */
static inline socklen_t guard_wire_address(struct sockaddr_un* addr) {
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  memcpy(addr->sun_path + 1, GUARD_WIRE_NAME, sizeof(GUARD_WIRE_NAME) - 1);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof(GUARD_WIRE_NAME));
}

/* guard_wire_send sends one message of LEN bytes at MSG, with descriptor FD
   (SCM_RIGHTS) unless it is -1. Returns what sendmsg returns. */
static inline ssize_t guard_wire_send(int conn, const void* msg, size_t len, int fd) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } cbuf;
  struct iovec iov;
  struct msghdr mh;
  ssize_t n;
  memset(&mh, 0, sizeof(mh));
  iov.iov_base = (void*)msg; /* sendmsg only reads through it */
  iov.iov_len = len;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (fd >= 0) {
    struct cmsghdr* c;
    memset(&cbuf, 0, sizeof(cbuf));
    mh.msg_control = cbuf.buf;
    mh.msg_controllen = sizeof(cbuf.buf);
    c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  do {
    n = sendmsg(conn, &mh, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

/* guard_wire_recv receives one message into BUF (CAP bytes) and up to 4
   descriptors into FDS (*NFDS of them, close-on-exec). Returns its length,
   or -1 on an error or a truncated message or control data; the
   descriptors that did arrive are in FDS either way, for the caller to
   close. */
static inline ssize_t guard_wire_recv(int conn, void* buf, size_t cap, int fds[4], int* nfds) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * 4)];
  } cbuf;
  struct iovec iov;
  struct msghdr mh;
  struct cmsghdr* c;
  ssize_t n;
  memset(&mh, 0, sizeof(mh));
  iov.iov_base = buf;
  iov.iov_len = cap;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf.buf;
  mh.msg_controllen = sizeof(cbuf.buf);
  *nfds = 0;
  do {
    n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return -1;
  }
  for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      size_t i;
      for (i = 0; i < count && *nfds < 4; ++i) {
        memcpy(&fds[*nfds], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        ++*nfds;
      }
    }
  }
  if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    return -1;
  }
  return n;
}

#endif /* GUARD_POLICY_WIRE_H */
