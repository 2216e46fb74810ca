// C API (voxtral_rt_c.h): handles that own the C++ objects of voxtral_rt.h, plus the storage for the strings and
// structs the getters hand out. No model logic here. Every entry point catches everything: no exception
// crosses the C boundary.
#include "voxtral_rt/voxtral_rt_c.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "metadata.h"
#include "voxtral_rt/audio.h"
#include "voxtral_rt/voxtral_rt.h"

#ifndef VOXTRAL_RT_VERSION_STRING
#error "VOXTRAL_RT_VERSION_STRING must be defined by the build (CMake: the project version)"
#endif

struct voxtral_rt_model {
  std::unique_ptr<voxtral_rt::Runner> runner;
};

namespace {

// C views of segments: the voxtral_rt_segment/_word structs point into `segments`, which they own.
struct SegmentViews {
  std::vector<voxtral_rt::Segment> segments;
  std::vector<voxtral_rt_word> words;             // every segment's words, in order
  std::vector<const voxtral_rt_word*> word_ptrs;  // segment i's words are a run of these
  std::vector<voxtral_rt_segment> views;

  void build(std::vector<voxtral_rt::Segment> from) {
    segments = std::move(from);
    words.clear();
    word_ptrs.clear();
    views.clear();
    for (const auto& seg : segments)
      for (const auto& w : seg.words) words.push_back({w.text.c_str(), w.start_ms, w.end_ms});
    for (const auto& w : words) word_ptrs.push_back(&w);  // `words` is complete: no reallocation from here on
    size_t first = 0;
    for (const auto& seg : segments) {
      views.push_back({seg.text.c_str(), seg.start_ms, seg.end_ms, seg.words.size(), word_ptrs.data() + first});
      first += seg.words.size();
    }
  }
};

}  // namespace

struct voxtral_rt_session {
  std::unique_ptr<voxtral_rt::Session> session;  // its callbacks call back into this handle: destroy it first
  std::string error;
  std::string text, taken;  // what text() / take_text() returned last
  int32_t ms_per_token = 0;
  voxtral_rt_token_callback token_callback = nullptr;
  void* token_user_data = nullptr;
  voxtral_rt_segment_callback segment_callback = nullptr;
  void* segment_user_data = nullptr;

  // What the word and segment getters point into: Session::words()/segments() as of `n_changes`, taken by the
  // first getter call after a feed/flush/reset (so pointers stay valid until the next one of those).
  uint64_t n_changes = 0;
  uint64_t words_at = UINT64_MAX, segments_at = UINT64_MAX;
  std::vector<voxtral_rt::Word> words;
  std::vector<voxtral_rt_word> word_views;
  SegmentViews segments;

  void refresh_words() {
    if (words_at == n_changes) return;
    words = session->words();
    word_views.clear();
    for (const auto& w : words) word_views.push_back({w.text.c_str(), w.start_ms, w.end_ms});
    words_at = n_changes;
  }
  void refresh_segments() {
    if (segments_at == n_changes) return;
    segments.build(session->segments());
    segments_at = n_changes;
  }
};

struct voxtral_rt_audio {
  std::vector<float> samples;
};

namespace {

// Copies `a` + `b` into the caller's buffer, cut to fit, always NUL-terminated. Allocates nothing.
void set_err(char* err, size_t err_len, const char* a, const char* b = "") noexcept {
  if (err == nullptr || err_len == 0) return;
  size_t n = 0;
  for (const char* part : {a, b})
    for (const char* c = part; *c != '\0' && n + 1 < err_len; ++c) err[n++] = *c;
  err[n] = '\0';
}

// The message of the exception being handled (call only from a catch block): a static string, or the
// exception's what() with a prefix. Never throws, allocates nothing.
void exception_message(const char** prefix, const char** what) noexcept {
  *prefix = "internal error: ";
  *what = "unknown exception";
  try {
    throw;
  } catch (const std::bad_alloc&) {
    *prefix = "";
    *what = "out of memory";
  } catch (const std::exception& x) {
    *what = x.what();
  } catch (...) {
  }
}

void set_err_from_exception(char* err, size_t err_len) noexcept {
  const char *prefix, *what;
  exception_message(&prefix, &what);
  set_err(err, err_len, prefix, what);
}

// The body of an entry point that returns a new handle: `make(&error)` returns it as a unique_ptr, or nullptr
// with *error set. Hands the handle to the caller, or writes the error (or the exception's message) to `err`
// and returns nullptr. Never throws.
template <typename F>
auto new_handle(char* err, size_t err_len, F&& make) noexcept -> decltype(make(nullptr).release()) {
  try {
    std::string error;
    auto h = make(&error);
    if (!h) set_err(err, err_len, error.c_str());
    return h.release();  // the caller owns it: voxtral_rt_*_free
  } catch (...) {
    set_err_from_exception(err, err_len);
    return nullptr;
  }
}

// Runs `f` for a session; on an exception records it as the session's error and returns `on_error`.
template <typename T, typename F>
T guarded(voxtral_rt_session* s, T on_error, F&& f) noexcept {
  if (s == nullptr) return on_error;
  try {
    return f();
  } catch (...) {
    const char *prefix, *what;
    exception_message(&prefix, &what);
    try {
      s->error = std::string(prefix) + what;
    } catch (...) {  // no memory even for the message: keep the previous one
    }
    return on_error;
  }
}

// A params struct all zero (NULL pointers and callbacks, padding too) but its struct_size.
template <typename P>
P zeroed_params() noexcept {
  P p;
  std::memset(&p, 0, sizeof(p));
  p.struct_size = sizeof(p);
  return p;
}

template <typename P>
bool check_struct_size(const P* p, const char* name, const char* defaults_fn, std::string* error) {
  if (p->struct_size == sizeof(P)) return true;
  *error = std::string(name) + ".struct_size is " + std::to_string(p->struct_size) + ", this library expects " +
           std::to_string(sizeof(P)) + ": initialise the struct with " + defaults_fn +
           "() (or the header does not match the library)";
  return false;
}

bool to_options(const voxtral_rt_session_params& p, voxtral_rt_session* h, voxtral_rt::SessionOptions* o,
                std::string* error) {
  if (!check_struct_size(&p, "voxtral_rt_session_params", "voxtral_rt_session_default_params", error)) return false;
  o->delay_ms = p.delay_ms;
  o->max_enc_tokens = p.max_enc_tokens;
  o->draft_tokens = p.draft_tokens;
  o->max_history = p.max_history;
  o->stop_at_eos = p.stop_at_eos;
  o->segment_pause_ms = p.segment_pause_ms;
  h->token_callback = p.token_callback;
  h->token_user_data = p.token_callback_user_data;
  if (p.token_callback != nullptr) {
    o->on_token = [h](const voxtral_rt::TokenEvent& ev) {
      voxtral_rt_token t;
      t.id = ev.id;
      t.position = ev.position;
      t.time_ms = ev.time_ms;
      t.is_special = ev.is_special;
      t.text = ev.text.c_str();
      h->token_callback(&t, h->token_user_data);
    };
  }
  h->segment_callback = p.segment_callback;
  h->segment_user_data = p.segment_callback_user_data;
  if (p.segment_callback != nullptr) {
    o->on_segment = [h](const voxtral_rt::Segment& segment) {
      SegmentViews v;
      v.build({segment});
      h->segment_callback(&v.views[0], h->segment_user_data);
    };
  }
  return true;
}

// A session handle for `model` and `params` (NULL = defaults), or nullptr + *error.
std::unique_ptr<voxtral_rt_session> make_session(voxtral_rt_model* model, const voxtral_rt_session_params* params,
                                                 std::string* error) {
  if (model == nullptr) {
    *error = "null model";
    return nullptr;
  }
  auto h = std::make_unique<voxtral_rt_session>();
  const voxtral_rt_session_params p = params ? *params : voxtral_rt_session_default_params();
  voxtral_rt::SessionOptions o;
  if (!to_options(p, h.get(), &o, error)) return nullptr;
  h->session = model->runner->create_session(o, error);
  if (!h->session) return nullptr;
  h->ms_per_token = static_cast<int32_t>(model->runner->info().ms_per_token);
  return h;
}

const voxtral_rt::ModelInfo* info_of(const voxtral_rt_model* m) { return m ? &m->runner->info() : nullptr; }

}  // namespace

extern "C" {

// ---------------------------------------------------------------------------------------------- version, logging

const char* voxtral_rt_version(void) { return VOXTRAL_RT_VERSION_STRING; }

void voxtral_rt_log_set(voxtral_rt_log_callback callback, void* user_data) {
  try {
    if (callback == nullptr) {
      voxtral_rt::set_log_callback(nullptr);
      return;
    }
    voxtral_rt::set_log_callback([callback, user_data](voxtral_rt::LogLevel level, const std::string& message) {
      callback(static_cast<int32_t>(level), message.c_str(), user_data);
    });
  } catch (...) {  // out of memory: the previous sink stays
  }
}

void voxtral_rt_log_route_executorch(void) {
  try {
    voxtral_rt::route_executorch_logs();
  } catch (...) {
  }
}

// ---------------------------------------------------------------------------------------------- model

voxtral_rt_model_params voxtral_rt_model_default_params(void) {
  auto p = zeroed_params<voxtral_rt_model_params>();  // no paths
  const voxtral_rt::RunnerOptions d;
  p.threads = d.threads;
  p.use_mmap = d.use_mmap;
  p.max_sessions = d.max_sessions;
  return p;
}

voxtral_rt_model* voxtral_rt_model_load(const voxtral_rt_model_params* params, char* err, size_t err_len) {
  return new_handle(err, err_len, [params](std::string* error) -> std::unique_ptr<voxtral_rt_model> {
    if (params == nullptr) {
      *error = "null params: start from voxtral_rt_model_default_params()";
      return nullptr;
    }
    if (!check_struct_size(params, "voxtral_rt_model_params", "voxtral_rt_model_default_params", error))
      return nullptr;
    voxtral_rt::RunnerOptions o;
    o.model_path = params->model_path ? params->model_path : "";
    o.tokenizer_path = params->tokenizer_path ? params->tokenizer_path : "";
    o.threads = params->threads;
    o.use_mmap = params->use_mmap;
    o.max_sessions = params->max_sessions;
    o.packed_cache_path = params->packed_cache_path ? params->packed_cache_path : "";
    auto m = std::make_unique<voxtral_rt_model>();
    m->runner = voxtral_rt::Runner::load(o, error);
    if (!m->runner) return nullptr;
    return m;
  });
}

void voxtral_rt_model_free(voxtral_rt_model* model) { std::unique_ptr<voxtral_rt_model> owned(model); }

int32_t voxtral_rt_model_sample_rate(const voxtral_rt_model* model) {
  const auto* i = info_of(model);
  return i ? static_cast<int32_t>(i->sample_rate) : -1;
}

int32_t voxtral_rt_model_ms_per_token(const voxtral_rt_model* model) {
  const auto* i = info_of(model);
  return i ? static_cast<int32_t>(i->ms_per_token) : -1;
}

int32_t voxtral_rt_model_default_delay_ms(const voxtral_rt_model* model) {
  const auto* i = info_of(model);
  return i ? static_cast<int32_t>(i->default_delay_tokens * i->ms_per_token) : -1;
}

bool voxtral_rt_model_info(const voxtral_rt_model* model, const char* key, int64_t* value) {
  const auto* i = info_of(model);
  if (i == nullptr || key == nullptr || value == nullptr) return false;
#define VX_INFO_KEY(name)              \
  if (std::strcmp(key, #name) == 0) {  \
    *value = i->name;                  \
    return true;                       \
  }
  VOXTRAL_RT_METADATA_KEYS(VX_INFO_KEY)
#undef VX_INFO_KEY
  return false;
}

// ---------------------------------------------------------------------------------------------- session

voxtral_rt_session_params voxtral_rt_session_default_params(void) {
  auto p = zeroed_params<voxtral_rt_session_params>();  // no callbacks
  const voxtral_rt::SessionOptions d;
  p.delay_ms = d.delay_ms;
  p.max_enc_tokens = d.max_enc_tokens;
  p.draft_tokens = d.draft_tokens;
  p.max_history = d.max_history;
  p.stop_at_eos = d.stop_at_eos;
  p.segment_pause_ms = d.segment_pause_ms;
  return p;
}

voxtral_rt_session* voxtral_rt_session_create(voxtral_rt_model* model, const voxtral_rt_session_params* params,
                                              char* err, size_t err_len) {
  return new_handle(err, err_len, [&](std::string* error) { return make_session(model, params, error); });
}

int64_t voxtral_rt_session_feed(voxtral_rt_session* session, const float* pcm, size_t n) {
  return guarded<int64_t>(session, -1, [&]() -> int64_t {
    ++session->n_changes;
    const int64_t r = session->session->feed(pcm, n);
    if (r < 0) session->error = session->session->error();
    return r;
  });
}

int64_t voxtral_rt_session_flush(voxtral_rt_session* session) {
  return guarded<int64_t>(session, -1, [&]() -> int64_t {
    ++session->n_changes;
    const int64_t r = session->session->flush();
    if (r < 0) session->error = session->session->error();
    return r;
  });
}

void voxtral_rt_session_reset(voxtral_rt_session* session) {
  guarded<int>(session, 0, [&] {
    ++session->n_changes;
    session->session->reset();
    session->error.clear();
    session->text.clear();
    session->taken.clear();
    return 0;
  });
}

void voxtral_rt_session_stop(voxtral_rt_session* session) {
  if (session != nullptr) session->session->stop();  // an atomic store: nothing to catch
}

void voxtral_rt_session_free(voxtral_rt_session* session) { std::unique_ptr<voxtral_rt_session> owned(session); }

const char* voxtral_rt_session_error(const voxtral_rt_session* session) {
  return session ? session->error.c_str() : "null session";
}

const char* voxtral_rt_session_text(voxtral_rt_session* session) {
  return guarded<const char*>(session, "", [&] {
    session->text = session->session->text();
    return session->text.c_str();
  });
}

const char* voxtral_rt_session_take_text(voxtral_rt_session* session) {
  return guarded<const char*>(session, "", [&] {
    session->taken = session->session->take_text();
    return session->taken.c_str();
  });
}

bool voxtral_rt_session_finished(const voxtral_rt_session* session) {
  return session != nullptr && session->session->finished();
}

int32_t voxtral_rt_session_delay_ms(const voxtral_rt_session* session) {
  if (session == nullptr) return -1;
  return session->session->delay_tokens() * session->ms_per_token;
}

size_t voxtral_rt_session_n_tokens(const voxtral_rt_session* session) {
  return session ? session->session->token_ids().size() : 0;
}

const int64_t* voxtral_rt_session_token_ids(const voxtral_rt_session* session) {
  return session ? session->session->token_ids().data() : nullptr;
}

const double* voxtral_rt_session_token_times_ms(const voxtral_rt_session* session) {
  return session ? session->session->token_times_ms().data() : nullptr;
}

size_t voxtral_rt_session_n_words(voxtral_rt_session* session) {
  return guarded<size_t>(session, 0, [&] {
    session->refresh_words();
    return session->word_views.size();
  });
}

const voxtral_rt_word* voxtral_rt_session_word(voxtral_rt_session* session, size_t i) {
  return guarded<const voxtral_rt_word*>(session, nullptr, [&]() -> const voxtral_rt_word* {
    session->refresh_words();
    return i < session->word_views.size() ? &session->word_views[i] : nullptr;
  });
}

size_t voxtral_rt_session_n_segments(voxtral_rt_session* session) {
  return guarded<size_t>(session, 0, [&] {
    session->refresh_segments();
    return session->segments.views.size();
  });
}

const voxtral_rt_segment* voxtral_rt_session_segment(voxtral_rt_session* session, size_t i) {
  return guarded<const voxtral_rt_segment*>(session, nullptr, [&]() -> const voxtral_rt_segment* {
    session->refresh_segments();
    return i < session->segments.views.size() ? &session->segments.views[i] : nullptr;
  });
}

voxtral_rt_session* voxtral_rt_transcribe(voxtral_rt_model* model, const float* pcm, size_t n,
                                          const voxtral_rt_session_params* params, char* err, size_t err_len) {
  return new_handle(err, err_len, [&](std::string* error) {
    auto h = make_session(model, params, error);
    if (h && (h->session->feed(pcm, n) < 0 || h->session->flush() < 0)) {
      *error = h->session->error();
      h.reset();
    }
    return h;
  });
}

// ---------------------------------------------------------------------------------------------- audio files

voxtral_rt_audio* voxtral_rt_audio_load(const char* path, int32_t sample_rate, char* err, size_t err_len) {
  return new_handle(err, err_len, [&](std::string* error) -> std::unique_ptr<voxtral_rt_audio> {
    if (path == nullptr) {
      *error = "null path";
      return nullptr;
    }
    auto a = std::make_unique<voxtral_rt_audio>();
    if (!voxtral_rt::load_audio_file(path, sample_rate, &a->samples, error)) return nullptr;
    return a;
  });
}

const float* voxtral_rt_audio_samples(const voxtral_rt_audio* audio) {
  return audio ? audio->samples.data() : nullptr;
}

size_t voxtral_rt_audio_n_samples(const voxtral_rt_audio* audio) { return audio ? audio->samples.size() : 0; }

void voxtral_rt_audio_free(voxtral_rt_audio* audio) { std::unique_ptr<voxtral_rt_audio> owned(audio); }

}  // extern "C"
