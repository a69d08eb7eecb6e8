// Shared helpers for guard's tests: skips, temporary directories, processes.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace guard::testing {

// GUARD_SKIP prints a fixed "SKIPPED:" marker with REASON and returns from
// the test case (Catch2 2.x has no SKIP). The runner counts the markers.
#define GUARD_SKIP(reason)                         \
  do {                                             \
    ::guard::testing::noteSkip(__FILE__, (reason)); \
    return;                                        \
  } while (0)

void noteSkip(const char* file, const std::string& reason);
int skippedCount();

// TempDir is a mkdtemp directory under $TMPDIR (or /tmp), removed with its
// contents when it goes out of scope.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // write creates (or replaces) file NAME under the directory with TEXT and
  // returns its path. Parent directories are created.
  std::string write(const std::string& name, const std::string& text, int mode = 0644) const;

 private:
  std::string path_;
};

// cStrings is STRINGS as the null-terminated char* array execve wants; it
// points into STRINGS, which must outlive it.
std::vector<char*> cStrings(const std::vector<std::string>& strings);

// Run is what runProgram reports: exit status (128+N for signal N) and output.
struct Run {
  int status = -1;
  std::string out;
  std::string err;
};

// runProgram runs ARGV (argv[0] looked up in PATH) in a process group of its
// own with CWD and ENV (when not empty: the whole environment), feeds INPUT
// to its stdin and closes it, kills the group after TIMEOUT_MS, and
// captures stdout and stderr.
Run runProgram(const std::vector<std::string>& argv, const std::string& cwd = "",
               const std::vector<std::string>& env = {}, int timeout_ms = 20000,
               std::string_view input = {});

// contains says whether HAYSTACK holds NEEDLE.
bool contains(const std::string& haystack, const std::string& needle);

// describe renders R for a failure message: status, stdout, stderr.
std::string describe(const Run& r);

// writeText creates (or replaces) PATH with TEXT and MODE, parents included.
void writeText(const std::string& path, const std::string& text, int mode = 0644);

// exists says whether PATH names anything (a dangling symlink included).
bool exists(const std::string& path);

// guardBinary is the guard under test: $GUARD_BIN, else build/guard.
std::string guardBinary();

// vmMissing says why VM mode cannot run here (QEMU, virtiofsd or the guest
// image missing), or "" when it can.
std::string vmMissing();

// GUARD_VM_REQUIRE skips outside CI and fails on CI when VM mode cannot run.
#define GUARD_VM_REQUIRE()                                     \
  do {                                                         \
    std::string missing_ = ::guard::testing::vmMissing();      \
    if (!missing_.empty()) {                                   \
      const char* ci_ = getenv("CI");                          \
      if (ci_ != nullptr && ci_[0] != '\0') {                  \
        FAIL("VM mode cannot run on CI: " << missing_);        \
      }                                                        \
      GUARD_SKIP(missing_);                                    \
    }                                                          \
  } while (0)

// readFile returns the whole file, or "" if it cannot be read.
std::string readFile(const std::string& path);

}  // namespace guard::testing
