// Any bytes as an audio file image: AudioFileReader::open_memory + read() to the end (libsndfile decode,
// channel mean, NaN check, python-soxr-exact resampling). Must never crash, hang or leak; every failure is
// a clear error string. Also checks that the streamed blocks equal load_audio_memory's one-shot result.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "voxtral_rt/audio.h"

namespace {

// A small file can legitimately decode to a long signal (e.g. FLAC runs of a constant); stop there.
constexpr size_t kMaxSamples = size_t{1} << 21;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string err;
  auto reader = voxtral_rt::AudioFileReader::open_memory(data, size, 16000, &err, "fuzz.wav");
  if (!reader) {
    if (err.empty()) __builtin_trap();  // a failure must say why
    return 0;
  }
  std::vector<float> streamed;
  bool eof = false;
  bool ok = true;
  while (!eof && streamed.size() < kMaxSamples) {
    if (!reader->read(&streamed, &eof, &err)) {
      ok = false;
      if (err.empty()) __builtin_trap();
      break;
    }
  }
  if (ok && eof) {
    // streamed == one-shot, bit for bit
    std::vector<float> whole;
    std::string err2;
    if (!voxtral_rt::load_audio_memory(data, size, 16000, &whole, &err2)) __builtin_trap();
    if (whole != streamed) __builtin_trap();
    if (whole.empty()) __builtin_trap();  // "empty" is an error, not a success with no samples
    for (float v : whole)
      if (!std::isfinite(v)) __builtin_trap();  // success means finite audio
  }
  return 0;
}
