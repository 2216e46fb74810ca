// voxtral_rt_soak -- a long live session through the library's streaming path, measured over time.
//
//   voxtral_rt_soak --model_path m.pte --tokenizer_path tekken.json --hours 3 [--chunk_ms 80]
//                   [--bucket_min 10] [--max_history 10000] [--sessions 1]
//
// Feeds deterministic synthetic speech-like audio (harmonics with a gliding pitch, syllable envelope, pauses,
// noise) in --chunk_ms pieces, as fast as the model takes it, and prints one JSON object on stdout:
// RSS (VmRSS) at start/end and every bucket, and per bucket of --bucket_min minutes of audio: feed() latency
// (what a live caller waits per chunk) and decoder step latency percentiles. With --sessions N, N sessions
// run concurrently on N threads (each its own audio) and the figures are for session 0.
// bench/long_session.py prepares a tiny model, runs this and checks that RSS and latency stay flat.
#include <gflags/gflags.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "util.h"
#include "voxtral_rt/voxtral_rt.h"

DEFINE_string(model_path, "", "exported .pte (required)");
DEFINE_string(tokenizer_path, "", "its tekken.json (required)");
DEFINE_double(hours, 3.0, "audio to stream (hours)");
DEFINE_int32(chunk_ms, 80, "audio per feed() call (ms)");
DEFINE_double(bucket_min, 10.0, "statistics bucket (minutes of audio)");
DEFINE_int64(max_history, 10000, "SessionOptions::max_history (0 = keep every token)");
DEFINE_int32(sessions, 1, "concurrent sessions (threads)");
DEFINE_int32(threads, 0, "ExecuTorch threadpool size (0 = default)");

namespace {

using voxtral_rt::detail::now_ms;
using voxtral_rt::detail::percentile;
using voxtral_rt::detail::proc_status_mib;

// Deterministic speech-like signal, generated chunk by chunk (phases kept in double, wrapped).
class Synth {
 public:
  Synth(int rate, uint32_t seed) : rate_(rate), rng_(seed), noise_(0.0f, 0.02f) {}
  void next(float* out, size_t n) {
    for (size_t i = 0; i < n; ++i, ++t_) {
      const double t = static_cast<double>(t_) / rate_;
      const double f0 = 120 + 40 * std::sin(2 * M_PI * 0.37 * t) + 25 * std::sin(2 * M_PI * 1.3 * t);
      phase_ = std::fmod(phase_ + 2 * M_PI * f0 / rate_, 2 * M_PI);
      const double syl = std::pow(std::max(0.0, std::sin(2 * M_PI * 3.1 * t)), 2);  // ~6 syllables/s
      const double pause = std::fmod(t, 7.0) > 5.5 ? 0.0 : 1.0;                      // 1.5 s pause every 7 s
      double x = 0;
      for (int k = 1; k <= 6; ++k) x += std::sin(k * phase_) / k;
      out[i] = static_cast<float>(0.15 * x * syl * pause) + noise_(rng_);
    }
  }

 private:
  int rate_;
  int64_t t_ = 0;
  double phase_ = 0;
  std::mt19937 rng_;
  std::normal_distribution<float> noise_;
};

struct Bucket {
  std::vector<double> feed_ms, step_ms;  // cleared when the bucket closes (only the summary is kept)
  int64_t tokens = 0;
  double rss_mb_end = 0;
  double feed_p50 = 0, feed_p95 = 0, feed_max = 0, step_p50 = 0, step_p95 = 0, step_max = 0;
  void close() {
    feed_p50 = percentile(feed_ms, 0.5);
    feed_p95 = percentile(feed_ms, 0.95);
    feed_max = percentile(feed_ms, 1.0);
    step_p50 = percentile(step_ms, 0.5);
    step_p95 = percentile(step_ms, 0.95);
    step_max = percentile(step_ms, 1.0);
    std::vector<double>().swap(feed_ms);
    std::vector<double>().swap(step_ms);
  }
};

struct Result {
  std::vector<Bucket> buckets;
  double wall_s = 0;
  int64_t tokens = 0, kept_ids = 0;
  std::string error;
};

Result run_session(voxtral_rt::Runner& runner, uint32_t seed, bool measure_rss) {
  Result res;
  voxtral_rt::SessionOptions o;
  o.max_history = FLAGS_max_history;
  std::string err;
  auto s = runner.create_session(o, &err);
  if (!s) {
    res.error = err;
    return res;
  }
  const int rate = static_cast<int>(runner.info().sample_rate);
  const size_t chunk = static_cast<size_t>(rate) * FLAGS_chunk_ms / 1000;
  const auto total = static_cast<int64_t>(FLAGS_hours * 3600.0 * rate);
  const auto per_bucket = static_cast<int64_t>(FLAGS_bucket_min * 60.0 * rate);
  Synth synth(rate, seed);
  std::vector<float> pcm(chunk);
  Bucket cur;
  const size_t feeds_per_bucket = static_cast<size_t>(per_bucket / static_cast<int64_t>(chunk)) + 2;
  cur.feed_ms.reserve(feeds_per_bucket);
  cur.step_ms.reserve(feeds_per_bucket * 2);
  bool prefilled = false;
  const double t0 = now_ms();
  for (int64_t fed = 0; fed < total;) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(chunk), total - fed));
    synth.next(pcm.data(), n);
    const double a = now_ms();
    const int64_t got = s->feed(pcm.data(), n);
    cur.feed_ms.push_back(now_ms() - a);
    if (got < 0) {
      res.error = s->error();
      return res;
    }
    // the new decoder steps are the tail of stats().step_ms (the prefill's token is not a step)
    int64_t steps = got;
    if (got > 0 && !prefilled) {
      prefilled = true;
      --steps;
    }
    const auto& sm = s->stats().step_ms;
    for (int64_t k = std::min<int64_t>(steps, static_cast<int64_t>(sm.size())); k > 0; --k)
      cur.step_ms.push_back(sm[sm.size() - static_cast<size_t>(k)]);
    cur.tokens += got;
    res.tokens += got;
    s->take_text();  // a live caller consumes the text
    const int64_t before = fed;
    fed += static_cast<int64_t>(n);
    if (fed / per_bucket != before / per_bucket || fed == total) {
      cur.close();  // before measuring: the tool's own per-chunk records must not show up as growth
      if (measure_rss) cur.rss_mb_end = proc_status_mib("VmRSS");
      res.buckets.push_back(std::move(cur));
      cur = Bucket();
      cur.feed_ms.reserve(feeds_per_bucket);
      cur.step_ms.reserve(feeds_per_bucket * 2);
    }
  }
  if (s->flush() < 0) res.error = s->error();
  res.wall_s = (now_ms() - t0) / 1000.0;
  res.kept_ids = static_cast<int64_t>(s->token_ids().size());
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_model_path.empty() || FLAGS_tokenizer_path.empty() || FLAGS_hours <= 0 || FLAGS_chunk_ms <= 0 ||
      FLAGS_bucket_min <= 0 || FLAGS_sessions < 1) {
    std::fprintf(stderr, "usage: %s --model_path m.pte --tokenizer_path tekken.json [--hours 3] ...\n", argv[0]);
    return 1;
  }
  voxtral_rt::set_log_callback([](voxtral_rt::LogLevel l, const std::string& m) {
    if (l >= voxtral_rt::LogLevel::Warning) std::fprintf(stderr, "voxtral_rt: %s\n", m.c_str());
  });
  std::string err;
  voxtral_rt::RunnerOptions ro{FLAGS_model_path, FLAGS_tokenizer_path};
  ro.threads = FLAGS_threads;
  auto runner = voxtral_rt::Runner::load(ro, &err);
  if (!runner) {
    std::fprintf(stderr, "error: %s\n", err.c_str());
    return 2;
  }
  const double rss_start = proc_status_mib("VmRSS");
  std::vector<Result> results(static_cast<size_t>(FLAGS_sessions));
  std::vector<std::thread> threads;
  for (int i = 1; i < FLAGS_sessions; ++i)
    threads.emplace_back([&, i] { results[static_cast<size_t>(i)] = run_session(*runner, 1000u + i, false); });
  results[0] = run_session(*runner, 1000u, true);
  for (auto& t : threads) t.join();
  const double rss_end = proc_status_mib("VmRSS");

  nlohmann::ordered_json j;
  j["model"] = FLAGS_model_path;
  j["audio_hours"] = FLAGS_hours;
  j["chunk_ms"] = FLAGS_chunk_ms;
  j["sessions"] = FLAGS_sessions;
  j["max_history"] = FLAGS_max_history;
  j["rss_mb"] = {{"start", rss_start}, {"end", rss_end}, {"peak", proc_status_mib("VmHWM")}};
  nlohmann::ordered_json sess = nlohmann::ordered_json::array();
  for (const auto& r : results)
    sess.push_back({{"wall_s", r.wall_s}, {"tokens", r.tokens}, {"kept_token_ids", r.kept_ids}, {"error", r.error}});
  j["per_session"] = sess;
  nlohmann::ordered_json b = nlohmann::ordered_json::array();
  double minute = 0;
  for (const auto& k : results[0].buckets) {
    b.push_back({{"audio_min", minute},
                 {"tokens", k.tokens},
                 {"rss_mb", k.rss_mb_end},
                 {"feed_ms_p50", k.feed_p50},
                 {"feed_ms_p95", k.feed_p95},
                 {"feed_ms_max", k.feed_max},
                 {"step_ms_p50", k.step_p50},
                 {"step_ms_p95", k.step_p95},
                 {"step_ms_max", k.step_max}});
    minute += FLAGS_bucket_min;
  }
  j["buckets"] = b;
  std::printf("%s\n", j.dump(1).c_str());
  for (const auto& r : results)
    if (!r.error.empty()) {
      std::fprintf(stderr, "error: %s\n", r.error.c_str());
      return 4;
    }
  return 0;
}
