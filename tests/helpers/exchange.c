// exchange: swaps two names atomically with renameat2(RENAME_EXCHANGE).
//
//   exchange A B
//
// Exit 0: swapped; 1: refused (the error goes to stderr); 2: usage.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: exchange A B\n");
    return 2;
  }
  if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
    fprintf(stderr, "exchange %s %s: %s\n", argv[1], argv[2], strerror(errno));
    return 1;
  }
  return 0;
}
