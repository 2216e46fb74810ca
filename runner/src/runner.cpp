// Public API (voxtral_rt.h): Runner = ExecuTorch backend + tokenizer + metadata; Session = one Stream.
#include <atomic>

#include "et_backend.h"
#include "log.h"
#include "metadata.h"
#include "stream.h"
#include "tekken.h"
#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt {

using detail::Status;

struct Runner::Impl {
  std::unique_ptr<detail::ModelBackend> model;
  std::unique_ptr<detail::Tekken> tokenizer;
  ModelInfo info;
  double load_ms = 0;
  // The caches live in the program's shared mutable buffers: one stream at a time per loaded Module.
  // (Two concurrent sessions would need a Module per session over the same mmapped Program:
  // Module(std::shared_ptr<Program>, ..., share_memory_arenas=true).)
  std::atomic<bool> session_active{false};
};

struct Session::Impl {
  Impl(detail::ModelBackend* model, const detail::Tekken* tok, std::atomic<bool>* active, detail::StreamConfig cfg)
      : active(active), stream(model, tok, std::move(cfg)) {}
  ~Impl() { active->store(false); }
  int64_t result(const Status& s, int64_t n) {
    if (s.ok()) return n;
    error = s.message();
    return -1;
  }
  std::atomic<bool>* active;  // the Runner's one-session flag
  detail::Stream stream;
  std::string error;
};

namespace {

// The tokenizer must be the one the model was exported with.
Status check_tokenizer(const detail::Tekken& tok, const ModelInfo& m, const std::string& tok_path,
                       const std::string& model_path) {
  auto mismatch = [&](const std::string& what) {
    return Status::error("tokenizer " + tok_path + " does not match model " + model_path + ": " + what +
                         "; use the tekken.json the model was exported with");
  };
  if (tok.vocab_size() != m.vocab_size)
    return mismatch("vocab size " + std::to_string(tok.vocab_size()) + " vs " + std::to_string(m.vocab_size));
  if (tok.num_special_tokens() != m.num_special_tokens)
    return mismatch("num special tokens " + std::to_string(tok.num_special_tokens()) + " vs " +
                    std::to_string(m.num_special_tokens));
  const std::pair<const char*, int64_t> named[] = {{"<s>", m.bos_id},
                                                   {"</s>", m.eos_id},
                                                   {"[STREAMING_PAD]", m.streaming_pad_id},
                                                   {"[STREAMING_WORD]", m.streaming_word_id}};
  for (const auto& [name, id] : named) {
    const int64_t tid = tok.special_id(name);
    if (tid != id)
      return mismatch(std::string(name) + " is id " + std::to_string(tid) + " in the tokenizer (-1 = absent) but " +
                      std::to_string(id) + " in the model");
  }
  return Status();
}

}  // namespace

int resolve_delay_tokens(const ModelInfo& info, int delay_ms, std::string* error) {
  int64_t n = 0;
  const Status s = detail::delay_tokens_for(info, delay_ms, &n);
  if (!s.ok()) {
    if (error) *error = s.message();
    return -1;
  }
  return static_cast<int>(n);
}

// ---------------------------------------------------------------------------------------------- Runner

Runner::Runner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runner::~Runner() = default;

std::unique_ptr<Runner> Runner::load(const RunnerOptions& options, std::string* error) {
  auto fail = [&](const std::string& msg) -> std::unique_ptr<Runner> {
    if (error) *error = msg;
    return nullptr;
  };
  if (options.model_path.empty()) return fail("no model path given");
  if (options.tokenizer_path.empty()) return fail("no tokenizer path given");
  if (options.threads < 0) return fail("threads must be >= 0 (0 = default)");
  const double t0 = detail::now_ms();
  auto impl = std::make_unique<Impl>();
  const size_t n_threads = detail::set_num_threads(options.threads);
  VX_LOG_DEBUG("ExecuTorch threadpool: %zu threads", n_threads);

  Status s = detail::load_et_backend(options.model_path, options.use_mmap, &impl->model);
  if (!s.ok()) return fail(s.message());
  impl->info = impl->model->info();
  const double t1 = detail::now_ms();
  s = detail::Tekken::from_file(options.tokenizer_path, &impl->tokenizer);
  if (!s.ok()) return fail(s.message());
  VX_LOG_DEBUG("tokenizer loaded in %.1f ms", detail::now_ms() - t1);
  s = check_tokenizer(*impl->tokenizer, impl->info, options.tokenizer_path, options.model_path);
  if (!s.ok()) return fail(s.message());
  impl->load_ms = detail::now_ms() - t0;
  VX_LOG_INFO("loaded %s (dim %lld, vocab %lld, default delay %lld ms) in %.0f ms", options.model_path.c_str(),
              static_cast<long long>(impl->info.dim), static_cast<long long>(impl->info.vocab_size),
              static_cast<long long>(impl->info.default_delay_tokens * impl->info.ms_per_token), impl->load_ms);
  return std::unique_ptr<Runner>(new Runner(std::move(impl)));
}

std::unique_ptr<Session> Runner::create_session(const SessionOptions& options, std::string* error) {
  auto fail = [&](const std::string& msg) -> std::unique_ptr<Session> {
    if (error) *error = msg;
    return nullptr;
  };
  detail::StreamConfig cfg;
  Status s = detail::delay_tokens_for(impl_->info, options.delay_ms, &cfg.delay_tokens);
  if (!s.ok()) return fail(s.message());
  if (options.max_enc_tokens < 0) return fail("max_enc_tokens must be >= 0 (0 = model maximum)");
  cfg.max_enc_tokens = options.max_enc_tokens;
  cfg.on_token = options.on_token;
  bool expected = false;
  if (!impl_->session_active.compare_exchange_strong(expected, true))
    return fail("another Session of this Runner is alive: the model's caches serve one stream at a time; "
                "destroy it first (or reset() and reuse it)");
  auto simpl = std::make_unique<Session::Impl>(impl_->model.get(), impl_->tokenizer.get(),
                                               &impl_->session_active, std::move(cfg));
  return std::unique_ptr<Session>(new Session(std::move(simpl)));
}

bool Runner::transcribe(const float* pcm16k, size_t n_samples, const SessionOptions& options, Transcript* out,
                        std::string* error) {
  auto session = create_session(options, error);
  if (!session) return false;
  if (session->feed(pcm16k, n_samples) < 0 || session->flush() < 0) {
    if (error) *error = session->error();
    return false;
  }
  out->text = session->text();
  out->token_ids = session->token_ids();
  out->token_times_ms = session->token_times_ms();
  out->stats = session->stats();
  return true;
}

const ModelInfo& Runner::info() const { return impl_->info; }
double Runner::load_ms() const { return impl_->load_ms; }
std::string Runner::decode(const std::vector<int64_t>& ids) const { return impl_->tokenizer->decode(ids); }

// ---------------------------------------------------------------------------------------------- Session

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

int64_t Session::feed(const float* pcm16k, size_t n_samples) {
  int64_t n = 0;
  const Status s = impl_->stream.feed(pcm16k, n_samples, &n);
  return impl_->result(s, n);
}

int64_t Session::flush() {
  int64_t n = 0;
  const Status s = impl_->stream.flush(&n);
  return impl_->result(s, n);
}

void Session::reset() {
  impl_->stream.reset();
  impl_->error.clear();
}

void Session::stop() { impl_->stream.stop(); }
std::string Session::take_text() { return impl_->stream.take_text(); }
std::string Session::text() const { return impl_->stream.text(); }
const std::vector<int64_t>& Session::token_ids() const { return impl_->stream.token_ids(); }
const std::vector<double>& Session::token_times_ms() const { return impl_->stream.token_times_ms(); }
bool Session::finished() const { return impl_->stream.finished(); }
int Session::delay_tokens() const { return static_cast<int>(impl_->stream.delay_tokens()); }
const SessionStats& Session::stats() const { return impl_->stream.stats(); }
const std::string& Session::error() const { return impl_->error; }

}  // namespace voxtral_rt
