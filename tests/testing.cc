// Shared helpers for guard's tests.
#include "tests/testing.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <catch2/catch.hpp>
#include <sstream>

extern char** environ;

namespace guard::testing {

namespace {
std::atomic<int> g_skipped{0};
}

void noteSkip(const char* file, const std::string& reason) {
  ++g_skipped;
  std::printf("SKIPPED: %s: %s\n", file, reason.c_str());
}

int skippedCount() { return g_skipped.load(); }

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr && base[0] == '/' ? base : "/tmp") +
                     "/guard-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& text, int mode) const {
  std::string p = path_ + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(p).parent_path());
  {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << text;
  }
  chmod(p.c_str(), static_cast<mode_t>(mode));
  return p;
}

std::vector<char*> cStrings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (const std::string& v : strings) {
    out.push_back(const_cast<char*>(v.c_str()));
  }
  out.push_back(nullptr);
  return out;
}

Run runProgram(const std::vector<std::string>& argv, const std::string& cwd,
               const std::vector<std::string>& env, int timeout_ms, std::string_view input) {
  Run r;
  int in[2];
  int out[2];
  int err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    r.err = "pipe failed";
    return r;
  }
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) {
      _exit(126);
    }
    std::vector<char*> args = cStrings(argv);
    std::vector<char*> envp = cStrings(env);
    if (env.empty()) {
      execvp(args[0], args.data());
    } else {
      execvpe(args[0], args.data(), envp.data());
    }
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  // stdin: INPUT, then end of file.
  signal(SIGPIPE, SIG_IGN);
  int in_fd = in[1];
  fcntl(in_fd, F_SETFL, O_NONBLOCK);
  if (input.empty()) {
    close(in_fd);
    in_fd = -1;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  struct pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in_fd, POLLOUT, 0}};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      kill(-pid, SIGKILL);
      r.err += "\n[test: killed at the deadline]\n";
      break;
    }
    fds[2].fd = in_fd;
    if (poll(fds, 3, static_cast<int>(left)) < 0) {
      continue;
    }
    if (in_fd >= 0 && fds[2].revents != 0) {
      ssize_t n = write(in_fd, input.data(), input.size());
      if (n > 0) {
        input.remove_prefix(static_cast<size_t>(n));
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        input = {};  // the reader is gone
      }
      if (input.empty()) {
        close(in_fd);
        in_fd = -1;
      }
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP)) != 0) {
        ssize_t n = read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0) {
          close(fds[i].fd);
          fds[i].fd = -1;
          --open_fds;
        } else {
          (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
        }
      }
    }
  }
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd >= 0) {
      close(fds[i].fd);
    }
  }
  if (in_fd >= 0) {
    close(in_fd);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string guardBinary() {
  const char* b = getenv("GUARD_BIN");
  return b != nullptr && b[0] != '\0' ? b : "build/guard";
}

std::string vmMissing() {
  if (access("/usr/lib/qemu/virtiofsd", X_OK) != 0) {
    return "virtiofsd is not installed (qemu-system-common; scripts/install-deps.sh)";
  }
  Run q = runProgram({"sh", "-c", "command -v qemu-system-x86_64"}, "",
                     {"PATH=/usr/local/bin:/usr/bin:/bin"});
  if (q.status != 0) {
    return "qemu-system-x86_64 is not installed (scripts/install-deps.sh)";
  }
  const char* env = getenv("GUARD_VM_DIR");
  std::string dir = env != nullptr && env[0] != '\0'
                        ? std::string(env)
                        : std::filesystem::absolute(guardBinary()).parent_path().string() + "/vm";
  if (access((dir + "/vmlinux").c_str(), R_OK) != 0 ||
      access((dir + "/initramfs.cpio").c_str(), R_OK) != 0) {
    return "the guest image is missing in " + dir + " (run scripts/vm-prepare.sh)";
  }
  return "";
}

std::string readFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string describe(const Run& r) {
  return "status " + std::to_string(r.status) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
}

void writeText(const std::string& path, const std::string& text, int mode) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  REQUIRE(chmod(path.c_str(), static_cast<mode_t>(mode)) == 0);
}

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

}  // namespace guard::testing
