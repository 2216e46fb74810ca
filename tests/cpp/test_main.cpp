// Unit tests for the model-independent runner parts: tekken decoding/streaming, PCM input, metadata
// checks, the streaming protocol driven by a fake model backend, words/segments and the output formats.
// No .pte needed.
// Prints one line per failed check and a closing "N passed, N failed"; exit code 1 on any failure.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sndfile.h>
#include <unistd.h>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "metadata.h"
#include "output.h"
#include "stream.h"
#include "tekken.h"
#include "transcript.h"
#include "util.h"
#include "voxtral_rt/audio.h"

using namespace voxtral_rt;
using namespace voxtral_rt::detail;

// ---------------------------------------------------------------------------------------------- tekken

static std::string b64(const std::string& bytes) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out += tbl[v >> 18];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += tbl[v & 63];
  }
  if (bytes.size() - i == 1) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    out += tbl[v >> 18];
    out += tbl[(v >> 12) & 63];
    out += "==";
  } else if (bytes.size() - i == 2) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += tbl[v >> 18];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// A small tekken.json: 10 specials (names for ranks 0,1,2,5,6), 256 byte tokens + a few merges.
static const int kNumSpecial = 10;
static const int64_t kPoison = kNumSpecial + 'Z';  // FakeModel's output for a position fed a wrong token
static std::vector<std::string> g_vocab_bytes;

static std::string tiny_tekken_json(int vocab_size = 0) {
  g_vocab_bytes.clear();
  for (int b = 0; b < 256; ++b) g_vocab_bytes.push_back(std::string(1, static_cast<char>(b)));
  for (const char* s : {" hello", " world", "\xe2\x82", "\xac!", "\xf0\x9f", "\x98\x80", " caf\xc3\xa9"})
    g_vocab_bytes.push_back(s);
  nlohmann::json j;
  const int n_inner = static_cast<int>(g_vocab_bytes.size());
  j["config"] = {{"pattern", "x"},
                 {"num_vocab_tokens", n_inner},
                 {"default_vocab_size", vocab_size ? vocab_size : n_inner + kNumSpecial},
                 {"default_num_special_tokens", kNumSpecial},
                 {"version", "v13"}};
  j["vocab"] = nlohmann::json::array();
  for (int r = 0; r < n_inner; ++r)
    j["vocab"].push_back({{"rank", r}, {"token_bytes", b64(g_vocab_bytes[r])}, {"token_str", nullptr}});
  j["special_tokens"] = nlohmann::json::array({{{"rank", 0}, {"token_str", "<unk>"}, {"is_control", true}},
                                               {{"rank", 1}, {"token_str", "<s>"}, {"is_control", true}},
                                               {{"rank", 2}, {"token_str", "</s>"}, {"is_control", true}},
                                               {{"rank", 5}, {"token_str", "[STREAMING_PAD]"}, {"is_control", true}},
                                               {{"rank", 6}, {"token_str", "[STREAMING_WORD]"}, {"is_control", true}}});
  return j.dump();
}

static int64_t merge_id(int k) { return kNumSpecial + 256 + k; }  // k-th merge token above

static void test_base64() {
  std::string out;
  CHECK(base64_decode("aGVsbG8=", &out) && out == "hello");
  CHECK(base64_decode("aGk=", &out) && out == "hi");
  CHECK(base64_decode("", &out) && out.empty());
  CHECK(base64_decode("AA==", &out) && out == std::string(1, '\0'));
  CHECK(!base64_decode("aGk", &out));
  CHECK(!base64_decode("a=Gk", &out));
  CHECK(!base64_decode("a*k=", &out));
  std::mt19937 rng(1);
  for (int it = 0; it < 200; ++it) {
    std::string s(rng() % 20, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    CHECK(base64_decode(b64(s), &out) && out == s);
  }
}

static void test_utf8_replace() {
  // Expected values: Python bytes.decode("utf-8", errors="replace").encode().
  const std::pair<const char*, const char*> cases[] = {
      {"\x61\x62\x63", "\x61\x62\x63"},
      {"\xe2\x82\xac", "\xe2\x82\xac"},
      {"\xe2\x82", "\xef\xbf\xbd"},
      {"\xe2\x82\x61", "\xef\xbf\xbd\x61"},
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
      {"\xf0\x9f\x98", "\xef\xbf\xbd"},
      {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
      {"\x80\x61\x62\x63", "\xef\xbf\xbd\x61\x62\x63"},
      {"\xe0\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"\xf0\x80", "\xef\xbf\xbd\xef\xbf\xbd"},
      {"\x61\xf1\x80\x80\xe2", "\x61\xef\xbf\xbd\xef\xbf\xbd"},
  };
  for (const auto& [in, want] : cases) CHECK_EQ(utf8_decode_replace(in), std::string(want));
  CHECK_EQ(utf8_stable_prefix("ab\xe2\x82"), 2u);
  CHECK_EQ(utf8_stable_prefix("ab\xe2\x82\xac"), 5u);
  CHECK_EQ(utf8_stable_prefix("ab\xe2\x41"), 4u);
  CHECK_EQ(utf8_stable_prefix("\xf0\x9f\x98"), 0u);
  CHECK_EQ(utf8_stable_prefix("\xe0\x80"), 2u);  // E0 80 can never complete
  // Property: decode(prefix) + decode(rest) == decode(all) at the stable split, for random bytes.
  std::mt19937 rng(7);
  const unsigned char pool[] = {0x41, 0x80, 0x9f, 0xa0, 0xbf, 0xc2, 0xdf, 0xe0, 0xe2, 0xed, 0xf0, 0xf4, 0xf5, 0xff};
  for (int it = 0; it < 3000; ++it) {
    std::string s(rng() % 9, '\0');
    for (auto& c : s) c = static_cast<char>(pool[rng() % sizeof(pool)]);
    const size_t k = utf8_stable_prefix(s);
    std::string more(rng() % 4, '\0');
    for (auto& c : more) c = static_cast<char>(pool[rng() % sizeof(pool)]);
    CHECK_EQ(utf8_decode_replace(s.substr(0, k)) + utf8_decode_replace(s.substr(k) + more),
             utf8_decode_replace(s + more));
  }
}

static void test_tekken_decode() {
  std::unique_ptr<Tekken> tok;
  Status s = Tekken::from_json_text(tiny_tekken_json(), "tiny.json", &tok);
  CHECK(s.ok());
  if (!s.ok()) {
    std::printf("  %s\n", s.message().c_str());
    return;
  }
  CHECK_EQ(tok->num_special_tokens(), kNumSpecial);
  CHECK_EQ(tok->vocab_size(), kNumSpecial + static_cast<int64_t>(g_vocab_bytes.size()));
  CHECK_EQ(tok->special_id("<s>"), 1);
  CHECK_EQ(tok->special_id("</s>"), 2);
  CHECK_EQ(tok->special_id("[STREAMING_PAD]"), 5);
  CHECK_EQ(tok->special_id("[STREAMING_WORD]"), 6);
  CHECK_EQ(tok->special_id("<SPECIAL_3>"), 3);  // filler
  CHECK_EQ(tok->special_id("[NOPE]"), -1);
  const std::vector<int64_t> hello = {1, merge_id(0), 6, merge_id(1), 2};
  CHECK_EQ(tok->decode(hello), " hello world");  // nothing stripped, specials dropped
  // euro sign split over two tokens: whole within one run, U+FFFD + garbage when a special splits it
  CHECK_EQ(tok->decode({merge_id(2), merge_id(3)}), "\xe2\x82\xac!");
  CHECK_EQ(tok->decode({merge_id(2), 6, merge_id(3)}), "\xef\xbf\xbd\xef\xbf\xbd!");
  CHECK_EQ(tok->decode({merge_id(4), merge_id(5)}), "\xf0\x9f\x98\x80");
  CHECK_EQ(tok->decode({merge_id(4)}), "\xef\xbf\xbd");
  CHECK_EQ(tok->decode({kNumSpecial + 'a', kNumSpecial + 0xC3, kNumSpecial + 0xA9}), "a\xc3\xa9");

  // Streamer: concatenation == decode(all), only complete UTF-8 per piece, for random id sequences.
  std::mt19937 rng(3);
  const int64_t n_vocab = tok->vocab_size();
  for (int it = 0; it < 500; ++it) {
    std::vector<int64_t> ids(rng() % 12);
    for (auto& id : ids) {
      const int r = rng() % 4;
      id = r == 0 ? (rng() % kNumSpecial) : r == 1 ? merge_id(rng() % 7) : (kNumSpecial + 0x80 + rng() % 0x80);
      if (id >= n_vocab) id = 1;
    }
    TekkenStreamer st(*tok);
    std::string all;
    for (int64_t id : ids) {
      const std::string piece = st.push(id);
      CHECK_EQ(utf8_decode_replace(piece), piece);  // valid UTF-8
      all += piece;
    }
    all += st.finish();
    CHECK_EQ(all, tok->decode(ids));
  }
  // A character arrives in two tokens: nothing until it is complete.
  TekkenStreamer st(*tok);
  CHECK_EQ(st.push(merge_id(4)), "");
  CHECK_EQ(st.push(merge_id(5)), "\xf0\x9f\x98\x80");
}

static void test_tekken_errors() {
  std::unique_ptr<Tekken> tok;
  CHECK(!Tekken::from_json_text("{", "x.json", &tok).ok());
  CHECK(!Tekken::from_json_text("{\"config\": {}}", "x.json", &tok).ok());
  Status s = Tekken::from_json_text(tiny_tekken_json(100000), "big.json", &tok);  // vocab list too short
  CHECK(!s.ok() && s.message().find("big.json") != std::string::npos);
  // legacy file without special_tokens: allowed for version <= v7 only
  auto j = nlohmann::json::parse(tiny_tekken_json());
  j.erase("special_tokens");
  j["config"]["default_num_special_tokens"] = 20;
  j["config"]["default_vocab_size"] = 20 + 256;
  j["config"]["version"] = "v3";
  s = Tekken::from_json_text(j.dump(), "legacy.json", &tok);
  CHECK(s.ok());
  if (s.ok()) {
    CHECK_EQ(tok->special_id("[TOOL_CONTENT]"), 19);
    CHECK_EQ(tok->special_id("</s>"), 2);
  }
  j["config"]["version"] = "v13";
  CHECK(!Tekken::from_json_text(j.dump(), "legacy.json", &tok).ok());
  CHECK(!Tekken::from_file("/nonexistent/tekken.json", &tok).ok());
}

// ---------------------------------------------------------------------------------------------- PCM input

static void test_pcm_decoder() {
  std::string err;
  std::vector<float> out;
  PcmDecoder s16(PcmFormat::S16LE);
  const unsigned char bytes[] = {0x00, 0x80, 0xff, 0x7f, 0x00, 0x00, 0x00, 0x40};  // -32768, 32767, 0, 16384
  // pushed one byte at a time: samples split across pushes
  for (unsigned char b : bytes) CHECK(s16.push(&b, 1, &out, &err));
  CHECK_EQ(out.size(), 4u);
  if (out.size() == 4) {
    CHECK_EQ(out[0], -1.0f);
    CHECK_EQ(out[1], 32767.0f / 32768.0f);
    CHECK_EQ(out[2], 0.0f);
    CHECK_EQ(out[3], 0.5f);
  }
  CHECK(s16.finish(&err));
  CHECK(s16.push(bytes, 3, &out, &err));  // 1.5 samples
  CHECK(!s16.finish(&err) && err.find("middle of a sample") != std::string::npos);

  PcmDecoder f32(PcmFormat::F32LE);
  out.clear();
  const float vals[] = {0.25f, -1.5f, 3.0f};
  CHECK(f32.push(reinterpret_cast<const char*>(vals), 5, &out, &err));
  CHECK(f32.push(reinterpret_cast<const char*>(vals) + 5, sizeof(vals) - 5, &out, &err));
  CHECK_EQ(out.size(), 3u);
  if (out.size() == 3) CHECK(out[0] == 0.25f && out[1] == -1.5f && out[2] == 3.0f);
  CHECK(f32.finish(&err));
  const float bad[] = {1.0f, NAN};
  CHECK(!f32.push(bad, sizeof(bad), &out, &err) && err.find("NaN") != std::string::npos);
  PcmFormat fmt;
  CHECK(parse_pcm_format("s16le", &fmt) && fmt == PcmFormat::S16LE);
  CHECK(parse_pcm_format("f32le", &fmt) && fmt == PcmFormat::F32LE);
  CHECK(!parse_pcm_format("u8", &fmt));
}

static void test_resampler() {
  // 1 s of a 440 Hz tone at 48 kHz -> 16 kHz: length and amplitude sane; stream vs one-shot close.
  std::vector<float> x(48000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * std::sin(2 * M_PI * 440 * i / 48000.0);
  std::vector<float> y;
  std::string err;
  CHECK(resample_like_python_soxr(x.data(), x.size(), 48000, 16000, &y, &err));
  CHECK(y.size() == 16000 || y.size() == 16001);
  StreamResampler rs(48000, 16000);
  CHECK(rs.ok());
  std::vector<float> z;
  for (size_t i = 0; i < x.size(); i += 4000) CHECK(rs.process(x.data() + i, std::min<size_t>(4000, x.size() - i), &z));
  CHECK(rs.finish(&z));
  CHECK(z.size() >= 15990 && z.size() <= 16010);
  double max_diff = 0;
  for (size_t i = 100; i + 100 < std::min(y.size(), z.size()); ++i) max_diff = std::max(max_diff, double(std::fabs(y[i] - z[i])));
  CHECK(max_diff < 1e-3);
  StreamResampler bad(0, 16000);
  CHECK(!bad.ok());
}

// ---------------------------------------------------------------------------------------------- audio files

// Writes `frames` x `channels` float samples to a WAV/FLAC file of the given libsndfile format.
static bool write_audio(const std::string& path, int format, int rate, int channels, const std::vector<float>& x) {
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  if (!f) return false;
  const sf_count_t n = static_cast<sf_count_t>(x.size() / static_cast<size_t>(channels));
  const bool ok = sf_writef_float(f, x.data(), n) == n;
  sf_close(f);
  return ok;
}

static std::string tmp_file(const char* name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/voxtral_rt_test_" + std::to_string(getpid()) + "_" + name;
}

static void test_audio_file_reader() {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.2f);
  // (rate, channels, frames): frames around python-soxr's chunk (48000 * in / out) and its multiples
  const struct { int rate, ch; size_t frames; } cases[] = {
      {16000, 1, 20000}, {8000, 1, 24000}, {8000, 1, 24000 * 3}, {8000, 2, 24001}, {44100, 6, 132300 + 17},
      {48000, 1, 144000 * 2}, {22050, 1, 999}, {16000, 2, 5}};
  for (const auto& c : cases) {
    std::vector<float> x(c.frames * static_cast<size_t>(c.ch));
    for (auto& v : x) v = nd(rng);
    const std::string path = tmp_file("reader.wav");
    CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, c.rate, c.ch, x));
    // one-shot reference: mean over channels, then python-soxr resample
    std::vector<float> mono(c.frames), ref;
    for (size_t i = 0; i < c.frames; ++i) {
      float acc = 0.0f;
      for (int k = 0; k < c.ch; ++k) acc += x[i * static_cast<size_t>(c.ch) + static_cast<size_t>(k)];
      mono[i] = c.ch == 1 ? x[i] : acc / static_cast<float>(c.ch);
    }
    std::string err;
    if (c.rate == 16000) {
      ref = mono;
    } else {
      CHECK(resample_like_python_soxr(mono.data(), mono.size(), c.rate, 16000, &ref, &err));
    }
    std::vector<float> whole, streamed, mem;
    int sr = 0;
    CHECK(load_audio_file(path, 16000, &whole, &err, &sr));
    CHECK_EQ(sr, c.rate);
    CHECK(whole == ref);
    auto reader = AudioFileReader::open(path, 16000, &err);
    CHECK(reader != nullptr);
    if (reader) {
      bool eof = false;
      int calls = 0;
      while (!eof && calls++ < 100000) CHECK(reader->read(&streamed, &eof, &err));
      CHECK(streamed == ref);
      CHECK_EQ(reader->frames_read(), static_cast<int64_t>(c.frames));
      std::vector<float> more;
      CHECK(reader->read(&more, &eof, &err) && eof && more.empty());  // after the end: nothing, still eof
    }
    std::ifstream f(path, std::ios::binary);
    const std::string image((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CHECK(load_audio_memory(image.data(), image.size(), 16000, &mem, &err));
    CHECK(mem == ref);
    std::remove(path.c_str());
  }
}

static void test_audio_file_errors() {
  std::string err;
  std::vector<float> pcm;
  const std::string path = tmp_file("bad.wav");
  // sample rates outside 1 kHz .. 768 kHz
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 800, 1, std::vector<float>(100, 0.1f)));
  CHECK(!load_audio_file(path, 16000, &pcm, &err) && err.find("800 Hz is outside") != std::string::npos);
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, std::vector<float>(100, 0.1f)));
  CHECK(!load_audio_file(path, 100, &pcm, &err) && err.find("target sample rate") != std::string::npos);
  // NaN in a float file: the index of the first bad sample
  std::vector<float> x(10000, 0.1f);
  x[7777] = NAN;
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, x));
  CHECK(!load_audio_file(path, 16000, &pcm, &err) && err.find("sample 7777 is NaN or Inf") != std::string::npos);
  x[7777] = INFINITY;
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 48000, 1, x));
  CHECK(!load_audio_file(path, 16000, &pcm, &err) && err.find("sample 7777 is NaN or Inf") != std::string::npos);
  // fuzz_audio_file found: finite float samples near FLT_MAX overflow the resampler to Inf/NaN, which the
  // reader returned as audio; now an error naming the cause
  std::vector<float> huge(2000, 0.1f);
  huge[100] = 3e38f;
  huge[101] = -3e38f;
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 8000, 1, huge));
  CHECK(!load_audio_file(path, 16000, &pcm, &err) && err.find("far outside [-1, 1]") != std::string::npos);
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, huge));  // no resampling: passed through
  CHECK(load_audio_file(path, 16000, &pcm, &err) && pcm.size() == 2000);
  // empty, junk, missing
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, {}));
  CHECK(!load_audio_file(path, 16000, &pcm, &err) && err.find("empty") != std::string::npos);
  const char junk[] = "RIFF\x10\x00\x00\x00WAVEfmt junkjunkjunk";
  CHECK(!load_audio_memory(junk, sizeof(junk), 16000, &pcm, &err) && err.find("cannot read audio") != std::string::npos);
  CHECK(!load_audio_memory(junk, 0, 16000, &pcm, &err));
  CHECK(!load_audio_file("/nonexistent/a.wav", 16000, &pcm, &err) && err.find("/nonexistent/a.wav") != std::string::npos);
  // fuzz_audio_file found: one 6-channel frame at 48 kHz resamples to no samples at all; this returned
  // success with empty audio (the model then transcribed silence) instead of an error.
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 48000, 6, std::vector<float>(6, 0.1f)));
  CHECK(!load_audio_file(path, 16000, &pcm, &err) && err.find("too short to resample from 48000 Hz") != std::string::npos);
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 48000, 1, std::vector<float>(3, 0.1f)));
  CHECK(load_audio_file(path, 16000, &pcm, &err) && pcm.size() == 1);
  // truncated: the header announces more frames than the file holds -> the frames that are there
  std::vector<float> y(16000, 0.25f);
  CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, y));
  std::ifstream f(path, std::ios::binary);
  std::string image((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  image.resize(image.size() - 2 * 6000);  // drop 6000 frames
  CHECK(load_audio_memory(image.data(), image.size(), 16000, &pcm, &err));
  CHECK_EQ(pcm.size(), 10000u);
  std::remove(path.c_str());
}

// ---------------------------------------------------------------------------------------------- metadata

// The fake model's .pte metadata, every key of VOXTRAL_RT_METADATA_KEYS: the real protocol's constants, tiny sizes.
static const std::map<std::string, int64_t> kTinyMetadata = {
    {"format_version", 3}, {"sample_rate", 16000}, {"hop_length", 160}, {"window_size", 400}, {"num_mel_bins", 3},
    {"samples_per_token", 1280}, {"mel_frames_per_token", 8}, {"enc_frames_per_token", 4}, {"dim", 4},
    {"vocab_size", kNumSpecial + 263}, {"enc_sliding_window", 40}, {"dec_sliding_window", 64},
    {"enc_cache_slots", 40 + 16}, {"dec_cache_slots", 64 + 5}, {"max_mel_frames", 24 /* 3 tokens */},
    {"max_enc_tokens", 4}, {"max_dec_tokens", 5}, {"default_delay_tokens", 2}, {"left_pad_tokens", 4},
    {"right_pad_buffer_tokens", 10}, {"bos_id", 1}, {"eos_id", 2}, {"streaming_pad_id", 5},
    {"streaming_word_id", 6}, {"num_special_tokens", kNumSpecial}, {"ms_per_token", 80}};

static ModelInfo tiny_info() {
  ModelInfo m;
#define VX_SET(name) m.name = kTinyMetadata.at(#name);
  VOXTRAL_RT_METADATA_KEYS(VX_SET)
#undef VX_SET
  return m;
}

static void test_metadata() {
  const ModelInfo want = tiny_info();
  std::map<std::string, int64_t> kv = kTinyMetadata;
  auto reader = [&](const char* key, int64_t* v) -> Status {
    auto it = kv.find(key);
    if (it == kv.end()) return Status::error(std::string("missing metadata '") + key + "': re-export");
    *v = it->second;
    return Status();
  };
  ModelInfo got;
  CHECK(read_model_info(reader, "m.pte", &got).ok());
  CHECK_EQ(got.max_dec_tokens, 5);
  CHECK_EQ(got.streaming_word_id, 6);
  kv.erase("max_dec_tokens");
  Status s = read_model_info(reader, "m.pte", &got);
  CHECK(!s.ok() && s.message().find("max_dec_tokens") != std::string::npos);
  kv["max_dec_tokens"] = 5;
  for (const char* key : kMetadataKeys) {  // every key is required
    const int64_t v = kv.at(key);
    kv.erase(key);
    s = read_model_info(reader, "m.pte", &got);
    CHECK(!s.ok() && s.message().find(key) != std::string::npos);
    kv[key] = v;
  }
  for (int64_t v : {1, 2, 4}) {
    kv["format_version"] = v;
    s = read_model_info(reader, "m.pte", &got);
    CHECK(!s.ok() && s.message().find("format_version") != std::string::npos);
  }
  kv["format_version"] = 3;
  kv["dec_cache_slots"] = 64 + 3;  // a 5-position chunk would overwrite keys its first query needs
  s = read_model_info(reader, "m.pte", &got);
  CHECK(!s.ok() && s.message().find("dec_cache_slots") != std::string::npos);
  kv["dec_cache_slots"] = 64 + 5;
  kv["samples_per_token"] = 1000;
  CHECK(!read_model_info(reader, "m.pte", &got).ok());

  // Ring masks, worked by hand. Fresh ring (3 slots, window 2), 2 queries at positions 0, 1: L = 3 (the valid 2
  // rounded up to a block of 64, capped by the ring); slot 2 is not written yet.
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> mask;
  CHECK_EQ(ring_mask(0, 2, 2, 3, &mask), 3);
  CHECK(mask == (std::vector<float>{0, -inf, -inf, 0, 0, -inf}));
  // Wrapped: query at position 3 -> slots hold positions 3, 1, 2; window 2 sees 2 and 3.
  CHECK_EQ(ring_mask(3, 1, 2, 3, &mask), 3);
  CHECK(mask == (std::vector<float>{0, -inf, 0}));
  // Window 1: a query sees only itself.
  CHECK_EQ(ring_mask(5, 2, 1, 4, &mask), 4);
  CHECK(mask == (std::vector<float>{-inf, 0, -inf, -inf, -inf, -inf, 0, -inf}));
  // Whole-ring widths: the prefix until 3/4 of the ring is valid, then every slot; the unwritten ones are -inf.
  // Widths are whole blocks of kAttendBlock (64) slots, capped by the ring.
  CHECK_EQ(attended_slots(2, 4, false), 4);
  CHECK_EQ(attended_slots(1, 1000, false), 64);
  CHECK_EQ(attended_slots(64, 1000, false), 64);
  CHECK_EQ(attended_slots(65, 1000, false), 128);
  CHECK_EQ(attended_slots(705, 1000, false), 768);
  CHECK_EQ(attended_slots(5000, 1000, false), 1000);
  CHECK_EQ(attended_slots(700, 1000, true), 704);   // < 3/4 of the ring
  CHECK_EQ(attended_slots(705, 1000, true), 1000);  // 768 >= 3/4: the whole ring
  CHECK_EQ(attended_slots(99, 4, true), 4);
  CHECK_EQ(ring_mask(0, 3, 2, 4, &mask, true), 4);  // 3 of 4 valid: whole ring
  CHECK(mask == (std::vector<float>{0, -inf, -inf, -inf, 0, 0, -inf, -inf, -inf, 0, 0, -inf}));
  CHECK_EQ(ring_mask(0, 1, 2, 200, &mask, true), 64);  // 1 of 200: a block
  CHECK(mask[0] == 0 && std::count(mask.begin(), mask.end(), -inf) == 63);
  CHECK_EQ(ring_mask(3, 1, 2, 3, &mask, true), 3);  // wrapped: the same mask either way
  CHECK(mask == (std::vector<float>{0, -inf, 0}));
  // Every whole-ring mask is the prefix mask plus -inf columns.
  for (int64_t start = 0; start < 30; ++start)
    for (int64_t n = 1; n <= 4; ++n) {
      std::vector<float> prefix, whole;
      const int64_t lp = ring_mask(start, n, 5, 8, &prefix), lw = ring_mask(start, n, 5, 8, &whole, true);
      CHECK(lw == lp || lw == 8);
      bool same = true;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < lw; ++j)
          same &= whole[i * lw + j] == (j < lp ? prefix[i * lp + j] : -inf);
      CHECK(same);
    }

  int64_t d = 0;
  CHECK(delay_tokens_for(want, -1, &d).ok() && d == 2);
  CHECK(delay_tokens_for(want, 480, &d).ok() && d == 6);
  CHECK(delay_tokens_for(want, 80, &d).ok() && d == 1);
  CHECK(delay_tokens_for(want, 1200, &d).ok() && d == 15);
  CHECK(delay_tokens_for(want, 2400, &d).ok() && d == 30);
  CHECK(!delay_tokens_for(want, 0, &d).ok());
  CHECK(!delay_tokens_for(want, 100, &d).ok());
  CHECK(!delay_tokens_for(want, 1280, &d).ok());
  CHECK(!delay_tokens_for(want, -80, &d).ok());
}

// ---------------------------------------------------------------------------------------------- protocol

// Fake model: checks every input against the reference protocol computed independently from the whole
// padded stream, and produces scripted tokens.
//   mel frame value (all bins)   = stream[hop*i] (the frame's centre sample)
//   audio_emb[t][d]              = mel frame 8t + d  (d < dim <= 8)
//   tok_emb[id][d]               = 1000 * id + d
//   token generated at position p = script(p) if the token fed at p is the right one (script(p-1), or the
//                                   prompt's), else kPoison: a wrongly accepted guess shows in the output
//   Multi-position calls may run guessed positions again: a call starts at most at the end of the last one.
struct FakeModel : ModelBackend {
  ModelInfo m = tiny_info();
  std::vector<float> ref_stream;   // zeros(L*spt) ++ audio ++ right pad (set by the test)
  std::function<int64_t(int64_t)> script = [](int64_t p) { return kNumSpecial + 'a' + p % 26; };
  std::vector<float> last_window;
  int64_t last_n_frames = 0;
  int64_t n_encoded = 0;          // tokens encoded so far
  int64_t expect_next_pos = 0;    // decoder positions must be contiguous from 0 (or re-run a guessed one)
  int64_t last_call_pos = -1;     // start of the last decode call
  int64_t pending_embed_pos = -1;
  std::vector<int64_t> fed;       // token fed at each decoder position (the last time it ran)
  int errors = 0;
  int64_t max_prefill = 0, max_enc_call = 0;
  std::vector<std::string> log;
  std::vector<std::pair<int64_t, int64_t>> decode_calls;  // (pos, n)
  int64_t prompt_len = 0;                                  // if set: prefill must wait for the whole prompt

  const ModelInfo& info() const override { return m; }
  float stream_at(int64_t s) const {
    return (s < 0 || s >= static_cast<int64_t>(ref_stream.size())) ? 0.0f : ref_stream[static_cast<size_t>(s)];
  }
  float audio_emb(int64_t t, int64_t d) const { return stream_at(m.hop_length * (m.mel_frames_per_token * t + d)); }

  Status preprocess(const float* window, int64_t n, std::vector<float>* mel) override {
    const int64_t len = m.hop_length * n + m.window_size - m.hop_length;
    last_window.assign(window, window + len);
    last_n_frames = n;
    if (n < 1 || n > m.max_mel_frames) ++errors;
    mel->assign(static_cast<size_t>(m.num_mel_bins * n), 0.0f);
    for (int64_t b = 0; b < m.num_mel_bins; ++b)
      for (int64_t i = 0; i < n; ++i) (*mel)[b * n + i] = window[m.hop_length * i + m.window_size / 2];
    return Status();
  }
  Status encode(const float* mel, int64_t k, int64_t enc_pos, std::vector<float>* emb) override {
    const int64_t t0 = enc_pos / m.enc_frames_per_token;
    if (enc_pos % m.enc_frames_per_token || t0 != n_encoded || k < 1 || k > m.max_enc_tokens ||
        last_n_frames != k * m.mel_frames_per_token) {
      ++errors;
      log.push_back("bad encode call");
    }
    max_enc_call = std::max(max_enc_call, k);
    // the preprocessor window must be the stream samples [hop*f0 - win/2, ...) with zeros outside
    const int64_t start = m.hop_length * m.mel_frames_per_token * t0 - m.window_size / 2;
    for (size_t i = 0; i < last_window.size(); ++i) {
      if (last_window[i] != stream_at(start + static_cast<int64_t>(i))) {
        ++errors;
        log.push_back("window mismatch at token " + std::to_string(t0));
        break;
      }
    }
    const int64_t n = k * m.mel_frames_per_token;
    emb->assign(static_cast<size_t>(k * m.dim), 0.0f);
    for (int64_t t = 0; t < k; ++t)
      for (int64_t d = 0; d < m.dim; ++d) (*emb)[t * m.dim + d] = mel[0 * n + t * m.mel_frames_per_token + d];
    n_encoded += k;
    return Status();
  }
  Status embed(const int64_t* ids, int64_t n, std::vector<float>* emb) override {
    if (n < 1 || n > m.max_dec_tokens) ++errors;
    emb->assign(static_cast<size_t>(n * m.dim), 0.0f);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < m.dim; ++d) (*emb)[i * m.dim + d] = static_cast<float>(1000 * ids[i] + d);
    return Status();
  }
  Status decode(const float* x, int64_t n, int64_t pos, int64_t, std::vector<float>* logits) override {
    if (pos > expect_next_pos || pos <= last_call_pos || n < 1 || n > m.max_dec_tokens || pos + n > n_encoded) {
      ++errors;
      log.push_back("bad decode call at " + std::to_string(pos));
    }
    max_prefill = std::max(max_prefill, n);
    decode_calls.emplace_back(pos, n);
    if (prompt_len && n_encoded < prompt_len) {
      ++errors;
      log.push_back("prefill before the whole prompt's audio was encoded");
    }
    for (int64_t i = 0; i < n; ++i) {
      // recover the fed token: x - audio_emb must be 1000*id + d
      const int64_t p = pos + i;
      const float id_f = (x[i * m.dim] - audio_emb(p, 0)) / 1000.0f;
      const auto id = static_cast<int64_t>(std::lround(id_f));
      for (int64_t d = 0; d < m.dim; ++d) {
        if (std::fabs(x[i * m.dim + d] - (1000.0f * id + d + audio_emb(p, d))) > 1e-3f) {
          ++errors;
          log.push_back("bad embedding sum at " + std::to_string(p));
          break;
        }
      }
      if (static_cast<int64_t>(fed.size()) <= p) fed.resize(static_cast<size_t>(p + 1), -1);
      fed[static_cast<size_t>(p)] = id;
    }
    last_call_pos = pos;
    expect_next_pos = pos + n;
    logits->assign(static_cast<size_t>(n * m.vocab_size), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = pos + i;
      const int64_t right = p == 0 ? m.bos_id : (prompt_len && p < prompt_len) ? m.streaming_pad_id : script(p - 1);
      const bool input_ok = prompt_len == 0 || fed[static_cast<size_t>(p)] == right;  // 0: prompt unknown
      (*logits)[static_cast<size_t>(i * m.vocab_size + (input_ok ? script(p) : kPoison))] = 1.0f;
    }
    return Status();
  }
};

static std::vector<float> ramp_audio(size_t n) {
  std::vector<float> a(n);
  for (size_t i = 0; i < n; ++i) a[i] = static_cast<float>(i % 1000 + 1) / 1000.0f;  // never 0
  return a;
}

static std::vector<float> reference_stream(const ModelInfo& m, const std::vector<float>& audio, int64_t delay) {
  const int64_t spt = m.samples_per_token;
  std::vector<float> s(static_cast<size_t>(m.left_pad_tokens * spt), 0.0f);
  s.insert(s.end(), audio.begin(), audio.end());
  const int64_t align = (spt - static_cast<int64_t>(audio.size()) % spt) % spt;
  s.resize(s.size() + static_cast<size_t>(align + (delay + 1 + m.right_pad_buffer_tokens) * spt), 0.0f);
  return s;
}

struct RunResult {
  std::vector<int64_t> ids, fed;
  std::vector<double> times;
  std::string text, streamed_text;
  int fake_errors = 0;
  int64_t n_audio_tokens = 0, prompt_len = 0, max_prefill = 0, max_enc_call = 0;
  bool finished = false;
  std::vector<std::pair<int64_t, int64_t>> decode_calls;
};

// Feed `audio` in chunks of chunk samples (0 = all at once), then flush.
static RunResult run_stream(const std::vector<float>& audio, size_t chunk, int64_t delay, const Tekken* tok,
                            std::function<int64_t(int64_t)> script = nullptr, int64_t max_enc = 0,
                            int64_t draft_tokens = 0, bool stop_at_eos = true) {
  FakeModel fake;
  if (script) fake.script = script;
  fake.ref_stream = reference_stream(fake.m, audio, delay);
  StreamConfig cfg;
  cfg.delay_tokens = delay;
  cfg.max_enc_tokens = max_enc;
  cfg.draft_tokens = draft_tokens;
  cfg.stop_at_eos = stop_at_eos;
  RunResult r;
  cfg.on_token = [&](const TokenEvent& ev) { r.streamed_text += ev.text; };
  Stream st(&fake, tok, cfg);
  fake.prompt_len = st.prompt_len();
  int64_t n_new = 0, total = 0;
  if (chunk == 0) chunk = audio.size() ? audio.size() : 1;
  for (size_t i = 0; i < audio.size(); i += chunk) {
    Status s = st.feed(audio.data() + i, std::min(chunk, audio.size() - i), &n_new);
    CHECK(s.ok());
    total += n_new;
    // never a decoder step whose audio embedding does not exist yet (FakeModel checks), and never
    // more generated tokens than positions with audio
    CHECK(st.dec_pos() <= st.enc_tokens());
  }
  CHECK(st.flush(&n_new).ok());
  total += n_new;
  CHECK(st.flush(&n_new).ok() && n_new == 0);  // idempotent
  CHECK_EQ(total, static_cast<int64_t>(st.token_ids().size()));
  r.ids = st.token_ids();
  r.times = st.token_times_ms();
  r.fed = fake.fed;
  r.text = st.text();
  r.fake_errors = fake.errors;
  for (const auto& l : fake.log) std::printf("  fake: %s\n", l.c_str());
  r.n_audio_tokens = st.n_total_tokens();
  r.prompt_len = st.prompt_len();
  r.max_prefill = fake.max_prefill;
  r.max_enc_call = fake.max_enc_call;
  r.finished = st.finished();
  r.decode_calls = fake.decode_calls;
  return r;
}

static void test_protocol_offline() {
  const ModelInfo m = tiny_info();
  const auto audio = ramp_audio(5000);  // 3.9 tokens
  const int64_t D = 2;
  RunResult r = run_stream(audio, 0, D, nullptr);
  CHECK_EQ(r.fake_errors, 0);
  // T = L + ceil(N/spt) + D + 1 + 10
  const int64_t T = m.left_pad_tokens + 4 + D + 1 + m.right_pad_buffer_tokens;
  CHECK_EQ(r.n_audio_tokens, T);
  CHECK_EQ(r.prompt_len, m.left_pad_tokens + D + 1);
  CHECK_EQ(static_cast<int64_t>(r.ids.size()), T - r.prompt_len);  // transformers' generate length
  CHECK(r.finished);
  // positions: the prompt, then each generated token fed back at the next position; last emb unused
  const int64_t P = r.prompt_len;
  CHECK_EQ(static_cast<int64_t>(r.fed.size()), T - 1);
  if (static_cast<int64_t>(r.fed.size()) == T - 1) {
    CHECK_EQ(r.fed[0], m.bos_id);
    for (int64_t p = 1; p < P; ++p) CHECK_EQ(r.fed[static_cast<size_t>(p)], m.streaming_pad_id);
    for (int64_t p = P; p < T - 1; ++p) CHECK_EQ(r.fed[static_cast<size_t>(p)], r.ids[static_cast<size_t>(p - P)]);
  }
  // generated token k comes from the logits at position P-1+k (script) and is timed at q = P + k
  for (size_t k = 0; k < r.ids.size(); ++k) {
    CHECK_EQ(r.ids[k], kNumSpecial + 'a' + (P - 1 + static_cast<int64_t>(k)) % 26);
    CHECK_EQ(r.times[k], static_cast<double>((P + static_cast<int64_t>(k) - m.left_pad_tokens - D) * m.ms_per_token));
  }
  CHECK(r.max_prefill <= m.max_dec_tokens);
  // prefill: chunks of max_dec_tokens from 0 (P = 7, max_dec_tokens = 5 -> (0,5), (5,2)), then single steps
  CHECK(r.decode_calls.size() >= 3);
  if (r.decode_calls.size() >= 3) {
    CHECK(r.decode_calls[0] == std::make_pair(int64_t(0), int64_t(5)));
    CHECK(r.decode_calls[1] == std::make_pair(int64_t(5), P - 5));
    CHECK(r.decode_calls[2] == std::make_pair(P, int64_t(1)));
  }
  CHECK(r.max_enc_call <= 3);  // min(max_enc_tokens 4, max_mel_frames 24 / 8)
  CHECK_EQ(r.max_enc_call, 3);
}

static void test_protocol_streaming_equals_offline() {
  const auto audio = ramp_audio(9 * 1280 + 77);
  for (int64_t D : {1, 2, 6}) {
    const RunResult off = run_stream(audio, 0, D, nullptr);
    for (size_t chunk : {1u, 39u, 160u, 1280u, 1320u, 4000u}) {
      const RunResult st = run_stream(audio, chunk, D, nullptr, nullptr, chunk == 160u ? 1 : 0);
      CHECK_EQ(st.fake_errors, 0);
      CHECK(st.ids == off.ids);
      CHECK(st.fed == off.fed);
      CHECK(st.times == off.times);
      CHECK(st.decode_calls == off.decode_calls);  // same model calls whatever the feed sizes
    }
  }
  // exact multiple of a token and empty audio
  for (size_t n : {size_t(0), size_t(1280 * 3), size_t(1)}) {
    const RunResult r = run_stream(ramp_audio(n), 0, 2, nullptr);
    CHECK_EQ(r.fake_errors, 0);
    CHECK_EQ(static_cast<int64_t>(r.ids.size()), r.n_audio_tokens - r.prompt_len);
  }
}

// max_history: a long stream keeps only the last N..2N records; the model calls and the newest tokens are
// those of an unbounded run.
static void test_history_cap() {
  const auto audio = ramp_audio(200 * 1280 + 5);
  const RunResult full = run_stream(audio, 0, 2, nullptr);
  FakeModel fake;
  fake.ref_stream = reference_stream(fake.m, audio, 2);
  StreamConfig cfg;
  cfg.delay_tokens = 2;
  cfg.max_history = 16;
  Stream st(&fake, nullptr, cfg);
  fake.prompt_len = st.prompt_len();
  int64_t n = 0, total = 0;
  size_t max_kept = 0;
  for (size_t i = 0; i < audio.size(); i += 1280) {
    CHECK(st.feed(audio.data() + i, std::min<size_t>(1280, audio.size() - i), &n).ok());
    total += n;
    max_kept = std::max({max_kept, st.token_ids().size(), st.stats().step_ms.size(), st.stats().feed_ms.size()});
  }
  CHECK(st.flush(&n).ok());
  total += n;
  CHECK_EQ(fake.errors, 0);
  CHECK(fake.fed == full.fed);
  CHECK_EQ(total, static_cast<int64_t>(full.ids.size()));
  CHECK_EQ(st.stats().n_generated, static_cast<int64_t>(full.ids.size()));
  CHECK(max_kept <= 32);
  const auto& kept = st.token_ids();
  CHECK(kept.size() >= 16 && kept.size() <= 32);
  CHECK(std::equal(kept.begin(), kept.end(), full.ids.end() - static_cast<std::ptrdiff_t>(kept.size())));
  CHECK(st.token_times_ms().size() == kept.size());
  CHECK(st.finished());
}

static void test_protocol_eos_and_text() {
  std::unique_ptr<Tekken> tok;
  CHECK(Tekken::from_json_text(tiny_tekken_json(), "tiny.json", &tok).ok());
  if (!tok) return;
  const ModelInfo m = tiny_info();
  const int64_t P = m.left_pad_tokens + 2 + 1;
  // script: PAD, " hello", WORD, euro split over two tokens, "😀" split, then EOS at position P+6
  const std::vector<int64_t> seq = {m.streaming_pad_id, merge_id(0), m.streaming_word_id, merge_id(2),
                                    merge_id(3),        merge_id(4), merge_id(5),         m.eos_id};
  auto script = [&](int64_t p) -> int64_t {
    const int64_t k = p - (P - 1);
    return (k >= 0 && k < static_cast<int64_t>(seq.size())) ? seq[static_cast<size_t>(k)] : m.streaming_pad_id;
  };
  const auto audio = ramp_audio(30 * 1280);
  for (size_t chunk : {0u, 640u}) {
    const RunResult r = run_stream(audio, chunk, 2, tok.get(), script);
    CHECK_EQ(r.fake_errors, 0);
    CHECK(r.ids == seq);  // stops at EOS, EOS kept
    CHECK(r.finished);
    CHECK_EQ(r.text, " hello\xe2\x82\xac!\xf0\x9f\x98\x80");
    CHECK_EQ(r.streamed_text, r.text);
  }
  // A live stream goes on after the EOS (fed back like any token) to the generate length; the same tokens up to
  // the EOS, then the script's, whatever the draft setting.
  for (int64_t draft : {0, 3, -1}) {
    for (size_t chunk : {0u, 640u}) {
      const RunResult r = run_stream(audio, chunk, 2, tok.get(), script, 0, draft, /*stop_at_eos=*/false);
      CHECK_EQ(r.fake_errors, 0);
      CHECK_EQ(static_cast<int64_t>(r.ids.size()), r.n_audio_tokens - r.prompt_len);
      CHECK(r.ids.size() > seq.size() && std::equal(seq.begin(), seq.end(), r.ids.begin()));
      CHECK(r.finished);
      for (size_t k = seq.size(); k < r.ids.size(); ++k) CHECK_EQ(r.ids[k], m.streaming_pad_id);
    }
  }
}

// Multi-position decoding: any draft setting gives the tokens (and final fed tokens) of one position per
// call, for PAD-heavy, PAD-free and EOS-in-a-batch scripts and any feed size; guesses are verified (a wrongly
// accepted row would carry kPoison); a backlog takes fewer calls.
static void test_protocol_drafts() {
  const ModelInfo m = tiny_info();
  const auto audio = ramp_audio(40 * 1280 + 333);
  const int64_t D = 2, P = m.left_pad_tokens + D + 1;
  const std::vector<std::function<int64_t(int64_t)>> scripts = {
      [&](int64_t p) { return p % 7 < 5 ? m.streaming_pad_id : kNumSpecial + 'a' + p % 26; },  // bursts of PAD
      [&](int64_t p) { return (p * 2654435761u) % 4 ? m.streaming_pad_id : kNumSpecial + 'b'; },
      [&](int64_t) { return m.streaming_pad_id; },                                                  // all PAD
      [&](int64_t p) { return kNumSpecial + 'a' + p % 26; },                                        // no PAD
      [&](int64_t p) { return p == P + 9 ? m.eos_id : m.streaming_pad_id; },  // EOS inside a PAD run
  };
  for (const auto& script : scripts) {
    const RunResult ref = run_stream(audio, 0, D, nullptr, script, 0, 0);
    CHECK_EQ(ref.fake_errors, 0);
    CHECK(std::find(ref.ids.begin(), ref.ids.end(), kPoison) == ref.ids.end());
    for (int64_t draft : {1, 2, 4, 100, -1}) {
      for (size_t chunk : {size_t(0), size_t(1280), size_t(4000), size_t(77)}) {
        const RunResult r = run_stream(audio, chunk, D, nullptr, script, 0, draft);
        CHECK_EQ(r.fake_errors, 0);
        CHECK(r.ids == ref.ids);
        // Positions past an EOS inside a call ran with guesses and are never run again: compare up to the end.
        CHECK(r.fed.size() >= ref.fed.size() && std::equal(ref.fed.begin(), ref.fed.end(), r.fed.begin()));
        CHECK(r.fed.size() == ref.fed.size() || ref.ids.back() == m.eos_id);
        CHECK(r.times == ref.times);
        if (draft > 0 && chunk == 0 && script(P + 1) == m.streaming_pad_id)
          CHECK(r.decode_calls.size() < ref.decode_calls.size());  // PAD runs were verified in batches
      }
    }
  }
}

static void test_draft_policy() {
  // Not adaptive: as many positions as allowed and available.
  DraftPolicy fixed(5, false);
  CHECK_EQ(fixed.choose(3), 3);
  CHECK_EQ(fixed.choose(9), 5);
  // Adaptive: measures 1, 2, 4, 8 first (when that many are available), then takes the best tokens per ms.
  DraftPolicy a(8, true);
  CHECK_EQ(a.choose(1), 1);
  a.observe(1, 10.0, 1, 1);
  CHECK_EQ(a.choose(8), 2);
  a.observe(2, 11.0, 2, 2);
  CHECK_EQ(a.choose(8), 4);
  a.observe(4, 12.0, 4, 4);
  CHECK_EQ(a.choose(8), 8);
  a.observe(8, 13.0, 8, 8);
  CHECK_EQ(a.choose(8), 8);  // all PAD, 8 rows cost ~1.3 rows: run 8
  CHECK_EQ(a.choose(3), 2);  // only what is available
  // A machine where rows cost full price and no guess is ever right: back to one position.
  DraftPolicy b(8, true);
  b.observe(1, 10.0, 1, 0);
  b.observe(2, 20.0, 1, 0);
  b.observe(4, 40.0, 1, 0);
  b.observe(8, 80.0, 1, 0);
  for (int i = 0; i < 60; ++i) b.observe(1, 10.0, 1, 0);  // the PAD share estimate falls to ~0
  CHECK_EQ(b.choose(8), 1);
}

static void test_stream_errors_and_reset() {
  FakeModel fake;
  const auto audio = ramp_audio(4000);
  fake.ref_stream = reference_stream(fake.m, audio, 2);
  StreamConfig cfg;
  cfg.delay_tokens = 2;
  Stream st(&fake, nullptr, cfg);
  {
    FakeModel fake2;
    fake2.ref_stream = reference_stream(fake2.m, audio, 2);
    Stream st2(&fake2, nullptr, cfg);
    int64_t n0 = 0;
    CHECK(!st2.feed(nullptr, 5, &n0).ok());  // API misuse is an error, not a crash
    CHECK(st2.feed(nullptr, 0, &n0).ok() && n0 == 0);
  }
  int64_t n = 0;
  const float nan_buf[] = {0.1f, NAN};
  Status s = st.feed(nan_buf, 2, &n);
  CHECK(!s.ok() && s.message().find("NaN") != std::string::npos);
  st.reset();
  CHECK(st.feed(audio.data(), audio.size(), &n).ok());
  CHECK(st.flush(&n).ok());
  s = st.feed(audio.data(), 10, &n);
  CHECK(!s.ok() && s.message().find("reset") != std::string::npos);
  const auto first = st.token_ids();
  // reset -> a new stream from position 0 gives the same tokens (fake restarts its expectations too)
  st.reset();
  fake.n_encoded = 0;
  fake.expect_next_pos = 0;
  fake.last_call_pos = -1;
  CHECK(st.feed(audio.data(), audio.size(), &n).ok());
  CHECK(st.flush(&n).ok());
  CHECK(st.token_ids() == first);
  CHECK_EQ(fake.errors, 0);
  // tokens_ready arithmetic: token t ready once spt*(t+1) + win/2 - hop samples exist
  st.reset();
  fake.n_encoded = 0;
  fake.expect_next_pos = 0;
  fake.last_call_pos = -1;
  const int64_t L = fake.m.left_pad_tokens, spt = 1280;
  CHECK_EQ(st.tokens_ready(), L - 1);  // the left pad alone: last pad token needs 40 samples of audio
  CHECK(st.feed(audio.data(), 39, &n).ok());
  CHECK_EQ(st.tokens_ready(), L - 1);
  CHECK(st.feed(audio.data() + 39, 1, &n).ok());
  CHECK_EQ(st.tokens_ready(), L);
  CHECK(st.feed(audio.data() + 40, spt, &n).ok());
  CHECK_EQ(st.tokens_ready(), L + 1);
  // stop(): returns early, state resumable only after reset
  st.stop();
  CHECK(st.feed(audio.data(), 2000, &n).ok() && n == 0);
}

// ---------------------------------------------------------------------------------------------- words, segments

// The cases of tests/data/transcript_cases.json, which tests/python/test_transcript.py runs through the Python twin:
// both must give exactly the listed words, segments and the tokens at which each segment was finished.
static void test_transcript_cases() {
  std::ifstream f(std::string(VOXTRAL_RT_SOURCE_DIR) + "/tests/data/transcript_cases.json");
  CHECK(f.good());
  if (!f.good()) return;
  const nlohmann::json cases = nlohmann::json::parse(f);
  CHECK(cases.size() >= 7);
  auto words_equal = [](const std::vector<Word>& got, const nlohmann::json& want) {
    if (got.size() != want.size()) return false;
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i].text != want[i]["text"].get<std::string>() || got[i].start_ms != want[i]["start_ms"].get<double>() ||
          got[i].end_ms != want[i]["end_ms"].get<double>())
        return false;
    }
    return true;
  };
  for (const auto& c : cases) {
    std::vector<int64_t> closed_at;
    int64_t index = 0;
    TranscriptConfig cfg;
    cfg.pause_ms = c["pause_ms"].get<double>();
    cfg.max_history = c["max_history"].get<int64_t>();
    cfg.on_segment = [&](const Segment&) { closed_at.push_back(index); };
    TranscriptBuilder b(cfg);
    for (const auto& t : c["tokens"]) {
      const std::string kind = t[0].get<std::string>();
      if (kind == "text") {
        const std::string text = t[1].get<std::string>();
        const bool starts = t.size() > 3 ? t[3].get<bool>() : starts_with_ascii_space(text);
        b.push(TokenKind::Text, starts, text, t[2].get<double>());
      } else {
        const TokenKind k = kind == "pad" ? TokenKind::Pad : kind == "eos" ? TokenKind::Eos : TokenKind::OtherSpecial;
        b.push(k, false, t.size() > 2 ? t[2].get<std::string>() : "", t[1].get<double>());
      }
      ++index;
    }
    index = -1;
    if (c["finish"].get<bool>()) {
      b.finish();
      b.finish();  // idempotent
    }
    const std::string name = c["name"].get<std::string>();
    const std::vector<Segment> segs = b.segments();
    bool ok = words_equal(b.words(), c["words"]) && segs.size() == c["segments"].size() &&
              closed_at == c["closed_at"].get<std::vector<int64_t>>();
    for (size_t i = 0; ok && i < segs.size(); ++i) {
      const auto& w = c["segments"][i];
      ok = segs[i].text == w["text"].get<std::string>() && segs[i].start_ms == w["start_ms"].get<double>() &&
           segs[i].end_ms == w["end_ms"].get<double>() && words_equal(segs[i].words, w["words"]);
    }
    if (!ok) std::printf("  transcript case failed: %s\n", name.c_str());
    CHECK(ok);
  }
}

static void test_transcript_rules() {
  CHECK(ends_sentence("stop."));
  CHECK(ends_sentence("Why?\""));
  CHECK(ends_sentence("(Really!)"));
  CHECK(ends_sentence("no\u2026"));
  CHECK(ends_sentence("\u597d\u3002"));
  CHECK(ends_sentence("\u00abNon !\u00bb"));
  CHECK(!ends_sentence("3.5"));
  CHECK(!ends_sentence("go"));
  CHECK(!ends_sentence(""));
  CHECK(!ends_sentence("\""));
  CHECK(starts_with_ascii_space(" go") && starts_with_ascii_space("\ngo") && !starts_with_ascii_space("go") &&
        !starts_with_ascii_space(""));
  CHECK_EQ(strip_ascii_space(" \t go \n"), "go");
  // reset() forgets everything, the callback stays.
  int n = 0;
  TranscriptConfig cfg;
  cfg.on_segment = [&](const Segment&) { ++n; };
  TranscriptBuilder b(cfg);
  b.push(TokenKind::Text, true, " a.", 80);
  b.push(TokenKind::Pad, false, "", 160);
  CHECK(n == 1 && b.segments().size() == 1 && b.n_finished_segments() == 1);
  b.reset();
  CHECK(b.words().empty() && b.segments().empty() && b.n_finished_segments() == 0);
  b.push(TokenKind::Text, true, " b", 2080);
  CHECK(b.words().size() == 1 && b.words()[0].start_ms == 1080);  // the previous end is forgotten: 0, bound 1000
  b.finish();
  CHECK_EQ(n, 2);
}

static void test_output_formats() {
  CHECK_EQ(srt_time(0), "00:00:00,000");
  CHECK_EQ(srt_time(3723004.4), "01:02:03,004");
  CHECK_EQ(vtt_time(3723004.6), "01:02:03.005");
  CHECK_EQ(vtt_time(-5), "00:00:00.000");
  CHECK_EQ(srt_time(360000000), "100:00:00,000");
  CHECK_EQ(cue_text("  go \n\n left\t "), "go left");
  Segment s;
  s.text = " a <b> & c";
  s.start_ms = 80;
  s.end_ms = 1440;
  s.words = {Word{"a", 80, 400}};
  CHECK_EQ(srt_cue(3, s), "3\n00:00:00,080 --> 00:00:01,440\na <b> & c\n\n");
  CHECK_EQ(vtt_cue(s), "00:00:00.080 --> 00:00:01.440\na &lt;b&gt; &amp; c\n\n");
  CHECK_EQ(json_line(segment_event(2, s)),
           "{\"type\":\"transcript.text.segment\",\"id\":\"seg_2\",\"text\":\" a <b> & c\",\"start_ms\":80.0,"
           "\"end_ms\":1440.0,\"words\":[{\"text\":\"a\",\"start_ms\":80.0,\"end_ms\":400.0}]}\n");
  CHECK_EQ(json_line(delta_event(" go", 5200)), "{\"type\":\"transcript.text.delta\",\"delta\":\" go\",\"time_ms\":5200.0}\n");
}

// The Stream feeds its builder as the tokens come: on_segment runs before the on_token of the token that
// finished the segment (the last PAD of a pause, an EOS), flush() finishes a segment still open, any feed size
// and draft setting gives the same words and segments.
static void test_stream_words_and_segments() {
  std::unique_ptr<Tekken> tok;
  CHECK(Tekken::from_json_text(tiny_tekken_json(), "tiny.json", &tok).ok());
  if (!tok) return;
  const ModelInfo m = tiny_info();
  const int64_t D = 2, P = m.left_pad_tokens + D + 1;
  const auto audio = ramp_audio(40 * 1280);
  const std::string hello = "t" + std::to_string(merge_id(0)), world = "t" + std::to_string(merge_id(1));
  // k-th generated token (time 80 * (k + 1) ms): PAD, " hello", WORD, "€" "!😀" in 4 tokens, 8 PADs, " world",
  // then PADs, or an EOS.
  std::vector<int64_t> seq = {m.streaming_pad_id, merge_id(0), m.streaming_word_id, merge_id(2), merge_id(3),
                              merge_id(4), merge_id(5)};
  seq.insert(seq.end(), 8, m.streaming_pad_id);
  seq.push_back(merge_id(1));
  struct Variant {
    int64_t pause_ms;
    bool eos;
    std::vector<std::string> segments;
  };
  const Variant variants[] = {
      {640, false, {" hello\u20ac!\U0001F600", " world"}},  // both end at a pause
      {640, true, {" hello\u20ac!\U0001F600", " world"}},   // the second at the EOS
      {0, false, {" hello\u20ac!\U0001F600 world"}},         // never at pauses: at the end of the stream
  };
  for (const Variant& v : variants) {
    std::vector<int64_t> script_seq = seq;
    if (v.eos) script_seq.push_back(m.eos_id);
    auto script = [&](int64_t p) -> int64_t {
      const int64_t k = p - (P - 1);
      return (k >= 0 && k < static_cast<int64_t>(script_seq.size())) ? script_seq[static_cast<size_t>(k)]
                                                                      : m.streaming_pad_id;
    };
    for (size_t chunk : {0u, 640u, 1280u * 3}) {
      FakeModel fake;
      fake.script = script;
      fake.ref_stream = reference_stream(fake.m, audio, D);
      StreamConfig cfg;
      cfg.delay_tokens = D;
      cfg.draft_tokens = chunk == 0 ? -1 : 0;
      cfg.segment_pause_ms = v.pause_ms;
      std::vector<std::string> events;
      cfg.on_token = [&](const TokenEvent& ev) { events.push_back("t" + std::to_string(ev.id)); };
      cfg.on_segment = [&](const Segment& sg) { events.push_back("s" + sg.text); };
      Stream st(&fake, tok.get(), cfg);
      fake.prompt_len = st.prompt_len();
      int64_t n = 0;
      const size_t step = chunk ? chunk : audio.size();
      for (size_t i = 0; i < audio.size(); i += step) CHECK(st.feed(audio.data() + i, std::min(step, audio.size() - i), &n).ok());
      const int64_t n_before_flush = st.transcript().n_finished_segments();
      CHECK(st.flush(&n).ok());
      CHECK(st.flush(&n).ok());  // idempotent: the last segment is finished once
      CHECK_EQ(fake.errors, 0);
      std::vector<std::string> got;
      for (const std::string& e : events)
        if (e[0] == 's') got.push_back(e.substr(1));
      CHECK(got == v.segments);
      CHECK_EQ(n_before_flush, v.pause_ms == 0 ? 0 : 2);  // pause 0: only flush() ends the one segment
      // The 8th PAD (token 14) ended the first segment before its own on_token.
      if (v.pause_ms > 0) CHECK(events.size() > 16 && events[14] == "s" + v.segments[0] && events[15] == "t5");
      if (v.eos) CHECK(events.back() == "t2" && events[events.size() - 2] == "s world");
      const std::vector<Word> words = st.transcript().words();
      CHECK(words.size() == 3 && words[0].text == "hello" && words[1].text == "\u20ac!\U0001F600" &&
            words[2].text == "world");
      CHECK(words[0].start_ms == 0 && words[0].end_ms == 160 && words[1].start_ms == 160 && words[1].end_ms == 320);
      CHECK(words[2].start_ms == 320 && words[2].end_ms == 1280);
      const std::vector<Segment> segs = st.transcript().segments();
      std::string joined;
      for (const Segment& sg : segs) joined += sg.text;
      CHECK_EQ(joined, st.text());
      CHECK(segs.front().start_ms == 0 && segs.back().end_ms == 1280);
      st.reset();
      CHECK(st.transcript().segments().empty() && st.transcript().words().empty());
    }
  }
}

// ---------------------------------------------------------------------------------------------- util

static void test_util() {
  CHECK_EQ(percentile({}, 0.5), 0.0);
  CHECK_EQ(percentile({3, 1, 2}, 0.5), 2.0);
  CHECK_EQ(percentile({4, 1, 3, 2}, 0.5), 3.0);  // nearest rank: round(0.5 * 3) = 2
  CHECK_EQ(percentile({4, 1, 3, 2}, 0.0), 1.0);
  CHECK_EQ(percentile({4, 1, 3, 2}, 1.0), 4.0);
  CHECK_EQ(percentile({10, 20, 30, 40, 50, 60, 70, 80, 90, 100}, 0.95), 100.0);  // round(8.55) = 9
  CHECK_EQ(strf("%s=%" PRId64 " %.2f", "n", int64_t{-7}, 0.125), "n=-7 0.12");
  const std::string long_text(5000, 'x');
  CHECK_EQ(strf("<%s>", long_text.c_str()), "<" + long_text + ">");  // longer than any fixed buffer
  CHECK_EQ(strf("%s", ""), "");
  const double t0 = now_ms(), t1 = now_ms();
  CHECK(t0 > 0 && t1 >= t0);
  const double rss = proc_status_mib("VmRSS");
  CHECK(rss > 0 && peak_rss_mib() >= rss);
  CHECK_EQ(proc_status_mib("VmNoSuchLine"), -1.0);
}

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--list-keys") == 0) {  // the .pte metadata keys, for the contract test
    for (const char* key : kMetadataKeys) std::printf("%s\n", key);
    return 0;
  }
  run_test("base64", test_base64);
  run_test("protocol_drafts", test_protocol_drafts);
  run_test("draft_policy", test_draft_policy);
  run_test("utf8_replace", test_utf8_replace);
  run_test("tekken_decode", test_tekken_decode);
  run_test("tekken_errors", test_tekken_errors);
  run_test("pcm_decoder", test_pcm_decoder);
  run_test("resampler", test_resampler);
  run_test("audio_file_reader", test_audio_file_reader);
  run_test("audio_file_errors", test_audio_file_errors);
  run_test("metadata", test_metadata);
  run_test("protocol_offline", test_protocol_offline);
  run_test("protocol_streaming_equals_offline", test_protocol_streaming_equals_offline);
  run_test("history_cap", test_history_cap);
  run_test("protocol_eos_and_text", test_protocol_eos_and_text);
  run_test("stream_errors_and_reset", test_stream_errors_and_reset);
  run_test("transcript_cases", test_transcript_cases);
  run_test("transcript_rules", test_transcript_rules);
  run_test("output_formats", test_output_formats);
  run_test("stream_words_and_segments", test_stream_words_and_segments);
  run_test("util", test_util);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
