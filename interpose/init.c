/* init.c: the shim's one constructor and the lookup of the libc functions it wraps. */
#include <dlfcn.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "interpose/shim.h"

struct RealFns guard_real;
int guard_real_ready;

/* rawRead stands in for libc's read if dlsym cannot find it, so the read
   wrapper never calls through NULL. */
static ssize_t rawRead(int fd, void* buf, size_t count) {
  /* Safe: the read system call with the caller's own arguments. */
  return syscall(SYS_read, fd, buf, count);
}

/* Safe: dlsym takes the loader's lock and may allocate, so it must not run
   between fork and exec; it runs here from the constructor, during loading,
   before main and any thread of the program. A wrapper calls this only if it
   runs before the constructor (from an earlier constructor), still during
   loading. Two racing calls store the same values. */
void resolveRealFns(void) {
  /* Each cast: dlsym returns the address of libc's function of that name,
     whose prototype is the member's (the same declaration in libc's
     headers); POSIX requires void* to hold function addresses. */
  guard_real.execve =
      (int (*)(const char*, char* const[], char* const[]))dlsym(RTLD_NEXT, "execve");
  guard_real.execvpe =
      (int (*)(const char*, char* const[], char* const[]))dlsym(RTLD_NEXT, "execvpe");
  guard_real.execveat =
      (int (*)(int, const char*, char* const[], char* const[], int))dlsym(RTLD_NEXT, "execveat");
  guard_real.fexecve = (int (*)(int, char* const[], char* const[]))dlsym(RTLD_NEXT, "fexecve");
  guard_real.posix_spawn =
      (int (*)(pid_t*, const char*, const posix_spawn_file_actions_t*, const posix_spawnattr_t*,
               char* const[], char* const[]))dlsym(RTLD_NEXT, "posix_spawn");
  guard_real.posix_spawnp =
      (int (*)(pid_t*, const char*, const posix_spawn_file_actions_t*, const posix_spawnattr_t*,
               char* const[], char* const[]))dlsym(RTLD_NEXT, "posix_spawnp");
  ssize_t (*real_read)(int, void*, size_t) =
      (ssize_t(*)(int, void*, size_t))dlsym(RTLD_NEXT, "read");
  guard_real.read = real_read ? real_read : rawRead;
  __atomic_store_n(&guard_real_ready, 1, __ATOMIC_RELEASE);
}

/* findShimPath stores the absolute path of this object in guard_shim_path. */
static void findShimPath(void) {
  Dl_info info;
  /* Safe: dladdr only reads the loader's list of objects; called once here,
     during loading. guard_shim_path is an object in this .so. */
  if (!dladdr(guard_shim_path, &info) || !info.dli_fname || !info.dli_fname[0]) {
    return;
  }
  const char* name = info.dli_fname;
  size_t len = strLen(name);
  size_t cap = sizeof(guard_shim_path);
  if (name[0] == '/') {
    if (len < cap) {
      memcpy(guard_shim_path, name, len + 1);
    }
    return;
  }
  /* A relative LD_PRELOAD entry: the loader opened it from the current
     directory a moment ago. */
  char cwd[sizeof(guard_shim_path)];
  if (!getcwd(cwd, sizeof(cwd))) {
    return;
  }
  size_t cwd_len = strLen(cwd);
  if (cwd_len + 1 + len < cap) {
    memcpy(guard_shim_path, cwd, cwd_len);
    guard_shim_path[cwd_len] = '/';
    memcpy(guard_shim_path + cwd_len + 1, name, len + 1);
  }
}

/* guardInit is the shim's one constructor (STYLE.md section 8). glibc calls
   initialisers with (argc, argv, envp). In order it: resolves libc's
   functions (so exec paths never call dlsym); records the shim's path (for
   LD_PRELOAD and the denied stand-in); performs the pending check of a
   program started by posix_spawn(p) (spawn.c); arms the sniffer (sniff.c).
   No environment switch turns any step off: the environment is the
   agent's, and a switch would let it start an unknown MCP server unsniffed
   or a candidate unchecked. */
__attribute__((constructor)) static void guardInit(int argc, char** argv, char** envp) {
  (void)argc;
  resolveRealFns();
  findShimPath();
  spawnCheckSelf(argv);
  (void)envp;
  armSniffer(argv);
}
