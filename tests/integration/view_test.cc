// The filesystem view mounted on its own (no jail), read from the host side.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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
  opts.overlays = {{dir.path() + "/ro/bundle.pem", "HOST BUNDLE\nSESSION CA\n"}};
  auto view = fusefs::mountView(p, &sink, opts);
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

}  // namespace
}  // namespace guard::testing
