#include "alias_kernels.h"

#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_runtime_context.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "et_tensor.h"

namespace voxtral_rt::detail {
namespace {

using executorch::runtime::Kernel;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::OpFunction;
using executorch::runtime::Span;

constexpr const char* kSliceCopyOut = "aten::slice_copy.Tensor_out";
constexpr size_t kSliceStackSize = 7;  // 6 arguments + the return slot (ExecuTorch's generated wrappers)

thread_local SliceAliasState* t_state = nullptr;

// The wheel's own (copying) slice_copy, found once in the global registry.
OpFunction wheel_slice_copy() {
  static const OpFunction op = [] {
    OpFunction found = nullptr;
    for (const Kernel& k : executorch::runtime::get_registered_kernels())
      if (k.kernel_key_.is_fallback() && std::strcmp(k.name_, kSliceCopyOut) == 0) found = k.op_;
    return found;
  }();
  return op;
}

bool int_or_none(const EValue& v, int64_t if_none, int64_t* out) {
  if (v.isNone()) {
    *out = if_none;
    return true;
  }
  if (!v.isInt()) return false;
  *out = v.toInt();
  return true;
}

}  // namespace

bool SliceAliasState::try_alias(const Tensor& self, int64_t dim, const EValue& start, const EValue& end,
                                int64_t step, Tensor& out) {
  if (!enabled_ || self.dim() != 3 || out.dim() != 3 || self.scalar_type() != out.scalar_type() || step != 1)
    return false;
  if (dim < 0) dim += self.dim();
  if (dim < 0 || dim >= self.dim()) return false;
  const int64_t n = self.size(static_cast<int>(dim));
  if (std::find(rings_.begin(), rings_.end(), n) == rings_.end()) return false;
  // Start and end normalized as the wheel's slice does: negative counts from the end, then clamped to [0, n].
  int64_t s = 0, e = 0;
  if (!int_or_none(start, 0, &s) || !int_or_none(end, n, &e)) return false;
  if (s < 0) s += n;
  if (e < 0) e += n;
  if (s > 0 || e < n) return false;  // s < 0 here clamps to 0

  void* data = self.mutable_data_ptr();
  void* const current = out.mutable_data_ptr();
  if (executorch::runtime::resize_tensor(out, self.sizes()) != Error::Ok) return false;
  // Remember the planned buffer at the first alias since the last copy (an entry exists while out is aliased).
  if (current != data) planned_.try_emplace(out.unsafeGetTensorImpl(), current);
  if (executorch::runtime::internal::set_tensor_data(out, data, self.nbytes()) != Error::Ok) return false;
  ++aliased_;
  return true;
}

bool SliceAliasState::restore(Tensor& out) {
  auto it = planned_.find(out.unsafeGetTensorImpl());
  if (it == planned_.end()) return true;
  // The planned buffer holds the upper-bound shape, which is the ring's: out.nbytes() fits.
  const bool ok = executorch::runtime::internal::set_tensor_data(out, it->second, out.nbytes()) == Error::Ok;
  planned_.erase(it);
  return ok;
}

SliceAliasScope::SliceAliasScope(SliceAliasState* state) : saved_(t_state) { t_state = state; }
SliceAliasScope::~SliceAliasScope() { t_state = saved_; }

void slice_copy_alias(KernelRuntimeContext& context, Span<EValue*> stack) {
  const OpFunction copy = wheel_slice_copy();
  if (copy == nullptr) {
    context.fail(Error::OperatorMissing);
    return;
  }
  // Anything unexpected goes to the wheel's kernel, which checks its arguments and reports.
  if (t_state == nullptr || stack.size() != kSliceStackSize || !stack[0]->isTensor() || !stack[1]->isInt() ||
      !stack[4]->isInt() || !stack[5]->isTensor()) {
    copy(context, stack);
    return;
  }
  const Tensor& self = stack[0]->toTensor();
  Tensor& out = stack[5]->toTensor();
  if (t_state->try_alias(self, stack[1]->toInt(), *stack[2], *stack[3], stack[4]->toInt(), out)) return;
  if (!t_state->restore(out)) {
    context.fail(Error::Internal);
    return;
  }
  copy(context, stack);
}

std::vector<Kernel> slice_alias_kernels() {
  if (wheel_slice_copy() == nullptr) return {};
  const auto all = executorch::runtime::get_registered_kernels();
  std::vector<Kernel> kernels(all.begin(), all.end());
  for (Kernel& k : kernels)
    if (std::strcmp(k.name_, kSliceCopyOut) == 0) k.op_ = slice_copy_alias;
  return kernels;
}

bool kv_alias_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("VOXTRAL_RT_KV_ALIAS");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

}  // namespace voxtral_rt::detail
