// Audit events: the versioned JSON Lines record of every decision and lifecycle step; sinks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "policy/error.h"

namespace guard::policy {

// kAuditSchemaVersion is the value of the "v" field; decodeEvent rejects any other.
inline constexpr int kAuditSchemaVersion = 1;

// kMaxAuditLineLen bounds the input of decodeEvent (bytes, without the newline).
inline constexpr size_t kMaxAuditLineLen = size_t{1} << 20;

// kMaxAuditDetailsDepth bounds the nesting of "details" accepted by decodeEvent, so that
// re-encoding a decoded event cannot exhaust the stack.
inline constexpr int kMaxAuditDetailsDepth = 32;

// kAuditDecodeError is the code of every error returned by decodeEvent. There is no
// audit-specific code in ErrorCode; kPolicyInvalid ("parsed, but a key, type or value is wrong")
// is the closest existing meaning: the input is untrusted data the user handed to a tool.
inline constexpr ErrorCode kAuditDecodeError = ErrorCode::kPolicyInvalid;

// AuditRule names the rule that decided: its id, its layer and "file:line:col" of its source.
struct AuditRule {
  std::string id;
  std::string layer;
  std::string source;

  friend bool operator==(const AuditRule&, const AuditRule&) = default;
};

// AuditEvent is one decision or lifecycle step. Producers fill every field they know; the
// encoder never validates or drops anything (emit must never fail).
struct AuditEvent {
  std::chrono::system_clock::time_point ts;  // wall time; encoded with microsecond precision
  int64_t mono_ns = 0;                       // CLOCK_MONOTONIC in nanoseconds
  std::string session;                       // newSessionId() of the session
  std::string user;
  std::vector<std::string> groups;
  std::string host;
  std::string component;  // "policy", "proxy", "fusefs", "jail", "cli"
  std::string surface;    // "network", "filesystem", "env", "credentials", "mcp", "session"
  std::string action;     // "connect", "dns", "open", "exec", "tools/call", "start", "exit"
  std::string target;     // what was acted on: "host:port", a path, a tool name
  // "allow", "deny", "would_deny"; lifecycle events use an outcome from the closed set
  // ok, setup_error, violation, signaled, timeout, killed, internal_error.
  std::string decision;
  AuditRule rule;          // omitted from JSON when rule.id is empty
  std::string reason;      // omitted when empty
  int pid = 0;             // omitted when 0
  nlohmann::json details;  // an object; omitted when null or empty

  friend bool operator==(const AuditEvent&, const AuditEvent&) = default;
};

// encodeEvent returns |event| as one JSON object without a trailing newline, keys in the order
// v, ts, mono_ns, session, user, groups, host, component, surface, action, target, decision,
// rule, reason, pid, details. ts is RFC 3339 UTC with exactly six fraction digits and "Z"
// (sub-microsecond time is truncated toward the past). Bytes that are not valid UTF-8 are
// replaced by U+FFFD, so the output is always valid JSON. A non-object, non-null |details| is
// kept as {"value": details} rather than lost. Keys inside details come out sorted. Never fails.
std::string encodeEvent(const AuditEvent& event);

// decodeEvent parses one line produced by encodeEvent (an optional trailing newline is allowed)
// for replay tools and tests. It is strict: the line must be a JSON object with "v" equal to
// kAuditSchemaVersion, every required key (v, ts, mono_ns, session, user, groups, host,
// component, surface, action, target, decision) with the right type, no unknown keys, rule (if
// present) with string id/layer/source, details (if present) an object no deeper than
// kMaxAuditDetailsDepth, and at most kMaxAuditLineLen bytes. The closed sets of surface and
// decision are not checked, so any encoded event decodes. On failure returns an Error with
// code kAuditDecodeError and a message starting "audit line: ". For every event e,
// encodeEvent(decodeEvent(encodeEvent(e)).value()) == encodeEvent(e).
Result<AuditEvent> decodeEvent(std::string_view line);

// AuditSink receives audit events. Implementations are thread-safe.
class AuditSink {
 public:
  virtual ~AuditSink() = default;

  // emit records |event|. It never drops an event and never fails; it may block (backpressure).
  virtual void emit(AuditEvent event) = 0;

  // flush returns once every event emitted before the call is durable in the sink. Returns
  // the sink's first error (ok() if none); errors are sticky.
  virtual Error flush() = 0;
};

// FileAuditSink appends events as JSON Lines to a file, from a writer thread.
//
// emit() encodes on the caller's thread and queues the line under a lock; when
// |queue_capacity| lines are waiting, emit() blocks until the writer catches up (backpressure,
// never a drop). The writer takes all waiting lines at once (so at most |queue_capacity| lines
// wait plus one batch being written) and writes each batch with one write(2) that ends on a
// line boundary, retrying EINTR and short writes. Lines never interleave, also between
// processes appending to the same file on a local filesystem (O_APPEND).
//
// On a write or sync error (e.g. ENOSPC) the sink enters a failed state: failed() turns true,
// flush() returns the first error (code kIo, errno saved), a one-line notice goes to stderr, and
// this and every later line that did not reach the file is written to stderr prefixed
// "guard-audit: ", so nothing is silently lost and emit() keeps never blocking forever. The
// session is expected to check failed()/flush() and fail closed (end the agent).
//
// Not fork-safe: the writer thread does not exist in a child; create the sink in the process
// that uses it. On SIGTERM/SIGINT the session calls flush() from its main loop, not from the
// signal handler.
class FileAuditSink : public AuditSink {
 public:
  // open creates the missing parent directories of |path| (mode 0700), opens |path| with
  // O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC (mode 0600 for a new file) and starts the writer.
  // |queue_capacity| is clamped to at least 1. On failure returns kIo with the errno saved and
  // the failing path in the message; nothing is left running.
  static Result<std::unique_ptr<FileAuditSink>> open(const std::string& path,
                                                     size_t queue_capacity = 65536);

  // ~FileAuditSink flushes, stops the writer and closes the file. A flush error is not
  // reported here: call flush() first to see it. No emit() may race with destruction.
  ~FileAuditSink() override;

  FileAuditSink(const FileAuditSink&) = delete;
  FileAuditSink& operator=(const FileAuditSink&) = delete;

  // emit encodes |event| and queues it, blocking while the queue is full. Thread-safe.
  void emit(AuditEvent event) override;

  // flush waits until every event emitted before the call is written and fdatasync'ed (a sync
  // on a file that does not support it, like a pipe, counts as success). Returns the first
  // write or sync error since open (sticky), ok() otherwise. Thread-safe.
  Error flush() override;

  // failed returns true once a write or sync error occurred; later events go to stderr.
  bool failed() const { return failed_.load(std::memory_order_acquire); }

  // path returns the path the sink was opened with.
  const std::string& path() const { return path_; }

 private:
  FileAuditSink(std::string path, int fd, size_t queue_capacity);

  void writerLoop();
  void writeBatch(const std::vector<std::string>& batch, std::string* buf);
  void syncFile();
  void recordFailure(Error error);

  const std::string path_;
  const int fd_;
  const size_t capacity_;

  // mu_ guards everything below except failed_. Lock order: mu_ is a leaf lock.
  std::mutex mu_;
  std::condition_variable wake_;       // writer waits: lines queued, sync requested or stop
  std::condition_variable not_full_;   // emit waits: queue below capacity_
  std::condition_variable synced_cv_;  // flush waits: synced_ reached its target
  std::vector<std::string> queue_;
  uint64_t enqueued_ = 0;     // lines ever queued
  uint64_t written_ = 0;      // lines handed to write(2) (or to stderr after failure)
  uint64_t sync_target_ = 0;  // highest enqueued_ a flush() waits for
  uint64_t synced_ = 0;       // lines known durable (or diverted to stderr)
  bool stop_ = false;
  Error error_;  // first error, sticky
  std::atomic<bool> failed_{false};

  std::thread writer_;  // last: started after every other member is initialised
};

// MemoryAuditSink keeps events in memory, for tests and `guard policy explain`. Thread-safe.
class MemoryAuditSink : public AuditSink {
 public:
  // emit appends |event| to the stored events.
  void emit(AuditEvent event) override;

  // flush does nothing and returns ok().
  Error flush() override;

  // events returns a copy of the stored events in emission order.
  std::vector<AuditEvent> events() const;

  // takeEvents returns the stored events in emission order and clears them.
  std::vector<AuditEvent> takeEvents();

  // size returns the number of stored events.
  size_t size() const;

 private:
  mutable std::mutex mu_;  // guards events_; leaf lock
  std::vector<AuditEvent> events_;
};

// defaultAuditPath returns $XDG_STATE_HOME/guard/audit.jsonl when XDG_STATE_HOME is an absolute
// path, else $HOME/.local/state/guard/audit.jsonl (HOME from the environment, else the password
// database). Returns an empty string if no home directory can be found; opening it then fails.
std::string defaultAuditPath();

// newSessionId returns 128 random bits from getrandom(2) as 32 lowercase hex characters.
// getrandom cannot fail in practice; if it does, the process aborts with a message on stderr.
std::string newSessionId();

}  // namespace guard::policy
