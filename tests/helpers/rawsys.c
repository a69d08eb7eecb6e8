// rawsys: built static, so no dynamic loader or preloaded library stands
// between it and the kernel; reaches for a directory and a file with raw
// system calls.
//
//   rawsys DIR FILE PARENT
//
// open(FILE), openat(AT_FDCWD, FILE), getdents64 on DIR and on PARENT (whose
// names it prints). Whatever it reads goes to stdout. Exit 0: FILE and DIR
// were refused; 1: either was read; 2: usage.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct linux_dirent64 {
  unsigned long long d_ino;
  long long d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

static int readFd(const char* label, long fd) {
  if (fd < 0) {
    fprintf(stderr, "%s: %s\n", label, strerror(errno));
    return 0;
  }
  char buf[4096];
  long n = syscall(SYS_read, fd, buf, sizeof(buf));
  syscall(SYS_close, fd);
  if (n <= 0) {
    fprintf(stderr, "%s: opened, read %ld\n", label, n);
    return 0;
  }
  fprintf(stderr, "%s: READ %ld bytes\n", label, n);
  syscall(SYS_write, 1, buf, n);
  return 1;
}

// listDir prints the names in DIR; returns how many it found besides . and ..
static int listDir(const char* dir) {
  long fd = syscall(SYS_openat, AT_FDCWD, dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) {
    fprintf(stderr, "getdents64 %s: open: %s\n", dir, strerror(errno));
    return 0;
  }
  int count = 0;
  char buf[8192];
  for (;;) {
    long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
    if (n <= 0) {
      if (n < 0) {
        fprintf(stderr, "getdents64 %s: %s\n", dir, strerror(errno));
      }
      break;
    }
    for (long off = 0; off < n;) {
      struct linux_dirent64* d = (struct linux_dirent64*)(buf + off);
      if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0) {
        printf("entry %s/%s\n", dir, d->d_name);
        ++count;
      }
      off += d->d_reclen;
    }
  }
  fflush(stdout);
  syscall(SYS_close, fd);
  return count;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: rawsys DIR FILE PARENT\n");
    return 2;
  }
  int got = 0;
#ifdef SYS_open
  got |= readFd("SYS_open", syscall(SYS_open, argv[2], O_RDONLY));
#endif
  got |= readFd("SYS_openat", syscall(SYS_openat, AT_FDCWD, argv[2], O_RDONLY));
  got |= listDir(argv[1]) > 0;
  listDir(argv[3]);
  return got;
}
