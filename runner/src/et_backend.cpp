#include "et_backend.h"

#include <executorch/extension/module/module.h>
#include <executorch/runtime/backend/backend_options_map.h>
#include <executorch/runtime/backend/options.h>
#include <executorch/runtime/core/data_loader.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/platform/platform.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <map>
#include <unordered_set>
#include <utility>

#include "alias_kernels.h"
#include "et_tensor.h"
#include "log.h"
#include "memtrace.h"
#include "metadata.h"
#include "util.h"

// The wheel ships no extension/threadpool/threadpool.h, but libexecutorch_threadpool exports these symbols.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace voxtral_rt::detail {
namespace {

using executorch::extension::Module;

std::string et_error(Error e) {
  std::string s = strf("ExecuTorch error 0x%x (%s)", static_cast<unsigned>(e), executorch::runtime::to_string(e));
  if (e == Error::OperatorMissing)
    s += "; a kernel is missing from the linked libraries (custom ops such as llama::custom_sdpa are not in the wheel)";
  if (e == Error::NotFound) s += "; a delegate backend (XNNPACK) is not registered or a method is missing";
  if (e == Error::InvalidProgram) s += "; the file is corrupt, truncated or not an ExecuTorch program";
  return s;
}

// A memory mapping, unmapped when destroyed.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* p, size_t n) : p_(static_cast<uint8_t*>(p)), n_(n) {}
  Mapping(Mapping&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }
  uint8_t* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  void reset() {
    if (p_) ::munmap(p_, n_);
    p_ = nullptr;
    n_ = 0;
  }
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

std::string mib(size_t bytes) { return strf("%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0)); }

// Planned memory as anonymous pages the kernel zero-fills on first touch: a page costs RSS only once a
// method writes it. (Module's own arenas are std::vectors, zero-filled up front: at 4b that is ~3.8 GB
// resident before the first token, most of it K/V ring slots a stream reaches only after minutes.)
Status map_lazy(size_t size, Mapping* out) {
  *out = Mapping();
  if (size == 0) return Status();
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Status::error("cannot reserve " + mib(size) + " of planned memory: " + std::strerror(errno));
  *out = Mapping(p, size);
  return Status();
}

// The whole .pte, read-only and shared with the page cache.
Status map_file(const std::string& path, Mapping* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::error(path + ": cannot open model: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    const int err = errno;
    ::close(fd);
    return Status::error(path + ": cannot read model size: " + std::strerror(err));
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) return Status::error(path + ": cannot map model: " + std::strerror(err));
  *out = Mapping(p, static_cast<size_t>(st.st_size));
  return Status();
}

// Loads from our mapping of the whole .pte: a load is a pointer into the mapping (no copy), and freeing it
// drops the whole pages of its range from our RSS (madvise MADV_DONTNEED) instead of unmapping them. The
// data stays readable: a read faults the page back in from the page cache. So each weight blob's file pages
// leave RSS as soon as XNNPACK has packed it (load peak ~ packed weights, not packed + file), and the early
// frees of ExecuTorch 1.5.1's weights cache are harmless: its finalize_for_runtime frees every constant it
// loaded, including those of non-packing ops that keep pointing at them (fixed upstream after 1.5.1, #22779).
class MappedFileLoader final : public executorch::runtime::DataLoader {
 public:
  explicit MappedFileLoader(std::shared_ptr<const Mapping> file) : file_(std::move(file)) {}

  executorch::runtime::Result<executorch::runtime::FreeableBuffer> load(size_t offset, size_t size,
                                                                        const SegmentInfo&) const override {
    if (offset > file_->size() || size > file_->size() - offset) return Error::InvalidArgument;
    return executorch::runtime::FreeableBuffer(file_->data() + offset, size, &drop_pages);
  }

  Error load_into(size_t offset, size_t size, const SegmentInfo&, void* buffer) const override {
    if (buffer == nullptr || offset > file_->size() || size > file_->size() - offset) return Error::InvalidArgument;
    std::memcpy(buffer, file_->data() + offset, size);
    return Error::Ok;
  }

  executorch::runtime::Result<size_t> size() const override { return file_->size(); }

  // Drops the pages that lie wholly inside [data, data + size): the partial ones at the ends may hold
  // a neighbour still in use (dropping them would be harmless too, just a refault).
  static void drop_pages(void*, void* data, size_t size) {
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t a = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
    const uintptr_t b = (reinterpret_cast<uintptr_t>(data) + size) & ~(page - 1);
    if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
  }

 private:
  std::shared_ptr<const Mapping> file_;  // outlives the program: a backend holds it too
};

// XNNPACK load options shared by a backend and its siblings (the map only points at the options).
struct XnnOptions {
  executorch::runtime::BackendOptions<2> xnn;
  executorch::runtime::LoadBackendOptionsMap map;
};

// One method's planned memory: mem ids 1 and 2 point into the backend's shared arenas, the rest (if an
// export ever plans more) are the method's own.
struct PlannedMemory {
  std::vector<Mapping> own;
  std::vector<executorch::runtime::Span<uint8_t>> spans;
  std::unique_ptr<executorch::runtime::HierarchicalAllocator> allocator;
};

class EtBackend : public ModelBackend {
 public:
  explicit EtBackend(std::string path) : path_(std::move(path)) {}

  // use_mmap: the program reads our own read-only mapping of the whole file (MappedFileLoader), and
  // XNNPACK's weights cache is on, so sibling backends (concurrent Sessions) reuse the packed weights
  // instead of packing their own. Without use_mmap the file is read through Module's FileDataLoader,
  // whose frees are real (1.5.1's cache would leave dangling constants): no cache.
  Status open(bool use_mmap, const std::string& packed_cache_path) {
    if (!packed_cache_path.empty() && !use_mmap)
      return Status::error("packed_cache_path needs use_mmap (the weights cache is off without it)");
    if (packed_cache_path.size() >= executorch::runtime::kMaxOptionValueLength)
      return Status::error("packed_cache_path is longer than " +
                           std::to_string(executorch::runtime::kMaxOptionValueLength - 1) + " bytes: " + packed_cache_path);
    if (use_mmap) {
      auto file = std::make_shared<Mapping>();
      VX_RETURN_IF_ERROR(map_file(path_, file.get()));
      file_ = std::move(file);
      auto opts = std::make_shared<XnnOptions>();
      // packed_cache_path: XNNPACK packs into that file (MAP_SHARED) and indexes it; a later load maps it
      // and skips packing. Entries are keyed by the weights' sha256 and the ukernel's seed.
      if (opts->xnn.set_option("weight_cache_enabled", true) != Error::Ok ||
          (!packed_cache_path.empty() &&
           opts->xnn.set_option("packed_cache_path", packed_cache_path.c_str()) != Error::Ok) ||
          opts->map.set_options("XnnpackBackend", opts->xnn.view()) != Error::Ok)
        return Status::error("internal: cannot set the XNNPACK load options");
      xnn_options_ = std::move(opts);
      module_ = std::make_unique<Module>(std::make_unique<MappedFileLoader>(file_));
    } else {
      module_ = std::make_unique<Module>(path_, Module::LoadMode::File);
    }
    VX_RETURN_IF_ERROR(open_program());
    VX_RETURN_IF_ERROR(reserve_shared_arenas());
    VX_RETURN_IF_ERROR(read_metadata());
    VX_RETURN_IF_ERROR(load_methods());
    release_file_pages();
    return Status();
  }

  // Another instance over the same loaded program (same mapped file, same program object): its own
  // methods, hence its own planned memory and mutable buffers (the caches of one stream). With the weights
  // cache its delegates take the packed weights the primary's made.
  Status open_sibling(const EtBackend& primary) {
    file_ = primary.file_;
    xnn_options_ = primary.xnn_options_;
    module_ = std::make_unique<Module>(primary.module_->program());
    names_ = primary.names_;
    info_ = primary.info_;
    VX_RETURN_IF_ERROR(reserve_shared_arenas());
    VX_RETURN_IF_ERROR(load_methods());
    release_file_pages();
    return Status();
  }

 private:
  Status open_program() {
    // InternalConsistency: run the flatbuffer verifier on the program header, so a corrupt .pte is an error,
    // not a wild read (Minimal trusts every offset). The weights live in segments: the check is cheap.
    const Error e = module_->load(executorch::runtime::Program::Verification::InternalConsistency);
    if (e != Error::Ok) return Status::error(path_ + ": cannot load program: " + et_error(e));
    auto names = module_->method_names();
    if (!names.ok()) return Status::error(path_ + ": cannot list methods: " + et_error(names.error()));
    names_ = *names;
    if (mem_trace_enabled()) trace_memory("program loaded");
    return Status();
  }

  Status planned_sizes(const std::string& method, std::vector<size_t>* sizes) {
    auto meta = module_->method_meta(method);
    if (!meta.ok()) return Status::error(path_ + ": method '" + method + "': " + et_error(meta.error()));
    sizes->clear();
    for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
      auto n = meta->memory_planned_buffer_size(i);
      if (!n.ok() || *n < 0) return Status::error(path_ + ": method '" + method + "': bad planned buffer size");
      sizes->push_back(static_cast<size_t>(*n));
    }
    return Status();
  }

  // Planned buffer i is mem_id i + 1: 1 holds activations, 2 the mutable buffers (the caches), exported with
  // share_mutable_buffers=True. As Module's share_memory_arenas does, every method gets the SAME arenas for
  // these two, sized to the largest method: the caches must be one memory for all methods, and activations
  // are dead between calls. Reserved only (see map_lazy); nothing is resident until a method writes.
  Status reserve_shared_arenas() {
    std::vector<size_t> max_sizes, sizes;
    for (const auto& name : names_) {
      VX_RETURN_IF_ERROR(planned_sizes(name, &sizes));
      if (!sizes.empty()) {
        std::string list;
        for (size_t i = 0; i < sizes.size(); ++i) list += (i ? ", " : "") + std::to_string(sizes[i]);
        VX_LOG_DEBUG("method %s: planned buffers [%s] bytes", name.c_str(), list.c_str());
      }
      if (sizes.size() > max_sizes.size()) max_sizes.resize(sizes.size(), 0);
      for (size_t i = 0; i < sizes.size(); ++i) max_sizes[i] = std::max(max_sizes[i], sizes[i]);
    }
    shared_arenas_.clear();
    shared_arenas_.resize(std::min<size_t>(2, max_sizes.size()));
    size_t total = 0;
    for (size_t i = 0; i < shared_arenas_.size(); ++i) {
      VX_RETURN_IF_ERROR(map_lazy(max_sizes[i], &shared_arenas_[i]));
      total += max_sizes[i];
    }
    VX_LOG_DEBUG("reserved %s of shared planned memory (touched only as used)", mib(total).c_str());
    return Status();
  }

  // Loads `method` with our planned memory. Module would otherwise allocate (and zero) its own arenas.
  Status load_method(const std::string& method, const executorch::runtime::LoadBackendOptionsMap* options,
                     std::vector<executorch::runtime::Kernel> kernels = {}) {
    std::vector<size_t> sizes;
    VX_RETURN_IF_ERROR(planned_sizes(method, &sizes));
    auto pm = std::make_unique<PlannedMemory>();
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (i < shared_arenas_.size()) {
        pm->spans.emplace_back(shared_arenas_[i].data(), shared_arenas_[i].size());
      } else {
        Mapping m;
        VX_RETURN_IF_ERROR(map_lazy(sizes[i], &m));
        pm->spans.emplace_back(m.data(), m.size());
        pm->own.push_back(std::move(m));  // moving a Mapping keeps its address
      }
    }
    pm->allocator = std::make_unique<executorch::runtime::HierarchicalAllocator>(
        executorch::runtime::Span<executorch::runtime::Span<uint8_t>>(pm->spans.data(), pm->spans.size()));
    const Error e = module_->load_method(method, pm->allocator.get(), nullptr, options, std::move(kernels));
    if (e != Error::Ok) return Status::error(path_ + ": cannot load method '" + method + "': " + et_error(e));
    planned_[method] = std::move(pm);
    return Status();
  }

  void unload_method(const std::string& method) {
    module_->unload_method(method);
    planned_.erase(method);
  }

  // The int constant methods, each loaded, run and unloaded with our planned memory.
  Status read_metadata() {
    auto read_int = [this](const char* key, int64_t* v) -> Status {
      if (!names_.count(key))
        return Status::error(path_ + ": missing metadata '" + key +
                             "' (constant method); this .pte is older or not from export/export_voxtral_rt.py: "
                             "re-export it");
      VX_RETURN_IF_ERROR(load_method(key, nullptr));
      auto r = module_->execute(key);
      const bool is_int = r.ok() && !r->empty() && r->at(0).isInt();
      if (is_int) *v = r->at(0).toInt();
      const Error err = r.ok() ? Error::Ok : r.error();
      unload_method(key);
      if (err != Error::Ok) return Status::error(path_ + ": reading metadata '" + key + "': " + et_error(err));
      if (!is_int) return Status::error(path_ + ": metadata '" + key + "' is not an int; re-export the model");
      return Status();
    };
    VX_RETURN_IF_ERROR(read_model_info(read_int, path_, &info_));
    if (mem_trace_enabled()) trace_memory("metadata read");
    return Status();
  }

  Status load_methods() {
    // Whole-ring slices alias the KV rings (alias_kernels.h); every other kernel is the wheel's.
    std::vector<executorch::runtime::Kernel> kernels;
    if (kv_alias_) kernels = slice_alias_kernels();
    alias_ = SliceAliasState({info_.enc_cache_slots, info_.dec_cache_slots});
    for (const char* m : {kPreprocessorMethod, kAudioEncoderMethod, kTokenEmbeddingMethod, kTextDecoderMethod}) {
      if (!names_.count(m))
        return Status::error(path_ + ": missing method '" + m + "'; re-export with export/export_voxtral_rt.py");
      const double t0 = now_ms();
      VX_RETURN_IF_ERROR(load_method(m, xnn_options_ ? &xnn_options_->map : nullptr, kernels));
      VX_LOG_DEBUG("loaded method %s in %.1f ms", m, now_ms() - t0);
      if (mem_trace_enabled()) trace_memory((std::string("loaded ") + m).c_str());
    }
    return Status();
  }

  // What loading touched in the file and did not free (program header, constants kept in place) leaves
  // our RSS too. The pages stay in the page cache; what the methods read in place (embedding rows, norm
  // weights) faults back in from there.
  void release_file_pages() {
    if (!file_) return;
    if (::madvise(file_->data(), file_->size(), MADV_DONTNEED) != 0)
      VX_LOG_WARN("madvise(MADV_DONTNEED) on the model mapping failed: %s", std::strerror(errno));
    if (mem_trace_enabled()) trace_memory("file pages released");
  }

 public:
  const ModelInfo& info() const override { return info_; }
  const std::string& path() const { return path_; }

  Status preprocess(const float* window, int64_t n_frames, std::vector<float>* mel) override {
    const int64_t n = info_.hop_length * n_frames + info_.window_size - info_.hop_length;
    auto x = tensor_view(window, {n});
    return run(kPreprocessorMethod, {EValue(*x)}, info_.num_mel_bins * n_frames, mel);
  }

  Status encode(const float* mel, int64_t n_tokens, int64_t enc_pos, std::vector<float>* emb) override {
    auto x = tensor_view(mel, {1, info_.num_mel_bins, info_.mel_frames_per_token * n_tokens});
    auto p = tensor_view(&enc_pos, {1});
    const int64_t n_rows = info_.enc_frames_per_token * n_tokens;
    const int64_t len = ring_mask(enc_pos, n_rows, info_.enc_sliding_window, info_.enc_cache_slots, &mask_, kv_alias_);
    auto m = tensor_view(mask_.data(), {n_rows, len});
    return run(kAudioEncoderMethod, {EValue(*x), EValue(*p), EValue(*m)}, n_tokens * info_.dim, emb);
  }

  Status embed(const int64_t* ids, int64_t n, std::vector<float>* emb) override {
    auto x = tensor_view(ids, {1, n});
    return run(kTokenEmbeddingMethod, {EValue(*x)}, n * info_.dim, emb);
  }

  Status decode(const float* x, int64_t n, int64_t pos, int64_t delay_tokens, std::vector<float>* logits) override {
    auto e = tensor_view(x, {1, n, info_.dim});
    auto pt = tensor_view(&pos, {1});
    auto dt = tensor_view(&delay_tokens, {1});
    const int64_t len = ring_mask(pos, n, info_.dec_sliding_window, info_.dec_cache_slots, &mask_, kv_alias_);
    auto m = tensor_view(mask_.data(), {n, len});
    return run(kTextDecoderMethod, {EValue(*e), EValue(*pt), EValue(*dt), EValue(*m)}, n * info_.vocab_size, logits);
  }

 // Resident pages of the planned arenas (mincore), e.g. after a stream: what the touched-as-used memory costs.
  void trace_planned_memory() const override {
    static const char* const kNames[] = {"activations (mem_id 1)", "mutable buffers / caches (mem_id 2)"};
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    for (size_t i = 0; i < shared_arenas_.size(); ++i) {
      const Mapping& m = shared_arenas_[i];
      if (m.size() == 0) continue;
      std::vector<unsigned char> in((m.size() + page - 1) / page);
      if (::mincore(m.data(), m.size(), in.data()) != 0) continue;
      size_t resident = 0;
      for (unsigned char c : in) resident += c & 1;
      VX_LOG_INFO("mem: planned %s: %s resident of %s", kNames[i], mib(resident * page).c_str(), mib(m.size()).c_str());
    }
  }

 private:
  // Executes `method` and copies its first output (float, `expected` elements) out of the Module: with
  // shared arenas the next method call may overwrite it.
  Status run(const char* method, const std::vector<EValue>& inputs, int64_t expected, std::vector<float>* out) {
    SliceAliasScope alias_scope(kv_alias_ ? &alias_ : nullptr);
    auto r = module_->execute(method, inputs);
    if (!r.ok()) return Status::error(std::string("method '") + method + "' failed: " + et_error(r.error()));
    if (r->empty() || !r->at(0).isTensor())
      return Status::error(std::string("method '") + method + "' returned no tensor");
    const auto& t = r->at(0).toTensor();
    if (t.scalar_type() != ScalarType::Float)
      return Status::error(std::string("method '") + method + "' returned a non-float32 tensor; re-export in fp32 I/O");
    if (static_cast<int64_t>(t.numel()) != expected)
      return Status::error(strf("method '%s' returned %zd values, expected %" PRId64, method,
                                static_cast<ssize_t>(t.numel()), expected));
    out->resize(static_cast<size_t>(expected));
    std::memcpy(out->data(), t.const_data_ptr<float>(), static_cast<size_t>(expected) * sizeof(float));
    return Status();
  }

  std::string path_;
  std::shared_ptr<const Mapping> file_;           // the .pte (use_mmap), shared with siblings
  std::shared_ptr<const XnnOptions> xnn_options_;  // weights cache on (use_mmap), shared with siblings
  std::vector<Mapping> shared_arenas_;            // mem ids 1, 2 of every method (this backend's caches)
  std::map<std::string, std::unique_ptr<PlannedMemory>> planned_;  // per loaded method
  // Declared last, destroyed first: its methods point into the arenas and the file. The primary's owns
  // the data loader that siblings' shared program reads from.
  std::unique_ptr<Module> module_;
  std::unordered_set<std::string> names_;
  ModelInfo info_;
  std::vector<float> mask_;  // attention mask input of the current call (reused: no allocation per step)
  const bool kv_alias_ = kv_alias_enabled();  // whole-ring masks + the aliasing slice kernel
  SliceAliasState alias_;
};

}  // namespace

Status load_et_backend(const std::string& path, bool use_mmap, const std::string& packed_cache_path,
                       std::unique_ptr<ModelBackend>* out) {
  // Name the common failures plainly before ExecuTorch turns them into error codes.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::error(path + ": cannot open model: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return Status::error(path + ": is a directory, not a .pte file");
  if (st.st_size == 0) return Status::error(path + ": model file is empty");
  auto b = std::make_unique<EtBackend>(path);
  VX_RETURN_IF_ERROR(b->open(use_mmap, packed_cache_path));
  *out = std::move(b);
  return Status();
}

Status sibling_et_backend(const ModelBackend& primary, std::unique_ptr<ModelBackend>* out) {
  const auto* p = dynamic_cast<const EtBackend*>(&primary);
  if (!p) return Status::error("internal: sibling_et_backend needs a backend from load_et_backend");
  auto b = std::make_unique<EtBackend>(p->path());
  VX_RETURN_IF_ERROR(b->open_sibling(*p));
  *out = std::move(b);
  return Status();
}

size_t set_num_threads(int threads) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (!pool) return 0;
  if (threads > 0 && static_cast<size_t>(threads) != pool->get_thread_count()) {
    if (!pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads)))
      VX_LOG_WARN("could not resize the ExecuTorch threadpool to %d threads", threads);
  }
  return pool->get_thread_count();
}

}  // namespace voxtral_rt::detail

namespace voxtral_rt {
namespace {

void emit_executorch_log(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*, size_t line,
                         const char* message, size_t length) {
  while (length > 0 && (message[length - 1] == '\n' || message[length - 1] == '\r')) --length;
  const LogLevel ours = level == kFatal ? LogLevel::Error : level == kError ? LogLevel::Warning : LogLevel::Debug;
  const char* base = filename ? std::strrchr(filename, '/') : nullptr;
  detail::log(ours, "executorch: %.*s (%s:%zu)", static_cast<int>(length), message,
              base ? base + 1 : (filename ? filename : "?"), line);
}

}  // namespace

void route_executorch_logs() {
  executorch::runtime::register_pal(executorch::runtime::PalImpl::create(emit_executorch_log, __FILE__));
}

}  // namespace voxtral_rt
