/* spawn.c: posix_spawn and posix_spawnp, whose checks run in the started program itself.

   The caller's file actions and attributes are opaque, so the parent cannot know which
   descriptors the program will get as 0 and 1. For a candidate the wrapper therefore adds
   GUARD_SPAWN_MARK to the program's environment and calls libc's posix_spawn unchanged; the
   shim's constructor in the new image sees the mark and asks 'E' about itself with its real
   descriptors 0 and 1 (spawnCheckSelf). File and argv are then /proc/self/exe and the image's
   argv: for a script that is the interpreter's, which the supervisor accepts. A static program
   started this way loads no shim and escapes this check; it is held only by the hard layers
   (namespaces, seccomp, the filesystem view). */
#include <errno.h>
#include <unistd.h>

#include "interpose/shim.h"

/* One posix_spawn(p) call as the caller made it. */
struct SpawnCall {
  int search; /* posix_spawnp */
  pid_t* pid;
  const char* file;
  const posix_spawn_file_actions_t* actions;
  const posix_spawnattr_t* attr;
  char* const* argv;
};

/* runSpawn calls libc's function for c with environment env. */
static int runSpawn(void* ctx, char* const* env) {
  const struct SpawnCall* c = ctx;
  const struct RealFns* real = realFns();
  int (*fn)(pid_t*, const char*, const posix_spawn_file_actions_t*, const posix_spawnattr_t*,
            char* const[], char* const[]) = c->search ? real->posix_spawnp : real->posix_spawn;
  return fn ? fn(c->pid, c->file, c->actions, c->attr, c->argv, env) : ENOSYS;
}

/* guardSpawn is both wrappers: returns an error number, like them. */
static int guardSpawn(const struct SpawnCall* c, char* const* envp) {
  int saved_errno = errno;
  const char* mark = isCandidate(c->file, c->argv ? c->argv[0] : NULL) ? GUARD_SPAWN_MARK : NULL;
  int ok;
  errno = saved_errno;
  /* Safe cast: runSpawn only reads *c. */
  int result = withShimEnv(envp, mark, runSpawn, (void*)c, &ok);
  if (!ok) {
    const char* parts[] = {"not starting ", baseName(c->file),
                           ": its environment is too large to mark for the MCP supervisor"};
    writeGuardLine(parts, 3);
    return E2BIG;
  }
  return result;
}

GUARD_EXPORT int posix_spawn(pid_t* restrict pid, const char* restrict path,
                             const posix_spawn_file_actions_t* actions,
                             const posix_spawnattr_t* restrict attr, char* const argv[restrict],
                             char* const envp[restrict]) {
  struct SpawnCall c = {
      .search = 0, .pid = pid, .file = path, .actions = actions, .attr = attr, .argv = argv};
  return guardSpawn(&c, envp);
}

GUARD_EXPORT int posix_spawnp(pid_t* pid, const char* file,
                              const posix_spawn_file_actions_t* actions,
                              const posix_spawnattr_t* attr, char* const argv[],
                              char* const envp[]) {
  struct SpawnCall c = {
      .search = 1, .pid = pid, .file = file, .actions = actions, .attr = attr, .argv = argv};
  return guardSpawn(&c, envp);
}

/* takeSpawnMark removes every GUARD_WIRE_SPAWN entry from environ (so the
   program's own children do not inherit it) and says whether one was the
   mark. Edits environ's array in place: no allocation. */
static int takeSpawnMark(void) {
  static const char kKey[] = "GUARD_WIRE_SPAWN=";
  int marked = 0;
  char** out = environ;
  for (char** in = environ; in && *in; in++) {
    if (hasPrefix(*in, kKey)) {
      marked |= strEq(*in, GUARD_SPAWN_MARK);
      continue;
    }
    *out++ = *in;
  }
  if (out) {
    *out = NULL;
  }
  return marked;
}

void spawnCheckSelf(char** argv) {
  if (!takeSpawnMark()) {
    return;
  }
  char exe[4096];
  /* Safe: readlink is a plain system call; the result is NUL-terminated
     here. */
  ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe[len > 0 ? len : 0] = '\0';
  int conn;
  int fd;
  char reply[kReplyMax];
  ssize_t n = wireAskExec(&conn, &fd, reply, sizeof(reply), exe, argv);
  if (n == kWireNoSession) {
    return; /* not in a guard session (wire.h): nothing to do */
  }
  if (n > 0 && (reply[0] == 'P' || (reply[0] == 'W' && fd >= 0))) {
    if (reply[0] == 'W') {
      dup2(fd, 0);
      dup2(fd, 1);
    }
    if (fd >= 0) {
      close(fd);
    }
    close(conn);
    return;
  }
  if (fd >= 0) {
    close(fd);
  }
  if (n == kWireTooBig) {
    const char* parts[] = {"not running ", baseName(exe),
                           ": its arguments exceed the MCP supervisor's message limit"};
    writeGuardLine(parts, 3);
  } else {
    writeDenial(reply, n);
  }
  waitForClose(conn);
  _exit(GUARD_WIRE_DENIED_STATUS);
}
