// audio.h -- getting audio into the 16 kHz mono float PCM that voxtral_rt::Session::feed takes.
//
//   std::vector<float> pcm; std::string err;
//   if (!voxtral_rt::load_audio_file("a.flac", 16000, &pcm, &err)) { ... }   // any libsndfile format
//
//   voxtral_rt::PcmDecoder dec(voxtral_rt::PcmFormat::S16LE);   // raw bytes (e.g. stdin) -> float
//   voxtral_rt::StreamResampler rs(44100, 16000);               // streamed soxr HQ, when rate != 16000
//
// All functions report errors through their return value and never print. Not thread-safe per object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace voxtral_rt {

// Sample rates accepted for audio input (files, --stdin): the same bounds as voxtral_rt/audio.py.
constexpr int kMinSampleRate = 1000;
constexpr int kMaxSampleRate = 768000;

// Decode an audio file (WAV, FLAC, OGG, ... whatever libsndfile reads), average the channels, and
// resample to `target_rate` the way mistral-common does (soundfile float32 read, mean over channels,
// python-soxr `resample(quality="HQ")`). Fails on unreadable, empty, or non-finite audio, and on sample
// rates outside [kMinSampleRate, kMaxSampleRate]. Holds the whole file in memory: for long files use
// AudioFileReader, which gives the same samples in bounded memory.
bool load_audio_file(const std::string& path, int target_rate, std::vector<float>* pcm, std::string* error,
                     int* source_rate = nullptr);
// The same from an in-memory file image (`data` is only read during the call).
bool load_audio_memory(const void* data, size_t size, int target_rate, std::vector<float>* pcm, std::string* error,
                       int* source_rate = nullptr);

// Streamed load_audio_file: decodes, mixes down and resamples block by block, in memory bounded by the
// block size whatever the file length. The concatenation of all read() blocks is bit-identical to
// load_audio_file's output (same libsoxr calls). Errors (non-finite sample, decode error) surface at the
// read() that meets them.
class AudioFileReader {
 public:
  // nullptr and *error if the file cannot be opened, is empty or has an unsupported rate.
  static std::unique_ptr<AudioFileReader> open(const std::string& path, int target_rate, std::string* error);
  // From a file image in memory; `data` must stay valid for the reader's lifetime.
  static std::unique_ptr<AudioFileReader> open_memory(const void* data, size_t size, int target_rate,
                                                      std::string* error, const std::string& name = "<memory>");
  ~AudioFileReader();
  AudioFileReader(const AudioFileReader&) = delete;
  AudioFileReader& operator=(const AudioFileReader&) = delete;

  // Appends the next samples (at target_rate, possibly none) to *out. Returns false on error (*error,
  // naming the file). *eof becomes true once everything has been returned; later calls return nothing.
  bool read(std::vector<float>* out, bool* eof, std::string* error);
  int source_rate() const;
  int channels() const;
  int64_t frames_in_header() const;  // source frames the header announces (the file may hold fewer)
  int64_t frames_read() const;       // source frames decoded so far

 private:
  struct Impl;
  explicit AudioFileReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One-shot resampling exactly as python-soxr 1.1's soxr.resample(x_float32, in, out, "HQ") calls libsoxr
// (float32 I/O, input split in chunks of max(1000, 48000*in/out) samples, then a flush).
bool resample_like_python_soxr(const float* in, size_t n, double in_rate, double out_rate, std::vector<float>* out,
                               std::string* error);

enum class PcmFormat { S16LE, F32LE };
// "s16le" / "f32le" -> format; false if unknown.
bool parse_pcm_format(const std::string& name, PcmFormat* format);

// Raw little-endian mono PCM bytes -> float samples, for input arriving in arbitrary pieces (a pipe).
// s16 is scaled by 1/32768. A sample split across two push() calls is kept until complete.
class PcmDecoder {
 public:
  explicit PcmDecoder(PcmFormat format) : format_(format) {}
  // Appends the decoded samples to *out. False (and *error) on NaN/Inf in f32 input.
  bool push(const void* bytes, size_t n_bytes, std::vector<float>* out, std::string* error);
  // End of input: false if the input stopped in the middle of a sample.
  bool finish(std::string* error) const;
  size_t bytes_per_sample() const { return format_ == PcmFormat::S16LE ? 2 : 4; }
  int64_t n_samples() const { return n_samples_; }

 private:
  PcmFormat format_;
  unsigned char partial_[4] = {0, 0, 0, 0};
  size_t n_partial_ = 0;
  int64_t n_samples_ = 0;
};

// Streaming soxr resampler (float32 mono, quality HQ). Output of a stream differs from the one-shot
// resampling in the last bits (block boundaries); use load_audio_file for files.
class StreamResampler {
 public:
  StreamResampler(double in_rate, double out_rate);
  ~StreamResampler();
  StreamResampler(const StreamResampler&) = delete;
  StreamResampler& operator=(const StreamResampler&) = delete;
  bool ok() const;                                 // false if libsoxr refused the rates (see error())
  const std::string& error() const;
  bool process(const float* in, size_t n, std::vector<float>* out);  // appends to *out
  bool finish(std::vector<float>* out);            // drains the filter delay; no input after this

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace voxtral_rt
