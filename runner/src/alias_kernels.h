// Attention reads the KV rings in place: the runner's own kernel for aten::slice_copy.Tensor_out, loaded
// per method (Module::load_method's kernel list; method-scoped kernels take precedence over the wheel's),
// makes a slice that is a whole KV ring an alias of the ring instead of a copy. Every other slice is the
// wheel's copying kernel. The .pte is unchanged (same op, wheel ops only). Why and what it saves:
// docs/design.md, "Attention reads the caches in place".
#pragma once

#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/span.h>
#include <executorch/runtime/kernel/operator_registry.h>

#include <cstdint>
#include <initializer_list>
#include <unordered_map>
#include <vector>

namespace voxtral_rt::detail {

// What the alias kernel needs from the backend whose methods run on this thread. One per backend (like its
// Module); not thread-safe, used by one execute() at a time.
class SliceAliasState {
 public:
  SliceAliasState() = default;
  // Ring lengths (cache slots) of the KV caches. Only a whole slice of a 3-D tensor with one of these lengths
  // along the sliced dim is aliased: those tensors are the KV rings, mutable buffers that outlive every use
  // of the slice. An activation's buffer may be handed to the next op by the memory plan as soon as the
  // slice has read it, so aliasing one would be wrong.
  explicit SliceAliasState(std::initializer_list<int64_t> ring_lengths) : rings_(ring_lengths) {}

  // Makes `out` a view of `self` if that is safe and the slice [start, end) along `dim` with `step` is all
  // of `self`; returns false (nothing changed) otherwise.
  bool try_alias(const executorch::aten::Tensor& self, int64_t dim, const executorch::runtime::EValue& start,
                 const executorch::runtime::EValue& end, int64_t step, executorch::aten::Tensor& out);
  // Before a copying call: gives `out` back its planned buffer if an earlier call aliased it (the output
  // tensor keeps whatever data pointer the last call left, and a copy must not land in a ring).
  bool restore(executorch::aten::Tensor& out);
  // Off: every slice copies, like the wheel's kernel (outputs aliased before get their buffers back). For A/B
  // timing on one loaded method.
  void set_enabled(bool on) { enabled_ = on; }
  // Slices aliased so far (for tests and benchmarks).
  int64_t aliased() const { return aliased_; }

 private:
  bool enabled_ = true;
  int64_t aliased_ = 0;
  std::vector<int64_t> rings_;
  std::unordered_map<const void*, void*> planned_;  // aliased output (its TensorImpl) -> its planned buffer
};

// While alive, slice kernels run by this thread use `state` (Method::execute runs kernels on the calling
// thread). Without a scope, or with nullptr, the kernel always copies. Scopes nest.
class SliceAliasScope {
 public:
  explicit SliceAliasScope(SliceAliasState* state);
  ~SliceAliasScope();
  SliceAliasScope(const SliceAliasScope&) = delete;
  SliceAliasScope& operator=(const SliceAliasScope&) = delete;

 private:
  SliceAliasState* saved_;
};

// The wheel's registered kernels with aten::slice_copy.Tensor_out replaced by the aliasing one. The whole
// list, not just the one kernel: the method-scoped lookup logs an error for every operator it does not find
// there before it falls back to the global registry. Empty if the wheel has no slice_copy kernel.
std::vector<executorch::runtime::Kernel> slice_alias_kernels();

// The boxed kernel (public for the unit test). Stack as the wheel's generated wrapper has it:
// self, dim, start, end, step, out, return slot.
void slice_copy_alias(executorch::runtime::KernelRuntimeContext& context,
                      executorch::runtime::Span<executorch::runtime::EValue*> stack);

// False when VOXTRAL_RT_KV_ALIAS=0: no alias kernel and prefix-only masks, i.e. the copying path (kept for
// A/B timing and tests). Read once.
bool kv_alias_enabled();

}  // namespace voxtral_rt::detail
