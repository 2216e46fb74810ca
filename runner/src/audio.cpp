#include "voxtral_rt/audio.h"

#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
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

// ---------------------------------------------------------------------------------------------- file reader

namespace {

// An in-memory file for sf_open_virtual.
struct MemFile {
  const unsigned char* data = nullptr;
  sf_count_t size = 0;
  sf_count_t pos = 0;
};

sf_count_t mem_get_filelen(void* user) { return static_cast<MemFile*>(user)->size; }
sf_count_t mem_seek(sf_count_t offset, int whence, void* user) {
  auto* m = static_cast<MemFile*>(user);
  sf_count_t base = 0;
  if (whence == SEEK_CUR) base = m->pos;
  if (whence == SEEK_END) base = m->size;
  // Overflow-safe: libsndfile passes header-derived offsets, which a corrupt file can make huge.
  if ((offset > 0 && base > INT64_MAX - offset) || (offset < 0 && base + offset < 0)) return -1;
  m->pos = base + offset;
  return m->pos;
}
sf_count_t mem_read(void* ptr, sf_count_t count, void* user) {
  auto* m = static_cast<MemFile*>(user);
  if (count <= 0 || m->pos >= m->size) return 0;
  const sf_count_t n = std::min(count, m->size - m->pos);
  std::memcpy(ptr, m->data + m->pos, static_cast<size_t>(n));
  m->pos += n;
  return n;
}
sf_count_t mem_write(const void*, sf_count_t, void*) { return 0; }
sf_count_t mem_tell(void* user) { return static_cast<MemFile*>(user)->pos; }

std::string rate_range_error(const std::string& what, int rate) {
  return what + " " + std::to_string(rate) + " Hz is outside the supported range " + std::to_string(kMinSampleRate) +
         ".." + std::to_string(kMaxSampleRate) + " Hz";
}

bool rate_ok(int rate) { return rate >= kMinSampleRate && rate <= kMaxSampleRate; }

}  // namespace

struct AudioFileReader::Impl {
  std::string name;
  MemFile mem;
  SF_VIRTUAL_IO vio{};
  std::unique_ptr<SNDFILE, SndfileCloser> file;
  SF_INFO sfi{};
  int target_rate = 0;
  size_t channels = 1;
  size_t block_frames = 4096;
  std::vector<float> block;    // interleaved frames from libsndfile
  std::vector<float> pending;  // mono samples not yet given to libsoxr (less than one chunk)
  SoxrPtr soxr;                // null when source rate == target rate
  size_t div_len = 0;          // python-soxr's input chunk
  int64_t frames_read = 0;     // mono samples decoded
  size_t out_pos = 0;          // resampled samples returned
  bool done = false;

  // Opens `file` (already sf_open'ed) and checks it.
  bool init(SNDFILE* f, int target, std::string* error) {
    if (!f) {
      *error = name + ": cannot read audio: " + sf_strerror(nullptr);
      return false;
    }
    file.reset(f);
    target_rate = target;
    if (sfi.frames == 0 || sfi.channels <= 0) {
      *error = name + ": audio file is empty";
      return false;
    }
    if (!rate_ok(sfi.samplerate)) {
      *error = name + ": " + rate_range_error("sample rate", sfi.samplerate);
      return false;
    }
    if (!rate_ok(target_rate)) {
      *error = name + ": " + rate_range_error("target sample rate", target_rate);
      return false;
    }
    channels = static_cast<size_t>(sfi.channels);
    block_frames = std::max<size_t>(64, std::min<size_t>(4096, 65536 / channels));
    block.resize(block_frames * channels);
    if (sfi.samplerate != target_rate) {
      std::string err;
      soxr = make_soxr(sfi.samplerate, target_rate, &err);
      if (!soxr) {
        *error = name + ": " + err;
        return false;
      }
      div_len = static_cast<size_t>(std::max(1000., 48000. * sfi.samplerate / target_rate));
      pending.reserve(div_len + block_frames);
    }
    return true;
  }

  // One soxr_process call as python-soxr makes it: `n` input samples (or the flush when in == nullptr),
  // output appended to *out, at most `cap` samples.
  bool process(const float* in, size_t n, size_t cap, std::vector<float>* out, std::string* error) {
    const size_t base = out->size();
    out->resize(base + cap);
    size_t odone = 0;
    float* op = out->data() + base;
    soxr_error_t err = soxr_process(soxr.get(), in ? &in : nullptr, n, nullptr, &op, cap, &odone);
    out->resize(base + odone);
    if (err) {
      *error = name + ": libsoxr: " + err;
      return false;
    }
    // Finite input can still overflow the filter (float files with values near FLT_MAX; found by fuzzing).
    for (size_t i = base; i < out->size(); ++i) {
      if (!std::isfinite((*out)[i])) {
        *error = name + ": resampled sample " + std::to_string(out_pos + (i - base)) +
                 " is NaN or Inf: the audio has values far outside [-1, 1]";
        out->resize(base);
        return false;
      }
    }
    out_pos += odone;
    return true;
  }
};

AudioFileReader::AudioFileReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AudioFileReader::~AudioFileReader() = default;
int AudioFileReader::source_rate() const { return impl_->sfi.samplerate; }
int AudioFileReader::channels() const { return impl_->sfi.channels; }
int64_t AudioFileReader::frames_in_header() const { return impl_->sfi.frames; }
int64_t AudioFileReader::frames_read() const { return impl_->frames_read; }

std::unique_ptr<AudioFileReader> AudioFileReader::open(const std::string& path, int target_rate, std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->name = path;
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &impl->sfi);
  if (!impl->init(f, target_rate, error)) return nullptr;
  return std::unique_ptr<AudioFileReader>(new AudioFileReader(std::move(impl)));
}

std::unique_ptr<AudioFileReader> AudioFileReader::open_memory(const void* data, size_t size, int target_rate,
                                                              std::string* error, const std::string& name) {
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->mem.data = static_cast<const unsigned char*>(data);
  impl->mem.size = static_cast<sf_count_t>(size);
  impl->vio.get_filelen = mem_get_filelen;
  impl->vio.seek = mem_seek;
  impl->vio.read = mem_read;
  impl->vio.write = mem_write;
  impl->vio.tell = mem_tell;
  SNDFILE* f = sf_open_virtual(&impl->vio, SFM_READ, &impl->sfi, &impl->mem);
  if (!impl->init(f, target_rate, error)) return nullptr;
  return std::unique_ptr<AudioFileReader>(new AudioFileReader(std::move(impl)));
}

bool AudioFileReader::read(std::vector<float>* out, bool* eof, std::string* error) {
  Impl& m = *impl_;
  *eof = m.done;
  if (m.done) return true;
  // soundfile.read(dtype="float32") == sf_readf_float (libsndfile normalises integer PCM to [-1, 1)).
  const sf_count_t got = sf_readf_float(m.file.get(), m.block.data(), static_cast<sf_count_t>(m.block_frames));
  if (got > 0) {
    std::vector<float>& dst = m.soxr ? m.pending : *out;
    const size_t base = dst.size();
    dst.resize(base + static_cast<size_t>(got));
    float* mono = dst.data() + base;
    for (sf_count_t i = 0; i < got; ++i) {
      const float* fr = m.block.data() + static_cast<size_t>(i) * m.channels;
      if (m.channels == 1) {
        mono[i] = fr[0];
      } else {
        // numpy float32 mean over axis 1: float32 sum, then divide by the count.
        float acc = 0.0f;
        for (size_t c = 0; c < m.channels; ++c) acc += fr[c];
        mono[i] = acc / static_cast<float>(m.channels);
      }
      if (!std::isfinite(mono[i])) {
        *error = m.name + ": sample " + std::to_string(m.frames_read + i) + " is NaN or Inf";
        dst.resize(base);
        return false;
      }
    }
    m.frames_read += got;
    if (!m.soxr) return true;
    // Full python-soxr chunks only; the last, shorter one goes with the flush.
    size_t used = 0;
    const double ratio = static_cast<double>(m.target_rate) / m.sfi.samplerate;
    for (; m.pending.size() - used >= m.div_len; used += m.div_len) {
      const size_t cap = static_cast<size_t>(static_cast<double>(m.div_len) * ratio * 2) + 65536;  // never binding
      if (!m.process(m.pending.data() + used, m.div_len, cap, out, error)) return false;
    }
    m.pending.erase(m.pending.begin(), m.pending.begin() + static_cast<std::ptrdiff_t>(used));
    return true;
  }
  if (sf_error(m.file.get()) != SF_ERR_NO_ERROR) {
    *error = m.name + ": decode error: " + sf_strerror(m.file.get());
    return false;
  }
  // end of input
  if (m.frames_read == 0) {
    *error = m.name + ": audio file is empty";
    return false;
  }
  if (m.soxr) {
    // python-soxr: the output is capped at len(x) * out / in + 1 samples.
    const auto olen = static_cast<size_t>(static_cast<double>(m.frames_read) * m.target_rate / m.sfi.samplerate + 1);
    const size_t room = olen > m.out_pos ? olen - m.out_pos : 0;
    if (!m.pending.empty() && !m.process(m.pending.data(), m.pending.size(), room, out, error)) return false;
    m.pending.clear();
    m.pending.shrink_to_fit();
    const size_t room2 = olen > m.out_pos ? olen - m.out_pos : 0;
    if (!m.process(nullptr, 0, room2, out, error)) return false;
    if (m.out_pos == 0) {  // e.g. one frame at 48 kHz: as voxtral_rt/audio.py, an error rather than no audio
      *error = m.name + ": audio too short to resample from " + std::to_string(m.sfi.samplerate) + " Hz to " +
               std::to_string(m.target_rate) + " Hz";
      return false;
    }
  }
  m.done = true;
  *eof = true;
  return true;
}

namespace {

bool read_all(AudioFileReader* reader, std::vector<float>* pcm, std::string* error, int* source_rate) {
  pcm->clear();
  if (source_rate) *source_rate = reader->source_rate();
  bool eof = false;
  while (!eof) {
    if (!reader->read(pcm, &eof, error)) return false;
  }
  return true;
}

}  // namespace

bool load_audio_file(const std::string& path, int target_rate, std::vector<float>* pcm, std::string* error,
                     int* source_rate) {
  auto reader = AudioFileReader::open(path, target_rate, error);
  return reader && read_all(reader.get(), pcm, error, source_rate);
}

bool load_audio_memory(const void* data, size_t size, int target_rate, std::vector<float>* pcm, std::string* error,
                       int* source_rate) {
  auto reader = AudioFileReader::open_memory(data, size, target_rate, error);
  return reader && read_all(reader.get(), pcm, error, source_rate);
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
