// Unit test of the aliasing slice_copy kernel (runner/src/alias_kernels.h) on hand-made tensors, through the
// boxed interface the Method calls: a whole-ring slice makes the output share the ring's data; any other
// slice is the wheel's copy into the output's own (planned) buffer, which an earlier alias gave back.
// Prints "N passed, N failed"; exit code 1 on failure.
#include <executorch/runtime/kernel/kernel_runtime_context.h>
#include <executorch/runtime/platform/runtime.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "alias_kernels.h"
#include "et_tensor.h"
#include "check.h"

using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;
using namespace voxtral_rt::detail;

constexpr int32_t kH = 2, kD = 3, kSlots = 5;

// Runs slice_copy.Tensor_out(self, dim, start, end, 1, out) through the kernel; returns the context's error.
static Error slice(const Tensor& self, int64_t dim, EValue start, EValue end, Tensor& out, int64_t step = 1) {
  EValue args[7] = {EValue(self), EValue(dim), start, end, EValue(step), EValue(out), EValue()};
  EValue* stack[7];
  for (int i = 0; i < 7; ++i) stack[i] = &args[i];
  KernelRuntimeContext ctx;
  slice_copy_alias(ctx, Span<EValue*>(stack, 7));
  // The kernel resized / re-pointed the TensorImpl that `out` shares with args[5].
  return ctx.failure_state();
}

// The elements of k [H, D, slots] at slots [0, len), as a [H, D, len] copy would hold them.
static std::vector<float> prefix(const std::vector<float>& k, int32_t len) {
  std::vector<float> p;
  for (int32_t h = 0; h < kH; ++h)
    for (int32_t d = 0; d < kD; ++d)
      for (int32_t j = 0; j < len; ++j) p.push_back(k[(h * kD + d) * kSlots + j]);
  return p;
}

static std::vector<float> contents(const Tensor& t) {
  const float* p = t.const_data_ptr<float>();
  return std::vector<float>(p, p + t.numel());
}

int main() {
  executorch::runtime::runtime_init();
  CHECK(!slice_alias_kernels().empty());  // the wheel's slice_copy is there to fall back on

  std::vector<float> ring(kH * kD * kSlots);
  std::iota(ring.begin(), ring.end(), 1.0f);
  const std::vector<float> ring_before = ring;
  auto k = tensor_view(ring.data(), {kH, kD, kSlots});
  // The output as memory planning makes it: its own buffer for the upper bound, resizable below it
  // (tensor_view makes DYNAMIC_BOUND tensors, as from_blob does).
  std::vector<float> planned(ring.size(), -1.0f);
  auto out = tensor_view(planned.data(), {kH, kD, kSlots});

  SliceAliasState state({kSlots, 999});
  {
    SliceAliasScope scope(&state);

    // Whole ring (end = slots): the output is the ring itself, nothing copied.
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{kSlots}), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == ring.data());
    CHECK(out->size(2) == kSlots);
    CHECK(planned == std::vector<float>(ring.size(), -1.0f));

    // Again (the steady state after the ring wraps): still the alias; end past the size and None count too.
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(std::numeric_limits<int64_t>::max()), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == ring.data());
    CHECK(slice(*k, -1, EValue(), EValue(), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == ring.data());
    CHECK(slice(*k, 2, EValue(int64_t{-100}), EValue(int64_t{kSlots}), *out) == Error::Ok);  // start clamps to 0
    CHECK(out->const_data_ptr() == ring.data());

    CHECK(state.aliased() == 4);

    // A prefix (a new stream): copied into the planned buffer, which the alias gave back; the ring untouched.
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{3}), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == planned.data());
    CHECK(out->size(2) == 3);
    CHECK(contents(*out) == prefix(ring, 3));
    CHECK(ring == ring_before);

    // Whole again, then a prefix again: alias, then copy into the planned buffer.
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{kSlots}), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == ring.data());
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{-1}), *out) == Error::Ok);  // end -1 = slots - 1
    CHECK(out->const_data_ptr() == planned.data());
    CHECK(contents(*out) == prefix(ring, kSlots - 1));
    CHECK(ring == ring_before);

    // Switched off after an alias: copies into the planned buffer; on again: the alias.
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{kSlots}), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == ring.data());
    state.set_enabled(false);
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{kSlots}), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == planned.data() && contents(*out) == ring);
    state.set_enabled(true);
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{kSlots}), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == ring.data());
    CHECK(ring == ring_before);

    // Not a whole slice: a start past 0, a step of 2.
    CHECK(slice(*k, 2, EValue(int64_t{1}), EValue(int64_t{kSlots}), *out) == Error::Ok);
    CHECK(out->const_data_ptr() == planned.data() && out->size(2) == kSlots - 1);
    CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{kSlots}), *out, 2) == Error::Ok);
    CHECK(out->const_data_ptr() == planned.data() && out->size(2) == 3);

    // A whole slice along a dim whose length is not a ring's (an activation, say): copied.
    auto whole_d = tensor_view(planned.data(), {kH, kD, kSlots});
    CHECK(slice(*k, 1, EValue(int64_t{0}), EValue(int64_t{kD}), *whole_d) == Error::Ok);
    CHECK(whole_d->const_data_ptr() == planned.data());
    CHECK(contents(*whole_d) == ring);

    // Values layout [H, slots, D] sliced along dim 1: aliased too.
    std::vector<float> vbuf(ring.size(), -2.0f);
    auto v = tensor_view(ring.data(), {kH, kSlots, kD});
    auto vout = tensor_view(vbuf.data(), {kH, kSlots, kD});
    CHECK(slice(*v, 1, EValue(int64_t{0}), EValue(int64_t{kSlots}), *vout) == Error::Ok);
    CHECK(vout->const_data_ptr() == ring.data());
    CHECK(slice(*v, 1, EValue(int64_t{0}), EValue(int64_t{2}), *vout) == Error::Ok);
    CHECK(vout->const_data_ptr() == vbuf.data() && vout->size(1) == 2);
  }

  // Without a scope (a method run by someone else): always the wheel's copy.
  std::vector<float> other(ring.size(), -3.0f);
  auto out2 = tensor_view(other.data(), {kH, kD, kSlots});
  CHECK(slice(*k, 2, EValue(int64_t{0}), EValue(int64_t{kSlots}), *out2) == Error::Ok);
  CHECK(out2->const_data_ptr() == other.data());
  CHECK(other == ring);

  // Bad arguments reach the wheel's kernel, which reports them (a dim out of range).
  CHECK(slice(*k, 7, EValue(int64_t{0}), EValue(int64_t{kSlots}), *out2) != Error::Ok);

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
