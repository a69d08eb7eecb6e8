// iouring: tries io_uring with raw system calls (no liburing), and if the
// ring is granted, opens and reads PATH through it.
//
//   iouring PATH
//
// Exit 0: io_uring_setup was refused; 1: a ring was created (whatever it
// read goes to stdout); 2: usage.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif

struct ring {
  int fd;
  unsigned* sq_tail;
  unsigned* sq_mask;
  unsigned* sq_array;
  unsigned* cq_head;
  unsigned* cq_tail;
  unsigned* cq_mask;
  struct io_uring_cqe* cqes;
  struct io_uring_sqe* sqes;
};

// submit queues SQE and waits for its completion; returns its result.
static int submit(struct ring* r, const struct io_uring_sqe* sqe) {
  unsigned tail = *r->sq_tail;
  unsigned idx = tail & *r->sq_mask;
  r->sqes[idx] = *sqe;
  r->sq_array[idx] = idx;
  __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
  if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
    return -errno;
  }
  unsigned head = __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
  if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
    return -EAGAIN;
  }
  int res = r->cqes[head & *r->cq_mask].res;
  __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
  return res;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: iouring PATH\n");
    return 2;
  }
  struct io_uring_params p;
  memset(&p, 0, sizeof(p));
  int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
  if (fd < 0) {
    fprintf(stderr, "io_uring_setup: %s\n", strerror(errno));
    return 0;
  }
  fprintf(stderr, "io_uring_setup: GRANTED\n");
  struct ring r;
  r.fd = fd;
  size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  char* sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, IORING_OFF_SQ_RING);
  char* cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, IORING_OFF_CQ_RING);
  r.sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                MAP_SHARED, fd, IORING_OFF_SQES);
  if (sq == MAP_FAILED || cq == MAP_FAILED || r.sqes == MAP_FAILED) {
    fprintf(stderr, "mmap: %s\n", strerror(errno));
    return 1;
  }
  r.sq_tail = (unsigned*)(sq + p.sq_off.tail);
  r.sq_mask = (unsigned*)(sq + p.sq_off.ring_mask);
  r.sq_array = (unsigned*)(sq + p.sq_off.array);
  r.cq_head = (unsigned*)(cq + p.cq_off.head);
  r.cq_tail = (unsigned*)(cq + p.cq_off.tail);
  r.cq_mask = (unsigned*)(cq + p.cq_off.ring_mask);
  r.cqes = (struct io_uring_cqe*)(cq + p.cq_off.cqes);

  struct io_uring_sqe sqe;
  memset(&sqe, 0, sizeof(sqe));
  sqe.opcode = IORING_OP_OPENAT;
  sqe.fd = AT_FDCWD;
  sqe.addr = (unsigned long)argv[1];
  sqe.open_flags = O_RDONLY;
  int file = submit(&r, &sqe);
  if (file < 0) {
    fprintf(stderr, "IORING_OP_OPENAT: %s\n", strerror(-file));
    return 1;
  }
  static char buf[4096];
  memset(&sqe, 0, sizeof(sqe));
  sqe.opcode = IORING_OP_READ;
  sqe.fd = file;
  sqe.addr = (unsigned long)buf;
  sqe.len = sizeof(buf);
  int n = submit(&r, &sqe);
  if (n > 0) {
    fprintf(stderr, "IORING_OP_READ: READ %d bytes\n", n);
    fwrite(buf, 1, (size_t)n, stdout);
  } else {
    fprintf(stderr, "IORING_OP_READ: %s\n", strerror(-n));
  }
  return 1;
}
