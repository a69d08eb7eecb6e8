/* shim.h: what the files of libguard-interpose.so share; folder-internal.

   libguard-interpose.so is preloaded into every dynamic program of a guard session so that MCP
   stdio servers the agent starts are filtered by the session's MCP supervisor or denied
   (policy/wire.h has the protocol). It interposes execve, execv, execvp, execvpe, execl, execle,
   execlp, execveat, fexecve, posix_spawn and posix_spawnp (exec.c, spawn.c), because glibc's
   exec family and posix_spawn reach the kernel through internal aliases, not through the execve
   symbol; and read, for the MCP sniffer (sniff.c). system() and popen() are not interposed: they
   run /bin/sh, which loads this shim too and whose exec of the command goes through the
   wrappers. Files: init.c (constructor, libc lookups), wire.c (supervisor conversation,
   candidate list), env.c (LD_PRELOAD across exec), entry.c (the executable stand-in for a
   denied server). */
#pragma once

/* The Makefile compiles the shim with -D_GNU_SOURCE (execvpe, execveat,
   RTLD_NEXT, dladdr) and -U_FORTIFY_SOURCE (the wrappers define libc's names
   themselves; fortified inline versions of them would clash). */
#include <spawn.h>
#include <stddef.h>
#include <sys/types.h>

#include "policy/wire.h"

/* GUARD_EXPORT marks an interposed libc name; everything else is hidden
   (-fvisibility=hidden) and interpose/exports.map lists exactly these. */
#define GUARD_EXPORT __attribute__((visibility("default")))

/* ---- real.c: the libc functions the wrappers stand in for ---------------- */

/* RealFns holds the next definitions of the interposed names (libc's). A
   member is NULL when libc lacks the function; the wrapper then fails with
   ENOSYS. `read` is never NULL (it falls back to a raw system call). */
struct RealFns {
  int (*execve)(const char*, char* const[], char* const[]);
  int (*execvpe)(const char*, char* const[], char* const[]);
  int (*execveat)(int, const char*, char* const[], char* const[], int);
  int (*fexecve)(int, char* const[], char* const[]);
  int (*posix_spawn)(pid_t*, const char*, const posix_spawn_file_actions_t*,
                     const posix_spawnattr_t*, char* const[], char* const[]);
  int (*posix_spawnp)(pid_t*, const char*, const posix_spawn_file_actions_t*,
                      const posix_spawnattr_t*, char* const[], char* const[]);
  ssize_t (*read)(int, void*, size_t);
};

extern struct RealFns guard_real;
extern int guard_real_ready;

/* resolveRealFns fills guard_real with dlsym(RTLD_NEXT, ...). The constructor
   calls it; a wrapper calls it only if it runs before the constructor. */
void resolveRealFns(void);

/* realFns returns guard_real, resolved. */
static inline const struct RealFns* realFns(void) {
  if (!__atomic_load_n(&guard_real_ready, __ATOMIC_ACQUIRE)) {
    resolveRealFns();
  }
  return &guard_real;
}

/* ---- wire.c: the supervisor conversation (policy/wire.h) ----------------- */

/* Results of the exchanges below other than a reply length. */
enum {
  kWireFailed = -1,    /* no usable reply: treat as 'D' */
  kWireNoSession = -2, /* the name cannot be connected to: no guard session */
  kWireTooBig = -3,    /* the request would exceed GUARD_WIRE_MAX_MSG */
};

/* Size of the stack buffer an 'E' or 'S' reply is read into. */
enum { kReplyMax = 1024 };

/* wireExchange connects, sends req (req_len bytes, with descriptors 0 and 1
   when send_stdio) and reads one reply into reply[0, reply_cap). Returns the
   reply length (> 0), kWireNoSession or kWireFailed. *out_conn is the
   connection (or -1) and *out_fd the one descriptor the reply carried (or
   -1); the caller owns and closes both, whatever the result. */
ssize_t wireExchange(int* out_conn, int* out_fd, char* reply, size_t reply_cap, const char* req,
                     size_t req_len, int send_stdio);

/* wireAskExec sends 'E' for file and argv, with descriptors 0 and 1, as
   wireExchange; kWireTooBig when the request does not fit. */
ssize_t wireAskExec(int* out_conn, int* out_fd, char* reply, size_t reply_cap, const char* file,
                    char* const* argv);

/* isCandidate says whether an exec of file with argv[0] argv0 must be asked
   about: 0 outside a guard session or when neither basename is in the
   supervisor's candidate list (fetched with 'C' on first use, then cached
   for this process image); 1 otherwise, including when the list could not be
   fetched (fail closed: the exec itself is asked about). */
int isCandidate(const char* file, const char* argv0);

/* sessionKnown says whether this image has fetched the candidate list, i.e.
   a later failure to connect means the supervisor went away, not that there
   is no session. */
int sessionKnown(void);

/* writeDenial writes "guard: <message>\n" to descriptor 2: the message of a
   'D' reply, or the wire.h message for a missing or unusable reply. */
void writeDenial(const char* reply, ssize_t reply_len);

/* writeGuardLine writes "guard: " then the num_parts strings then "\n" to
   descriptor 2 in one write, truncated to a bounded line. */
void writeGuardLine(const char* const* parts, size_t num_parts);

/* waitForClose reads conn until end of file or an error (conn < 0: returns
   at once). */
void waitForClose(int conn);

/* Small string helpers (NULL reads as ""). */
size_t strLen(const char* s);
int strEq(const char* a, const char* b);
int hasPrefix(const char* s, const char* prefix);
const char* baseName(const char* path);

/* ---- env.c: keeping the shim preloaded across exec ----------------------- */

/* Absolute path of this shared object, found by the constructor; "" if
   unknown (then exec environments are not rewritten). */
extern char guard_shim_path[4096];

/* withShimEnv calls run(ctx, env) where env is envp (NULL reads as empty)
   plus LD_PRELOAD naming the shim if its last LD_PRELOAD entry does not,
   plus the entry extra if not NULL; the copy lives on this stack frame.
   Returns run's result and sets *out_ok to 1; if extra is needed but the
   environment is too large to copy, does not call run and sets *out_ok to
   0. An environment too large to copy without extra is passed unchanged. */
int withShimEnv(char* const* envp, const char* extra, int (*run)(void* ctx, char* const* env),
                void* ctx, int* out_ok);

/* ---- spawn.c / sniff.c: the constructor's steps --------------------------- */

/* The environment entry posix_spawn(p) adds for a candidate. */
#define GUARD_SPAWN_MARK "GUARD_WIRE_SPAWN=1"

/* spawnCheckSelf removes GUARD_WIRE_SPAWN from environ and, if it was
   GUARD_SPAWN_MARK, asks 'E' about this very image (argv from the
   constructor). Returns when the program may run; exits otherwise. */
void spawnCheckSelf(char** argv);

/* armSniffer starts watching reads of descriptor 0 if it is a pipe or a
   socket; argv is what 'S' reports. */
void armSniffer(char** argv);
