// Error and Result<T>: how every guard module reports failure across a boundary.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace guard {

// ErrorCode is a closed set; callers branch on it, never on message text.
enum class ErrorCode {
  kOk = 0,
  kPolicySyntax,     // YAML could not be parsed
  kPolicyInvalid,    // parsed, but a key, type or value is wrong
  kPolicyLocked,     // a later layer tried to loosen a locked rule it may not touch
  kPolicyLimit,      // a size or depth limit was exceeded
  kIo,               // reading or writing a file failed (errno saved)
  kNotFound,         // a named file, credential or server does not exist
  kUsage,            // command line misuse
  kInternal,         // should never happen
};

// Error is a code, the errno saved at the failing call (0 if none) and a short
// human context. Messages for policy errors already carry "file:line:col: ".
class Error {
 public:
  Error() = default;
  Error(ErrorCode code, std::string message, int saved_errno = 0)
      : code_(code), errno_(saved_errno), message_(std::move(message)) {}

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  int savedErrno() const { return errno_; }
  const std::string& message() const { return message_; }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  int errno_ = 0;
  std::string message_;
};

// Result<T> holds either a value or an Error.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}      // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

}  // namespace guard
