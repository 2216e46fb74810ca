// ExecuTorch types under the short names the runner uses, and tensors that view caller memory: the .pte methods'
// inputs are built this way by the backend (et_backend.cpp), voxtral_rt_kv_bench and the alias kernel's test.
#pragma once

#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/evalue.h>

#include <cstdint>
#include <initializer_list>

namespace voxtral_rt::detail {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::extension::TensorPtr;
using executorch::runtime::Error;
using executorch::runtime::EValue;

// A float32 / int64 tensor of `sizes` over `data` (no copy: `data` must outlive it; the method may write it
// only if the caller's memory is writable). Sizes are int64 here, int32 in ExecuTorch.
TensorPtr tensor_view(const float* data, std::initializer_list<int64_t> sizes);
TensorPtr tensor_view(const int64_t* data, std::initializer_list<int64_t> sizes);

}  // namespace voxtral_rt::detail
