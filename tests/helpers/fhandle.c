// fhandle: tries to reach a file through file handles instead of paths.
//
//   fhandle SECRET VISIBLE_DIR REL [TYPE:HEX]
//
// 1. name_to_handle_at(SECRET) then open_by_handle_at;
// 2. name_to_handle_at(VISIBLE_DIR), open_by_handle_at it as a directory,
//    then openat(dir, REL);
// 3. open_by_handle_at with a handle the host computed (TYPE:HEX), against
//    a descriptor of "/" and of VISIBLE_DIR.
// Whatever it reads goes to stdout. Exit 0: every attempt was refused;
// 1: something was read; 2: usage.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int dump(const char* label, int fd) {
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

static struct file_handle* handleOf(const char* path) {
  struct file_handle* fh = malloc(sizeof(*fh) + MAX_HANDLE_SZ);
  int mount_id = 0;
  fh->handle_bytes = MAX_HANDLE_SZ;
  if (name_to_handle_at(AT_FDCWD, path, fh, &mount_id, 0) != 0) {
    fprintf(stderr, "name_to_handle_at(%s): %s\n", path, strerror(errno));
    free(fh);
    return NULL;
  }
  return fh;
}

static int byHandle(const char* label, int mount_fd, struct file_handle* fh, int flags) {
  int fd = open_by_handle_at(mount_fd, fh, flags);
  if (fd < 0) {
    fprintf(stderr, "%s: open_by_handle_at: %s\n", label, strerror(errno));
  }
  return fd;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: fhandle SECRET VISIBLE_DIR REL [TYPE:HEX]\n");
    return 2;
  }
  int got = 0;
  int root = open("/", O_RDONLY | O_DIRECTORY);
  int vis = open(argv[2], O_RDONLY | O_DIRECTORY);

  struct file_handle* fh = handleOf(argv[1]);
  if (fh != NULL) {
    int fd = byHandle("secret handle", root, fh, O_RDONLY);
    if (fd >= 0) {
      got |= dump("secret handle", fd);
    }
  }
  fh = handleOf(argv[2]);
  if (fh != NULL) {
    int dfd = byHandle("dir handle", root, fh, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      int fd = openat(dfd, argv[3], O_RDONLY);
      if (fd >= 0) {
        got |= dump("dir handle + relative", fd);
      } else {
        fprintf(stderr, "openat(dir handle, %s): %s\n", argv[3], strerror(errno));
      }
    }
  }
  if (argc > 4) {
    unsigned type = 0;
    const char* hex = strchr(argv[4], ':');
    if (hex == NULL || sscanf(argv[4], "%u", &type) != 1) {
      return 2;
    }
    ++hex;
    size_t len = strlen(hex) / 2;
    struct file_handle* h = malloc(sizeof(*h) + len + 1);
    h->handle_bytes = (unsigned)len;
    h->handle_type = (int)type;
    for (size_t i = 0; i < len; ++i) {
      unsigned b = 0;
      sscanf(hex + 2 * i, "%2x", &b);
      h->f_handle[i] = (unsigned char)b;
    }
    for (int i = 0; i < 2; ++i) {
      int mfd = i == 0 ? root : vis;
      int fd = byHandle(i == 0 ? "host handle via /" : "host handle via dir", mfd, h, O_RDONLY);
      if (fd >= 0) {
        got |= dump("host handle", fd);
      }
    }
  }
  return got;
}
