// Audit events: JSON Lines encoder/decoder, the file and memory sinks, session ids.
#include "policy/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <limits>
#include <utility>

namespace guard::policy {
namespace {

using nlohmann::json;
using std::chrono::system_clock;

constexpr std::string_view kStderrPrefix = "guard-audit: ";

// appendJsonString appends |s| as a JSON string. Plain printable ASCII takes a fast path;
// everything else goes through nlohmann, which escapes and replaces invalid UTF-8 by U+FFFD.
void appendJsonString(std::string* out, std::string_view s) {
  bool plain = true;
  for (unsigned char c : s) {
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      plain = false;
      break;
    }
  }
  if (plain) {
    out->push_back('"');
    out->append(s);
    out->push_back('"');
    return;
  }
  out->append(json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace));
}

// appendTimestamp appends |tp| as "YYYY-MM-DDTHH:MM:SS.ffffffZ".
void appendTimestamp(std::string* out, system_clock::time_point tp) {
  using namespace std::chrono;
  const auto us = floor<microseconds>(tp);
  const auto day = floor<days>(us);
  const year_month_day ymd{day};
  const hh_mm_ss<microseconds> tod{us - day};
  char buf[48];
  const int n = std::snprintf(
      buf, sizeof(buf), "\"%04d-%02u-%02uT%02d:%02d:%02d.%06" PRId64 "Z\"",
      static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
      static_cast<unsigned>(ymd.day()), static_cast<int>(tod.hours().count()),
      static_cast<int>(tod.minutes().count()), static_cast<int>(tod.seconds().count()),
      static_cast<int64_t>(tod.subseconds().count()));
  out->append(buf, static_cast<size_t>(n));
}

Error decodeError(const std::string& what) {
  return Error(kAuditDecodeError, "audit line: " + what);
}

// parseDigits reads exactly |len| decimal digits of |s| at |*pos|.
bool parseDigits(std::string_view s, size_t* pos, size_t len, int* out) {
  if (*pos + len > s.size()) {
    return false;
  }
  int v = 0;
  for (size_t i = 0; i < len; ++i) {
    const char c = s[*pos + i];
    if (c < '0' || c > '9') {
      return false;
    }
    v = v * 10 + (c - '0');
  }
  *pos += len;
  *out = v;
  return true;
}

bool expectChar(std::string_view s, size_t* pos, char a, char b) {
  if (*pos >= s.size() || (s[*pos] != a && s[*pos] != b)) {
    return false;
  }
  ++*pos;
  return true;
}

// parseTimestamp parses RFC 3339 UTC "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z" (RFC 3339 section 5.6,
// restricted to offset Z, no leap second). Fails outside the range of system_clock.
bool parseTimestamp(std::string_view s, system_clock::time_point* out) {
  using namespace std::chrono;
  size_t pos = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!parseDigits(s, &pos, 4, &y) || !expectChar(s, &pos, '-', '-') ||
      !parseDigits(s, &pos, 2, &mo) || !expectChar(s, &pos, '-', '-') ||
      !parseDigits(s, &pos, 2, &d) || !expectChar(s, &pos, 'T', 't') ||
      !parseDigits(s, &pos, 2, &h) || !expectChar(s, &pos, ':', ':') ||
      !parseDigits(s, &pos, 2, &mi) || !expectChar(s, &pos, ':', ':') ||
      !parseDigits(s, &pos, 2, &sec)) {
    return false;
  }
  int64_t frac_ns = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t num_digits = 0;
    int64_t scale = 100000000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (++num_digits > 9) {
        return false;
      }
      frac_ns += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (num_digits == 0) {
      return false;
    }
  }
  if (!expectChar(s, &pos, 'Z', 'z') || pos != s.size()) {
    return false;
  }
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 59) {
    return false;
  }
  const int64_t secs =
      sys_days{ymd}.time_since_epoch().count() * int64_t{86400} + h * 3600 + mi * 60 + sec;
  // Stay inside system_clock's nanosecond range, so the conversion below cannot overflow.
  constexpr int64_t kMaxSecs = duration_cast<seconds>(system_clock::duration::max()).count() - 1;
  if (secs > kMaxSecs || secs < -kMaxSecs) {
    return false;
  }
  *out = system_clock::time_point{
      duration_cast<system_clock::duration>(seconds{secs} + nanoseconds{frac_ns})};
  return true;
}

// detailsDepth returns the nesting depth of |j| (a scalar is 0), without recursion.
int detailsDepth(const json& root) {
  std::vector<std::pair<const json*, int>> stack{{&root, 0}};
  int max_depth = 0;
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    if (!node->is_structured()) {
      continue;
    }
    ++depth;
    if (depth > max_depth) {
      max_depth = depth;
      if (max_depth > kMaxAuditDetailsDepth) {
        return max_depth;
      }
    }
    for (const auto& child : *node) {
      stack.emplace_back(&child, depth);
    }
  }
  return max_depth;
}

bool getString(const json& j, const char* key, std::string* out, Error* err) {
  const auto it = j.find(key);
  if (it == j.end()) {
    *err = decodeError(std::string("missing key \"") + key + "\"");
    return false;
  }
  if (!it->is_string()) {
    *err = decodeError(std::string("\"") + key + "\" is not a string");
    return false;
  }
  *out = it->get_ref<const std::string&>();
  return true;
}

// getInt64 reads an integer JSON number into [lo, hi].
bool getInt64(const json& value, const char* key, int64_t lo, int64_t hi, int64_t* out,
              Error* err) {
  bool in_range = false;
  int64_t v = 0;
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    in_range = u <= static_cast<uint64_t>(hi);
    v = static_cast<int64_t>(u);
  } else if (value.is_number_integer()) {
    v = value.get<int64_t>();
    in_range = v >= lo && v <= hi;
  } else {
    *err = decodeError(std::string("\"") + key + "\" is not an integer");
    return false;
  }
  if (!in_range) {
    *err = decodeError(std::string("\"") + key + "\" is out of range");
    return false;
  }
  *out = v;
  return true;
}

bool isKnownKey(const std::string& key) {
  static constexpr std::string_view kKeys[] = {
      "v",       "ts",     "mono_ns", "session",  "user", "groups", "host", "component",
      "surface", "action", "target",  "decision", "rule", "reason", "pid",  "details"};
  for (std::string_view k : kKeys) {
    if (key == k) {
      return true;
    }
  }
  return false;
}

// writeAll writes |len| bytes of |data| to |fd|, retrying EINTR and short writes. Returns 0 or
// the errno of the failing call; |*out_done| is the number of bytes written either way.
int writeAll(int fd, const char* data, size_t len, size_t* out_done) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::write(fd, data + done, len - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int saved = errno;
      *out_done = done;
      return saved;
    }
    if (n == 0) {  // should not happen for len > 0; avoid spinning
      *out_done = done;
      return EIO;
    }
    done += static_cast<size_t>(n);
  }
  *out_done = done;
  return 0;
}

void writeStderr(std::string_view text) {
  size_t done = 0;
  (void)writeAll(STDERR_FILENO, text.data(), text.size(), &done);  // last resort: nothing left
}

// makeParentDirs creates the missing parent directories of |path| with mode 0700. Existing
// directories are left as they are.
Error makeParentDirs(const std::string& path) {
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    if (path[pos - 1] == '/') {
      continue;  // "a//b": this prefix was handled at the previous slash
    }
    const std::string dir = path.substr(0, pos);
    struct stat st;
    if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      continue;
    }
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      const int saved = errno;
      return Error(ErrorCode::kIo, "create audit directory " + dir, saved);
    }
  }
  return Error();
}

}  // namespace

std::string encodeEvent(const AuditEvent& event) {
  std::string out;
  out.reserve(256 + event.target.size() + event.reason.size());
  out += "{\"v\":";
  out += std::to_string(kAuditSchemaVersion);
  out += ",\"ts\":";
  appendTimestamp(&out, event.ts);
  out += ",\"mono_ns\":";
  out += std::to_string(event.mono_ns);
  out += ",\"session\":";
  appendJsonString(&out, event.session);
  out += ",\"user\":";
  appendJsonString(&out, event.user);
  out += ",\"groups\":[";
  for (size_t i = 0; i < event.groups.size(); ++i) {
    if (i != 0) {
      out.push_back(',');
    }
    appendJsonString(&out, event.groups[i]);
  }
  out += "],\"host\":";
  appendJsonString(&out, event.host);
  out += ",\"component\":";
  appendJsonString(&out, event.component);
  out += ",\"surface\":";
  appendJsonString(&out, event.surface);
  out += ",\"action\":";
  appendJsonString(&out, event.action);
  out += ",\"target\":";
  appendJsonString(&out, event.target);
  out += ",\"decision\":";
  appendJsonString(&out, event.decision);
  if (!event.rule.id.empty()) {
    out += ",\"rule\":{\"id\":";
    appendJsonString(&out, event.rule.id);
    out += ",\"layer\":";
    appendJsonString(&out, event.rule.layer);
    out += ",\"source\":";
    appendJsonString(&out, event.rule.source);
    out.push_back('}');
  }
  if (!event.reason.empty()) {
    out += ",\"reason\":";
    appendJsonString(&out, event.reason);
  }
  if (event.pid != 0) {
    out += ",\"pid\":";
    out += std::to_string(event.pid);
  }
  if (!event.details.is_null() && !(event.details.is_object() && event.details.empty())) {
    out += ",\"details\":";
    if (event.details.is_object()) {
      out += event.details.dump(-1, ' ', false, json::error_handler_t::replace);
    } else {
      out += json{{"value", event.details}}.dump(-1, ' ', false, json::error_handler_t::replace);
    }
  }
  out.push_back('}');
  return out;
}

Result<AuditEvent> decodeEvent(std::string_view line) {
  if (!line.empty() && line.back() == '\n') {
    line.remove_suffix(1);
  }
  if (line.size() > kMaxAuditLineLen) {
    return decodeError("longer than " + std::to_string(kMaxAuditLineLen) + " bytes");
  }
  // Trust boundary: |line| is untrusted; parse without exceptions, then check every type.
  const json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return decodeError("not valid JSON");
  }
  if (!j.is_object()) {
    return decodeError("not a JSON object");
  }
  for (const auto& item : j.items()) {
    if (!isKnownKey(item.key())) {
      return decodeError("unknown key \"" + item.key() + "\"");
    }
  }
  Error err;
  AuditEvent event;
  const auto v = j.find("v");
  if (v == j.end()) {
    return decodeError("missing key \"v\"");
  }
  int64_t version = 0;
  if (!getInt64(*v, "v", 0, std::numeric_limits<int64_t>::max(), &version, &err)) {
    return err;
  }
  if (version != kAuditSchemaVersion) {
    return decodeError("unsupported schema version " + std::to_string(version));
  }
  std::string ts;
  if (!getString(j, "ts", &ts, &err)) {
    return err;
  }
  if (!parseTimestamp(ts, &event.ts)) {
    return decodeError("\"ts\" is not an RFC 3339 UTC timestamp");
  }
  const auto mono = j.find("mono_ns");
  if (mono == j.end()) {
    return decodeError("missing key \"mono_ns\"");
  }
  if (!getInt64(*mono, "mono_ns", std::numeric_limits<int64_t>::min(),
                std::numeric_limits<int64_t>::max(), &event.mono_ns, &err)) {
    return err;
  }
  if (!getString(j, "session", &event.session, &err) || !getString(j, "user", &event.user, &err)) {
    return err;
  }
  const auto groups = j.find("groups");
  if (groups == j.end()) {
    return decodeError("missing key \"groups\"");
  }
  if (!groups->is_array()) {
    return decodeError("\"groups\" is not an array");
  }
  for (const auto& g : *groups) {
    if (!g.is_string()) {
      return decodeError("\"groups\" has a non-string element");
    }
    event.groups.push_back(g.get<std::string>());
  }
  if (!getString(j, "host", &event.host, &err) ||
      !getString(j, "component", &event.component, &err) ||
      !getString(j, "surface", &event.surface, &err) ||
      !getString(j, "action", &event.action, &err) ||
      !getString(j, "target", &event.target, &err) ||
      !getString(j, "decision", &event.decision, &err)) {
    return err;
  }
  if (const auto rule = j.find("rule"); rule != j.end()) {
    if (!rule->is_object()) {
      return decodeError("\"rule\" is not an object");
    }
    for (const auto& item : rule->items()) {
      if (item.key() != "id" && item.key() != "layer" && item.key() != "source") {
        return decodeError("unknown key \"rule." + item.key() + "\"");
      }
    }
    if (!getString(*rule, "id", &event.rule.id, &err) ||
        !getString(*rule, "layer", &event.rule.layer, &err) ||
        !getString(*rule, "source", &event.rule.source, &err)) {
      return err;
    }
  }
  if (j.contains("reason") && !getString(j, "reason", &event.reason, &err)) {
    return err;
  }
  if (const auto pid = j.find("pid"); pid != j.end()) {
    int64_t p = 0;
    if (!getInt64(*pid, "pid", std::numeric_limits<int>::min(), std::numeric_limits<int>::max(), &p,
                  &err)) {
      return err;
    }
    event.pid = static_cast<int>(p);
  }
  if (const auto details = j.find("details"); details != j.end()) {
    if (!details->is_object()) {
      return decodeError("\"details\" is not an object");
    }
    if (detailsDepth(*details) > kMaxAuditDetailsDepth) {
      return decodeError("\"details\" nested deeper than " + std::to_string(kMaxAuditDetailsDepth));
    }
    event.details = *details;
  }
  return event;
}

// ---- FileAuditSink ----

Result<std::unique_ptr<FileAuditSink>> FileAuditSink::open(const std::string& path,
                                                           size_t queue_capacity) {
  if (Error err = makeParentDirs(path); !err.ok()) {
    return err;
  }
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int saved = errno;
    return Error(ErrorCode::kIo, "open audit file " + path, saved);
  }
  return std::unique_ptr<FileAuditSink>(
      new FileAuditSink(path, fd, queue_capacity == 0 ? 1 : queue_capacity));
}

FileAuditSink::FileAuditSink(std::string path, int fd, size_t queue_capacity)
    : path_(std::move(path)), fd_(fd), capacity_(queue_capacity) {
  queue_.reserve(capacity_ < 4096 ? capacity_ : 4096);
  writer_ = std::thread([this] { writerLoop(); });
}

FileAuditSink::~FileAuditSink() {
  (void)flush();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  writer_.join();
  ::close(fd_);
}

void FileAuditSink::emit(AuditEvent event) {
  std::string line = encodeEvent(event);
  std::unique_lock<std::mutex> lock(mu_);
  not_full_.wait(lock, [this] { return queue_.size() < capacity_; });
  const bool was_empty = queue_.empty();
  queue_.push_back(std::move(line));
  ++enqueued_;
  lock.unlock();
  if (was_empty) {
    wake_.notify_one();  // the writer only sleeps on an empty queue
  }
}

Error FileAuditSink::flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = enqueued_;
  if (synced_ < target) {
    if (sync_target_ < target) {
      sync_target_ = target;
    }
    wake_.notify_one();
    synced_cv_.wait(lock, [this, target] { return synced_ >= target; });
  }
  return error_;
}

void FileAuditSink::writerLoop() {
  std::vector<std::string> batch;
  std::string buf;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return !queue_.empty() || stop_ || sync_target_ > synced_; });
    // Linger up to 1 ms so that lines arriving one by one (a request each)
    // go out in one write instead of one wake-up and one write apiece.
    // Emitters do not signal a non-empty queue, so this only ends early
    // for flush() and stop.
    wake_.wait_for(lock, std::chrono::milliseconds(1),
                   [this] { return stop_ || sync_target_ > synced_ || queue_.size() * 2 >= capacity_; });
    if (!queue_.empty()) {
      batch.swap(queue_);
      const bool was_full = batch.size() >= capacity_;
      lock.unlock();
      if (was_full) {
        not_full_.notify_all();
      }
      writeBatch(batch, &buf);
      const uint64_t num_lines = batch.size();
      batch.clear();
      lock.lock();
      written_ += num_lines;
    }
    // sync_target_ <= enqueued_, so under steady load written_ still reaches it: no starvation.
    if (sync_target_ > synced_ && written_ >= sync_target_) {
      const uint64_t upto = written_;
      lock.unlock();
      syncFile();
      lock.lock();
      synced_ = upto;
      synced_cv_.notify_all();
    } else if (queue_.empty() && stop_) {
      return;
    }
  }
}

void FileAuditSink::writeBatch(const std::vector<std::string>& batch, std::string* buf) {
  size_t first_lost = 0;  // index of the first line that did not fully reach the file
  if (!failed()) {
    size_t total = 0;
    for (const std::string& line : batch) {
      total += line.size() + 1;
    }
    buf->clear();
    buf->reserve(total);
    for (const std::string& line : batch) {
      buf->append(line);
      buf->push_back('\n');
    }
    size_t done = 0;
    const int saved = writeAll(fd_, buf->data(), buf->size(), &done);
    if (saved == 0) {
      return;
    }
    recordFailure(Error(ErrorCode::kIo, "write audit file " + path_, saved));
    size_t end = 0;
    for (; first_lost < batch.size(); ++first_lost) {
      end += batch[first_lost].size() + 1;
      if (end > done) {
        break;
      }
    }
  }
  // Failed state: divert to stderr so no event is silently lost.
  buf->clear();
  for (size_t i = first_lost; i < batch.size(); ++i) {
    buf->append(kStderrPrefix);
    buf->append(batch[i]);
    buf->push_back('\n');
  }
  writeStderr(*buf);
}

void FileAuditSink::syncFile() {
  if (failed()) {
    return;
  }
  int rc;
  do {
    rc = ::fdatasync(fd_);
  } while (rc != 0 && errno == EINTR);
  // EINVAL/EROFS: the file does not support syncing (pipe, tty, /dev/null); nothing to make
  // durable.
  if (rc != 0 && errno != EINVAL && errno != EROFS) {
    const int saved = errno;
    recordFailure(Error(ErrorCode::kIo, "sync audit file " + path_, saved));
  }
}

void FileAuditSink::recordFailure(Error error) {
  std::string notice = std::string(kStderrPrefix) + error.message() + ": " +
                       std::strerror(error.savedErrno()) + "; audit events now follow on stderr\n";
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) {
      error_ = std::move(error);
    }
  }
  failed_.store(true, std::memory_order_release);
  writeStderr(notice);
}

// ---- MemoryAuditSink ----

void MemoryAuditSink::emit(AuditEvent event) {
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(event));
}

Error MemoryAuditSink::flush() { return Error(); }

std::vector<AuditEvent> MemoryAuditSink::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

std::vector<AuditEvent> MemoryAuditSink::takeEvents() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(events_, {});
}

size_t MemoryAuditSink::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_.size();
}

// ---- free functions ----

std::string defaultAuditPath() {
  const char* state = ::secure_getenv("XDG_STATE_HOME");
  if (state != nullptr && state[0] == '/') {  // XDG: relative values are invalid, ignore them
    return std::string(state) + "/guard/audit.jsonl";
  }
  std::string home;
  if (const char* env_home = ::secure_getenv("HOME"); env_home != nullptr && env_home[0] != '\0') {
    home = env_home;
  } else {
    struct passwd pw;
    struct passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr &&
        found->pw_dir != nullptr && found->pw_dir[0] != '\0') {
      home = found->pw_dir;
    }
  }
  if (home.empty()) {
    return std::string();
  }
  if (home.size() > 1 && home.back() == '/') {
    home.pop_back();
  }
  return home + "/.local/state/guard/audit.jsonl";
}

std::string newSessionId() {
  unsigned char bytes[16];
  size_t done = 0;
  while (done < sizeof(bytes)) {
    const ssize_t n = ::getrandom(bytes + done, sizeof(bytes) - done, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int saved = errno;
      std::fprintf(stderr, "guard: getrandom failed while creating a session id: %s\n",
                   std::strerror(saved));
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (size_t i = 0; i < sizeof(bytes); ++i) {
    id[2 * i] = kHex[bytes[i] >> 4];
    id[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return id;
}

}  // namespace guard::policy
