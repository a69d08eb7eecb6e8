// Corpus replayer: a main() for fuzz targets built without libFuzzer (g++).
//
// Usage: <target>_replay PATH...   where each PATH is a corpus directory (every
// regular file in it, sorted, not recursive) or a single file. Runs each input
// through LLVMFuzzerTestOneInput once and prints how many it ran. Exits 1 when
// a PATH is missing, unreadable or an empty directory; a failing property
// aborts the process, so any crash shows as a non-zero exit too, after a line
// "replay: crashed on PATH" naming the input.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

// Present only in sanitizer builds: called when a sanitizer reports an error.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace {

// g_current is the input being run, NUL-terminated, for the crash note below.
char g_current[4096];

// noteCurrent writes "replay: crashed on PATH" to stderr. Called from signal
// handlers and the sanitizer death callback, so it uses only write(2).
void noteCurrent() {
  constexpr char kPrefix[] = "replay: crashed on ";
  ssize_t ignored = ::write(STDERR_FILENO, kPrefix, sizeof(kPrefix) - 1);
  size_t len = 0;
  while (len < sizeof(g_current) && g_current[len] != '\0') {
    ++len;
  }
  ignored = ::write(STDERR_FILENO, g_current, len);
  ignored = ::write(STDERR_FILENO, "\n", 1);
  (void)ignored;
}

void onFatalSignal(int sig) {
  noteCurrent();
  ::raise(sig);  // SA_RESETHAND restored the default action: die with SIG
}

// installCrashNotes names the failing input on a crash, without taking over
// a signal a sanitizer already handles.
void installCrashNotes() {
  if (__sanitizer_set_death_callback != nullptr) {
    __sanitizer_set_death_callback(noteCurrent);
  }
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) {
    struct sigaction old = {};
    if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) {
      continue;
    }
    struct sigaction sa = {};
    sa.sa_handler = onFatalSignal;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    ::sigaction(sig, &sa, nullptr);
  }
}

bool readFile(const std::filesystem::path& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return false;
  }
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

// collect appends the inputs named by ARG to OUT; false (with a message) when
// ARG is missing or an empty directory.
bool collect(const char* arg, std::vector<std::filesystem::path>* out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(arg);
  if (fs::is_regular_file(p, ec)) {
    out->push_back(p);
    return true;
  }
  if (!fs::is_directory(p, ec)) {
    std::fprintf(stderr, "replay: %s: no such file or directory\n", arg);
    return false;
  }
  std::vector<fs::path> files;
  for (fs::directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) {
      files.push_back(it->path());
    }
  }
  if (ec) {
    std::fprintf(stderr, "replay: %s: %s\n", arg, ec.message().c_str());
    return false;
  }
  if (files.empty()) {
    std::fprintf(stderr, "replay: %s: directory has no inputs\n", arg);
    return false;
  }
  std::sort(files.begin(), files.end());
  out->insert(out->end(), files.begin(), files.end());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const char* self = argc > 0 ? argv[0] : "replay";
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", self);
    return 2;
  }
  std::vector<std::filesystem::path> inputs;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    ok = collect(argv[i], &inputs) && ok;
  }
  if (!ok) {
    return 1;
  }
  installCrashNotes();
  size_t ran = 0;
  for (const auto& path : inputs) {
    std::string data;
    if (!readFile(path, &data)) {
      std::fprintf(stderr, "replay: %s: cannot read\n", path.c_str());
      return 1;
    }
    const std::string& name = path.native();
    const size_t n = std::min(name.size(), sizeof(g_current) - 1);
    std::copy_n(name.data(), n, g_current);
    g_current[n] = '\0';
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    ++ran;
  }
  std::printf("%s: ran %zu inputs\n", self, ran);
  return 0;
}
