// Internal error type: ok, or a message that says what failed and how to fix it.
#pragma once

#include <string>
#include <utility>

namespace voxtral_rt::detail {

class Status {
 public:
  Status() = default;
  static Status error(std::string message) {
    Status s;
    s.failed_ = true;
    s.message_ = std::move(message);
    return s;
  }
  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }

 private:
  bool failed_ = false;
  std::string message_;
};

#define VX_RETURN_IF_ERROR(expr)          \
  do {                                    \
    ::voxtral_rt::detail::Status s_ = (expr); \
    if (!s_.ok()) return s_;              \
  } while (0)

}  // namespace voxtral_rt::detail
