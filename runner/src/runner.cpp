// Public API (voxtral_rt.h): Runner = ExecuTorch backend + tokenizer + metadata; Session = one Stream.
#include <memory>
#include <mutex>
#include <vector>

#include "et_backend.h"
#include "log.h"
#include "memtrace.h"
#include "metadata.h"
#include "stream.h"
#include "tekken.h"
#include "util.h"
#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt {

using detail::Status;

// Shared by the Runner and its Sessions (a Session keeps it alive, so it may outlive the Runner).
// Each live Session owns one model backend: the Runner's primary (loaded with the program) or, while that
// one is taken, a sibling over the same loaded program with its own caches. Backends go back to the pool
// when their Session ends, so a process pays for as many as it ever ran at once.
struct Runner::Impl {
  ~Impl() {
    // Siblings first: the primary's Module owns the data loader the shared program reads from.
    idle.clear();
    while (!all.empty()) all.pop_back();
  }

  // A backend for a new Session: an idle one, or a new sibling (loading its methods: slow, so outside the
  // pool lock; sibling loads are serialised among themselves).
  Status acquire(detail::ModelBackend** out) {
    {
      std::lock_guard<std::mutex> lock(pool_mutex);
      if (!idle.empty()) {
        *out = idle.back();
        idle.pop_back();
        return Status();
      }
      if (max_sessions > 0 && static_cast<int>(all.size()) - static_cast<int>(idle.size()) + pending >= max_sessions)
        return Status::error("this Runner already has " + std::to_string(max_sessions) +
                             " live Sessions (RunnerOptions::max_sessions); destroy one first (or reset() and reuse it)");
      ++pending;
    }
    std::unique_ptr<detail::ModelBackend> b;
    Status s;
    {
      std::lock_guard<std::mutex> load_lock(sibling_mutex);
      const double t0 = detail::now_ms();
      s = detail::sibling_et_backend(*primary, &b);
      if (s.ok()) VX_LOG_INFO("a concurrent session: loaded the model's methods again (own caches) in %.0f ms", detail::now_ms() - t0);
    }
    std::lock_guard<std::mutex> lock(pool_mutex);
    --pending;
    if (!s.ok()) return s;
    *out = b.get();
    all.push_back(std::move(b));
    return Status();
  }

  void release(detail::ModelBackend* b) {
    std::lock_guard<std::mutex> lock(pool_mutex);
    // The primary last in the list: it is handed out first (one session at a time touches one set of
    // caches and activations only).
    if (b == primary) {
      idle.push_back(b);
    } else {
      idle.insert(idle.begin(), b);
    }
  }

  std::unique_ptr<detail::Tekken> tokenizer;
  ModelInfo info;
  double load_ms = 0;
  int max_sessions = 0;

  detail::ModelBackend* primary = nullptr;              // == all.front(); set once by load(), read without a lock
  std::mutex pool_mutex;                                 // guards all, idle, pending
  std::vector<std::unique_ptr<detail::ModelBackend>> all;  // all.front() = the primary
  std::vector<detail::ModelBackend*> idle;
  int pending = 0;                                       // siblings being loaded
  std::mutex sibling_mutex;
};

struct Session::Impl {
  Impl(std::shared_ptr<Runner::Impl> runner, detail::ModelBackend* model, detail::StreamConfig cfg)
      : runner(std::move(runner)), model(model), stream(model, this->runner->tokenizer.get(), std::move(cfg)) {}
  ~Impl() {
    if (detail::mem_trace_enabled()) {
      detail::trace_memory("session ended");
      model->trace_planned_memory();
    }
    runner->release(model);
  }
  int64_t result(const Status& s, int64_t n) {
    if (s.ok()) return n;
    error = s.message();
    return -1;
  }
  std::shared_ptr<Runner::Impl> runner;  // declared first: destroyed last
  detail::ModelBackend* model;           // ours until the destructor gives it back
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

Runner::Runner(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runner::~Runner() = default;

std::unique_ptr<Runner> Runner::load(const RunnerOptions& options, std::string* error) {
  auto fail = [&](const std::string& msg) -> std::unique_ptr<Runner> {
    if (error) *error = msg;
    return nullptr;
  };
  if (options.model_path.empty()) return fail("no model path given");
  if (options.tokenizer_path.empty()) return fail("no tokenizer path given");
  if (options.threads < 0) return fail("threads must be >= 0 (0 = default)");
  if (options.max_sessions < 0) return fail("max_sessions must be >= 0 (0 = no limit)");
  const double t0 = detail::now_ms();
  auto impl = std::make_shared<Impl>();
  impl->max_sessions = options.max_sessions;
  const size_t n_threads = detail::set_num_threads(options.threads);
  VX_LOG_DEBUG("ExecuTorch threadpool: %zu threads", n_threads);

  std::unique_ptr<detail::ModelBackend> primary;
  Status s = detail::load_et_backend(options.model_path, options.use_mmap, options.packed_cache_path, &primary);
  if (!s.ok()) return fail(s.message());
  impl->info = primary->info();
  impl->primary = primary.get();
  impl->idle.push_back(primary.get());
  impl->all.push_back(std::move(primary));
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
  if (options.max_history < 0) return fail("max_history must be >= 0 (0 = keep every token)");
  cfg.max_history = options.max_history;
  if (options.draft_tokens < -1) return fail("draft_tokens must be >= -1 (-1 = adaptive, 0 = one position per call)");
  cfg.draft_tokens = options.draft_tokens;
  cfg.stop_at_eos = options.stop_at_eos;
  cfg.on_token = options.on_token;
  if (options.segment_pause_ms < 0) return fail("segment_pause_ms must be >= 0 (0 = never end a segment at a pause)");
  cfg.segment_pause_ms = options.segment_pause_ms;
  cfg.on_segment = options.on_segment;
  detail::ModelBackend* model = nullptr;
  s = impl_->acquire(&model);
  if (!s.ok()) return fail(s.message());
  auto simpl = std::make_unique<Session::Impl>(impl_, model, std::move(cfg));
  return std::unique_ptr<Session>(new Session(std::move(simpl)));
}

bool Runner::transcribe(const float* pcm16k, size_t n_samples, const SessionOptions& options, Transcript* out,
                        std::string* error) {
  if (out == nullptr || (pcm16k == nullptr && n_samples > 0)) {
    if (error) *error = "transcribe(): null output or samples pointer";
    return false;
  }
  auto session = create_session(options, error);
  if (!session) return false;
  if (session->feed(pcm16k, n_samples) < 0 || session->flush() < 0) {
    if (error) *error = session->error();
    return false;
  }
  out->text = session->text();
  out->token_ids = session->token_ids();
  out->token_times_ms = session->token_times_ms();
  out->segments = session->segments();
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
std::vector<Word> Session::words() const { return impl_->stream.transcript().words(); }
std::vector<Segment> Session::segments() const { return impl_->stream.transcript().segments(); }
bool Session::finished() const { return impl_->stream.finished(); }
int Session::delay_tokens() const { return static_cast<int>(impl_->stream.delay_tokens()); }
const SessionStats& Session::stats() const { return impl_->stream.stats(); }
const std::string& Session::error() const { return impl_->error; }

}  // namespace voxtral_rt
