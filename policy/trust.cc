// Project-layer trust: approved (path, content hash) pairs in the user's state directory.
#include "policy/trust.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace guard::policy {
namespace {

std::string stateDir() {
  if (const char* x = getenv("XDG_STATE_HOME"); x != nullptr && x[0] == '/') {
    return std::string(x) + "/guard";
  }
  if (const char* h = getenv("HOME"); h != nullptr && h[0] == '/') {
    return std::string(h) + "/.local/state/guard";
  }
  return "";
}

Result<std::string> readAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    int e = errno;
    return Error(ErrorCode::kIo, path + ": error: cannot read: " + strerror(e), e);
  }
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

std::string sha256Hex(std::string_view data) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(data.data()), data.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * SHA256_DIGEST_LENGTH);
  for (uint8_t b : digest) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string trustStorePath() {
  std::string d = stateDir();
  return d.empty() ? "" : d + "/trusted-projects";
}

bool isTrusted(const std::string& path, const std::string& sha256) {
  std::ifstream f(trustStorePath());
  std::string line;
  std::string want = sha256 + " " + path;
  while (std::getline(f, line)) {
    if (line == want) {
      return true;
    }
  }
  return false;
}

Result<std::string> trustFile(const std::string& path) {
  auto text = readAll(path);
  if (!text.ok()) {
    return text.error();
  }
  std::string store = trustStorePath();
  if (store.empty()) {
    return Error(ErrorCode::kIo, "error: no home directory to keep the trust store in");
  }
  for (size_t i = 1; i < store.size(); ++i) {
    if (store[i] == '/') {
      mkdir(store.substr(0, i).c_str(), 0700);  // EEXIST is fine
    }
  }
  std::string hash = sha256Hex(text.value());
  if (isTrusted(path, hash)) {
    return hash;
  }
  int fd = open(store.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    return Error(ErrorCode::kIo, store + ": error: cannot write: " + strerror(e), e);
  }
  std::string line = hash + " " + path + "\n";
  ssize_t n = write(fd, line.data(), line.size());
  int e = errno;
  close(fd);
  if (n != static_cast<ssize_t>(line.size())) {
    return Error(ErrorCode::kIo, store + ": error: cannot write: " + strerror(e), e);
  }
  return hash;
}

}  // namespace guard::policy
