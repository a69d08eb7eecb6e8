// Unit tests for policy/audit: JSON Lines encoding, decoding and the file and memory sinks.
#include "policy/audit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace guard::policy {
namespace {

using nlohmann::json;
using namespace std::chrono;

// TempDir is a mkdtemp directory under /tmp, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/guard-audit-test-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<std::string> readLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
  }
  return lines;
}

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// fixedTime is 2026-11-27T12:00:00.123456789Z.
system_clock::time_point fixedTime() {
  return sys_days{year{2026} / November / 27} + hours{12} + nanoseconds{123456789};
}

AuditEvent fullEvent() {
  AuditEvent e;
  e.ts = fixedTime();
  e.mono_ns = 987654321012;
  e.session = "0123456789abcdef0123456789abcdef";
  e.user = "alice";
  e.groups = {"eng", "sre"};
  e.host = "laptop-7";
  e.component = "proxy";
  e.surface = "network";
  e.action = "connect";
  e.target = "evil.example:443";
  e.decision = "deny";
  e.rule = {"org.network.deny.2", "org", "org.yaml:14:5"};
  e.reason = "domain not allowed";
  e.pid = 4242;
  e.details = {{"sni", "evil.example"}, {"exe", "/usr/bin/curl"}};
  return e;
}

TEST_CASE("encodeEvent writes the exact schema in key order", "[unit]") {
  CHECK(encodeEvent(fullEvent()) ==
        R"({"v":1,"ts":"2026-11-27T12:00:00.123456Z","mono_ns":987654321012,)"
        R"("session":"0123456789abcdef0123456789abcdef","user":"alice","groups":["eng","sre"],)"
        R"("host":"laptop-7","component":"proxy","surface":"network","action":"connect",)"
        R"("target":"evil.example:443","decision":"deny",)"
        R"("rule":{"id":"org.network.deny.2","layer":"org","source":"org.yaml:14:5"},)"
        R"("reason":"domain not allowed","pid":4242,)"
        R"("details":{"exe":"/usr/bin/curl","sni":"evil.example"}})");
}

TEST_CASE("encodeEvent omits empty optional fields", "[unit]") {
  AuditEvent e;
  e.ts = sys_days{year{1970} / January / 1};
  e.component = "cli";
  e.surface = "session";
  e.action = "exit";
  e.decision = "ok";
  e.rule.layer = "org";  // no id: the whole rule is omitted
  e.details = json::object();
  CHECK(encodeEvent(e) ==
        R"({"v":1,"ts":"1970-01-01T00:00:00.000000Z","mono_ns":0,"session":"","user":"",)"
        R"("groups":[],"host":"","component":"cli","surface":"session","action":"exit",)"
        R"("target":"","decision":"ok"})");
}

TEST_CASE("encodeEvent output has no newline and escapes control characters", "[unit]") {
  AuditEvent e = fullEvent();
  e.target = "line1\nline2\t\"quoted\"\\";
  const std::string line = encodeEvent(e);
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find(R"("target":"line1\nline2\t\"quoted\"\\")") != std::string::npos);
}

TEST_CASE("encodeEvent keeps a non-object details under value", "[unit]") {
  AuditEvent e = fullEvent();
  e.details = json::array({1, 2});
  const std::string line = encodeEvent(e);
  CHECK(line.find(R"("details":{"value":[1,2]})") != std::string::npos);
  REQUIRE(decodeEvent(line).ok());
}

TEST_CASE("encodeEvent truncates time before the epoch toward the past", "[unit]") {
  AuditEvent e;
  e.ts = system_clock::time_point{} - nanoseconds{1};
  CHECK(encodeEvent(e).find(R"("ts":"1969-12-31T23:59:59.999999Z")") != std::string::npos);
}

TEST_CASE("decodeEvent round trips encodeEvent exactly", "[unit]") {
  std::vector<AuditEvent> events;
  events.push_back(fullEvent());
  AuditEvent minimal;
  minimal.ts = fixedTime();
  minimal.mono_ns = -5;
  minimal.decision = "internal_error";
  events.push_back(minimal);
  AuditEvent nested = fullEvent();
  nested.pid = -1;
  nested.details = {{"a", {{"b", json::array({1, 2.5, nullptr, true, "x"})}}},
                    {"u", "\u00e9\u4e2d\U0001F600"}};
  events.push_back(nested);

  for (const AuditEvent& e : events) {
    const std::string line = encodeEvent(e);
    INFO(line);
    const Result<AuditEvent> decoded = decodeEvent(line);
    REQUIRE(decoded.ok());
    CHECK(encodeEvent(decoded.value()) == line);
    // Equal except for the sub-microsecond part of ts, which the encoding drops.
    AuditEvent expected = e;
    expected.ts = floor<microseconds>(e.ts);
    CHECK(decoded.value() == expected);
  }
}

TEST_CASE("decodeEvent accepts a trailing newline", "[unit]") {
  const std::string line = encodeEvent(fullEvent());
  const Result<AuditEvent> decoded = decodeEvent(line + "\n");
  REQUIRE(decoded.ok());
  CHECK(encodeEvent(decoded.value()) == line);
}

TEST_CASE("invalid UTF-8 input still encodes to valid JSON", "[unit]") {
  AuditEvent e = fullEvent();
  e.target = std::string("/tmp/\xff\xfe bad \xc3(");
  e.user = std::string("\x80");
  e.groups = {std::string("g\xe2\x82")};
  e.details = {{"path", std::string("\xc0\xaf")}};
  const std::string line = encodeEvent(e);
  const json parsed = json::parse(line, nullptr, false);  // nlohmann rejects invalid UTF-8
  REQUIRE_FALSE(parsed.is_discarded());
  CHECK(parsed["target"].get<std::string>().find("\xef\xbf\xbd") != std::string::npos);
  const Result<AuditEvent> decoded = decodeEvent(line);
  REQUIRE(decoded.ok());
  CHECK(encodeEvent(decoded.value()) == line);
}

TEST_CASE("decodeEvent rejects malformed lines", "[unit]") {
  const std::string good = encodeEvent(fullEvent());
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t pos = s.find(from);
    REQUIRE(pos != std::string::npos);
    s.replace(pos, from.size(), to);
    return s;
  };
  const std::vector<std::string> bad = {
      "",
      "garbage",
      "{",
      "[1,2,3]",
      "\"string\"",
      "42",
      "null",
      "{}",
      good + "x",
      with(R"("v":1,)", ""),                     // missing v
      with(R"("v":1)", R"("v":2)"),              // unknown version
      with(R"("v":1)", R"("v":1.0)"),            // float version
      with(R"("v":1)", R"("v":"1")"),            // string version
      with(R"("user":"alice",)", ""),            // missing required key
      with(R"("user":"alice")", R"("user":7)"),  // wrong type
      with(R"("groups":["eng","sre"])", R"("groups":["eng",1])"),
      with(R"("groups":["eng","sre"])", R"("groups":"eng")"),
      with(R"("mono_ns":987654321012)", R"("mono_ns":9223372036854775808)"),
      with(R"("mono_ns":987654321012)", R"("mono_ns":1e3)"),
      with(R"("pid":4242)", R"("pid":4294967296)"),
      with(R"("ts":"2026-11-27T12:00:00.123456Z")", R"("ts":"2026-11-27 12:00:00Z")"),
      with(R"("ts":"2026-11-27T12:00:00.123456Z")", R"("ts":"2026-02-30T12:00:00Z")"),
      with(R"("ts":"2026-11-27T12:00:00.123456Z")", R"("ts":"2026-11-27T12:00:00+01:00")"),
      with(R"("ts":"2026-11-27T12:00:00.123456Z")", R"("ts":"9999-11-27T12:00:00Z")"),
      with(R"("ts":"2026-11-27T12:00:00.123456Z")", R"("ts":"2026-11-27T12:00:00.Z")"),
      with(R"("ts":"2026-11-27T12:00:00.123456Z")", R"("ts":"2026-11-27T24:00:00Z")"),
      with(R"("reason")", R"("extra":1,"reason")"),  // unknown key
      with(R"("layer":"org")", R"("layer":null)"),
      good.substr(0, good.find(R"("details":)")) + R"("details":[1]})",  // non-object details
      std::string("{\"v\":1,\"user\":\"\xff\"}"),  // invalid UTF-8 in the input
  };
  for (const std::string& line : bad) {
    INFO(line);
    const Result<AuditEvent> decoded = decodeEvent(line);
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.error().code() == kAuditDecodeError);
    CHECK(decoded.error().message().rfind("audit line: ", 0) == 0);
  }
}

TEST_CASE("decodeEvent bounds details depth and line length", "[unit]") {
  const std::string good = encodeEvent(fullEvent());
  const std::string head = good.substr(0, good.find(R"("details":)"));
  std::string deep = head + R"("details":{"a":)";
  for (int i = 0; i < 100000; ++i) {
    deep += "[";
  }
  for (int i = 0; i < 100000; ++i) {
    deep += "]";
  }
  deep += "}}";
  CHECK_FALSE(decodeEvent(deep).ok());

  std::string shallow = head + R"("details":{"a":[[[]]]}})";
  CHECK(decodeEvent(shallow).ok());

  AuditEvent big = fullEvent();
  big.reason = std::string(kMaxAuditLineLen, 'r');
  CHECK_FALSE(decodeEvent(encodeEvent(big)).ok());
}

TEST_CASE("FileAuditSink creates parent directories and a 0600 file", "[unit]") {
  TempDir tmp;
  const std::string path = tmp.path() + "/a/b/audit.jsonl";
  auto sink = FileAuditSink::open(path);
  REQUIRE(sink.ok());
  CHECK(sink.value()->path() == path);
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(::stat((tmp.path() + "/a").c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 0077) == 0);
  REQUIRE(::stat((tmp.path() + "/a/b").c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 0077) == 0);
}

TEST_CASE("FileAuditSink flush makes emitted events visible in the file", "[unit]") {
  TempDir tmp;
  const std::string path = tmp.path() + "/audit.jsonl";
  auto sink = FileAuditSink::open(path);
  REQUIRE(sink.ok());
  CHECK(sink.value()->flush().ok());  // nothing emitted yet
  CHECK(readAll(path).empty());

  sink.value()->emit(fullEvent());
  REQUIRE(sink.value()->flush().ok());
  CHECK(readAll(path) == encodeEvent(fullEvent()) + "\n");

  AuditEvent second = fullEvent();
  second.decision = "allow";
  sink.value()->emit(second);
  REQUIRE(sink.value()->flush().ok());
  const std::vector<std::string> lines = readLines(path);
  REQUIRE(lines.size() == 2);
  CHECK(lines[1] == encodeEvent(second));
  CHECK_FALSE(sink.value()->failed());
}

TEST_CASE("FileAuditSink appends to an existing file and flushes on destruction", "[unit]") {
  TempDir tmp;
  const std::string path = tmp.path() + "/audit.jsonl";
  {
    std::ofstream out(path);
    out << "existing\n";
  }
  {
    auto sink = FileAuditSink::open(path);
    REQUIRE(sink.ok());
    sink.value()->emit(fullEvent());
  }
  const std::vector<std::string> lines = readLines(path);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "existing");
  CHECK(lines[1] == encodeEvent(fullEvent()));
}

TEST_CASE("FileAuditSink loses nothing under concurrent emitters and a tiny queue", "[unit]") {
  constexpr int kNumThreads = 4;
  constexpr int kPerThread = 20000;
  TempDir tmp;
  const std::string path = tmp.path() + "/audit.jsonl";
  auto opened = FileAuditSink::open(path, 64);
  REQUIRE(opened.ok());
  FileAuditSink& sink = *opened.value();

  std::vector<std::thread> threads;
  for (int t = 0; t < kNumThreads; ++t) {
    threads.emplace_back([&sink, t] {
      AuditEvent e = fullEvent();
      for (int i = 0; i < kPerThread; ++i) {
        e.target = "t" + std::to_string(t) + "-" + std::to_string(i);
        e.pid = t + 1;
        e.mono_ns = i;
        sink.emit(e);
        if (i % 5000 == 0) {
          (void)sink.flush();  // flushes racing with emitters must not stall or lose anything
        }
      }
    });
  }
  for (std::thread& th : threads) {
    th.join();
  }
  REQUIRE(sink.flush().ok());

  const std::vector<std::string> lines = readLines(path);
  REQUIRE(lines.size() == static_cast<size_t>(kNumThreads * kPerThread));
  std::map<int, int64_t> next;  // per thread (pid), the next expected sequence number
  std::set<std::string> targets;
  size_t num_bad = 0;
  for (const std::string& line : lines) {
    const Result<AuditEvent> e = decodeEvent(line);
    if (!e.ok()) {
      ++num_bad;
      continue;
    }
    if (e.value().mono_ns != next[e.value().pid]) {
      ++num_bad;  // per-thread order must be kept
    }
    next[e.value().pid] = e.value().mono_ns + 1;
    targets.insert(e.value().target);
  }
  CHECK(num_bad == 0);
  CHECK(targets.size() == static_cast<size_t>(kNumThreads * kPerThread));
  CHECK(readAll(path).back() == '\n');
}

TEST_CASE("FileAuditSink open on an unwritable path returns an error with errno", "[unit]") {
  auto sink = FileAuditSink::open("/proc/nonexistent/x");
  REQUIRE_FALSE(sink.ok());
  CHECK(sink.error().code() == ErrorCode::kIo);
  CHECK(sink.error().savedErrno() != 0);
  CHECK(sink.error().message().find("/proc/nonexistent") != std::string::npos);

  TempDir tmp;
  auto dir = FileAuditSink::open(tmp.path());  // a directory cannot be opened for writing
  REQUIRE_FALSE(dir.ok());
  CHECK(dir.error().savedErrno() == EISDIR);
}

TEST_CASE("FileAuditSink write failure is sticky and diverts events to stderr", "[unit]") {
  if (::access("/dev/full", W_OK) != 0) {
    WARN("SKIPPED: /dev/full not writable");
    return;
  }
  TempDir tmp;
  const std::string err_path = tmp.path() + "/stderr";
  const int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(err_fd >= 0);
  const int saved_stderr = ::dup(STDERR_FILENO);
  REQUIRE(saved_stderr >= 0);
  REQUIRE(::dup2(err_fd, STDERR_FILENO) == STDERR_FILENO);

  Error first;
  Error second;
  bool failed = false;
  {
    auto sink = FileAuditSink::open("/dev/full", 4);
    if (sink.ok()) {
      sink.value()->emit(fullEvent());
      first = sink.value()->flush();
      for (int i = 0; i < 20; ++i) {  // more than the queue holds: must not block forever
        AuditEvent e = fullEvent();
        e.mono_ns = i;
        sink.value()->emit(e);
      }
      second = sink.value()->flush();
      failed = sink.value()->failed();
    }
  }
  ::dup2(saved_stderr, STDERR_FILENO);
  ::close(saved_stderr);
  ::close(err_fd);

  CHECK(failed);
  CHECK(first.code() == ErrorCode::kIo);
  CHECK(first.savedErrno() == ENOSPC);
  CHECK(second.savedErrno() == ENOSPC);
  size_t num_diverted = 0;
  for (const std::string& line : readLines(err_path)) {
    if (line.rfind("guard-audit: {", 0) == 0) {
      CHECK(decodeEvent(line.substr(13)).ok());
      ++num_diverted;
    }
  }
  CHECK(num_diverted == 21);
}

TEST_CASE("MemoryAuditSink stores events in order from many threads", "[unit]") {
  MemoryAuditSink sink;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&sink] {
      for (int i = 0; i < 1000; ++i) {
        AuditEvent e;
        e.mono_ns = i;
        sink.emit(std::move(e));
      }
    });
  }
  for (std::thread& th : threads) {
    th.join();
  }
  CHECK(sink.flush().ok());
  CHECK(sink.size() == 4000);
  CHECK(sink.events().size() == 4000);
  CHECK(sink.takeEvents().size() == 4000);
  CHECK(sink.size() == 0);
}

TEST_CASE("defaultAuditPath follows XDG_STATE_HOME, then HOME", "[unit]") {
  const char* old_state = std::getenv("XDG_STATE_HOME");
  const char* old_home = std::getenv("HOME");
  const std::string saved_state = old_state != nullptr ? old_state : "";
  const std::string saved_home = old_home != nullptr ? old_home : "";

  ::setenv("XDG_STATE_HOME", "/state", 1);
  ::setenv("HOME", "/home/alice", 1);
  CHECK(defaultAuditPath() == "/state/guard/audit.jsonl");
  ::setenv("XDG_STATE_HOME", "relative", 1);  // invalid per XDG: ignored
  CHECK(defaultAuditPath() == "/home/alice/.local/state/guard/audit.jsonl");
  ::unsetenv("XDG_STATE_HOME");
  CHECK(defaultAuditPath() == "/home/alice/.local/state/guard/audit.jsonl");

  if (old_state != nullptr) {
    ::setenv("XDG_STATE_HOME", saved_state.c_str(), 1);
  }
  if (old_home != nullptr) {
    ::setenv("HOME", saved_home.c_str(), 1);
  } else {
    ::unsetenv("HOME");
  }
}

TEST_CASE("newSessionId returns 32 lowercase hex characters that differ", "[unit]") {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    const std::string id = newSessionId();
    REQUIRE(id.size() == 32);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    ids.insert(id);
  }
  CHECK(ids.size() == 100);
}

}  // namespace
}  // namespace guard::policy
