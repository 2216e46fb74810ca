// Internal logging: printf-style messages routed through voxtral_rt::set_log_callback.
#pragma once

#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt::detail {

void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace voxtral_rt::detail

#define VX_LOG_DEBUG(...) ::voxtral_rt::detail::log(::voxtral_rt::LogLevel::Debug, __VA_ARGS__)
#define VX_LOG_INFO(...) ::voxtral_rt::detail::log(::voxtral_rt::LogLevel::Info, __VA_ARGS__)
#define VX_LOG_WARN(...) ::voxtral_rt::detail::log(::voxtral_rt::LogLevel::Warning, __VA_ARGS__)
#define VX_LOG_ERROR(...) ::voxtral_rt::detail::log(::voxtral_rt::LogLevel::Error, __VA_ARGS__)
