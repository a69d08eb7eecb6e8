// tiocsti: tries to push characters into its terminal's input queue with
// ioctl(0, TIOCSTI), as a sandboxed program would to type commands into the
// user's shell.
//
//   tiocsti [TEXT]
//
// Exit 0: refused with EPERM; 1: a character was pushed; 3: refused with
// another error (printed).
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

int main(int argc, char** argv) {
  const char* text = argc > 1 ? argv[1] : "x";
  int pushed = 0;
  for (const char* c = text; *c != '\0'; ++c) {
    if (ioctl(0, TIOCSTI, c) == 0) {
      ++pushed;
    } else {
      int e = errno;
      fprintf(stderr, "ioctl(TIOCSTI): %s\n", strerror(e));
      return e == EPERM ? 0 : 3;
    }
  }
  fprintf(stderr, "ioctl(TIOCSTI): pushed %d\n", pushed);
  return 1;
}
