// rawnet: built static, so no dynamic loader, preloaded library or proxy
// variable stands between it and the kernel; connects with raw system calls
// to an IPv4 address and sends one HTTP request.
//
//   rawnet ADDR PORT HOST PATH
//
// Prints what it receives. Exit 0: the connection was refused or reset
// before any response; 1: a response arrived; 2: usage.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: rawnet ADDR PORT HOST PATH\n");
    return 2;
  }
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) {
    return 2;
  }
  long fd = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || syscall(SYS_connect, fd, &a, sizeof(a)) != 0) {
    perror("rawnet: connect");
    return 0;
  }
  char req[512];
  int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                   argv[4], argv[3]);
  syscall(SYS_write, fd, req, (size_t)n);
  char buf[4096];
  long got = syscall(SYS_read, fd, buf, sizeof(buf));
  if (got <= 0) {
    fprintf(stderr, "rawnet: no response\n");
    return 0;
  }
  fwrite(buf, 1, (size_t)got, stdout);
  return 1;
}
