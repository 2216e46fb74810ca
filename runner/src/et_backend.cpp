#include "et_backend.h"

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/platform.h>

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstring>
#include <unordered_set>

#include "alias_kernels.h"
#include "log.h"
#include "metadata.h"

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

using executorch::aten::ScalarType;
using executorch::extension::from_blob;
using executorch::extension::Module;
using executorch::extension::TensorPtr;
using executorch::runtime::Error;
using executorch::runtime::EValue;

std::string et_error(Error e) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "ExecuTorch error 0x%x (%s)", static_cast<unsigned>(e),
                executorch::runtime::to_string(e));
  std::string s = buf;
  if (e == Error::OperatorMissing)
    s += "; a kernel is missing from the linked libraries (custom ops such as llama::custom_sdpa are not in the wheel)";
  if (e == Error::NotFound) s += "; a delegate backend (XNNPACK) is not registered or a method is missing";
  if (e == Error::InvalidProgram) s += "; the file is corrupt, truncated or not an ExecuTorch program";
  return s;
}

class EtBackend : public ModelBackend {
 public:
  explicit EtBackend(std::string path) : path_(std::move(path)) {}

  Status open(bool use_mmap) {
    // share_memory_arenas: the caches are mutable buffers shared by all methods (exported with
    // share_mutable_buffers=True); without it each method would see its own copy.
    module_ = std::make_unique<Module>(path_, use_mmap ? Module::LoadMode::Mmap : Module::LoadMode::File,
                                       nullptr, nullptr, nullptr, /*share_memory_arenas=*/true);
    VX_RETURN_IF_ERROR(open_program());
    return load_methods();
  }

  // Another instance over the same loaded program (same mmapped file, same program object): its own
  // methods, hence its own planned memory and mutable buffers (the caches of one stream).
  Status open_sibling(const EtBackend& primary) {
    module_ = std::make_unique<Module>(primary.module_->program(), nullptr, nullptr, nullptr, nullptr,
                                       /*share_memory_arenas=*/true);
    names_ = primary.names_;
    info_ = primary.info_;
    return load_methods();
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
    auto read_int = [this](const char* key, int64_t* v) -> Status {
      if (!names_.count(key))
        return Status::error(path_ + ": missing metadata '" + key +
                             "' (constant method); this .pte is older or not from export/export_voxtral_rt.py: "
                             "re-export it");
      auto r = module_->execute(key);
      if (!r.ok()) return Status::error(path_ + ": reading metadata '" + key + "': " + et_error(r.error()));
      if (r->empty() || !r->at(0).isInt())
        return Status::error(path_ + ": metadata '" + key + "' is not an int; re-export the model");
      *v = r->at(0).toInt();
      return Status();
    };
    return read_model_info(read_int, path_, &info_);
  }

  Status load_methods() {
    // Whole-ring slices alias the KV rings (alias_kernels.h); every other kernel is the wheel's.
    std::vector<executorch::runtime::Kernel> kernels;
    if (kv_alias_) kernels = slice_alias_kernels();
    alias_ = SliceAliasState({info_.enc_cache_slots, info_.dec_cache_slots});
    for (const char* m : {kPreprocessorMethod, kAudioEncoderMethod, kTokenEmbeddingMethod, kTextDecoderMethod}) {
      if (!names_.count(m))
        return Status::error(path_ + ": missing method '" + m + "'; re-export with export/export_voxtral_rt.py");
      const double t0 = now();
      const Error le = module_->load_method(m, nullptr, nullptr, nullptr, kernels);
      if (le != Error::Ok) return Status::error(path_ + ": cannot load method '" + m + "': " + et_error(le));
      VX_LOG_DEBUG("loaded method %s in %.1f ms", m, now() - t0);
    }
    return Status();
  }

 public:
  const ModelInfo& info() const override { return info_; }
  const std::string& path() const { return path_; }

  Status preprocess(const float* window, int64_t n_frames, std::vector<float>* mel) override {
    const int64_t n = info_.hop_length * n_frames + info_.window_size - info_.hop_length;
    auto x = from_blob(const_cast<float*>(window), {static_cast<int32_t>(n)}, ScalarType::Float);
    return run(kPreprocessorMethod, {EValue(*x)}, info_.num_mel_bins * n_frames, mel);
  }

  Status encode(const float* mel, int64_t n_tokens, int64_t enc_pos, std::vector<float>* emb) override {
    const int64_t n_frames = info_.mel_frames_per_token * n_tokens;
    auto x = from_blob(const_cast<float*>(mel),
                       {1, static_cast<int32_t>(info_.num_mel_bins), static_cast<int32_t>(n_frames)},
                       ScalarType::Float);
    int64_t pos = enc_pos;
    auto p = from_blob(&pos, {1}, ScalarType::Long);
    const int64_t n_rows = info_.enc_frames_per_token * n_tokens;
    const int64_t len = ring_mask(enc_pos, n_rows, info_.enc_sliding_window, info_.enc_cache_slots, &mask_, kv_alias_);
    auto m = from_blob(mask_.data(), {static_cast<int32_t>(n_rows), static_cast<int32_t>(len)}, ScalarType::Float);
    return run(kAudioEncoderMethod, {EValue(*x), EValue(*p), EValue(*m)}, n_tokens * info_.dim, emb);
  }

  Status embed(const int64_t* ids, int64_t n, std::vector<float>* emb) override {
    auto x = from_blob(const_cast<int64_t*>(ids), {1, static_cast<int32_t>(n)}, ScalarType::Long);
    return run(kTokenEmbeddingMethod, {EValue(*x)}, n * info_.dim, emb);
  }

  Status decode(const float* x, int64_t n, int64_t pos, int64_t delay_tokens, std::vector<float>* logits) override {
    auto e = from_blob(const_cast<float*>(x), {1, static_cast<int32_t>(n), static_cast<int32_t>(info_.dim)},
                       ScalarType::Float);
    int64_t p = pos, d = delay_tokens;
    auto pt = from_blob(&p, {1}, ScalarType::Long);
    auto dt = from_blob(&d, {1}, ScalarType::Long);
    const int64_t len = ring_mask(pos, n, info_.dec_sliding_window, info_.dec_cache_slots, &mask_, kv_alias_);
    auto m = from_blob(mask_.data(), {static_cast<int32_t>(n), static_cast<int32_t>(len)}, ScalarType::Float);
    return run(kTextDecoderMethod, {EValue(*e), EValue(*pt), EValue(*dt), EValue(*m)}, info_.vocab_size, logits);
  }

 private:
  static double now() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
  }

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
    if (static_cast<int64_t>(t.numel()) != expected) {
      char buf[160];
      std::snprintf(buf, sizeof(buf), "method '%s' returned %zd values, expected %" PRId64, method,
                    static_cast<ssize_t>(t.numel()), expected);
      return Status::error(buf);
    }
    out->resize(static_cast<size_t>(expected));
    std::memcpy(out->data(), t.const_data_ptr<float>(), static_cast<size_t>(expected) * sizeof(float));
    return Status();
  }

  std::string path_;
  std::unique_ptr<Module> module_;  // the primary's owns the data loader (the mmapped file)
  std::unordered_set<std::string> names_;
  ModelInfo info_;
  std::vector<float> mask_;  // attention mask input of the current call (reused: no allocation per step)
  const bool kv_alias_ = kv_alias_enabled();  // whole-ring masks + the aliasing slice kernel
  SliceAliasState alias_;
};

}  // namespace

Status load_et_backend(const std::string& path, bool use_mmap, std::unique_ptr<ModelBackend>* out) {
  // Name the common failures plainly before ExecuTorch turns them into error codes.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::error(path + ": cannot open model: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return Status::error(path + ": is a directory, not a .pte file");
  if (st.st_size == 0) return Status::error(path + ": model file is empty");
  auto b = std::make_unique<EtBackend>(path);
  VX_RETURN_IF_ERROR(b->open(use_mmap));
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
