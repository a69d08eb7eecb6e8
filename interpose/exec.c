/* exec.c: the exec-family wrappers: ask the MCP supervisor about candidate programs, then run,
   wrap or deny them (policy/wire.h 'E').

   Runs between fork (or vfork) and exec: only async-signal-safe calls, no heap, bounded stack. An
   ordinary exec costs a basename comparison against the cached candidate list (and the LD_PRELOAD
   check of env.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <unistd.h>

#include "interpose/shim.h"

enum ExecKind { kExecve, kExecvpe, kExecveat, kFexecve };

/* One exec call as the caller made it. */
struct ExecCall {
  enum ExecKind kind;
  int fd;           /* execveat's directory, fexecve's program */
  int flags;        /* execveat's flags */
  const char* file; /* the path or name as given (execve, execvpe, execveat) */
  char* const* argv;
};

/* Most arguments execl, execle and execlp accept (their stack copy). */
enum { kMaxListArgs = 4096 };

/* runExec calls libc's function for c with environment env. */
static int runExec(void* ctx, char* const* env) {
  const struct ExecCall* c = ctx;
  const struct RealFns* real = realFns();
  switch (c->kind) {
    case kExecve:
      if (real->execve) {
        return real->execve(c->file, c->argv, env);
      }
      break;
    case kExecvpe:
      if (real->execvpe) {
        return real->execvpe(c->file, c->argv, env);
      }
      break;
    case kExecveat:
      if (real->execveat) {
        return real->execveat(c->fd, c->file, c->argv, env, c->flags);
      }
      break;
    case kFexecve:
      if (real->fexecve) {
        return real->fexecve(c->fd, c->argv, env);
      }
      break;
  }
  errno = ENOSYS;
  return -1;
}

/* runPlain runs c with envp plus the shim in LD_PRELOAD. */
static int runPlain(const struct ExecCall* c, char* const* envp) {
  int ok;
  /* Safe cast: runExec only reads *c. */
  return withShimEnv(envp, NULL, runExec, (void*)c, &ok);
}

/* fdPath writes the target of /proc/self/fd/<fd> to buf (capacity cap) and
   returns buf, or NULL. */
static const char* fdPath(int fd, char* buf, size_t cap) {
  char link[32] = "/proc/self/fd/";
  char digits[12];
  size_t num_digits = 0;
  unsigned v = (unsigned)fd; /* safe cast: only used when fd >= 0 */
  do {
    digits[num_digits++] = (char)('0' + v % 10); /* safe cast: a digit */
    v /= 10;
  } while (v && num_digits < sizeof(digits));
  size_t len = strLen(link);
  while (num_digits) {
    link[len++] = digits[--num_digits];
  }
  link[len] = '\0';
  /* Safe: readlink is a plain system call; the result is NUL-terminated
     here. */
  ssize_t n = fd >= 0 ? readlink(link, buf, cap - 1) : -1;
  if (n <= 0) {
    return NULL;
  }
  buf[n] = '\0';
  return buf;
}

/* checkedFile names the program c runs, for the candidate check and 'E':
   the path as given, or for a descriptor the path it was opened by. */
static const char* checkedFile(const struct ExecCall* c, char* buf, size_t cap) {
  if (c->kind == kFexecve) {
    return fdPath(c->fd, buf, cap);
  }
  if (c->kind != kExecveat || c->fd == AT_FDCWD || (c->file && c->file[0] == '/')) {
    return c->file;
  }
  if (!c->file || !c->file[0]) {
    return (c->flags & AT_EMPTY_PATH) ? fdPath(c->fd, buf, cap) : c->file;
  }
  /* Relative to a directory descriptor: "<dir>/<file>". */
  size_t file_len = strLen(c->file);
  if (file_len + 2 > cap || !fdPath(c->fd, buf, cap - file_len - 1)) {
    return c->file;
  }
  size_t dir_len = strLen(buf);
  buf[dir_len] = '/';
  for (size_t i = 0; i <= file_len; i++) {
    buf[dir_len + 1 + i] = c->file[i];
  }
  return buf;
}

/* restoreStdio puts saved0/saved1 back on 0 and 1 and closes them. */
static void restoreStdio(int saved0, int saved1) {
  if (saved0 >= 0) {
    dup2(saved0, 0);
    close(saved0);
  }
  if (saved1 >= 0) {
    dup2(saved1, 1);
    close(saved1);
  }
}

/* execWrapped runs c with sock as its descriptors 0 and 1 ('W'); if the
   exec fails, the caller's 0 and 1 come back and its error is returned. */
static int execWrapped(const struct ExecCall* c, char* const* envp, int sock) {
  int saved0 = fcntl(0, F_DUPFD_CLOEXEC, 3);
  int saved1 = fcntl(1, F_DUPFD_CLOEXEC, 3);
  if (saved0 < 0 || saved1 < 0 || dup2(sock, 0) < 0 || dup2(sock, 1) < 0) {
    int err = errno; /* EMFILE and the like: the program cannot be wrapped, deny */
    restoreStdio(saved0, saved1);
    close(sock);
    errno = err;
    return -1;
  }
  close(sock);
  int result = runPlain(c, envp);
  int err = errno;
  restoreStdio(saved0, saved1);
  errno = err;
  return result;
}

/* execDenied replaces the caller by the shim's own entry point ('D'): the
   connection (or /dev/null without one) becomes descriptor 0 and /dev/null
   descriptor 1, so the client sees a started server that the supervisor
   answers for, and the stand-in exits GUARD_WIRE_DENIED_STATUS once the
   supervisor closes the connection. Returns only if the stand-in could not
   be started: -1 with EACCES, the caller's descriptors as they were. */
static int execDenied(int conn) {
  int saved0 = fcntl(0, F_DUPFD_CLOEXEC, 3);
  int saved1 = fcntl(1, F_DUPFD_CLOEXEC, 3);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  int in = conn >= 0 ? conn : null;
  int out = null >= 0 ? null : in;
  const struct RealFns* real = realFns();
  if (guard_shim_path[0] && real->execve && in >= 0 && saved0 >= 0 && saved1 >= 0 &&
      dup2(in, 0) == 0 && dup2(out, 1) == 1) {
    /* Safe casts: execve only reads the argument strings. */
    char* const argv[] = {(char*)"guard-mcp-denied", NULL};
    char* const env[] = {NULL};
    real->execve(guard_shim_path, argv, env);
  }
  restoreStdio(saved0, saved1);
  if (null >= 0) {
    close(null);
  }
  if (conn >= 0) {
    close(conn);
  }
  errno = EACCES;
  return -1;
}

/* guardExec is every exec wrapper: the candidate check, then 'E' for a
   candidate, then the call. */
static int guardExec(const struct ExecCall* c, char* const* envp) {
  int saved_errno = errno;
  char path[4096];
  const char* file = checkedFile(c, path, sizeof(path));
  if (!isCandidate(file, c->argv ? c->argv[0] : NULL)) {
    errno = saved_errno;
    return runPlain(c, envp);
  }
  int conn;
  int fd;
  char reply[kReplyMax];
  ssize_t n = wireAskExec(&conn, &fd, reply, sizeof(reply), file, c->argv);
  if (n == kWireTooBig) {
    const char* parts[] = {"not starting ", baseName(file),
                           ": its arguments exceed the MCP supervisor's message limit"};
    writeGuardLine(parts, 3);
    errno = E2BIG;
    return -1;
  }
  if ((n == kWireNoSession && !sessionKnown()) || (n > 0 && reply[0] == 'P')) {
    if (conn >= 0) {
      close(conn);
    }
    if (fd >= 0) {
      close(fd);
    }
    errno = saved_errno;
    return runPlain(c, envp);
  }
  if (n > 0 && reply[0] == 'W' && fd >= 0) {
    close(conn);
    return execWrapped(c, envp, fd);
  }
  /* 'D', or a missing, truncated or unknown reply. */
  if (fd >= 0) {
    close(fd);
  }
  writeDenial(reply, n);
  return execDenied(conn);
}

GUARD_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
  struct ExecCall c = {.kind = kExecve, .file = path, .argv = argv};
  return guardExec(&c, envp);
}

GUARD_EXPORT int execv(const char* path, char* const argv[]) {
  struct ExecCall c = {.kind = kExecve, .file = path, .argv = argv};
  return guardExec(&c, environ);
}

GUARD_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
  struct ExecCall c = {.kind = kExecvpe, .file = file, .argv = argv};
  return guardExec(&c, envp);
}

GUARD_EXPORT int execvp(const char* file, char* const argv[]) {
  struct ExecCall c = {.kind = kExecvpe, .file = file, .argv = argv};
  return guardExec(&c, environ);
}

GUARD_EXPORT int execveat(int dirfd, const char* path, char* const argv[], char* const envp[],
                          int flags) {
  struct ExecCall c = {.kind = kExecveat, .fd = dirfd, .flags = flags, .file = path, .argv = argv};
  return guardExec(&c, envp);
}

GUARD_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
  struct ExecCall c = {.kind = kFexecve, .fd = fd, .argv = argv};
  return guardExec(&c, envp);
}

/* execList is execl, execle and execlp: the arguments after arg, up to the
   NULL, go into a stack array, as in glibc's own execl; with_env: execle's
   environment follows the NULL. */
static int execList(enum ExecKind kind, const char* file, const char* arg, va_list ap,
                    int with_env) {
  va_list count;
  va_copy(count, ap);
  size_t num_args = arg ? 1 : 0;
  while (num_args && num_args <= kMaxListArgs && va_arg(count, const char*)) {
    num_args++;
  }
  va_end(count);
  if (num_args > kMaxListArgs) {
    errno = E2BIG;
    return -1;
  }
  char* argv[num_args + 1];
  /* Safe cast: exec only reads the argument strings. */
  argv[0] = (char*)arg;
  for (size_t i = 1; i < num_args; i++) {
    argv[i] = va_arg(ap, char*);
  }
  argv[num_args] = NULL;
  if (num_args) {
    (void)va_arg(ap, char*); /* the NULL after the arguments */
  }
  char* const* envp = with_env ? va_arg(ap, char* const*) : environ;
  struct ExecCall c = {.kind = kind, .file = file, .argv = argv};
  return guardExec(&c, envp);
}

GUARD_EXPORT int execl(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int result = execList(kExecve, path, arg, ap, 0);
  va_end(ap);
  return result;
}

GUARD_EXPORT int execle(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int result = execList(kExecve, path, arg, ap, 1);
  va_end(ap);
  return result;
}

GUARD_EXPORT int execlp(const char* file, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int result = execList(kExecvpe, file, arg, ap, 0);
  va_end(ap);
  return result;
}
