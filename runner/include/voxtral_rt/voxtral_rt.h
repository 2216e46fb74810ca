// voxtral_rt.h -- streaming speech-to-text with Voxtral-Mini-4B-Realtime on an ExecuTorch .pte (CPU).
//
// Usage:
//   std::string err;
//   auto runner = voxtral_rt::Runner::load({"model.pte", "tekken.json"}, &err);   // nullptr + err on failure
//   auto session = runner->create_session({}, &err);     // default delay from the model
//   while (more audio)                                   // 16 kHz mono float PCM, any chunk size
//     if (session->feed(pcm.data(), pcm.size()) > 0)     // returns #new tokens, -1 on error
//       std::cout << session->take_text();               // complete UTF-8 only
//   session->flush();                                    // end of audio: pads, runs to the end (idempotent)
//   std::cout << session->take_text() << "\n";           // session->text() == whole transcript
//   runner->transcribe(pcm.data(), pcm.size(), {}, &result, &err);   // offline = the same loop
//
// Thread safety:
//   * Runner: every method may be called from any thread, concurrently (create_session, transcribe,
//     info, decode, load_ms). Runner::load may run while other Runners work, provided its
//     RunnerOptions::threads is 0 or the current pool size: resizing the process-wide threadpool while
//     anything runs on it is unsafe.
//   * Sessions of one Runner run concurrently: each live Session has its own copy of the model's caches
//     (mutable buffers). The first uses the Runner's loaded methods; while it is alive, another Session
//     loads the methods again over the same mapped program. With use_mmap (the default) XNNPACK's weights
//     cache is on, so that Session reuses the packed weights the first one made: an extra concurrent
//     Session costs its caches and activations (reserved up front, resident only as its stream reaches
//     them), not another copy of the weights. Without use_mmap each Session packs its own (about one .pte
//     of extra RAM each, and the packing time). Ended Sessions give their methods back to the Runner for the
//     next Session. RunnerOptions::max_sessions caps the count.
//     Results do not depend on concurrency: each Session gives the tokens a sequential run gives.
//   * A Session must be used by one thread at a time, except Session::stop(), which may be called from any
//     thread (e.g. a signal watcher). Different Sessions may be used from different threads freely.
//   * LiveSession (end of this file) runs a Session on its own worker thread, for audio pushed from any thread
//     (e.g. an audio callback) without waiting for the model; its contract is stated there.
//   * Concurrent Sessions share ExecuTorch's process-wide CPU threadpool (RunnerOptions::threads), so two
//     sessions on N cores get roughly N cores between them, not 2N.
//   * A Session may outlive its Runner (it keeps the loaded model alive until it is destroyed).
//   * set_log_callback may be called from any thread; the callback is called from the thread that logs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace voxtral_rt {

// ---------------------------------------------------------------------------------------------- logging

enum class LogLevel { Debug = 0, Info = 1, Warning = 2, Error = 3 };
using LogCallback = std::function<void(LogLevel level, const std::string& message)>;

// Route the library's log messages (never stdout). Default: stderr, Info and above. nullptr restores it.
void set_log_callback(LogCallback callback);

// Also send ExecuTorch's own runtime logs through that callback, prefixed "executorch: ": its Debug and Info
// lines (e.g. cpuinfo probing at start-up) at Debug, its errors at Warning, fatal at Error. Without this
// call they go to stderr as ExecuTorch prints them. It replaces ExecuTorch's process-wide log hook (its
// PAL), so an app that installs its own hook should not call it. Call it before Runner::load.
void route_executorch_logs();

// ---------------------------------------------------------------------------------------------- model

struct RunnerOptions {
  std::string model_path;      // .pte written by export/export_voxtral_rt.py (format_version 3)
  std::string tokenizer_path;  // tekken.json of the same model
  int threads = 0;             // ExecuTorch CPU threadpool size; 0 = its default. Process-wide: set it
                               // before any Session runs (see "Thread safety").
  bool use_mmap = true;        // map the .pte and share packed weights between concurrent Sessions (XNNPACK
                               // weights cache); false: read it through file reads, each Session packs its own
  int max_sessions = 0;        // live Sessions allowed at once (0 = no limit); see "Thread safety" above
  // Optional (needs use_mmap): a file for XNNPACK's packed weights. The first load packs into it (about the
  // size of the .pte's 4-bit weights); later loads, in any process, map it instead of packing (faster start,
  // and its clean pages are shared between processes). Keep it per machine and model: entries are keyed by
  // the weights' hash and XNNPACK's kernel, so a mismatch re-packs, but the file only grows. < 256 bytes.
  std::string packed_cache_path{};
};

// Model constants, read from the .pte's constant methods (names as in docs/design.md).
struct ModelInfo {
  int64_t format_version = 0;
  int64_t sample_rate = 0;          // Hz (16000)
  int64_t hop_length = 0;           // samples per mel frame (160)
  int64_t window_size = 0;          // STFT window (400)
  int64_t num_mel_bins = 0;         // 128
  int64_t samples_per_token = 0;    // 1280 = 80 ms
  int64_t mel_frames_per_token = 0; // 8
  int64_t enc_frames_per_token = 0; // 4 (encoder positions per token)
  int64_t dim = 0;                  // decoder width
  int64_t vocab_size = 0;
  int64_t enc_sliding_window = 0;
  int64_t dec_sliding_window = 0;
  int64_t enc_cache_slots = 0;      // ring slots of each encoder KV cache (window + longest chunk)
  int64_t dec_cache_slots = 0;      // ring slots of each decoder KV cache
  int64_t max_mel_frames = 0;       // per preprocessor call
  int64_t max_enc_tokens = 0;       // per audio_encoder call
  int64_t max_dec_tokens = 0;       // per token_embedding / text_decoder call
  int64_t default_delay_tokens = 0; // 6 = 480 ms
  int64_t left_pad_tokens = 0;      // 32
  int64_t right_pad_buffer_tokens = 0;  // 10
  int64_t bos_id = 0, eos_id = 0, streaming_pad_id = 0, streaming_word_id = 0;
  int64_t num_special_tokens = 0;
  int64_t ms_per_token = 0;         // 80
};

// ---------------------------------------------------------------------------------------------- session

// One generated token. `text` is the new complete UTF-8 text this token releases (often empty: special
// tokens, or bytes of a character still being spelled out).
struct TokenEvent {
  int64_t id = 0;
  int64_t position = 0;     // decoder position q at which the token is fed back
  double time_ms = 0;       // delay-corrected audio time: (q - left_pad - delay) * ms_per_token
  bool is_special = false;  // id < num_special_tokens (dropped from text)
  std::string text;
};
using TokenCallback = std::function<void(const TokenEvent& token)>;

// Words and segments, built from the tokens and their times as they come (runner/src/transcript.h; Python twin:
// voxtral_rt/transcript.py; the rules and the accuracy of the times: docs/design.md "Words and segments").
// A word is the text between word boundaries (a token whose bytes start with whitespace, or any special token);
// its end is the time of its first token (the model emits a word once it has heard its end: the true end lies
// within the 80 ms before, on a model that behaves as trained), its start the previous word's end, but at most
// 1 s before its own end. A segment ends at a pause (a run of [STREAMING_PAD] of >= segment_pause_ms), after a
// word that ends a sentence (. ? ! ...), at an EOS, and at the end of the stream.
struct Word {
  std::string text;      // without surrounding whitespace
  double start_ms = 0, end_ms = 0;
};
struct Segment {
  std::string text;      // its words as in the transcript (leading space kept, as whisper's segments)
  double start_ms = 0, end_ms = 0;  // its first word's start, its last word's end
  std::vector<Word> words;
};
using SegmentCallback = std::function<void(const Segment& segment)>;

struct SessionOptions {
  int delay_ms = -1;         // -1 = model default; else a multiple of ms_per_token, 1..15 tokens or 30
  int max_enc_tokens = 0;    // audio tokens per encoder call (buffers audio up to this); 0 = model max
  // Records kept for token_ids(), token_times_ms(), text(), words(), segments() and stats().step_ms/feed_ms:
  // 0 = all (memory grows ~40 bytes per 80 ms token, ~1.7 MB per hour); N > 0 = only the last N to 2N of each,
  // so an endless stream runs in flat memory (text() then decodes those tokens only). Counters, on_token,
  // on_segment and take_text() are unaffected. Live callers that consume take_text()/on_token/on_segment
  // should set it (the CLI's --stdin does).
  int64_t max_history = 0;
  // Most guessed positions per decoder call. The decoder verifies [STREAMING_PAD] guesses for positions whose
  // audio is already encoded (a backlog, offline files) and keeps the argmaxes up to the first wrong guess:
  // the tokens are exactly those of one position per call, for every value. 0 = one position per call;
  // N > 0 = up to N guesses; -1 = adaptive: measures what calls of k positions cost on this machine and the
  // PAD share it sees, and runs the k with the most tokens per second (never planned slower than 0).
  int draft_tokens = -1;
  // End of the transcript at the first EOS (</s>): true = stop decoding there (files: the behaviour of
  // transformers' generate, which the parity tests follow); false = feed the EOS back like any token and go on
  // decoding as long as audio comes (live streams: the reference realtime server never stops at EOS, so
  // nothing said after an EOS is lost). The EOS stays in token_ids either way.
  bool stop_at_eos = true;
  TokenCallback on_token;    // optional, called from feed()/flush() for every generated token
  // A segment ends at a run of [STREAMING_PAD] at least this long (ms; 0 = never at pauses). The run includes
  // the next word's own duration (a word is emitted once it has been heard), so keep it above the longest word.
  int segment_pause_ms = 640;
  // Optional, called from feed()/flush() when a segment is finished (before the on_token of the token that
  // finished it); flush() finishes the last one.
  SegmentCallback on_segment;
};

struct SessionStats {
  int64_t n_samples = 0;          // real audio samples fed (16 kHz)
  int64_t n_audio_tokens = 0;     // encoded audio tokens (including the padding)
  int64_t n_generated = 0;        // generated tokens (specials included)
  int64_t n_encoder_calls = 0, n_decoder_calls = 0;
  double preprocess_ms = 0;       // mel
  double encoder_ms = 0;          // audio_encoder
  double decoder_ms = 0;          // token_embedding + text_decoder (prefill and steps)
  double first_token_ms = -1;     // wall time from the first feed() to the first generated token
  int64_t n_step_calls = 0;       // generation calls (after the prompt prefill), 1..k positions each
  int64_t n_step_positions = 0;   // positions those calls ran: accepted tokens + rejected guesses
  std::vector<double> step_ms;    // wall time of each generation call (embedding + decoder)
  std::vector<double> feed_ms;    // wall time of each feed() call (mel + encoder + decoder work it triggered)
};

class Runner;

class Session {
 public:
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Append 16 kHz mono PCM and run the model as far as the audio allows.
  // Returns the number of new tokens, or -1 on error (see error()). Error after flush(): reset() first.
  int64_t feed(const float* pcm16k, size_t n_samples);
  // End of audio: append the right pad (alignment + delay + 11 tokens of silence) and decode to the
  // end. Idempotent (later calls return 0). Returns the number of new tokens, or -1 on error.
  int64_t flush();
  // Forget the stream; the next feed() starts a new one (same options).
  void reset();
  // Make the running and later feed()/flush() calls return early (thread-safe). reset() clears it.
  void stop();

  std::string take_text();                            // text released since the last call (pull style)
  std::string text() const;                           // decode(token_ids()): the transcript so far
  const std::vector<int64_t>& token_ids() const;      // every generated id, specials and EOS included
  const std::vector<double>& token_times_ms() const;  // per token, see TokenEvent::time_ms
  std::vector<Word> words() const;                    // every word so far (the last may still grow)
  std::vector<Segment> segments() const;              // every segment so far (the last may be open)
  bool finished() const;                              // EOS seen (stop_at_eos), or flushed and decoded to the end
  int delay_tokens() const;
  const SessionStats& stats() const;
  const std::string& error() const;                   // last error message

 private:
  friend class Runner;
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct Transcript {
  std::string text;
  std::vector<int64_t> token_ids;
  std::vector<double> token_times_ms;
  std::vector<Segment> segments;
  SessionStats stats;
};

class Runner {
 public:
  // Loads the .pte (all methods up front), reads and checks its metadata, loads the tokenizer and checks it
  // against the model. Returns nullptr and sets *error on failure; never aborts.
  static std::unique_ptr<Runner> load(const RunnerOptions& options, std::string* error);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  // Fails (nullptr, *error) on invalid options, at the max_sessions limit, or if loading the methods for
  // an extra concurrent Session fails.
  std::unique_ptr<Session> create_session(const SessionOptions& options, std::string* error);

  // Offline transcription: a session fed with all of `pcm16k`, then flushed. Returns false on error.
  bool transcribe(const float* pcm16k, size_t n_samples, const SessionOptions& options, Transcript* out,
                  std::string* error);

  const ModelInfo& info() const;
  double load_ms() const;                                  // wall time of load()
  std::string decode(const std::vector<int64_t>& ids) const;  // mistral-common decode (specials dropped)

 private:
  struct Impl;
  friend class Session;
  explicit Runner(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;  // shared with its Sessions
};

// Delay in tokens for `delay_ms` (-1 = default), or -1 with *error if the model does not support it.
int resolve_delay_tokens(const ModelInfo& info, int delay_ms, std::string* error);

// ---------------------------------------------------------------------------------------------- live input

// A Session driven by its own worker thread, for audio that arrives in real time (an audio callback, a pipe):
//
//   auto live = voxtral_rt::LiveSession::start(*runner, {}, {}, &err);   // nullptr + err on failure
//   // audio callback (any thread):  live->push(pcm16k, n);              // copies, returns at once
//   // UI thread, whenever:          std::cout << live->take_text();
//   live->finish();                                   // end of audio: feed the rest, flush, join the worker
//   live->session().token_ids();                      // the whole result, once finish() has returned
//
// push() only queues a copy; the worker takes *everything* queued each time it wakes and feeds it as one piece,
// so audio that piled up during a slow model call becomes one feed() -- encoder calls of up to max_enc_tokens
// -- instead of many small calls one after another. A stream that falls behind thus catches up with fewer,
// bigger calls. The tokens are exactly those of Session::feed() on the same audio in any pieces.
//
// Threading contract:
//   * push(), stop(), take_text(), failed(), error() and stats() may be called from any thread, at any time,
//     concurrently. push() takes an internal mutex only for the copy, never waits for the model, and does not
//     allocate once the queue has grown to the size of the largest backlog (the worker hands its buffer back).
//   * stop() is lock-free (atomic stores only): it may be called from a signal handler.
//   * SessionOptions::on_token, SessionOptions::on_segment and LiveOptions::on_text are called from the worker
//     thread. They must not call finish() (it would wait for its own thread: it returns false instead) or destroy
//     the LiveSession; push(), stop() and take_text() are fine.
//   * session() belongs to the worker until finish() returns; use it only after that.
//   * finish() and the destructor may be called from any one thread (not the worker).
//   * The worker starts with the signal mask of the thread that calls start(): block the signals you want on
//     other threads (e.g. SIGINT for a main thread blocked in read()) around that call.
struct LiveOptions {
  // Feed only once at least this much audio is queued (or at finish()): fewer, bigger model calls (less CPU
  // per second of audio) for up to min_feed_ms more latency. 0 = feed as soon as anything is queued.
  int min_feed_ms = 0;
  // Most audio queued at once (0 = unbounded). push() never blocks: past the bound it refuses the piece
  // (returns false, counted in LiveStats::dropped_samples), so a caller that outruns the model loses audio
  // instead of memory.
  int max_queue_ms = 0;
  // Optional: the text each feed() released, called from the worker (when non-empty). Set, the text goes only
  // here; unset, it is kept for take_text().
  std::function<void(const std::string& text)> on_text;
};

struct LiveStats {
  int64_t pushed_samples = 0;       // accepted by push()
  int64_t dropped_samples = 0;      // refused by push(): queue full, or after finish()/stop()/an error
  int64_t fed_samples = 0;          // handed to Session::feed()
  int64_t n_feeds = 0;              // Session::feed() calls by the worker
  int64_t queued_samples = 0;       // waiting now
  int64_t max_backlog_samples = 0;  // most audio the worker took at one wake-up
};

class LiveSession {
 public:
  // Creates a Session (as Runner::create_session) and starts its worker. nullptr and *error on failure.
  static std::unique_ptr<LiveSession> start(Runner& runner, const SessionOptions& session_options,
                                            const LiveOptions& live_options, std::string* error);
  // Stops the worker (the running model call returns early) and joins it; queued audio is dropped, nothing is
  // flushed. Call finish() first for the whole transcript.
  ~LiveSession();
  LiveSession(const LiveSession&) = delete;
  LiveSession& operator=(const LiveSession&) = delete;

  // Queue 16 kHz mono PCM (copied) for the worker. Returns false if the piece was refused: after finish(),
  // stop() or an error, when the queue is full (LiveOptions::max_queue_ms), or pcm16k == nullptr with n > 0.
  bool push(const float* pcm16k, size_t n_samples);
  // End of audio: waits until the worker has fed everything queued, flushes (Session::flush) and joins it.
  // Returns false on an error (see error()) or if called from the worker. After stop(), returns without
  // feeding or flushing the rest. Idempotent.
  bool finish();
  // Make the running model call return early, and drop the queue and later pushes (lock-free, see above).
  void stop();

  std::string take_text();  // text released since the last call (empty when LiveOptions::on_text is set)
  bool failed() const;      // the worker hit an error: push() refuses audio, finish() returns false
  std::string error() const;
  LiveStats stats() const;
  // The underlying Session: token_ids(), text(), stats(), ... -- only once finish() has returned.
  Session& session();

 private:
  struct Impl;
  explicit LiveSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace voxtral_rt
