// The filesystem view mounted on its own (no jail), read from the host side.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>

#include "fusefs/view.h"
#include "policy/audit.h"
#include "policy/policy.h"
#include "tests/testing.h"

namespace guard::testing {
namespace {

policy::Policy viewPolicy(const std::string& base) {
  policy::Context ctx;
  ctx.user = "u";
  ctx.home = "/nonexistent-home";
  ctx.project = base + "/project";
  std::string y =
      "filesystem:\n"
      "  default: hidden\n"
      "  rules:\n"
      "    - read-only: [/etc, \"" + base + "/ro\"]\n"
      "    - read-write: \"{project}\"\n";
  auto layer = policy::parseLayer(y, "view.yaml", "view");
  REQUIRE(layer.ok());
  auto p = policy::compile({layer.value()}, ctx);
  REQUIRE(p.ok());
  return std::move(p.value());
}

TEST_CASE("view: an overlay replaces a host file, read-only, and hides the host's content",
          "[integration][view]") {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    GUARD_SKIP("/dev/fuse is not usable here");
  }
  TempDir dir;
  std::string mnt = dir.path() + "/mnt";
  REQUIRE(mkdir(mnt.c_str(), 0700) == 0);
  dir.write("ro/bundle.pem", "HOST BUNDLE\n");
  dir.write("project/file", "project\n");
  policy::Policy p = viewPolicy(dir.path());
  policy::MemoryAuditSink sink;
  fusefs::ViewOptions opts;
  opts.mountpoint = mnt;
  auto overlay = fusefs::makeOverlay(dir.path() + "/ro/bundle.pem", "SESSION CA\n", 0444);
  REQUIRE(overlay.ok());
  // An overlay must be sealed: a descriptor anyone could still write is refused.
  int unsealed = memfd_create("unsealed", MFD_CLOEXEC);
  REQUIRE(unsealed >= 0);
  opts.overlays = {{dir.path() + "/ro/bundle.pem", unsealed}};
  auto refused = fusefs::mountView(p, &sink, opts);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().message().find("not a sealed overlay") != std::string::npos);
  close(unsealed);
  CHECK_FALSE(fusefs::makeOverlay(dir.path() + "/ro/absent.pem", "", 0444).ok());

  opts.overlays = {{dir.path() + "/ro/bundle.pem", overlay.value()}};
  auto view = fusefs::mountView(p, &sink, opts);
  close(overlay.value());  // the view holds its own descriptor
  REQUIRE(view.ok());

  std::string seen = readFile(mnt + dir.path() + "/ro/bundle.pem");
  CHECK(seen == "HOST BUNDLE\nSESSION CA\n");
  CHECK(readFile(dir.path() + "/ro/bundle.pem") == "HOST BUNDLE\n");  // the host is untouched

  int fd = open((mnt + dir.path() + "/ro/bundle.pem").c_str(), O_WRONLY);
  CHECK(fd < 0);
  if (fd >= 0) {
    close(fd);
  }
  // The read-write project passes through; a hidden path is absent.
  CHECK(readFile(mnt + dir.path() + "/project/file") == "project\n");
  struct stat st {};
  CHECK(stat((mnt + "/root").c_str(), &st) != 0);
  view.value().reset();
}

// A view of BASE with a hidden glob and a hidden directory in the project.
policy::Policy hidingPolicy(const std::string& base) {
  policy::Context ctx;
  ctx.user = "u";
  ctx.home = "/nonexistent-home";
  ctx.project = base + "/project";
  std::string y =
      "filesystem:\n"
      "  default: hidden\n"
      "  rules:\n"
      "    - read-only: [/etc, \"" + base + "/ro\"]\n"
      "    - read-write: \"{project}\"\n"
      "    - hidden: [\"**/.env\", \"{project}/secret\"]\n";
  auto layer = policy::parseLayer(y, "view.yaml", "view");
  REQUIRE(layer.ok());
  auto p = policy::compile({layer.value()}, ctx);
  REQUIRE(p.ok());
  return std::move(p.value());
}

std::vector<std::string> listNames(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  REQUIRE(d != nullptr);
  while (struct dirent* e = readdir(d)) {
    names.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

TEST_CASE("view: a listing carries attributes and leaves hidden names and links to them out",
          "[integration][view]") {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    GUARD_SKIP("/dev/fuse is not usable here");
  }
  TempDir dir;
  std::string mnt = dir.path() + "/mnt";
  REQUIRE(mkdir(mnt.c_str(), 0700) == 0);
  dir.write("project/a.txt", "alpha\n");
  dir.write("project/b.txt", "bravo bravo\n");
  dir.write("project/.env", "TOKEN=1\n");
  dir.write("project/secret/x", "x\n");
  dir.write("project/sub/c.txt", "c\n");
  REQUIRE(link((dir.path() + "/project/.env").c_str(), (dir.path() + "/project/link").c_str()) ==
          0);
  policy::Policy p = hidingPolicy(dir.path());
  policy::MemoryAuditSink sink;
  fusefs::ViewOptions opts;
  opts.mountpoint = mnt;
  auto view = fusefs::mountView(p, &sink, opts);
  REQUIRE(view.ok());

  std::string proj = mnt + dir.path() + "/project";
  CHECK(listNames(proj) == std::vector<std::string>{".", "..", "a.txt", "b.txt", "sub"});
  for (const char* name : {"a.txt", "b.txt"}) {
    struct stat seen {}, host {};
    REQUIRE(stat((proj + "/" + name).c_str(), &seen) == 0);
    REQUIRE(stat((dir.path() + "/project/" + name).c_str(), &host) == 0);
    CHECK(seen.st_size == host.st_size);
    CHECK(seen.st_mtim.tv_sec == host.st_mtim.tv_sec);
    CHECK(seen.st_mode == host.st_mode);
  }
  struct stat st {};
  for (const char* name : {".env", "link", "secret", "secret/x"}) {
    errno = 0;
    CHECK(stat((proj + "/" + name).c_str(), &st) != 0);
    CHECK(errno == ENOENT);
  }
  // Listed twice: the second listing sees the same names.
  CHECK(listNames(proj) == std::vector<std::string>{".", "..", "a.txt", "b.txt", "sub"});
  CHECK(readFile(proj + "/sub/c.txt") == "c\n");
  view.value().reset();
}

// checkWritesLand writes through a view (with or without the kernel's
// writeback cache) the ways that differ under that cache.
void checkWritesLand(bool writeback_cache) {
  INFO("writeback cache " << writeback_cache);
  TempDir dir;
  std::string mnt = dir.path() + "/mnt";
  REQUIRE(mkdir(mnt.c_str(), 0700) == 0);
  std::string host_big = dir.write("project/big", std::string(10000, 'a'));
  std::string host_log = dir.write("project/log", "zero\n");
  policy::Policy p = hidingPolicy(dir.path());
  policy::MemoryAuditSink sink;
  fusefs::ViewOptions opts;
  opts.mountpoint = mnt;
  opts.writeback_cache = writeback_cache;
  auto view = fusefs::mountView(p, &sink, opts);
  REQUIRE(view.ok());
  std::string proj = mnt + dir.path() + "/project";

  // A write-only descriptor writing inside a page: the rest of the page
  // must survive (the writeback cache reads it first).
  int fd = open((proj + "/big").c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  CHECK(pwrite(fd, "XYZ", 3, 5000) == 3);
  CHECK(pwrite(fd, "END", 3, 10000) == 3);  // extends the file
  CHECK(close(fd) == 0);
  std::string want = std::string(10000, 'a') + "END";
  want.replace(5000, 3, "XYZ");
  CHECK(readFile(host_big) == want);
  CHECK(readFile(proj + "/big") == want);
  struct stat seen {}, host {};
  REQUIRE(stat((proj + "/big").c_str(), &seen) == 0);
  REQUIRE(stat(host_big.c_str(), &host) == 0);
  CHECK(seen.st_size == 10003);
  CHECK(host.st_size == 10003);
  CHECK(seen.st_mtim.tv_sec == host.st_mtim.tv_sec);

  // Appends from two descriptors interleave at the end, never overwrite.
  int a = open((proj + "/log").c_str(), O_WRONLY | O_APPEND);
  int b = open((proj + "/log").c_str(), O_WRONLY | O_APPEND);
  REQUIRE(a >= 0);
  REQUIRE(b >= 0);
  CHECK(write(a, "one\n", 4) == 4);
  CHECK(write(b, "two\n", 4) == 4);
  CHECK(write(a, "three\n", 6) == 6);
  CHECK(close(a) == 0);
  CHECK(close(b) == 0);
  CHECK(readFile(host_log) == "zero\none\ntwo\nthree\n");
  CHECK(readFile(proj + "/log") == "zero\none\ntwo\nthree\n");

  // A new file, created write-only and truncated through the view.
  fd = open((proj + "/new").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  CHECK(write(fd, "fresh", 5) == 5);
  CHECK(close(fd) == 0);
  CHECK(truncate((proj + "/new").c_str(), 3) == 0);
  CHECK(readFile(dir.path() + "/project/new") == "fre");
  CHECK(readFile(proj + "/new") == "fre");
  view.value().reset();
}

TEST_CASE("view: writes land on the host whole: write-only opens, partial pages, appends",
          "[integration][view]") {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    GUARD_SKIP("/dev/fuse is not usable here");
  }
  checkWritesLand(false);
  checkWritesLand(true);
}

TEST_CASE("view: read-only files refuse every write open and hidden names stay absent",
          "[integration][view]") {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    GUARD_SKIP("/dev/fuse is not usable here");
  }
  TempDir dir;
  std::string mnt = dir.path() + "/mnt";
  REQUIRE(mkdir(mnt.c_str(), 0700) == 0);
  std::string host_ro = dir.write("ro/file", "keep\n");
  std::string host_env = dir.write("project/.env", "TOKEN=1\n");
  policy::Policy p = hidingPolicy(dir.path());
  policy::MemoryAuditSink sink;
  fusefs::ViewOptions opts;
  opts.mountpoint = mnt;
  auto view = fusefs::mountView(p, &sink, opts);
  REQUIRE(view.ok());
  std::string ro = mnt + dir.path() + "/ro/file";
  CHECK(readFile(ro) == "keep\n");
  for (int flags : {O_WRONLY, O_RDWR, O_WRONLY | O_APPEND, O_RDWR | O_TRUNC}) {
    errno = 0;
    int fd = open(ro.c_str(), flags);
    CHECK(fd < 0);
    CHECK(errno == EROFS);
    if (fd >= 0) {
      close(fd);
    }
  }
  errno = 0;
  CHECK(truncate(ro.c_str(), 0) != 0);
  CHECK(errno == EROFS);
  CHECK(readFile(host_ro) == "keep\n");

  std::string env = mnt + dir.path() + "/project/.env";
  for (int flags : {O_RDONLY, O_WRONLY, O_RDWR | O_APPEND, O_WRONLY | O_CREAT}) {
    int fd = open(env.c_str(), flags, 0644);
    CHECK(fd < 0);
    if (fd >= 0) {
      close(fd);
    }
  }
  CHECK(readFile(host_env) == "TOKEN=1\n");
  view.value().reset();
}

}  // namespace
}  // namespace guard::testing

namespace guard::testing {
namespace {

TEST_CASE("view: files of different host filesystems never share an inode number; links do",
          "[integration][view]") {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    GUARD_SKIP("/dev/fuse is not usable here");
  }
  if (geteuid() != 0) {
    GUARD_SKIP("mounting the two tmpfs filesystems needs root");
  }
  TempDir dir;
  std::string mnt = dir.path() + "/mnt";
  REQUIRE(mkdir(mnt.c_str(), 0700) == 0);
  dir.write("project/.keep", "");
  // Two fresh tmpfs filesystems number their first files alike.
  std::string a = dir.path() + "/project/a";
  std::string b = dir.path() + "/project/b";
  REQUIRE(mkdir(a.c_str(), 0755) == 0);
  REQUIRE(mkdir(b.c_str(), 0755) == 0);
  REQUIRE(mount("tmpfs", a.c_str(), "tmpfs", 0, "size=1m") == 0);
  REQUIRE(mount("tmpfs", b.c_str(), "tmpfs", 0, "size=1m") == 0);
  dir.write("project/a/f", "A\n");
  dir.write("project/b/f", "B\n");
  REQUIRE(link((a + "/f").c_str(), (a + "/g").c_str()) == 0);
  struct stat ha {}, hb {};
  REQUIRE(stat((a + "/f").c_str(), &ha) == 0);
  REQUIRE(stat((b + "/f").c_str(), &hb) == 0);
  INFO("host inodes " << ha.st_ino << " and " << hb.st_ino);

  policy::Policy p = viewPolicy(dir.path());
  policy::MemoryAuditSink sink;
  fusefs::ViewOptions opts;
  opts.mountpoint = mnt;
  auto view = fusefs::mountView(p, &sink, opts);
  REQUIRE(view.ok());
  struct stat va {}, vb {}, vg {};
  CHECK(stat((mnt + a + "/f").c_str(), &va) == 0);
  CHECK(stat((mnt + b + "/f").c_str(), &vb) == 0);
  CHECK(stat((mnt + a + "/g").c_str(), &vg) == 0);
  CHECK(va.st_dev == vb.st_dev);  // the kernel gives every file the view's device
  CHECK(va.st_ino != vb.st_ino);
  CHECK(va.st_ino == vg.st_ino);  // a hard link is still one file
  view.value().reset();
  umount2(a.c_str(), MNT_DETACH);
  umount2(b.c_str(), MNT_DETACH);
}

}  // namespace
}  // namespace guard::testing
