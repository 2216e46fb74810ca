// The counting CHECK of the integration tests that run without a test framework: a failed condition is printed
// and counted, the run goes on; main() prints "N passed, N failed" (a line CI reads) and exits 1 on failure.
#pragma once

#include <cstdio>

static int g_passed = 0, g_failed = 0;
#define CHECK(cond)                                                          \
  do {                                                                       \
    if (cond) {                                                              \
      ++g_passed;                                                            \
    } else {                                                                 \
      ++g_failed;                                                            \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
    }                                                                        \
  } while (0)
