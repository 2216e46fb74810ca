// The counting CHECK of the C++ tests, which run without a test framework: a failed condition is printed and
// counted, the run goes on; main() prints "N passed, N failed" (a line CI reads) and exits 1 on failure.
// run_test(name, fn) names a test: its failures say "[name]", and it ends with "ok   name" or "FAIL name".
#pragma once

#include <cstdio>

inline int g_passed = 0, g_failed = 0;
inline const char* g_test = nullptr;  // the test run_test is running, if any

inline void check_failed(const char* file, int line, const char* cond) {
  ++g_failed;
  if (g_test) {
    std::printf("FAIL [%s] %s:%d: %s\n", g_test, file, line, cond);
  } else {
    std::printf("FAIL %s:%d: %s\n", file, line, cond);
  }
}

#define CHECK(cond)                                \
  do {                                             \
    if (cond) {                                    \
      ++g_passed;                                  \
    } else {                                       \
      check_failed(__FILE__, __LINE__, #cond);     \
    }                                              \
  } while (0)
#define CHECK_EQ(a, b) CHECK((a) == (b))

inline void run_test(const char* name, void (*fn)()) {
  g_test = name;
  const int before = g_failed;
  fn();
  std::printf("%s %s\n", g_failed == before ? "ok  " : "FAIL", name);
  g_test = nullptr;
}
