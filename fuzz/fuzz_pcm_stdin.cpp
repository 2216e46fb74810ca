// The --stdin path: raw PCM bytes arriving in arbitrary pieces -> PcmDecoder -> StreamResampler.
// Input layout: byte 0 = format (bit 0) and source rate (bits 1..3), byte 1..2 = split seed, rest = PCM.
// Checks: decoding in pieces == decoding at once; finish() fails iff the input ends mid-sample; NaN/Inf is
// reported at the first bad sample's index; the resampler never fails on finite input.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "voxtral_rt/audio.h"

using voxtral_rt::PcmDecoder;
using voxtral_rt::PcmFormat;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const PcmFormat fmt = (data[0] & 1) ? PcmFormat::F32LE : PcmFormat::S16LE;
  static const int kRates[] = {16000, 8000, 11025, 22050, 44100, 48000, 1000, 768000};
  const int rate = kRates[(data[0] >> 1) & 7];
  uint32_t seed = data[1] | (uint32_t(data[2]) << 8) | 1u;
  const uint8_t* pcm = data + 3;
  const size_t n = size - 3;
  const size_t bps = fmt == PcmFormat::S16LE ? 2 : 4;

  // reference: all bytes at once
  PcmDecoder whole(fmt);
  std::vector<float> ref;
  std::string ref_err;
  const bool ref_ok = whole.push(pcm, n, &ref, &ref_err);

  // the same bytes in pseudo-random pieces (including empty ones)
  PcmDecoder dec(fmt);
  std::vector<float> got;
  std::string err;
  bool ok = true;
  size_t i = 0;
  while (i < n) {
    seed = seed * 1103515245u + 12345u;
    const size_t k = std::min<size_t>(n - i, (seed >> 16) % 11);
    if (!dec.push(pcm + i, k, &got, &err)) {
      ok = false;
      break;
    }
    i += k;
  }
  if (ok != ref_ok) __builtin_trap();
  if (!ok) {
    if (err != ref_err || err.find("NaN or Inf") == std::string::npos) __builtin_trap();
    // every sample before the bad one was delivered, and it was the first non-finite one
    for (float v : got)
      if (!std::isfinite(v)) __builtin_trap();
    if (got.size() != ref.size()) __builtin_trap();
    return 0;
  }
  if (got.size() != n / bps || got != ref) __builtin_trap();  // (bit-equal: no NaN reaches here)
  if (dec.n_samples() != static_cast<int64_t>(got.size())) __builtin_trap();
  std::string ferr;
  if (dec.finish(&ferr) != (n % bps == 0)) __builtin_trap();

  // resample as the CLI does for --sample_rate != 16000
  if (rate != 16000 && !got.empty()) {
    voxtral_rt::StreamResampler rs(rate, 16000);
    if (!rs.ok()) __builtin_trap();
    std::vector<float> out;
    size_t j = 0;
    while (j < got.size()) {
      seed = seed * 1103515245u + 12345u;
      const size_t k = std::min<size_t>(got.size() - j, 1 + (seed >> 16) % 4000);
      if (!rs.process(got.data() + j, k, &out)) __builtin_trap();
      j += k;
    }
    if (!rs.finish(&out)) __builtin_trap();
    std::vector<float> more;
    if (rs.process(got.data(), 1, &more)) __builtin_trap();  // input after finish() is refused
    // output length ~ input * ratio (within the filter's rounding)
    const double expect = static_cast<double>(got.size()) * 16000.0 / rate;
    if (std::fabs(static_cast<double>(out.size()) - expect) > 2 + expect * 1e-3) __builtin_trap();
  }
  return 0;
}
