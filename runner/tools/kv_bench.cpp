// voxtral_rt_kv_bench -- one encoder / decoder call at chosen stream positions, timed with the K/V prefix
// copied (the path before the alias kernel) and with the whole ring aliased (docs/design.md, "Attention reads
// the caches in place").
//
//   voxtral_rt_kv_bench --model_path m.pte [--dec_pos 2000,5000,7500,9000] [--enc_pos 400,600,4000] [--reps 3]
//                       [--rounds 3] [--threads 1 --cpu_time] [--dec_k 1,4,8] [--enc_tokens 16]
//                       [--modes alias] [--json]
//
// Per position and call, up to three modes on one loaded program (the caches hold whatever earlier calls left;
// the timing does not depend on their values):
//   prefix  mask over the L valid slots, wheel's slice_copy (the copying path; only while L < slots)
//   whole   mask over all slots (-inf on unwritten ones), wheel's slice_copy (a copy of the whole ring)
//   alias   mask over all slots, the runner's slice kernel (the ring itself)
//   runner  what the runner does: the prefix (whole 64-slot blocks, copied) until 3/4 of the ring is valid, then
//           the whole ring aliased
// The modes take turns in --rounds rounds of one warm-up and --reps timed calls each (other load on the machine
// then hits every mode alike); prints the minimum and median of the timed calls per mode, and checks that
// `alias` returns exactly what `whole` does and how far `prefix` is from it. --dec_k times decoder calls of k
// positions (a token and k-1 guesses, as multi-position decoding runs them), --enc_tokens encoder calls of that
// many audio tokens; --json prints one object per line (call, pos, k, mode, ms_min, ms_median) instead.
#include <executorch/extension/module/module.h>
#include <gflags/gflags.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "alias_kernels.h"
#include "et_backend.h"
#include "et_tensor.h"
#include "metadata.h"
#include "util.h"

DEFINE_string(model_path, "", "exported .pte (required)");
DEFINE_string(dec_pos, "2000,5000,7500,9000", "decoder positions (comma-separated); one position per call");
DEFINE_string(enc_pos, "400,600,4000", "encoder frame positions (comma-separated, multiples of 4); one token per call");
DEFINE_int32(reps, 3, "timed calls per mode and round (after one warm-up call)");
DEFINE_int32(rounds, 3, "rounds: the modes take turns");
DEFINE_int32(delay_tokens, 6, "decoder delay input");
DEFINE_string(dec_k, "1", "positions per decoder call (comma-separated list); each is timed at every --dec_pos");
DEFINE_int32(enc_tokens, 1, "audio tokens per encoder call (4 frames each)");
DEFINE_string(modes, "prefix,whole,alias", "modes to time (comma-separated subset of prefix,whole,alias,runner)");
DEFINE_bool(json, false, "one JSON object per line and mode instead of the table");
DEFINE_int32(threads, 0, "ExecuTorch threadpool size (0 = default); 1 is steadier on a loaded machine");
DEFINE_bool(cpu_time, false, "time with the process CPU clock instead of the wall clock: with --threads 1, the work "
            "itself, whatever else runs on the machine");

namespace {

using executorch::extension::Module;
using namespace voxtral_rt::detail;

double clock_ms() {
  if (!FLAGS_cpu_time) return now_ms();
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) v.push_back(std::stoll(item));
  return v;
}

int64_t meta(Module& m, const char* key) {
  auto r = m.execute(key);
  if (!r.ok() || r->empty() || !r->at(0).isInt()) {
    std::fprintf(stderr, "cannot read metadata '%s'\n", key);
    std::exit(2);
  }
  return r->at(0).toInt();
}

struct Result {
  std::vector<double> ms;
  std::vector<float> out;
  // "min/median" of the timed calls: the minimum is the figure least disturbed by other load on the machine.
  std::string str() const { return ms.empty() ? "-" : strf("%.0f/%.0f", percentile(ms, 0), percentile(ms, 0.5)); }
};

// Runs `method` once for warm-up and --reps times timed; adds the times to *res and keeps the last output.
void time_calls(Module& m, const char* method, const std::vector<EValue>& inputs, Result* res) {
  for (int i = 0; i <= FLAGS_reps; ++i) {
    const double t0 = clock_ms();
    auto r = m.execute(method, inputs);
    const double dt = clock_ms() - t0;
    if (!r.ok()) {
      std::fprintf(stderr, "%s failed: 0x%x\n", method, static_cast<unsigned>(r.error()));
      std::exit(3);
    }
    if (i > 0) res->ms.push_back(dt);
    const auto& o = r->at(0).toTensor();
    res->out.assign(o.const_data_ptr<float>(), o.const_data_ptr<float>() + o.numel());
  }
}

// The mask over `cols` columns: the runner's ring mask (prefix, or whole ring when cols == slots).
std::vector<float> mask_for(int64_t start, int64_t n, int64_t window, int64_t slots, bool whole, int64_t* cols) {
  std::vector<float> mask;
  *cols = ring_mask(start, n, window, slots, &mask, false);
  if (!whole || *cols == slots) return mask;
  std::vector<float> wide(static_cast<size_t>(n * slots), -INFINITY);
  for (int64_t i = 0; i < n; ++i) std::copy_n(&mask[i * *cols], *cols, &wide[i * slots]);
  *cols = slots;
  return wide;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(double(a[i]) - double(b[i])));
  return d;
}

size_t argmax(const std::vector<float>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_model_path.empty() || FLAGS_reps < 1 || FLAGS_rounds < 1) {
    std::fprintf(stderr, "usage: voxtral_rt_kv_bench --model_path m.pte [--dec_pos ...] [--enc_pos ...] [--reps N] "
                         "[--rounds N]\n");
    return 1;
  }
  const size_t threads = set_num_threads(FLAGS_threads);
  Module m(FLAGS_model_path, Module::LoadMode::Mmap, nullptr, nullptr, nullptr, /*share_memory_arenas=*/true);
  const int64_t dim = meta(m, "dim"), n_mels = meta(m, "num_mel_bins");
  const int64_t enc_win = meta(m, "enc_sliding_window"), enc_slots = meta(m, "enc_cache_slots");
  const int64_t dec_win = meta(m, "dec_sliding_window"), dec_slots = meta(m, "dec_cache_slots");
  const auto kernels = slice_alias_kernels();
  const double t0 = now_ms();
  for (const char* name : {"audio_encoder", "text_decoder"}) {
    if (m.load_method(name, nullptr, nullptr, nullptr, kernels) != Error::Ok) {
      std::fprintf(stderr, "cannot load %s\n", name);
      return 2;
    }
  }
  std::printf("%zu threads; loaded in %.1f s; encoder ring %lld frames (window %lld), "
              "decoder ring %lld (window %lld)\n",
              threads, (now_ms() - t0) / 1000, (long long)enc_slots, (long long)enc_win, (long long)dec_slots,
              (long long)dec_win);
  SliceAliasState state({enc_slots, dec_slots});
  SliceAliasScope scope(&state);
  const std::vector<int64_t> dec_k = parse_list(FLAGS_dec_k);
  const std::string modes = "," + FLAGS_modes + ",";
  auto want = [&](const char* mode) { return modes.find(std::string(",") + mode + ",") != std::string::npos; };
  int64_t max_k = 1;
  for (int64_t k : dec_k) max_k = std::max(max_k, k);
  if (FLAGS_enc_tokens < 1 || *std::min_element(dec_k.begin(), dec_k.end()) < 1) {
    std::fprintf(stderr, "--dec_k and --enc_tokens must be >= 1\n");
    return 1;
  }
  std::mt19937 rng(0);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(dim * max_k), mel(n_mels * 8 * FLAGS_enc_tokens);
  for (auto& v : x) v = 0.05f * nd(rng);
  for (auto& v : mel) v = 0.5f * nd(rng);

  if (!FLAGS_json)
    std::printf("%-8s %7s %3s %7s %6s %12s %12s %12s  %s\n", "call", "pos", "k", "valid", "slots", "prefix ms",
                "whole ms", "alias ms", FLAGS_cpu_time ? "checks (CPU ms: min/median)" : "checks (ms: min/median)");
  auto run = [&](bool enc, int64_t pos, int64_t k) {
    // k: decoder positions, or encoder tokens (4 frames each)
    const int64_t n = enc ? 4 * k : k, slots = enc ? enc_slots : dec_slots, win = enc ? enc_win : dec_win;
    const int64_t d = FLAGS_delay_tokens;
    auto pt = tensor_view(&pos, {1});
    auto dt = tensor_view(&d, {1});
    auto xin = enc ? tensor_view(mel.data(), {1, n_mels, 8 * k}) : tensor_view(x.data(), {1, k, dim});
    const char* method = enc ? "audio_encoder" : "text_decoder";
    auto call = [&](bool whole, bool alias, Result* res, bool runner_policy = false) {
      int64_t cols = 0;
      std::vector<float> mask;
      if (runner_policy)
        cols = ring_mask(pos, n, win, slots, &mask, true);
      else
        mask = mask_for(pos, n, win, slots, whole, &cols);
      auto mt = tensor_view(mask.data(), {n, cols});
      state.set_enabled(alias);
      std::vector<EValue> in = enc ? std::vector<EValue>{*xin, *pt, *mt} : std::vector<EValue>{*xin, *pt, *dt, *mt};
      time_calls(m, method, in, res);
    };
    const int64_t valid = std::min(pos + n, slots);
    Result prefix, whole, alias, runner;
    const int64_t aliased_before = state.aliased();
    int64_t alias_calls = 0;
    for (int r = 0; r < FLAGS_rounds; ++r) {
      if (valid < slots && want("prefix")) call(false, false, &prefix);
      if (want("whole")) call(true, false, &whole);
      if (want("alias")) {
        call(true, true, &alias);
        alias_calls += FLAGS_reps + 1;
      }
      if (want("runner")) call(true, true, &runner, true);
    }
    const char* what = enc ? "encoder" : "decoder";
    if (FLAGS_json) {
      for (auto [mode, res] : {std::pair<const char*, Result*>{"prefix", &prefix}, {"whole", &whole}, {"alias", &alias},
                                {"runner", &runner}}) {
        if (res->ms.empty()) continue;
        std::printf("{\"call\": \"%s\", \"pos\": %lld, \"k\": %lld, \"valid\": %lld, \"slots\": %lld, \"mode\": \"%s\", "
                    "\"ms_min\": %.2f, \"ms_median\": %.2f, \"n\": %zu}\n", what, (long long)pos, (long long)k,
                    (long long)valid, (long long)slots, mode, percentile(res->ms, 0), percentile(res->ms, 0.5),
                    res->ms.size());
      }
      std::fflush(stdout);
      return;
    }
    std::string checks;
    if (!whole.out.empty() && !alias.out.empty()) {
      checks = whole.out == alias.out ? "alias==whole bitwise" : "alias!=whole";
      checks += ", " + std::to_string((state.aliased() - aliased_before) / alias_calls) + " slices aliased per call";
    }
    if (valid < slots && !prefix.out.empty() && !whole.out.empty())
      checks += strf("; prefix vs whole max|d| %.3g%s", max_abs_diff(prefix.out, whole.out),
                     enc || argmax(prefix.out) == argmax(whole.out) ? "" : " ARGMAX DIFFERS");
    std::printf("%-8s %7lld %3lld %7lld %6lld %12s %12s %12s  %s\n", what, (long long)pos, (long long)k,
                (long long)valid, (long long)slots, prefix.str().c_str(), whole.str().c_str(), alias.str().c_str(),
                checks.c_str());
    std::fflush(stdout);
  };
  for (int64_t pos : parse_list(FLAGS_enc_pos)) run(true, pos, FLAGS_enc_tokens);
  for (int64_t pos : parse_list(FLAGS_dec_pos))
    for (int64_t k : dec_k) run(false, pos, k);
  return 0;
}
