// The test runner's main: Catch2, plus the closing "N passed, N failed" line
// CI reads, and a count of GUARD_SKIP markers.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "tests/testing.h"

namespace {

int g_passed = 0;
int g_failed = 0;

class Counter : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    if (stats.totals.assertions.failed > 0 || stats.totals.testCases.failed > 0) {
      ++g_failed;
    } else {
      ++g_passed;
    }
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(Counter)

int main(int argc, char** argv) {
  Catch::Session session;
  int rc = session.applyCommandLine(argc, argv);
  if (rc != 0) {
    return rc;
  }
  rc = session.run();
  std::printf("%d skipped\n", guard::testing::skippedCount());
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  if (g_passed + g_failed == 0) {
    return 1;  // a run that executed no test is not a pass
  }
  return rc == 0 && g_failed == 0 ? 0 : 1;
}
