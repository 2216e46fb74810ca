#include "voxtral_rt/audio.h"

#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace voxtral_rt {
namespace {

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
struct SoxrDeleter {
  void operator()(soxr* s) const { soxr_delete(s); }
};
using SoxrPtr = std::unique_ptr<soxr, SoxrDeleter>;

SoxrPtr make_soxr(double in_rate, double out_rate, std::string* error) {
  // python-soxr: soxr_io_spec(float32, float32), soxr_quality_spec(HQ, 0), default runtime spec.
  // (Its `resample` uses the split-channel float32 type; identical for mono.)
  soxr_error_t err = nullptr;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_S, SOXR_FLOAT32_S);
  const soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
  SoxrPtr s(soxr_create(in_rate, out_rate, 1, &err, &io, &q, nullptr));
  if (err || !s) {
    *error = std::string("libsoxr: cannot resample ") + std::to_string(in_rate) + " Hz -> " +
             std::to_string(out_rate) + " Hz: " + (err ? err : "unknown error");
    return nullptr;
  }
  return s;
}

}  // namespace

bool resample_like_python_soxr(const float* in, size_t n, double in_rate, double out_rate, std::vector<float>* out,
                               std::string* error) {
  if (in_rate <= 0 || out_rate <= 0) {
    *error = "sample rates must be > 0";
    return false;
  }
  SoxrPtr s = make_soxr(in_rate, out_rate, error);
  if (!s) return false;
  // Same buffer sizes as python-soxr's csoxr_split_ch: the output cap and the input chunking both change
  // what libsoxr returns, so they are reproduced exactly.
  const auto olen = static_cast<size_t>(static_cast<double>(n) * out_rate / in_rate + 1);
  const auto div_len = static_cast<size_t>(std::max(1000., 48000 * in_rate / out_rate));
  out->assign(olen, 0.0f);
  size_t out_pos = 0, odone = 0;
  soxr_error_t err = nullptr;
  for (size_t idx = 0; idx < n; idx += div_len) {
    const float* ip = in + idx;
    float* op = out->data() + out_pos;
    err = soxr_process(s.get(), &ip, std::min(div_len, n - idx), nullptr, &op, olen - out_pos, &odone);
    out_pos += odone;
    if (err) break;
  }
  if (!err) {
    float* op = out->data() + out_pos;
    err = soxr_process(s.get(), nullptr, 0, nullptr, &op, olen - out_pos, &odone);
    out_pos += odone;
  }
  if (err) {
    *error = std::string("libsoxr: ") + err;
    return false;
  }
  out->resize(out_pos);
  return true;
}

bool load_audio_file(const std::string& path, int target_rate, std::vector<float>* pcm, std::string* error,
                     int* source_rate) {
  SF_INFO sfi;
  std::memset(&sfi, 0, sizeof(sfi));
  std::unique_ptr<SNDFILE, SndfileCloser> f(sf_open(path.c_str(), SFM_READ, &sfi));
  if (!f) {
    *error = path + ": cannot read audio: " + sf_strerror(nullptr);
    return false;
  }
  if (sfi.frames <= 0 || sfi.channels <= 0) {
    *error = path + ": audio file is empty";
    return false;
  }
  if (sfi.samplerate <= 0) {
    *error = path + ": invalid sample rate";
    return false;
  }
  if (source_rate) *source_rate = sfi.samplerate;
  const auto ch = static_cast<size_t>(sfi.channels);
  // soundfile.read(dtype="float32") == sf_readf_float (libsndfile normalises integer PCM to [-1, 1)).
  std::vector<float> frames;
  std::vector<float> block(4096 * ch);
  std::vector<float> mono;
  mono.reserve(static_cast<size_t>(sfi.frames));
  for (;;) {
    const sf_count_t got = sf_readf_float(f.get(), block.data(), 4096);
    if (got <= 0) break;
    for (sf_count_t i = 0; i < got; ++i) {
      const float* fr = block.data() + static_cast<size_t>(i) * ch;
      if (ch == 1) {
        mono.push_back(fr[0]);
      } else {
        // numpy float32 mean over axis 1: float32 sum, then divide by the count.
        float acc = 0.0f;
        for (size_t c = 0; c < ch; ++c) acc += fr[c];
        mono.push_back(acc / static_cast<float>(ch));
      }
    }
  }
  if (sf_error(f.get()) != SF_ERR_NO_ERROR) {
    *error = path + ": decode error: " + sf_strerror(f.get());
    return false;
  }
  if (mono.empty()) {
    *error = path + ": audio file is empty";
    return false;
  }
  for (size_t i = 0; i < mono.size(); ++i) {
    if (!std::isfinite(mono[i])) {
      *error = path + ": sample " + std::to_string(i) + " is NaN or Inf";
      return false;
    }
  }
  if (sfi.samplerate == target_rate) {
    *pcm = std::move(mono);
    return true;
  }
  std::string err;
  if (!resample_like_python_soxr(mono.data(), mono.size(), sfi.samplerate, target_rate, pcm, &err)) {
    *error = path + ": " + err;
    return false;
  }
  return true;
}

bool parse_pcm_format(const std::string& name, PcmFormat* format) {
  if (name == "s16le") {
    *format = PcmFormat::S16LE;
  } else if (name == "f32le") {
    *format = PcmFormat::F32LE;
  } else {
    return false;
  }
  return true;
}

namespace {

float decode_sample(PcmFormat format, const unsigned char* b) {
  if (format == PcmFormat::S16LE) {
    const auto v = static_cast<int16_t>(static_cast<uint16_t>(b[0] | (b[1] << 8)));
    return static_cast<float>(v) / 32768.0f;
  }
  const uint32_t u = uint32_t(b[0]) | (uint32_t(b[1]) << 8) | (uint32_t(b[2]) << 16) | (uint32_t(b[3]) << 24);
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

}  // namespace

bool PcmDecoder::push(const void* bytes, size_t n_bytes, std::vector<float>* out, std::string* error) {
  const auto* p = static_cast<const unsigned char*>(bytes);
  const size_t bps = bytes_per_sample();
  auto put = [&](const unsigned char* b) {
    const float v = decode_sample(format_, b);
    if (!std::isfinite(v)) {
      *error = "input sample " + std::to_string(n_samples_) + " is NaN or Inf";
      return false;
    }
    out->push_back(v);
    ++n_samples_;
    return true;
  };
  // complete a sample split across calls
  while (n_partial_ > 0 && n_bytes > 0) {
    partial_[n_partial_++] = *p++;
    --n_bytes;
    if (n_partial_ == bps) {
      n_partial_ = 0;
      if (!put(partial_)) return false;
    }
  }
  const size_t n_whole = n_bytes / bps;
  out->reserve(out->size() + n_whole);
  for (size_t i = 0; i < n_whole; ++i) {
    if (!put(p + i * bps)) return false;
  }
  for (size_t i = n_whole * bps; i < n_bytes; ++i) partial_[n_partial_++] = p[i];
  return true;
}

bool PcmDecoder::finish(std::string* error) const {
  if (n_partial_ != 0) {
    *error = "input ended in the middle of a sample (" + std::to_string(n_partial_) + " of " +
             std::to_string(bytes_per_sample()) + " bytes); is --stdin_format right?";
    return false;
  }
  return true;
}

struct StreamResampler::Impl {
  SoxrPtr soxr;
  std::string error;
  double ratio = 1;
  bool finished = false;
};

StreamResampler::StreamResampler(double in_rate, double out_rate) : impl_(std::make_unique<Impl>()) {
  if (in_rate <= 0 || out_rate <= 0) {
    impl_->error = "sample rates must be > 0";
    return;
  }
  impl_->soxr = make_soxr(in_rate, out_rate, &impl_->error);
  impl_->ratio = out_rate / in_rate;
}

StreamResampler::~StreamResampler() = default;
bool StreamResampler::ok() const { return impl_->soxr != nullptr; }
const std::string& StreamResampler::error() const { return impl_->error; }

bool StreamResampler::process(const float* in, size_t n, std::vector<float>* out) {
  if (!ok()) return false;
  if (impl_->finished) {
    impl_->error = "StreamResampler: input after finish()";
    return false;
  }
  // Loop until libsoxr has taken all input; each call's output space bounds how much it consumes.
  size_t consumed = 0;
  do {
    const size_t cap = static_cast<size_t>((n - consumed) * impl_->ratio) + 1024;
    const size_t base = out->size();
    out->resize(base + cap);
    size_t idone = 0, odone = 0;
    const float* ip = in + consumed;
    float* op = out->data() + base;
    soxr_error_t err = soxr_process(impl_->soxr.get(), &ip, n - consumed, &idone, &op, cap, &odone);
    out->resize(base + odone);
    if (err) {
      impl_->error = std::string("libsoxr: ") + err;
      return false;
    }
    consumed += idone;
    if (idone == 0 && odone == 0 && consumed < n) {
      impl_->error = "libsoxr: no progress";
      return false;
    }
  } while (consumed < n);
  return true;
}

bool StreamResampler::finish(std::vector<float>* out) {
  if (!ok()) return false;
  impl_->finished = true;
  for (;;) {
    const size_t cap = 4096, base = out->size();
    out->resize(base + cap);
    size_t odone = 0;
    float* op = out->data() + base;
    soxr_error_t err = soxr_process(impl_->soxr.get(), nullptr, 0, nullptr, &op, cap, &odone);
    out->resize(base + odone);
    if (err) {
      impl_->error = std::string("libsoxr: ") + err;
      return false;
    }
    if (odone < cap) return true;
  }
}

}  // namespace voxtral_rt
