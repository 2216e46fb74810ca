// Small helpers shared by the library, the CLI, the tools and the tests: a monotonic clock in ms, printf into a
// std::string, percentiles, and the process's memory as /proc reports it.
#pragma once

#include <cstdarg>
#include <string>
#include <vector>

namespace voxtral_rt::detail {

// Monotonic wall clock (std::chrono::steady_clock: CLOCK_MONOTONIC on Linux, as Python's time.monotonic) in ms.
double now_ms();

// printf into a std::string, of any length.
std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string vstrf(const char* fmt, va_list args) __attribute__((format(printf, 1, 0)));

// The q-quantile (0..1) of `values`, nearest rank: sorted[round(q * (n - 1))]; 0 when empty.
double percentile(std::vector<double> values, double q);

// A "VmXXX: N kB" line of /proc/self/status (VmRSS, VmHWM, ...) in MiB, or -1 (not Linux, no such line).
double proc_status_mib(const char* key);
// Peak RSS in MiB: VmHWM, else getrusage's ru_maxrss. VmHWM restarts at exec; ru_maxrss can carry the parent's
// peak across fork+exec (a Python harness that allocated gigabytes would show up), so /proc comes first.
double peak_rss_mib();

}  // namespace voxtral_rt::detail
