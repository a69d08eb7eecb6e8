/* entry.c: the ELF entry point that makes libguard-interpose.so executable: the stand-in a denied
   MCP server is replaced by (exec.c execDenied, policy/wire.h 'D').

   The Makefile links the shim with -Wl,-e,guardDeniedEntry, and the .interp section below gives
   it a PT_INTERP, so the kernel starts it like a program (as glibc does for libc.so.6). The
   loader maps it, its dependencies and preloads and runs their initialisers (including this
   shim's constructor, harmless here), but libc's process start-up (__libc_start_main) never
   runs, so the entry point uses raw system calls only. Descriptor 0 is the supervisor's
   connection: read it until the supervisor closes it, then exit GUARD_WIRE_DENIED_STATUS. */
#include <errno.h>
#include <sys/syscall.h>

#include "policy/wire.h"

#if defined(__x86_64__)
#define GUARD_INTERP "/lib64/ld-linux-x86-64.so.2"
#elif defined(__aarch64__)
#define GUARD_INTERP "/lib/ld-linux-aarch64.so.1"
#else
#error "libguard-interpose.so: name this architecture's dynamic loader and system call"
#endif

/* The dynamic loader the kernel starts when the shim itself is exec'd. */
__attribute__((section(".interp"), used)) static const char kInterp[] = GUARD_INTERP;

/* rawSyscall3 is a system call with up to three arguments; returns the
   kernel's result (-errno on failure). */
static inline long rawSyscall3(long nr, long a, long b, long c) {
#if defined(__x86_64__)
  long ret;
  /* Safe: the x86-64 system call convention (rax, rdi, rsi, rdx; the
     kernel clobbers rcx and r11); no libc state is involved. */
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c)
                   : "rcx", "r11", "memory");
  return ret;
#else
  register long x8 __asm__("x8") = nr;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  /* Safe: the AArch64 system call convention (x8, x0-x2, result in x0);
     no libc state is involved. */
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
  return x0;
#endif
}

/* guardDeniedEntry is the entry point; the loader jumps here with the stack
   as the kernel set it up, so it never returns. On x86-64 the kernel aligns
   the stack to 16 bytes where a called function expects 16n+8:
   force_align_arg_pointer realigns it. */
#if defined(__x86_64__)
__attribute__((force_align_arg_pointer))
#endif
__attribute__((noreturn, used)) void
guardDeniedEntry(void) {
  char buf[512];
  for (;;) {
    /* Safe: read(2) into this frame's buffer; the cast passes its address
       as the register-sized integer the kernel takes. */
    long n = rawSyscall3(SYS_read, 0, (long)buf, sizeof(buf));
    if (n > 0 || n == -EINTR) {
      continue;
    }
    /* Safe: exit_group(2) ends every thread; there is only this one. */
    rawSyscall3(SYS_exit_group, GUARD_WIRE_DENIED_STATUS, 0, 0);
  }
}
