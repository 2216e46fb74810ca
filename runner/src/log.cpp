#include "log.h"

#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "util.h"

namespace voxtral_rt {
namespace {

std::mutex g_log_mutex;
LogCallback g_log_callback;  // empty = default sink

void default_sink(LogLevel level, const std::string& message) {
  if (level < LogLevel::Info) return;
  static const char* const kNames[] = {"debug", "info", "warning", "error"};
  std::fprintf(stderr, "voxtral_rt %s: %s\n", kNames[static_cast<int>(level)], message.c_str());
}

}  // namespace

void set_log_callback(LogCallback callback) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  g_log_callback = std::move(callback);
}

namespace detail {

void log(LogLevel level, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  const std::string buf = vstrf(fmt, args);
  va_end(args);
  std::lock_guard<std::mutex> lock(g_log_mutex);
  if (g_log_callback) {
    g_log_callback(level, buf);
  } else {
    default_sink(level, buf);
  }
}

}  // namespace detail
}  // namespace voxtral_rt
