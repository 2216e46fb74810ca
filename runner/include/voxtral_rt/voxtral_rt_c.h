/* voxtral_rt_c.h -- C API of voxtral-rt: streaming speech-to-text with Voxtral-Mini-4B-Realtime on an ExecuTorch
 * .pte (CPU), for C and for bindings (Python ctypes, Swift, Kotlin/JNI, Rust). A thin layer over the C++ API in
 * voxtral_rt.h (Runner = voxtral_rt_model, Session = voxtral_rt_session); the library is libvoxtral_rt.so.
 *
 * Usage (runner/tools/c_api_example.c is a complete program):
 *
 *   char err[512];
 *   voxtral_rt_model_params mp = voxtral_rt_model_default_params();
 *   mp.model_path = "model.pte";  mp.tokenizer_path = "tekken.json";
 *   voxtral_rt_model* model = voxtral_rt_model_load(&mp, err, sizeof err);     // NULL + err on failure
 *   voxtral_rt_session_params sp = voxtral_rt_session_default_params();
 *   sp.token_callback = on_token;  sp.token_callback_user_data = &my_state;     // optional
 *   voxtral_rt_session* s = voxtral_rt_session_create(model, &sp, err, sizeof err);
 *   while (more audio)                                          // 16 kHz mono float PCM, any chunk size
 *     if (voxtral_rt_session_feed(s, pcm, n) < 0)               // #new tokens, -1 on error
 *       fprintf(stderr, "%s\n", voxtral_rt_session_error(s));
 *     else fputs(voxtral_rt_session_take_text(s), stdout);      // text released since the last call
 *   voxtral_rt_session_flush(s);                                // end of audio (idempotent)
 *   puts(voxtral_rt_session_text(s));                           // the whole transcript
 *   voxtral_rt_session_free(s);  voxtral_rt_model_free(model);
 *
 * Errors. Nothing aborts and no C++ exception crosses this API: every function catches everything.
 *   * Functions that create something (model_load, session_create, transcribe, audio_load) return NULL on failure
 *     and write a NUL-terminated message into the caller's buffer `err` of `err_len` bytes (cut to fit; nothing is
 *     written when err is NULL or err_len is 0).
 *   * Session functions return -1 (or false/NULL) on failure; voxtral_rt_session_error() gives the message.
 *   * A NULL handle is an error, never a crash: counts are 0, strings "" (voxtral_rt_session_error: "null
 *     session"), pointers NULL, numbers -1, flags false; void functions do nothing.
 *
 * Ownership and lifetimes.
 *   * The caller owns every handle it gets and frees it once with the matching *_free (NULL is ignored).
 *   * Strings and structs returned by the library belong to the library; never free them. Session getters return
 *     pointers into the session, valid until the next voxtral_rt_session_feed, _flush, _reset or _free on that
 *     session; text() and take_text() also until their own next call. Copy what you keep.
 *   * Pointers passed to a callback are valid only during that call.
 *   * What the caller passes in (paths, PCM samples, params) is read during the call only.
 *   * A session may outlive its model: voxtral_rt_model_free() with live sessions is fine (they keep the loaded
 *     model alive until they are freed).
 *
 * Thread safety (as voxtral_rt.h): model functions may be called from any thread concurrently; sessions of one
 * model run concurrently on different threads (each has its own caches). One session must be used by one thread
 * at a time, except voxtral_rt_session_stop(), which any thread may call at any time. Callbacks run on the thread
 * that called feed/flush/transcribe; inside one, call nothing on that session but voxtral_rt_session_stop().
 * Callbacks must return normally (no longjmp, no C++ exception).
 *
 * ABI: how the structs can grow without breaking programs built against an older header.
 *   * Params structs (input) have a FIXED size: new fields take space from `reserved`, which the defaults zero.
 *     Start from voxtral_rt_*_default_params() (the library's defaults: a program built against an older header
 *     passes the newer fields' defaults back unchanged) and set what you need. `struct_size` is set by
 *     default_params; load/create reject a struct whose struct_size differs (not initialised by default_params,
 *     or a header of another layout) instead of reading garbage. Fixed size + reserved space, rather than a
 *     size-versioned struct, keeps default_params a by-value return (simple in every FFI, as whisper.h does).
 *   * Output structs (voxtral_rt_token, _word, _segment) are owned by the library and only ever grow at the end:
 *     read them through the pointers you are given, never copy them by value or step through arrays of them
 *     (arrays are arrays of pointers). */
#ifndef VOXTRAL_RT_C_H
#define VOXTRAL_RT_C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define VOXTRAL_RT_API
#else
#define VOXTRAL_RT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================================================ version, logging */

/* The version of the library (e.g. "0.1.0"), the same as the Python package's. */
VOXTRAL_RT_API const char* voxtral_rt_version(void);

enum voxtral_rt_log_level {
  VOXTRAL_RT_LOG_DEBUG = 0,
  VOXTRAL_RT_LOG_INFO = 1,
  VOXTRAL_RT_LOG_WARNING = 2,
  VOXTRAL_RT_LOG_ERROR = 3
};
typedef void (*voxtral_rt_log_callback)(int32_t level, const char* message, void* user_data);

/* Route the library's log messages (it never prints to stdout). Default, and after NULL: stderr, Info and above.
 * Process-wide; any thread; the callback runs on the thread that logs and must be thread-safe. */
VOXTRAL_RT_API void voxtral_rt_log_set(voxtral_rt_log_callback callback, void* user_data);
/* Also route ExecuTorch's own runtime logs through that callback ("executorch: " prefix). It replaces ExecuTorch's
 * process-wide log hook; call it before loading a model (see voxtral_rt::route_executorch_logs). */
VOXTRAL_RT_API void voxtral_rt_log_route_executorch(void);

/* ============================================================================================ model */

typedef struct voxtral_rt_model voxtral_rt_model; /* a loaded .pte + tokenizer (voxtral_rt::Runner) */

typedef struct voxtral_rt_model_params {
  uint32_t struct_size;           /* sizeof(voxtral_rt_model_params), set by voxtral_rt_model_default_params() */
  int32_t threads;                /* ExecuTorch CPU threadpool size; 0 = its default. Process-wide */
  const char* model_path;         /* .pte from export/export_voxtral_rt.py (required) */
  const char* tokenizer_path;     /* tekken.json of the same model (required) */
  const char* packed_cache_path;  /* NULL/"" = none; else a file for XNNPACK's packed weights (needs use_mmap):
                                     the first load packs into it, later loads map it (fast start) */
  bool use_mmap;                  /* true: map the .pte, concurrent sessions share packed weights */
  int32_t max_sessions;           /* live sessions allowed at once; 0 = no limit */
  uint64_t reserved[8];           /* future fields; keep as default_params leaves them (zero) */
} voxtral_rt_model_params;

VOXTRAL_RT_API voxtral_rt_model_params voxtral_rt_model_default_params(void);

/* Loads the .pte (all methods), checks its metadata and the tokenizer against it. NULL + err on failure, e.g.
 * "cannot open model: No such file or directory". */
VOXTRAL_RT_API voxtral_rt_model* voxtral_rt_model_load(const voxtral_rt_model_params* params, char* err,
                                                       size_t err_len);
VOXTRAL_RT_API void voxtral_rt_model_free(voxtral_rt_model* model);

VOXTRAL_RT_API int32_t voxtral_rt_model_sample_rate(const voxtral_rt_model* model);       /* Hz of feed() PCM */
VOXTRAL_RT_API int32_t voxtral_rt_model_ms_per_token(const voxtral_rt_model* model);      /* 80 */
VOXTRAL_RT_API int32_t voxtral_rt_model_default_delay_ms(const voxtral_rt_model* model);  /* 480 */
/* Any model constant by its .pte metadata name (docs/design.md: "vocab_size", "eos_id", "max_enc_tokens", ...).
 * False if the name is unknown or an argument is NULL. */
VOXTRAL_RT_API bool voxtral_rt_model_info(const voxtral_rt_model* model, const char* key, int64_t* value);

/* ============================================================================================ session */

typedef struct voxtral_rt_session voxtral_rt_session; /* one audio stream (voxtral_rt::Session) */

/* One generated token, given to the token callback. */
typedef struct voxtral_rt_token {
  int64_t id;
  int64_t position;  /* decoder position q at which it is fed back */
  double time_ms;    /* delay-corrected audio time: (q - left pad - delay) * 80 ms */
  bool is_special;   /* a special token ([STREAMING_PAD], EOS, ...): no text */
  const char* text;  /* the complete UTF-8 text this token releases (often "") */
} voxtral_rt_token;

/* A word: its text (no surrounding whitespace) and audio times in ms, derived from the delay-corrected token times
 * (80 ms grid; the rules and their accuracy: voxtral_rt.h "Words and segments", docs/design.md). */
typedef struct voxtral_rt_word {
  const char* text;
  double start_ms;
  double end_ms;
} voxtral_rt_word;

/* A segment: the transcript split at pauses (segment_pause_ms), sentence ends and EOS, with its words. */
typedef struct voxtral_rt_segment {
  const char* text;  /* its words as in the transcript (leading space kept, as whisper's segments) */
  double start_ms;
  double end_ms;
  size_t n_words;
  const voxtral_rt_word* const* words; /* n_words pointers */
} voxtral_rt_segment;

typedef void (*voxtral_rt_token_callback)(const voxtral_rt_token* token, void* user_data);
typedef void (*voxtral_rt_segment_callback)(const voxtral_rt_segment* segment, void* user_data);

typedef struct voxtral_rt_session_params {
  uint32_t struct_size;      /* sizeof(voxtral_rt_session_params), set by voxtral_rt_session_default_params() */
  int32_t delay_ms;          /* -1 = model default; else a multiple of 80 ms from 80 to 1200, or 2400 */
  int32_t max_enc_tokens;    /* audio tokens per encoder call; 0 = model maximum */
  int32_t draft_tokens;      /* most guessed [STREAMING_PAD] positions per decoder call (same tokens for every
                                value): -1 = adaptive, 0 = one position per call, N = up to N */
  int64_t max_history;       /* token records kept for token_ids/times/text/words: 0 = all; N = the last N..2N
                                (flat memory for endless streams; callbacks and take_text unaffected) */
  bool stop_at_eos;          /* true: the transcript ends at the first EOS (files); false: decoding goes on
                                (live streams) */
  int32_t segment_pause_ms;  /* a run of [STREAMING_PAD] at least this long ends a segment (default 640;
                                0 = never at pauses) */
  voxtral_rt_token_callback token_callback;      /* optional: every generated token, from feed()/flush() */
  void* token_callback_user_data;
  voxtral_rt_segment_callback segment_callback;  /* optional: every finished segment, from feed()/flush() */
  void* segment_callback_user_data;
  uint64_t reserved[8];      /* future fields; keep as default_params leaves them (zero) */
} voxtral_rt_session_params;

VOXTRAL_RT_API voxtral_rt_session_params voxtral_rt_session_default_params(void);

/* A new stream on `model` (params NULL = defaults). NULL + err on bad params or at the max_sessions limit. */
VOXTRAL_RT_API voxtral_rt_session* voxtral_rt_session_create(voxtral_rt_model* model,
                                                             const voxtral_rt_session_params* params, char* err,
                                                             size_t err_len);
/* Append `n` samples of 16 kHz mono float PCM and run the model as far as the audio allows. Returns the number of
 * new tokens, or -1 (see voxtral_rt_session_error): NULL pcm with n > 0, a NaN/Inf sample, feed after flush. */
VOXTRAL_RT_API int64_t voxtral_rt_session_feed(voxtral_rt_session* session, const float* pcm, size_t n);
/* End of audio: pad and decode to the end. Idempotent (later calls return 0). #new tokens, or -1. */
VOXTRAL_RT_API int64_t voxtral_rt_session_flush(voxtral_rt_session* session);
/* Forget the stream and its error; the next feed starts a new stream with the same params. */
VOXTRAL_RT_API void voxtral_rt_session_reset(voxtral_rt_session* session);
/* Make the running and later feed/flush calls return early (any thread, any time; lock-free). reset clears it. */
VOXTRAL_RT_API void voxtral_rt_session_stop(voxtral_rt_session* session);
VOXTRAL_RT_API void voxtral_rt_session_free(voxtral_rt_session* session);

/* The last error message, "" if none. */
VOXTRAL_RT_API const char* voxtral_rt_session_error(const voxtral_rt_session* session);
/* The whole transcript so far (UTF-8; specials dropped). */
VOXTRAL_RT_API const char* voxtral_rt_session_text(voxtral_rt_session* session);
/* The text released since the last call (complete UTF-8 characters only). */
VOXTRAL_RT_API const char* voxtral_rt_session_take_text(voxtral_rt_session* session);
/* EOS seen (with stop_at_eos), or flushed and decoded to the end. */
VOXTRAL_RT_API bool voxtral_rt_session_finished(const voxtral_rt_session* session);
/* The delay this session runs with. */
VOXTRAL_RT_API int32_t voxtral_rt_session_delay_ms(const voxtral_rt_session* session);

/* Generated tokens (every id after the prompt, specials and EOS included) and their times (as
 * voxtral_rt_token.time_ms): arrays of voxtral_rt_session_n_tokens() elements. */
VOXTRAL_RT_API size_t voxtral_rt_session_n_tokens(const voxtral_rt_session* session);
VOXTRAL_RT_API const int64_t* voxtral_rt_session_token_ids(const voxtral_rt_session* session);
VOXTRAL_RT_API const double* voxtral_rt_session_token_times_ms(const voxtral_rt_session* session);

/* Words and segments of the transcript so far (the last one may still grow until flush); NULL when i is out of
 * range. With max_history, only the last ones are kept (as token records). segment_callback gets each segment once,
 * when it is finished. */
VOXTRAL_RT_API size_t voxtral_rt_session_n_words(voxtral_rt_session* session);
VOXTRAL_RT_API const voxtral_rt_word* voxtral_rt_session_word(voxtral_rt_session* session, size_t i);
VOXTRAL_RT_API size_t voxtral_rt_session_n_segments(voxtral_rt_session* session);
VOXTRAL_RT_API const voxtral_rt_segment* voxtral_rt_session_segment(voxtral_rt_session* session, size_t i);

/* Offline transcription: a new session fed all of `pcm` and flushed (callbacks fire as in feed). Returns that
 * session -- read its text, tokens, words and segments, then free it -- or NULL + err. */
VOXTRAL_RT_API voxtral_rt_session* voxtral_rt_transcribe(voxtral_rt_model* model, const float* pcm, size_t n,
                                                         const voxtral_rt_session_params* params, char* err,
                                                         size_t err_len);

/* ============================================================================================ audio files */

typedef struct voxtral_rt_audio voxtral_rt_audio; /* decoded samples */

/* Decode an audio file (WAV, FLAC, OGG, ...: whatever libsndfile reads), average the channels and resample to
 * `sample_rate` (pass voxtral_rt_model_sample_rate()) as mistral-common does. NULL + err on an unreadable, empty
 * or non-finite file. Holds the whole file in memory. */
VOXTRAL_RT_API voxtral_rt_audio* voxtral_rt_audio_load(const char* path, int32_t sample_rate, char* err,
                                                       size_t err_len);
VOXTRAL_RT_API const float* voxtral_rt_audio_samples(const voxtral_rt_audio* audio);
VOXTRAL_RT_API size_t voxtral_rt_audio_n_samples(const voxtral_rt_audio* audio);
VOXTRAL_RT_API void voxtral_rt_audio_free(voxtral_rt_audio* audio);

#ifdef __cplusplus
}
#endif

#endif /* VOXTRAL_RT_C_H */
