// How many positions each decoder call runs: the known one plus guessed [STREAMING_PAD]s (docs/design.md,
// "Multi-position decoding"). Python twin: voxtral_rt/protocol.py DraftPolicy (same rules, same constants).
//
// A call over k positions feeds the known token at the first and PAD at the others; position i's guess was
// right iff the argmax at i - 1 is PAD, so a call yields 1 + (leading PADs among its first k - 1 argmaxes)
// tokens, exactly the greedy ones. Whether k > 1 pays depends on the machine (a call of k rows costs between
// 1x and kx one row: XNNPACK runs M = 2..8 with one 8-row kernel) and on the PAD share. Adaptive mode
// measures both -- the wall time of calls of each candidate k (EMA) and the PAD share of the generated tokens
// (EMA) -- and picks the k with the most expected tokens per ms, E[tokens | k] = (1 - p^k) / (1 - p) for PAD
// share p, re-measuring the stalest candidate every kRemeasureEvery calls. k = 1 is a candidate, so it never
// plans slower than one position per call.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace voxtral_rt::detail {

class DraftPolicy {
 public:
  static constexpr int64_t kRemeasureEvery = 64;
  static constexpr double kAlpha = 0.25;  // EMA weight of a new call time
  static constexpr double kPadAlpha = 0.05;

  DraftPolicy(int64_t max_positions, bool adaptive)
      : max_positions_(std::max<int64_t>(1, max_positions)), adaptive_(adaptive && max_positions_ > 1) {
    for (int64_t k = 1; k < max_positions_; k *= 2) candidates_.push_back(k);
    candidates_.push_back(max_positions_);
    cost_ms_.assign(candidates_.size(), -1.0);
    last_measured_.assign(candidates_.size(), 0);
  }

  // Positions for the next call, given how many have audio embeddings (>= 1).
  int64_t choose(int64_t available) const {
    if (!adaptive_) return std::min(max_positions_, available);
    size_t n_fit = 0;  // candidates are ascending
    while (n_fit < candidates_.size() && candidates_[n_fit] <= available) ++n_fit;
    if (n_fit == 0) return available;
    for (size_t i = 0; i < n_fit; ++i)
      if (cost_ms_[i] < 0) return candidates_[i];  // not measured yet
    size_t stalest = 0;
    for (size_t i = 1; i < n_fit; ++i)
      if (last_measured_[i] < last_measured_[stalest]) stalest = i;
    if (n_calls_ - last_measured_[stalest] > kRemeasureEvery) return candidates_[stalest];
    size_t best = 0;
    double best_rate = -1;
    for (size_t i = 0; i < n_fit; ++i) {
      const double rate = expected_tokens(candidates_[i]) / std::max(cost_ms_[i], 1e-6);
      if (rate > best_rate) {
        best_rate = rate;
        best = i;
      }
    }
    return candidates_[best];
  }

  // A call of k positions took `ms` and yielded `accepted` tokens, `n_pad` of them PAD.
  void observe(int64_t k, double ms, int64_t accepted, int64_t n_pad) {
    ++n_calls_;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      if (candidates_[i] != k) continue;
      cost_ms_[i] = cost_ms_[i] < 0 ? ms : cost_ms_[i] + kAlpha * (ms - cost_ms_[i]);
      last_measured_[i] = n_calls_;
    }
    for (int64_t t = 0; t < accepted; ++t) pad_share_ += kPadAlpha * ((t < n_pad ? 1.0 : 0.0) - pad_share_);
  }

 private:
  // Tokens a call of k positions yields on average: 1 + the leading PADs among its k - 1 guesses.
  double expected_tokens(int64_t k) const {
    const double p = std::min(pad_share_, 0.999);
    return (1.0 - std::pow(p, static_cast<double>(k))) / (1.0 - p);
  }

  int64_t max_positions_;
  bool adaptive_;
  std::vector<int64_t> candidates_;
  std::vector<double> cost_ms_;         // EMA per candidate; -1 = not measured
  std::vector<int64_t> last_measured_;  // n_calls_ when last measured
  int64_t n_calls_ = 0;
  double pad_share_ = 0.5;
};

}  // namespace voxtral_rt::detail
