// openat2: tries to open a file with openat2(2) and each RESOLVE_* flag.
//
//   openat2 SECRET DIR REL
//
// SECRET is opened absolutely with every flag, through /proc/self/root, and
// REL (a path relative to DIR that leads to the secret) beneath DIR with
// RESOLVE_BENEATH and RESOLVE_IN_ROOT. Whatever it reads goes to stdout.
// Exit 0: every attempt was refused; 1: something was read; 2: usage.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int attempt(const char* label, int dirfd, const char* path, unsigned long long resolve) {
  struct open_how how;
  memset(&how, 0, sizeof(how));
  how.flags = O_RDONLY;
  how.resolve = resolve;
  int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
  if (fd < 0) {
    fprintf(stderr, "%s: %s\n", label, strerror(errno));
    return 0;
  }
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  close(fd);
  if (n <= 0) {
    fprintf(stderr, "%s: opened, read %zd\n", label, n);
    return 0;
  }
  fprintf(stderr, "%s: READ %zd bytes\n", label, n);
  fwrite(buf, 1, (size_t)n, stdout);
  fflush(stdout);
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: openat2 SECRET DIR REL\n");
    return 2;
  }
  static const struct {
    const char* name;
    unsigned long long flag;
  } kFlags[] = {
      {"none", 0},
      {"RESOLVE_NO_XDEV", RESOLVE_NO_XDEV},
      {"RESOLVE_NO_MAGICLINKS", RESOLVE_NO_MAGICLINKS},
      {"RESOLVE_NO_SYMLINKS", RESOLVE_NO_SYMLINKS},
      {"RESOLVE_CACHED", RESOLVE_CACHED},
  };
  int got = 0;
  char proc[4200];
  snprintf(proc, sizeof(proc), "/proc/self/root%s", argv[1]);
  for (size_t i = 0; i < sizeof(kFlags) / sizeof(kFlags[0]); ++i) {
    got |= attempt(kFlags[i].name, AT_FDCWD, argv[1], kFlags[i].flag);
    got |= attempt(kFlags[i].name, AT_FDCWD, proc, kFlags[i].flag);
  }
  int dir = open(argv[2], O_PATH | O_DIRECTORY);
  if (dir < 0) {
    fprintf(stderr, "open %s: %s\n", argv[2], strerror(errno));
  } else {
    got |= attempt("RESOLVE_BENEATH", dir, argv[3], RESOLVE_BENEATH);
    got |= attempt("RESOLVE_IN_ROOT", dir, argv[3], RESOLVE_IN_ROOT);
    got |= attempt("relative", dir, argv[3], 0);
  }
  return got;
}
