#include "et_tensor.h"

#include <vector>

namespace voxtral_rt::detail {
namespace {

std::vector<executorch::aten::SizesType> int32_sizes(std::initializer_list<int64_t> sizes) {
  std::vector<executorch::aten::SizesType> out;
  for (const int64_t n : sizes) out.push_back(static_cast<executorch::aten::SizesType>(n));
  return out;
}

}  // namespace

TensorPtr tensor_view(const float* data, std::initializer_list<int64_t> sizes) {
  return executorch::extension::from_blob(const_cast<float*>(data), int32_sizes(sizes), ScalarType::Float);
}

TensorPtr tensor_view(const int64_t* data, std::initializer_list<int64_t> sizes) {
  return executorch::extension::from_blob(const_cast<int64_t*>(data), int32_sizes(sizes), ScalarType::Long);
}

}  // namespace voxtral_rt::detail
