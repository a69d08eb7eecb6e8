/* env.c: keeps the shim preloaded across exec by handing exec a stack-built environment whose
   LD_PRELOAD names it (`env -u LD_PRELOAD`, `env -i` and the like do not drop it).

   Runs between fork (or vfork) and exec: no heap, bounded stack, no libc calls. */
#include "interpose/shim.h"

char guard_shim_path[4096];

/* Bounds of the stack copy: past them the environment is passed unchanged
   (or, when an extra entry is required, the call is refused). */
enum { kMaxEnvEntries = 1024, kMaxPreloadLen = 4096 };

static const char kPreloadKey[] = "LD_PRELOAD=";

/* preloadHasShim says whether the LD_PRELOAD value lists guard_shim_path
   (entries are separated by ':' or ' ', as ld.so reads them). */
static int preloadHasShim(const char* value) {
  const char* p = value;
  while (*p) {
    const char* end = p;
    while (*end && *end != ':' && *end != ' ') {
      end++;
    }
    const char* s = guard_shim_path;
    const char* q = p;
    while (q < end && *s && *q == *s) {
      q++;
      s++;
    }
    if (q == end && !*s && end > p) {
      return 1;
    }
    p = *end ? end + 1 : end;
  }
  return 0;
}

int withShimEnv(char* const* envp, const char* extra, int (*run)(void* ctx, char* const* env),
                void* ctx, int* out_ok) {
  static char* const kEmpty[] = {NULL};
  if (!envp) {
    envp = kEmpty;
  }
  /* ld.so uses the last LD_PRELOAD entry. */
  size_t num_env = 0;
  int has_preload = 0;
  size_t preload_at = 0;
  for (; envp[num_env]; num_env++) {
    if (hasPrefix(envp[num_env], kPreloadKey)) {
      has_preload = 1;
      preload_at = num_env;
    }
  }
  const char* old = has_preload ? envp[preload_at] + sizeof(kPreloadKey) - 1 : "";
  int add_shim = guard_shim_path[0] && !preloadHasShim(old);
  *out_ok = 1;
  if (!add_shim && !extra) {
    return run(ctx, envp);
  }
  size_t shim_len = strLen(guard_shim_path);
  size_t old_len = strLen(old);
  if (num_env > kMaxEnvEntries || old_len > kMaxPreloadLen) {
    if (extra) {
      *out_ok = 0;
      return -1;
    }
    return run(ctx, envp);
  }

  /* Room for every entry, a new LD_PRELOAD, extra and the NULL. */
  char* env[num_env + 3];
  char preload[add_shim ? sizeof(kPreloadKey) + shim_len + 1 + old_len : 1];
  size_t n = 0;
  for (; n < num_env; n++) {
    env[n] = envp[n];
  }
  if (add_shim) {
    char* p = preload;
    for (const char* s = kPreloadKey; *s; s++) {
      *p++ = *s;
    }
    for (const char* s = guard_shim_path; *s; s++) {
      *p++ = *s;
    }
    if (old_len) {
      *p++ = ':';
      for (const char* s = old; *s; s++) {
        *p++ = *s;
      }
    }
    *p = '\0';
    if (has_preload) {
      env[preload_at] = preload;
    } else {
      env[n++] = preload;
    }
  }
  if (extra) {
    /* Safe cast: exec and posix_spawn only read the environment strings. */
    env[n++] = (char*)extra;
  }
  env[n] = NULL;
  return run(ctx, env);
}
