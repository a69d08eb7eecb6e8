// Credential sources: environment, file, command.
#include "cli/credentials.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "policy/document.h"

namespace guard::cli {
namespace {

constexpr size_t kMaxSecret = 64 * 1024;

void chomp(std::string* s) {
  if (!s->empty() && s->back() == '\n') {
    s->pop_back();
  }
  if (!s->empty() && s->back() == '\r') {
    s->pop_back();
  }
}

// runCommand returns ARGV's standard output, or an error after 10 seconds,
// on a non-zero exit or on more than kMaxSecret bytes.
Result<std::string> runCommand(const std::vector<std::string>& argv) {
  int out[2];
  if (argv.empty() || pipe2(out, O_CLOEXEC) != 0) {
    return Error(ErrorCode::kIo, "cannot run an empty command");
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    std::vector<char*> args;
    for (const std::string& a : argv) {
      args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  if (pid < 0) {
    close(out[0]);
    return Error(ErrorCode::kIo, "fork failed");
  }
  std::string value;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool timed_out = false;
  for (;;) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    pollfd p{out[0], POLLIN, 0};
    if (left <= 0 || poll(&p, 1, left) == 0) {
      timed_out = true;
      break;
    }
    char buf[4096];
    ssize_t n = read(out[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    value.append(buf, static_cast<size_t>(n));
    if (value.size() > kMaxSecret) {
      break;
    }
  }
  close(out[0]);
  if (timed_out || value.size() > kMaxSecret) {
    kill(pid, SIGKILL);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (timed_out) {
    return Error(ErrorCode::kIo, "`" + argv[0] + "` did not finish within 10 s");
  }
  if (value.size() > kMaxSecret) {
    return Error(ErrorCode::kIo, "`" + argv[0] + "` printed more than 64 KiB");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error(ErrorCode::kIo, "`" + argv[0] + "` failed (status " + std::to_string(status) + ")");
  }
  chomp(&value);
  return value;
}

}  // namespace

Result<Credentials> readCredentials(const policy::Policy& policy) {
  Credentials out;
  for (const policy::Credential* c : policy.credentials()) {
    proxy::Secret s;
    s.name = c->name;
    s.header = c->header;
    s.header_template = c->header_template;
    std::string where;
    switch (c->source.kind) {
      case policy::CredentialSource::Kind::kEnv: {
        where = "environment variable " + c->source.value;
        const char* v = getenv(c->source.value.c_str());
        s.value = v != nullptr ? v : "";
        break;
      }
      case policy::CredentialSource::Kind::kFile: {
        std::string path = policy::credentialFile(c->source, policy.context());
        where = "file " + (path.empty() ? c->source.value + " (no home directory)" : path);
        std::ifstream f(path, std::ios::binary);
        if (!path.empty() && f) {
          std::ostringstream ss;
          ss << f.rdbuf();
          s.value = ss.str().substr(0, kMaxSecret);
          chomp(&s.value);
        }
        break;
      }
      case policy::CredentialSource::Kind::kCommand: {
        where = "command " + (c->source.argv.empty() ? std::string("?") : c->source.argv[0]);
        auto v = runCommand(c->source.argv);
        if (!v.ok() && c->required) {
          return Error(ErrorCode::kNotFound, "credential " + c->name + ": " + v.error().message());
        }
        s.value = v.ok() ? v.value() : "";
        break;
      }
    }
    if (s.value.empty()) {
      if (c->required) {
        return Error(ErrorCode::kNotFound,
                     "credential " + c->name + " is required but its source (" + where +
                         ") is missing or empty");
      }
      out.missing.push_back(c->name);
    }
    s.placeholder = proxy::makePlaceholder(c->name, s.value);
    if (!c->variable.empty()) {
      out.variables.emplace_back(c->variable, s.placeholder);
    }
    out.secrets.push_back(std::move(s));
  }
  return out;
}

}  // namespace guard::cli
