// ptrace_attach: tries PTRACE_ATTACH and PTRACE_SEIZE on each PID given.
//
//   ptrace_attach PID...
//
// Exit 0: every attach was refused; 1: one succeeded (it is detached
// again); 2: usage.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/wait.h>

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: ptrace_attach PID...\n");
    return 2;
  }
  int got = 0;
  for (int i = 1; i < argc; ++i) {
    pid_t pid = (pid_t)atoi(argv[i]);
    if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) {
      fprintf(stderr, "PTRACE_ATTACH %d: ATTACHED\n", pid);
      waitpid(pid, NULL, __WALL);
      ptrace(PTRACE_DETACH, pid, 0, 0);
      got = 1;
    } else {
      fprintf(stderr, "PTRACE_ATTACH %d: %s\n", pid, strerror(errno));
    }
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
      fprintf(stderr, "PTRACE_SEIZE %d: ATTACHED\n", pid);
      ptrace(PTRACE_DETACH, pid, 0, 0);
      got = 1;
    } else {
      fprintf(stderr, "PTRACE_SEIZE %d: %s\n", pid, strerror(errno));
    }
  }
  return got;
}
