// One stream of the streaming protocol (docs/design.md "Streaming protocol"), model-agnostic:
//
//   stream  = zeros(L*spt) ++ audio ++ [at flush] zeros(align + (D + 1 + right_pad_buffer) * spt)
//   mel frame i covers stream samples [hop*i - win/2, hop*i + win/2) (zeros outside the stream);
//   token t = frames 8t..8t+7, ready once the stream has spt*(t+1) + win/2 - hop samples (or after flush).
//   encoder: tokens in chunks of 1..max_enc_tokens -> audio_emb[t].
//   decoder: prompt P = [BOS] + [STREAMING_PAD]*(L+D), prefilled (chunks of <= max_dec_tokens from 0)
//   once audio_emb[0..len(P)-1] exist; position p input = tok_emb(token_p) + audio_emb[p], run only once
//   audio_emb[p] exists; the argmax at p is the token fed at p+1. Stop on EOS (kept) or, after flush,
//   when n_generated == n_audio_tokens - len(P). Generation calls may run several positions, guessing
//   [STREAMING_PAD] after the first and keeping the argmaxes up to the first wrong guess (draft.h).
//   Each feed/flush first encodes every ready token, then decodes: the same model calls as
//   voxtral_rt/protocol.py for any feed sizes.
//
// State names follow voxtral_rt/protocol.py: samples_consumed (real audio), enc_tokens (audio tokens encoded so
// far: the next to encode), dec_pos (next decoder position), eos, flushed. (The .pte's enc_pos counts encoder
// frames: enc_frames_per_token * enc_tokens, see ModelBackend::encode.)
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "backend.h"
#include "draft.h"
#include "status.h"
#include "tekken.h"
#include "transcript.h"
#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt::detail {

struct StreamConfig {
  int64_t delay_tokens = 6;
  int64_t max_enc_tokens = 0;  // 0 = model max
  int64_t max_history = 0;     // 0 = keep every token; else keep the last max_history..2*max_history
  int64_t draft_tokens = -1;   // most guessed positions per decoder call; 0 = one position; -1 = adaptive
  bool stop_at_eos = true;     // false: EOS is fed back like any token and decoding goes on (live streams)
  TokenCallback on_token;
  int64_t segment_pause_ms = 640;  // words and segments (transcript.h): a PAD run this long ends a segment
  SegmentCallback on_segment;
};

class Stream {
 public:
  // `tok` may be null (then no text is produced). `model` and `tok` must outlive the Stream.
  Stream(ModelBackend* model, const Tekken* tok, StreamConfig cfg);

  Status feed(const float* pcm, size_t n, int64_t* n_new);
  Status flush(int64_t* n_new);
  void reset();
  void stop() { stop_requested_.store(true); }

  std::string take_text();
  std::string text() const;
  const std::vector<int64_t>& token_ids() const { return token_ids_; }
  const std::vector<double>& token_times_ms() const { return token_times_ms_; }
  const TranscriptBuilder& transcript() const { return transcript_; }  // words and segments so far
  bool finished() const { return (eos_ && cfg_.stop_at_eos) || (flushed_ && generation_limit_reached()); }
  const SessionStats& stats() const { return stats_; }

  // ---- protocol arithmetic (exposed for tests)
  int64_t delay_tokens() const { return cfg_.delay_tokens; }
  int64_t prompt_len() const { return info_.left_pad_tokens + cfg_.delay_tokens + 1; }
  int64_t tokens_ready() const;                             // tokens whose mel frames can be computed now
  int64_t enc_tokens() const { return enc_tokens_; }        // audio tokens encoded so far
  int64_t dec_pos() const { return dec_pos_; }              // decoder positions run so far
  int64_t n_total_tokens() const { return flushed_ ? stream_len_ / info_.samples_per_token : -1; }  // after flush

 private:
  // Copy of stream samples [start, start + n) with zeros outside [0, stream_len_).
  void stream_window(int64_t start, int64_t n, float* out) const;
  Status pump(int64_t* n_new);
  Status encode_chunk(int64_t k);
  Status decode_ready(int64_t* n_new);
  void emit(int64_t id, int64_t q);
  bool generation_limit_reached() const;
  int64_t generation_end() const;  // decoder positions that may run: up to the audio (or generate length)
  void append_stream(const float* pcm, size_t n);
  void append_zeros(int64_t n);
  void trim_buffers();
  void trim_history();
  bool stop_requested() const { return stop_requested_.load(std::memory_order_relaxed); }

  ModelBackend* model_;
  const Tekken* tok_;
  ModelInfo info_;
  StreamConfig cfg_;
  DraftPolicy policy_;
  int64_t enc_chunk_ = 1;
  std::vector<int64_t> prompt_;

  // audio stream: buf_[i] is stream sample buf_start_ + i
  std::vector<float> buf_;
  int64_t buf_start_ = 0;
  int64_t stream_len_ = 0;
  int64_t samples_consumed_ = 0;
  // audio embeddings: audio_emb_[(t - audio_emb_start_) * dim ...] is audio_emb[t] (consumed ones dropped in blocks)
  std::vector<float> audio_emb_;
  int64_t audio_emb_start_ = 0;

  int64_t enc_tokens_ = 0;   // audio tokens encoded so far (the next to encode)
  int64_t dec_pos_ = 0;      // next decoder position
  int64_t next_token_ = -1;  // generated, to be fed at dec_pos_
  bool eos_ = false;
  bool flushed_ = false;
  bool started_ = false;
  std::atomic<bool> stop_requested_{false};

  std::vector<int64_t> token_ids_;
  std::vector<double> token_times_ms_;
  std::string pending_text_;
  std::optional<TekkenStreamer> streamer_;  // empty without a tokenizer
  TranscriptBuilder transcript_;

  // scratch (sized once, reused)
  std::vector<float> window_, mel_, enc_out_, tok_emb_, x_, logits_;
  std::vector<int64_t> ids_;
  SessionStats stats_;
  double t_first_feed_ms_ = -1;
};

// First index of the maximum (torch.argmax); -1 if any NaN.
int64_t argmax(const float* x, int64_t n);

}  // namespace voxtral_rt::detail
