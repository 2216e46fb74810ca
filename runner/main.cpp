// voxtral_realtime_runner -- transcribe audio with a Voxtral-Realtime .pte (thin CLI over voxtral_rt.h).
//
// Modes:
//   offline file:    --audio_path a.wav                       (feed everything, flush, print)
//   streamed file:   --audio_path a.wav --streaming --chunk_ms 80   (feed chunks, print text as it comes)
//   live stdin:      ffmpeg -loglevel quiet -i in.mp3 -f s16le -ac 1 -ar 16000 - |
//                      voxtral_realtime_runner --model_path m.pte --tokenizer_path tekken.json --stdin
//                    (raw mono s16le or f32le; --sample_rate N resamples with soxr when N != 16000)
//                    A reader thread queues stdin while the model works; each feed() takes all of it.
// Output (--format, to stdout or --output_file): text, json (one object at the end; --json is the same), srt and
// vtt (a cue per finished segment), jsonl (live events: deltas, segments, done). Logs and --stats on stderr.
// --help lists the flags by group, with examples and the exit codes: 0 ok, 1 bad flags, 2 model/tokenizer load
// failed, 3 audio input error, 4 inference error, 5 output error, 130 interrupted (Ctrl+C; the output so far is
// still written).
#include <gflags/gflags.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "output.h"
#include "util.h"
#include "voxtral_rt/audio.h"
#include "voxtral_rt/voxtral_rt.h"

DEFINE_string(model_path, "", "Voxtral-Realtime .pte from export/export_voxtral_rt.py (required)");
DEFINE_string(tokenizer_path, "", "tekken.json of the same model (required)");
DEFINE_string(audio_path, "", "audio file to transcribe (any format libsndfile reads)");
DEFINE_bool(stdin, false,
            "read raw mono PCM from stdin as it comes (live: a microphone through arecord or ffmpeg, see Examples)");
DEFINE_string(stdin_format, "s16le", "raw stdin sample format: s16le or f32le");
DEFINE_int32(sample_rate, 16000, "sample rate of the stdin PCM (resampled to the model's rate)");
DEFINE_bool(streaming, false,
            "with --audio_path: feed the file in --chunk_ms pieces as a live stream would (text, cues and events come "
            "as they are decoded)");
DEFINE_int32(chunk_ms, 80,
             "with --streaming: audio per feed() call (ms). --stdin ignores it: it feeds all audio that has arrived");
DEFINE_int32(min_feed_ms, 0,
             "trade latency for CPU: feed the model only once at least this much audio (ms) has arrived (--stdin), "
             "or in pieces of at least this much (--streaming). Fewer, bigger model calls cost less CPU per second "
             "of audio, but text comes up to this much later. 0 = feed as soon as anything arrives (--stdin still "
             "feeds audio that piled up during a model call in one piece)");
DEFINE_int32(delay_ms, -1, "transcription delay (ms): -1 = model default; 80..1200 in steps of 80, or 2400");
DEFINE_int32(max_enc_tokens, 0, "audio tokens per encoder call (0 = the model's maximum)");
DEFINE_int32(threads, 0, "CPU threads (0 = ExecuTorch default)");
DEFINE_int32(draft_tokens, -1,
             "most guessed [STREAMING_PAD] positions per decoder call, verified exactly (same tokens for every value): "
             "0 = one position per call; N = up to N guesses; -1 = adapt to this machine and the audio");
DEFINE_bool(stop_at_eos, true,
            "end the transcript at the first EOS (default for --audio_path); with --stdin the default is false: EOS "
            "is fed back like any token and decoding goes on while audio comes");
DEFINE_string(format, "text",
              "text: the transcript (printed as it comes with --streaming/--stdin); json: one object at the end "
              "{text, token_ids, token_times_ms, segments, ...}; srt, vtt: subtitles, a cue per segment, written as "
              "each segment ends; jsonl: one JSON event per line as things happen (transcript.text.delta, "
              "transcript.text.segment, transcript.text.done)");
DEFINE_bool(json, false, "the same as --format json");
DEFINE_string(output_file, "", "write the output to this file (created or truncated) instead of stdout");
DEFINE_int32(segment_pause_ms, 640,
             "a run of [STREAMING_PAD] this long (ms) ends a segment (srt/vtt cues, json/jsonl segments); segments "
             "also end after . ? ! and at EOS; 0 = never at pauses");
DEFINE_bool(stats, false, "print timing and memory statistics to stderr");
DEFINE_bool(verbose, false, "debug logging to stderr");
DEFINE_string(packed_cache_path, "", "file for XNNPACK's packed weights: written on the first run, mapped (no packing) on later ones");

namespace {

enum ExitCode {
  kOk = 0,
  kBadFlags = 1,
  kLoadFailed = 2,
  kAudioError = 3,
  kInferenceError = 4,
  kOutputError = 5,
  kInterrupted = 130
};

enum class Format { Text, Json, Srt, Vtt, Jsonl };
Format g_format = Format::Text;

bool parse_format(const std::string& name, Format* f) {
  static const std::pair<const char*, Format> kNames[] = {
      {"text", Format::Text}, {"json", Format::Json}, {"srt", Format::Srt}, {"vtt", Format::Vtt}, {"jsonl", Format::Jsonl}};
  for (const auto& [n, v] : kNames) {
    if (name == n) {
      *f = v;
      return true;
    }
  }
  return false;
}

volatile sig_atomic_t g_interrupted = 0;
voxtral_rt::Session* g_session = nullptr;
voxtral_rt::LiveSession* g_live = nullptr;

void on_sigint(int) {
  g_interrupted = 1;
  if (g_live) g_live->stop();        // lock-free atomic stores
  if (g_session) g_session->stop();  // a lock-free atomic store
}

bool is_default(const char* flag) { return gflags::GetCommandLineFlagInfoOrDie(flag).is_default; }

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n(see --help)\n", msg.c_str());
  return kBadFlags;
}

int validate_flags() {
  if (FLAGS_model_path.empty()) return usage_error("--model_path is required");
  if (FLAGS_tokenizer_path.empty()) return usage_error("--tokenizer_path is required");
  if (FLAGS_audio_path.empty() == !FLAGS_stdin) return usage_error("give exactly one of --audio_path and --stdin");
  if (FLAGS_stdin && FLAGS_streaming) return usage_error("--streaming is implied by --stdin; drop it");
  if (!FLAGS_stdin && (!is_default("stdin_format") || !is_default("sample_rate")))
    return usage_error("--stdin_format and --sample_rate apply to --stdin only (files carry their own rate)");
  voxtral_rt::PcmFormat fmt;
  if (!voxtral_rt::parse_pcm_format(FLAGS_stdin_format, &fmt))
    return usage_error("--stdin_format must be s16le or f32le, got '" + FLAGS_stdin_format + "'");
  if (FLAGS_sample_rate < voxtral_rt::kMinSampleRate || FLAGS_sample_rate > voxtral_rt::kMaxSampleRate)
    return usage_error("--sample_rate must be in " + std::to_string(voxtral_rt::kMinSampleRate) + ".." +
                       std::to_string(voxtral_rt::kMaxSampleRate) + " Hz, got " + std::to_string(FLAGS_sample_rate));
  if (FLAGS_chunk_ms <= 0) return usage_error("--chunk_ms must be > 0");
  if (!FLAGS_streaming && !FLAGS_stdin && !is_default("chunk_ms"))
    return usage_error("--chunk_ms applies to --streaming or --stdin only");
  if (FLAGS_min_feed_ms < 0) return usage_error("--min_feed_ms must be >= 0");
  if (!FLAGS_streaming && !FLAGS_stdin && !is_default("min_feed_ms"))
    return usage_error("--min_feed_ms applies to --streaming or --stdin only");
  if (FLAGS_delay_ms != -1 && FLAGS_delay_ms <= 0) return usage_error("--delay_ms must be -1 or > 0");
  if (FLAGS_max_enc_tokens < 0) return usage_error("--max_enc_tokens must be >= 0");
  if (FLAGS_threads < 0) return usage_error("--threads must be >= 0");
  if (FLAGS_draft_tokens < -1) return usage_error("--draft_tokens must be >= -1 (-1 = adaptive)");
  if (!parse_format(FLAGS_format, &g_format))
    return usage_error("--format must be one of text, json, srt, vtt, jsonl; got '" + FLAGS_format + "'");
  if (FLAGS_json && !is_default("format") && g_format != Format::Json)
    return usage_error("--json means --format json; it conflicts with --format " + FLAGS_format);
  if (FLAGS_json) g_format = Format::Json;
  if (FLAGS_segment_pause_ms < 0) return usage_error("--segment_pause_ms must be >= 0 (0 = never end a segment at a pause)");
  return kOk;
}

// --help: our flags by group with their defaults, examples, exit codes (gflags' own --help lists every flag of
// every linked module, its internals included; --helpfull still does).
struct FlagGroup {
  const char* title;
  std::vector<const char*> flags;
};
const FlagGroup kFlagGroups[] = {
    {"Model", {"model_path", "tokenizer_path", "packed_cache_path", "threads"}},
    {"Audio input (one of --audio_path, --stdin)",
     {"audio_path", "streaming", "chunk_ms", "stdin", "stdin_format", "sample_rate", "min_feed_ms"}},
    {"Output", {"format", "output_file", "json", "segment_pause_ms", "stats", "verbose"}},
    {"Decoding", {"delay_ms", "stop_at_eos", "draft_tokens", "max_enc_tokens"}},
};

// `text` wrapped at `width` columns, each line indented by `indent` spaces.
std::string wrap(const std::string& text, size_t indent, size_t width) {
  std::string out, line;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(' ', i);
    if (j == std::string::npos) j = text.size();
    const std::string word = text.substr(i, j - i);
    if (!line.empty() && indent + line.size() + 1 + word.size() > width) {
      out += std::string(indent, ' ') + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    i = j + 1;
  }
  if (!line.empty()) out += std::string(indent, ' ') + line + "\n";
  return out;
}

void print_help() {
  std::string h =
      "voxtral_realtime_runner: speech to text with a Voxtral-Realtime .pte (ExecuTorch, CPU), from a file or live\n"
      "\n"
      "Usage:\n"
      "  voxtral_realtime_runner --model_path M.pte --tokenizer_path tekken.json --audio_path a.wav [flags]\n"
      "  RAW_PCM | voxtral_realtime_runner --model_path M.pte --tokenizer_path tekken.json --stdin [flags]\n"
      "    (--stdin reads raw mono samples: s16le by default, or --stdin_format f32le; at --sample_rate Hz)\n";
  for (const FlagGroup& g : kFlagGroups) {
    h += std::string("\n") + g.title + ":\n";
    for (const char* name : g.flags) {
      const gflags::CommandLineFlagInfo info = gflags::GetCommandLineFlagInfoOrDie(name);
      std::string head = "  --" + info.name;
      if (info.type == "bool") {
        head += " (default " + info.default_value + ")";
      } else {
        head += "=<" + std::string(info.type == "string" ? "str" : "int") + ">";
        if (!info.default_value.empty()) head += " (default " + info.default_value + ")";
      }
      h += head + "\n" + wrap(info.description, 6, 110);
    }
  }
  h +=
      "\nExamples:\n"
      "  M=\"--model_path demo_8da4w.pte --tokenizer_path models/demo/tekken.json\"\n"
      "  voxtral_realtime_runner $M --audio_path a.wav                                  # the transcript\n"
      "  voxtral_realtime_runner $M --audio_path talk.wav --format srt --output_file talk.srt\n"
      "  voxtral_realtime_runner $M --audio_path a.wav --format json --stats            # + timings, memory\n"
      "  arecord -q -f S16_LE -r 16000 -c 1 -t raw | voxtral_realtime_runner $M --stdin   # live microphone (ALSA)\n"
      "  arecord -q -f S16_LE -r 16000 -c 1 -t raw | voxtral_realtime_runner $M --stdin --format jsonl\n"
      "  ffmpeg -loglevel quiet -i in.mp3 -f s16le -ac 1 -ar 16000 - | voxtral_realtime_runner $M --stdin\n"
      "\nExit codes:\n"
      "  0 ok; 1 bad flags; 2 model or tokenizer failed to load; 3 audio input error; 4 inference error;\n"
      "  5 output error (cannot write --output_file or stdout); 130 interrupted by Ctrl+C (the output so far is\n"
      "  still written)\n"
      "\ngflags' own flags (--flagfile, --fromenv, ...) and every flag of the linked libraries: --helpfull\n";
  std::fputs(h.c_str(), stdout);
}

// Where the output goes: stdout or --output_file. Every piece is flushed at once (live formats must not sit in
// a buffer); the first write error is kept for the exit code. Written by one thread at a time: the live worker
// while it runs, the main thread after LiveSession::finish() has joined it.
class Output {
 public:
  Output() = default;
  ~Output() {
    if (owned_) std::fclose(f_);
  }
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  bool open(const std::string& path, std::string* error) {
    if (path.empty()) return true;
    FILE* f = std::fopen(path.c_str(), "w");
    if (!f) {
      *error = "--output_file " + path + ": cannot open for writing: " + std::strerror(errno);
      return false;
    }
    f_ = f;
    owned_ = true;
    name_ = path;
    return true;
  }
  void write(const std::string& s) {
    if (s.empty() || errno_ != 0) return;
    if (std::fwrite(s.data(), 1, s.size(), f_) != s.size() || std::fflush(f_) != 0) errno_ = errno ? errno : EIO;
  }
  // Flushes and closes; false (and *error) if any write failed.
  bool close(std::string* error) {
    if (std::fflush(f_) != 0 && errno_ == 0) errno_ = errno ? errno : EIO;
    if (owned_ && std::fclose(f_) != 0 && errno_ == 0) errno_ = errno ? errno : EIO;
    if (owned_) f_ = stdout, owned_ = false;
    if (errno_ == 0) return true;
    *error = "writing " + name_ + ": " + std::strerror(errno_);
    return false;
  }

 private:
  FILE* f_ = stdout;
  bool owned_ = false;
  std::string name_ = "stdout";
  int errno_ = 0;
};

// The streaming formats' writer: srt/vtt cues and jsonl events as segments finish and tokens come (called from
// Session::feed()/flush(), i.e. the live worker with --stdin). At the end, finish() writes a segment still open
// (an interrupted stream: a flush finishes every segment).
struct Emitter {
  Output* out = nullptr;
  int64_t n_segments = 0;
  double last_end_ms = -1;  // end of the last segment written: later ones are still open
  std::string text;         // jsonl: the whole transcript from the deltas (the session may keep only recent tokens)

  void on_token(const voxtral_rt::TokenEvent& ev) {
    if (g_format != Format::Jsonl || ev.text.empty()) return;
    text += ev.text;
    out->write(voxtral_rt::detail::json_line(voxtral_rt::detail::delta_event(ev.text, ev.time_ms)));
  }
  void on_segment(const voxtral_rt::Segment& s) {
    namespace d = voxtral_rt::detail;
    last_end_ms = s.end_ms;
    if (g_format == Format::Srt) out->write(d::srt_cue(n_segments + 1, s));  // SRT numbers cues from 1
    if (g_format == Format::Vtt) out->write(d::vtt_cue(s));
    if (g_format == Format::Jsonl) out->write(d::json_line(d::segment_event(n_segments, s)));
    ++n_segments;
  }
  void finish(const voxtral_rt::Session& session) {
    for (const voxtral_rt::Segment& s : session.segments())
      if (s.end_ms > last_end_ms) on_segment(s);
  }
};

double g_rss_after_load_mib = -1;  // VmRSS once the model is loaded (weights packed, .pte pages released)
double g_max_backlog_ms = -1;      // --stdin: most audio fed at one wake-up of the live worker

// The run's figures, machine-readable (the "stats" of --format json/jsonl; bench/ parses them). --stats prints
// the same object as text (print_stats).
nlohmann::json stats_json(const voxtral_rt::Runner& runner, const voxtral_rt::SessionStats& s, double wall_ms,
                          int sample_rate) {
  using voxtral_rt::detail::percentile;
  const double audio_ms = 1000.0 * static_cast<double>(s.n_samples) / sample_rate;
  const double n_tok = static_cast<double>(std::max<int64_t>(1, s.n_audio_tokens));
  nlohmann::json j;
  j["load_ms"] = runner.load_ms();
  j["audio_ms"] = audio_ms;
  j["wall_ms"] = wall_ms;
  j["rtf"] = audio_ms > 0 ? wall_ms / audio_ms : 0.0;
  j["n_generated"] = s.n_generated;
  j["n_audio_tokens"] = s.n_audio_tokens;
  j["first_token_ms"] = s.first_token_ms;
  j["decoder_step_p50_ms"] = percentile(s.step_ms, 0.5);
  j["decoder_step_p95_ms"] = percentile(s.step_ms, 0.95);
  j["feed_p50_ms"] = percentile(s.feed_ms, 0.5);
  j["feed_p95_ms"] = percentile(s.feed_ms, 0.95);
  j["n_feeds"] = s.feed_ms.size();
  j["mel_ms"] = s.preprocess_ms;
  j["encoder_ms"] = s.encoder_ms;
  j["encoder_ms_per_token"] = s.encoder_ms / n_tok;
  j["n_encoder_calls"] = s.n_encoder_calls;
  j["decoder_ms"] = s.decoder_ms;
  j["n_decoder_calls"] = s.n_decoder_calls;
  j["n_step_calls"] = s.n_step_calls;
  j["n_step_positions"] = s.n_step_positions;
  j["tokens_per_step_call"] = s.n_step_calls > 0 ? static_cast<double>(s.n_generated - 1) / static_cast<double>(s.n_step_calls) : 0.0;
  j["peak_rss_mib"] = voxtral_rt::detail::peak_rss_mib();
  j["rss_after_load_mib"] = g_rss_after_load_mib;
  j["rss_end_mib"] = voxtral_rt::detail::proc_status_mib("VmRSS");
  if (g_max_backlog_ms >= 0) j["max_backlog_ms"] = g_max_backlog_ms;
  return j;
}

// --stats: the figures of stats_json as text on stderr.
void print_stats(const nlohmann::json& j) {
  auto num = [&j](const char* key) { return j.at(key).get<double>(); };
  auto count = [&j](const char* key) { return j.at(key).get<long long>(); };
  const double decoder_ms = num("decoder_ms");
  std::fprintf(stderr,
               "stats: load %.0f ms | audio %.2f s | wall %.0f ms | real-time factor %.3f\n"
               "stats: %lld tokens generated, %.1f tokens/s (decoder), first token after %.0f ms\n"
               "stats: decoder step p50 %.2f ms, p95 %.2f ms | mel %.0f ms | encoder %.0f ms (%lld calls, %lld tokens) "
               "| decoder %.0f ms (%lld calls, %lld step calls over %lld positions)\n"
               "stats: peak RSS %.1f MiB\n",
               num("load_ms"), num("audio_ms") / 1000.0, num("wall_ms"), num("rtf"), count("n_generated"),
               decoder_ms > 0 ? 1000.0 * num("n_generated") / decoder_ms : 0.0, num("first_token_ms"),
               num("decoder_step_p50_ms"), num("decoder_step_p95_ms"), num("mel_ms"), num("encoder_ms"),
               count("n_encoder_calls"), count("n_audio_tokens"), decoder_ms, count("n_decoder_calls"),
               count("n_step_calls"), count("n_step_positions"), num("peak_rss_mib"));
}

// Writes newly released text (plain-text streaming modes only).
void print_delta(voxtral_rt::Session* session, bool live, Output* out) {
  const std::string delta = session->take_text();
  if (live) out->write(delta);
}

// Reads stdin on this thread until EOF and pushes the audio to `live`, whose worker feeds the model: what
// arrives while the model is busy is queued and fed as one piece (full encoder calls), so a stream that falls
// behind catches up instead of running one small model call per read(). Returns an exit code.
int feed_stdin(voxtral_rt::LiveSession* live, int model_rate) {
  voxtral_rt::PcmFormat fmt;
  voxtral_rt::parse_pcm_format(FLAGS_stdin_format, &fmt);
  voxtral_rt::PcmDecoder decoder(fmt);
  std::unique_ptr<voxtral_rt::StreamResampler> resampler;
  if (FLAGS_sample_rate != model_rate) {
    resampler = std::make_unique<voxtral_rt::StreamResampler>(FLAGS_sample_rate, model_rate);
    if (!resampler->ok()) {
      std::fprintf(stderr, "error: %s\n", resampler->error().c_str());
      return kAudioError;
    }
  }
  auto worker_error = [&] {
    std::fprintf(stderr, "error: %s\n", live->error().c_str());
    return kInferenceError;
  };
  std::vector<unsigned char> buf(64 * 1024);  // read() returns what has arrived, up to this
  std::vector<float> pcm, pcm16k;
  std::string err;
  for (;;) {
    // Wait in short slices, so that a model error ends the run even while the writer is silent.
    pollfd pfd{STDIN_FILENO, POLLIN, 0};
    const int ready = poll(&pfd, 1, 200);
    if (g_interrupted) return kInterrupted;
    if (live->failed()) return worker_error();
    if (ready < 0 && errno != EINTR) {
      std::fprintf(stderr, "error: waiting for stdin: %s\n", std::strerror(errno));
      return kAudioError;
    }
    if (ready <= 0) continue;
    const ssize_t got = read(STDIN_FILENO, buf.data(), buf.size());
    if (got < 0 && errno == EINTR) {
      if (g_interrupted) return kInterrupted;
      continue;
    }
    if (got < 0) {
      std::fprintf(stderr, "error: reading stdin: %s\n", std::strerror(errno));
      return kAudioError;
    }
    pcm.clear();
    pcm16k.clear();
    if (got == 0) {  // EOF
      if (!decoder.finish(&err)) {
        std::fprintf(stderr, "error: stdin: %s\n", err.c_str());
        return kAudioError;
      }
      if (resampler && !resampler->finish(&pcm16k)) {
        std::fprintf(stderr, "error: %s\n", resampler->error().c_str());
        return kAudioError;
      }
    } else if (!decoder.push(buf.data(), static_cast<size_t>(got), &pcm, &err)) {
      std::fprintf(stderr, "error: stdin: %s\n", err.c_str());
      return kAudioError;
    } else if (resampler) {
      if (!resampler->process(pcm.data(), pcm.size(), &pcm16k)) {
        std::fprintf(stderr, "error: %s\n", resampler->error().c_str());
        return kAudioError;
      }
    } else {
      pcm16k.swap(pcm);
    }
    if (!pcm16k.empty() && !live->push(pcm16k.data(), pcm16k.size()))  // refused: stopped or failed
      return g_interrupted ? kInterrupted : worker_error();
    if (got == 0) break;
  }
  if (decoder.n_samples() == 0) {
    std::fprintf(stderr, "error: stdin: no audio (empty input)\n");
    return kAudioError;
  }
  return kOk;
}

// Feeds an audio file: offline, in blocks of >= 10 s (the protocol gives the same tokens for any
// feed sizes); with --streaming, in --chunk_ms pieces. Returns an exit code.
int feed_file(voxtral_rt::AudioFileReader* reader, voxtral_rt::Session* session, int model_rate, bool live, Output* out) {
  size_t chunk = FLAGS_streaming ? std::max<size_t>(1, static_cast<size_t>(model_rate) * FLAGS_chunk_ms / 1000) : 0;
  // --min_feed_ms: hand over whole --chunk_ms pieces, as many as make up at least that much audio (what a live
  // caller that waits for min_feed_ms of audio would feed).
  const size_t min_feed = static_cast<size_t>(model_rate) * FLAGS_min_feed_ms / 1000;
  if (chunk > 0 && min_feed > chunk) chunk *= (min_feed + chunk - 1) / chunk;
  std::vector<float> pending;
  std::string err;
  bool eof = false;
  while (!eof) {
    if (!reader->read(&pending, &eof, &err)) {
      std::fprintf(stderr, "error: %s\n", err.c_str());
      return kAudioError;
    }
    // Offline: feed in blocks of >= 10 s (or at EOF), so the encoder gets full chunks of max_enc_tokens per
    // call (one weight read per chunk) instead of the reader's small blocks; memory stays bounded.
    if (chunk == 0 && !eof && pending.size() < static_cast<size_t>(model_rate) * 10) continue;
    const size_t n = chunk == 0 ? pending.size() : (eof ? pending.size() : pending.size() / chunk * chunk);
    for (size_t i = 0; i < n;) {
      const size_t k = chunk == 0 ? n : std::min(chunk, n - i);
      if (session->feed(pending.data() + i, k) < 0) {
        std::fprintf(stderr, "error: %s\n", session->error().c_str());
        return kInferenceError;
      }
      print_delta(session, live, out);
      if (g_interrupted) return kInterrupted;
      i += k;
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(n));
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  // --help / -h: our own grouped help (see print_help); gflags' other help flags (--helpfull, ...) as usual.
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-h") == 0) {
      print_help();
      return kOk;
    }
  }
  gflags::SetUsageMessage("speech to text with a Voxtral-Realtime .pte; --help lists the flags");
  gflags::ParseCommandLineNonHelpFlags(&argc, &argv, true);
  if (gflags::GetCommandLineFlagInfoOrDie("help").current_value == "true") {
    print_help();
    return kOk;
  }
  gflags::HandleCommandLineHelpFlags();  // --helpfull, --helpshort, --version, ...: print and exit
  if (argc > 1) return usage_error(std::string("unexpected argument '") + argv[1] + "'");
  if (const int rc = validate_flags(); rc != kOk) return rc;
  Output out;
  std::string err;
  if (!out.open(FLAGS_output_file, &err)) {  // before the model loads: a typo costs no load time
    std::fprintf(stderr, "error: %s\n", err.c_str());
    return kOutputError;
  }
  if (!FLAGS_verbose) {
    voxtral_rt::set_log_callback([](voxtral_rt::LogLevel level, const std::string& msg) {
      if (level >= voxtral_rt::LogLevel::Warning) std::fprintf(stderr, "voxtral_rt: %s\n", msg.c_str());
    });
  } else {
    voxtral_rt::set_log_callback([](voxtral_rt::LogLevel, const std::string& msg) {
      std::fprintf(stderr, "voxtral_rt: %s\n", msg.c_str());
    });
  }
  voxtral_rt::route_executorch_logs();  // ExecuTorch's start-up chatter only with --verbose

  voxtral_rt::RunnerOptions ropts;
  ropts.model_path = FLAGS_model_path;
  ropts.tokenizer_path = FLAGS_tokenizer_path;
  ropts.threads = FLAGS_threads;
  ropts.packed_cache_path = FLAGS_packed_cache_path;
  auto runner = voxtral_rt::Runner::load(ropts, &err);
  if (!runner) {
    std::fprintf(stderr, "error: %s\n", err.c_str());
    return kLoadFailed;
  }
  const int model_rate = static_cast<int>(runner->info().sample_rate);
  // Files are decoded and resampled block by block (bounded memory for any length); the samples are
  // bit-identical to load_audio_file's.
  std::unique_ptr<voxtral_rt::AudioFileReader> reader;
  if (!FLAGS_audio_path.empty()) {
    reader = voxtral_rt::AudioFileReader::open(FLAGS_audio_path, model_rate, &err);
    if (!reader) {
      std::fprintf(stderr, "error: %s\n", err.c_str());
      return kAudioError;
    }
  }

  const bool json = g_format == Format::Json;
  voxtral_rt::SessionOptions sopts;
  sopts.delay_ms = FLAGS_delay_ms;
  sopts.max_enc_tokens = FLAGS_max_enc_tokens;
  sopts.draft_tokens = FLAGS_draft_tokens;
  sopts.stop_at_eos = is_default("stop_at_eos") ? !FLAGS_stdin : FLAGS_stop_at_eos;
  sopts.segment_pause_ms = FLAGS_segment_pause_ms;
  // srt/vtt/jsonl are written as segments finish and tokens come (from the live worker with --stdin).
  Emitter emitter;
  emitter.out = &out;
  // --json --stats: the steady-clock time (CLOCK_MONOTONIC on Linux, as Python's time.monotonic) at which each
  // token was emitted; bench/bench_live.py measures the live lag from these.
  std::vector<double> emit_steady_ms;
  const bool record_emit = json && FLAGS_stats;
  sopts.on_token = [&emitter, &emit_steady_ms, record_emit](const voxtral_rt::TokenEvent& ev) {
    if (record_emit) emit_steady_ms.push_back(voxtral_rt::detail::now_ms());
    emitter.on_token(ev);
  };
  sopts.on_segment = [&emitter](const voxtral_rt::Segment& s) { emitter.on_segment(s); };
  // A live stdin stream may run for days and writes as it goes: keep flat memory (json needs every id).
  if (FLAGS_stdin && !json) sopts.max_history = 10000;
  const bool live = g_format == Format::Text && (FLAGS_streaming || FLAGS_stdin);
  std::unique_ptr<voxtral_rt::Session> file_session;
  std::unique_ptr<voxtral_rt::LiveSession> live_session;
  voxtral_rt::Session* session = nullptr;
  if (FLAGS_stdin) {
    voxtral_rt::LiveOptions lopts;
    lopts.min_feed_ms = FLAGS_min_feed_ms;
    if (live) {  // the worker writes; this thread is blocked in read()
      lopts.on_text = [&out](const std::string& t) { out.write(t); };
    } else {  // the other formats write from on_token/on_segment: keep no text queued for take_text()
      lopts.on_text = [](const std::string&) {};
    }
    // The worker inherits this thread's signal mask: keep SIGINT off it, so that it interrupts our read().
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    live_session = voxtral_rt::LiveSession::start(*runner, sopts, lopts, &err);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (!live_session) return usage_error(err);  // the only option errors left are the delay's
    session = &live_session->session();
  } else {
    file_session = runner->create_session(sopts, &err);
    if (!file_session) return usage_error(err);
    session = file_session.get();
  }
  g_rss_after_load_mib = voxtral_rt::detail::proc_status_mib("VmRSS");
  g_session = file_session.get();
  g_live = live_session.get();
  struct ClearSignalTargets {  // before the sessions are destroyed, on every return
    ~ClearSignalTargets() { g_session = nullptr, g_live = nullptr; }
  } clear_signal_targets;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_sigint;  // no SA_RESTART: a blocking read() on stdin returns EINTR
  sigaction(SIGINT, &sa, nullptr);

  if (g_format == Format::Vtt) out.write(voxtral_rt::detail::kVttHeader);
  const double t0_ms = voxtral_rt::detail::now_ms();
  int rc = kOk;
  if (FLAGS_stdin) {
    rc = feed_stdin(live_session.get(), model_rate);
    if (rc != kOk) live_session->stop();  // an error or Ctrl+C: no flush
    if (!live_session->finish() && rc == kOk) {
      std::fprintf(stderr, "error: %s\n", live_session->error().c_str());
      rc = kInferenceError;
    } else if (rc == kOk && g_interrupted) {
      rc = kInterrupted;
    }
    g_max_backlog_ms = 1000.0 * static_cast<double>(live_session->stats().max_backlog_samples) / model_rate;
  } else {
    rc = feed_file(reader.get(), session, model_rate, live, &out);
    if (rc == kOk) {
      if (session->flush() < 0) {
        std::fprintf(stderr, "error: %s\n", session->error().c_str());
        rc = kInferenceError;
      } else if (g_interrupted) {
        rc = kInterrupted;
      }
    }
  }
  print_delta(session, live, &out);
  const double wall_ms = voxtral_rt::detail::now_ms() - t0_ms;
  if (rc != kOk && rc != kInterrupted) return rc;

  const auto& info = runner->info();
  const double audio_ms = 1000.0 * static_cast<double>(session->stats().n_samples) / model_rate;
  const int64_t delay_ms = session->delay_tokens() * info.ms_per_token;
  // One stats object for the json/jsonl "stats" and the --stats text.
  nlohmann::json stats;
  if (FLAGS_stats || g_format == Format::Jsonl) stats = stats_json(*runner, session->stats(), wall_ms, model_rate);
  if (json) {
    nlohmann::json j;
    j["text"] = session->text();
    j["token_ids"] = session->token_ids();
    j["token_times_ms"] = session->token_times_ms();
    j["segments"] = voxtral_rt::detail::segments_json(session->segments());
    j["delay_ms"] = delay_ms;
    j["audio_ms"] = audio_ms;
    j["finished"] = session->finished();
    if (FLAGS_stats) {
      j["stats"] = stats;
      // Per token: wall ms from the start of feeding (the base of wall_ms) to its emission, on the steady clock.
      std::vector<double> emit_ms;
      for (const double t : emit_steady_ms) emit_ms.push_back(t - t0_ms);
      j["stats"]["token_emit_ms"] = emit_ms;
      j["stats"]["t0_steady_ms"] = t0_ms;
    }
    out.write(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  } else if (g_format == Format::Text) {
    out.write(live ? "\n" : session->text() + "\n");
  } else {
    emitter.finish(*session);  // a segment left open by an interrupted stream
    if (g_format == Format::Jsonl) {
      nlohmann::ordered_json done{{"type", "transcript.text.done"}, {"text", emitter.text}, {"delay_ms", delay_ms},
                                  {"audio_ms", audio_ms}, {"finished", session->finished()}};
      done["stats"] = stats;
      out.write(voxtral_rt::detail::json_line(done));
    }
  }
  if (!out.close(&err)) {
    std::fprintf(stderr, "error: %s\n", err.c_str());
    return kOutputError;
  }
  if (FLAGS_stats) print_stats(stats);
  return rc;
}
