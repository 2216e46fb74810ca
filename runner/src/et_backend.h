// ModelBackend on an ExecuTorch Module (one .pte, four methods + int constant methods).
#pragma once

#include <memory>
#include <string>

#include "backend.h"

namespace voxtral_rt::detail {

// Loads `path` (mapped, or read through file reads), reads and validates the metadata, loads every method
// up front (a lazily loaded method could touch the shared mutable buffers mid-stream). Planned memory is
// reserved, not resident, until the methods touch it. packed_cache_path (needs use_mmap; "" = none): XNNPACK
// keeps the packed weights in that file and later loads map it instead of packing.
Status load_et_backend(const std::string& path, bool use_mmap, const std::string& packed_cache_path,
                       std::unique_ptr<ModelBackend>* out);

// Another backend over the same loaded program as `primary` (which must come from load_et_backend and
// outlive it): its own methods, planned memory and caches, so it can run one stream concurrently with the
// primary's. Costs a second method load; with use_mmap XNNPACK takes the primary's packed weights from its
// weights cache, otherwise it packs them again.
Status sibling_et_backend(const ModelBackend& primary, std::unique_ptr<ModelBackend>* out);

// Resizes ExecuTorch's process-wide CPU threadpool (0 = leave the default). Returns the thread count.
size_t set_num_threads(int threads);

}  // namespace voxtral_rt::detail
