#include "stream.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>

#include "util.h"

namespace voxtral_rt::detail {

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return -1;
    if (x[i] > x[best]) best = i;
  }
  return n > 0 ? best : -1;
}

Stream::Stream(ModelBackend* model, const Tekken* tok, StreamConfig cfg)
    : model_(model),
      tok_(tok),
      info_(model->info()),
      cfg_(std::move(cfg)),
      policy_(std::min(cfg_.draft_tokens < 0 ? info_.max_dec_tokens : cfg_.draft_tokens + 1, info_.max_dec_tokens),
              cfg_.draft_tokens < 0) {
  // Tokens per encoder call: the model's bounds (mel frames and encoder tokens), capped by the option.
  enc_chunk_ = std::min(info_.max_enc_tokens, info_.max_mel_frames / info_.mel_frames_per_token);
  if (cfg_.max_enc_tokens > 0) enc_chunk_ = std::min(enc_chunk_, cfg_.max_enc_tokens);
  enc_chunk_ = std::max<int64_t>(enc_chunk_, 1);
  prompt_.assign(static_cast<size_t>(prompt_len()), info_.streaming_pad_id);
  prompt_[0] = info_.bos_id;
  if (tok_) streamer_.emplace(*tok_);
  TranscriptConfig tc;
  tc.pause_ms = static_cast<double>(cfg_.segment_pause_ms);
  tc.ms_per_token = static_cast<double>(info_.ms_per_token);
  tc.max_history = cfg_.max_history;
  tc.on_segment = cfg_.on_segment;
  transcript_ = TranscriptBuilder(std::move(tc));
  reset();
}

void Stream::reset() {
  buf_.clear();
  buf_start_ = 0;
  stream_len_ = 0;
  samples_consumed_ = 0;
  audio_emb_.clear();
  audio_emb_start_ = 0;
  enc_tokens_ = dec_pos_ = 0;
  next_token_ = -1;
  eos_ = flushed_ = started_ = false;
  stop_requested_.store(false);
  token_ids_.clear();
  token_times_ms_.clear();
  pending_text_.clear();
  if (streamer_) streamer_->reset();
  transcript_.reset();
  stats_ = SessionStats();
  t_first_feed_ms_ = -1;  // policy_ keeps what it measured: call costs are the machine's
  append_zeros(info_.left_pad_tokens * info_.samples_per_token);  // the left pad: L tokens of silence
}

int64_t Stream::tokens_ready() const {
  const int64_t spt = info_.samples_per_token;
  if (flushed_) return stream_len_ / spt;  // the stream is complete: zeros beyond its end
  // token t needs stream samples up to spt*(t+1) + win/2 - hop (the last frame's right half-window)
  const int64_t r = stream_len_ - (info_.window_size / 2 - info_.hop_length);
  return r <= 0 ? 0 : r / spt;
}

void Stream::append_stream(const float* pcm, size_t n) {
  buf_.insert(buf_.end(), pcm, pcm + n);
  stream_len_ += static_cast<int64_t>(n);
}

void Stream::append_zeros(int64_t n) {
  buf_.resize(buf_.size() + static_cast<size_t>(n), 0.0f);
  stream_len_ += n;
}

void Stream::stream_window(int64_t start, int64_t n, float* out) const {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = start + i;
    out[i] = (s < buf_start_ || s >= stream_len_) ? 0.0f : buf_[static_cast<size_t>(s - buf_start_)];
  }
}

void Stream::trim_buffers() {
  // Samples before the next window's start (the first frame of token enc_tokens_, minus half a window) are done.
  const int64_t keep_from = std::max<int64_t>(0, info_.samples_per_token * enc_tokens_ - info_.window_size / 2);
  if (keep_from - buf_start_ >= 16 * info_.samples_per_token) {
    buf_.erase(buf_.begin(), buf_.begin() + (keep_from - buf_start_));
    buf_start_ = keep_from;
  }
  // Audio embeddings before dec_pos_ have been consumed.
  if (dec_pos_ - audio_emb_start_ >= 64) {
    audio_emb_.erase(audio_emb_.begin(), audio_emb_.begin() + (dec_pos_ - audio_emb_start_) * info_.dim);
    audio_emb_start_ = dec_pos_;
  }
}

Status Stream::feed(const float* pcm, size_t n, int64_t* n_new) {
  *n_new = 0;
  if (flushed_) return Status::error("feed() after flush(): call reset() to start a new stream");
  if (pcm == nullptr && n > 0) return Status::error("feed(): null samples pointer with n > 0");
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(pcm[i]))
      return Status::error(strf("audio sample %" PRId64 " is NaN or Inf", samples_consumed_ + static_cast<int64_t>(i)));
  }
  if (!started_) {
    started_ = true;
    t_first_feed_ms_ = now_ms();
  }
  samples_consumed_ += static_cast<int64_t>(n);
  stats_.n_samples = samples_consumed_;
  if (eos_ && cfg_.stop_at_eos) return Status();  // the model has finished: nothing more to transcribe
  append_stream(pcm, n);
  const double t0 = now_ms();
  Status st = pump(n_new);
  stats_.feed_ms.push_back(now_ms() - t0);  // what a live caller waits per chunk
  return st;
}

Status Stream::flush(int64_t* n_new) {
  *n_new = 0;
  if (!started_) {
    started_ = true;
    t_first_feed_ms_ = now_ms();
  }
  if (!flushed_) {
    // Right pad (mistral-common OFFLINE streaming): align the audio to whole tokens, then delay + 1 +
    // right_pad_buffer_tokens (10) tokens of silence so the delayed last words come out.
    const int64_t spt = info_.samples_per_token;
    const int64_t align = (spt - samples_consumed_ % spt) % spt;
    append_zeros(align + (cfg_.delay_tokens + 1 + info_.right_pad_buffer_tokens) * spt);
    flushed_ = true;
  }
  VX_RETURN_IF_ERROR(pump(n_new));  // a no-op once finished; resumes an interrupted flush
  if (finished()) transcript_.finish();  // the last word and segment are complete
  return Status();
}

bool Stream::generation_limit_reached() const {
  // transformers' generate length: prompt + generated == number of audio embeddings, i.e. every position up
  // to generation_end() has run (the token generated at position p is fed at p + 1).
  return flushed_ && dec_pos_ >= generation_end();
}

Status Stream::pump(int64_t* n_new) {
  // Encode every ready token (chunks of <= enc_chunk_), then decode every position with an audio
  // embedding -- the same order as voxtral_rt/protocol.py, so both make identical model calls.
  while (!finished() && !stop_requested() && enc_tokens_ < tokens_ready()) {
    VX_RETURN_IF_ERROR(encode_chunk(std::min(enc_chunk_, tokens_ready() - enc_tokens_)));
  }
  if (!finished() && !stop_requested()) VX_RETURN_IF_ERROR(decode_ready(n_new));
  trim_buffers();
  trim_history();
  return Status();
}

void Stream::trim_history() {
  // Per-token and per-feed records grow with the stream; with a cap, drop the oldest in blocks (amortised
  // O(1)) so an endless session runs in flat memory.
  const auto cap = static_cast<size_t>(cfg_.max_history);
  if (cap == 0) return;
  auto trim = [cap](auto& v) {
    if (v.size() >= 2 * cap) v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() - cap));
  };
  trim(token_ids_);
  trim(token_times_ms_);
  trim(stats_.step_ms);
  trim(stats_.feed_ms);
}

Status Stream::encode_chunk(int64_t k) {
  const int64_t hop = info_.hop_length, win = info_.window_size;
  const int64_t n_frames = info_.mel_frames_per_token * k;
  const int64_t f0 = info_.mel_frames_per_token * enc_tokens_;
  const int64_t n_window = hop * n_frames + win - hop;
  window_.resize(static_cast<size_t>(n_window));
  stream_window(hop * f0 - win / 2, n_window, window_.data());

  double t0 = now_ms();
  VX_RETURN_IF_ERROR(model_->preprocess(window_.data(), n_frames, &mel_));
  stats_.preprocess_ms += now_ms() - t0;
  if (static_cast<int64_t>(mel_.size()) != info_.num_mel_bins * n_frames)
    return Status::error(strf("preprocessor returned %" PRId64 " values, expected %" PRId64 " x %" PRId64,
                              static_cast<int64_t>(mel_.size()), info_.num_mel_bins, n_frames));

  t0 = now_ms();
  VX_RETURN_IF_ERROR(model_->encode(mel_.data(), k, info_.enc_frames_per_token * enc_tokens_, &enc_out_));
  stats_.encoder_ms += now_ms() - t0;
  stats_.n_encoder_calls++;
  if (static_cast<int64_t>(enc_out_.size()) != k * info_.dim)
    return Status::error(strf("audio_encoder returned %" PRId64 " values, expected %" PRId64 " x dim %" PRId64,
                              static_cast<int64_t>(enc_out_.size()), k, info_.dim));
  audio_emb_.insert(audio_emb_.end(), enc_out_.begin(), enc_out_.end());
  enc_tokens_ += k;
  stats_.n_audio_tokens = enc_tokens_;
  return Status();
}

Status Stream::decode_ready(int64_t* n_new) {
  const int64_t P = prompt_len();
  const int64_t dim = info_.dim;
  auto add_audio = [&](int64_t pos, int64_t S) -> Status {
    // x = token embeddings + audio embeddings of positions pos..pos+S-1
    if (static_cast<int64_t>(tok_emb_.size()) != S * dim)
      return Status::error(strf("token_embedding returned %" PRId64 " values, expected %" PRId64 " x dim %" PRId64,
                                static_cast<int64_t>(tok_emb_.size()), S, dim));
    x_.resize(static_cast<size_t>(S * dim));
    const float* a = audio_emb_.data() + (pos - audio_emb_start_) * dim;
    for (int64_t i = 0; i < S * dim; ++i) x_[static_cast<size_t>(i)] = tok_emb_[static_cast<size_t>(i)] + a[i];
    return Status();
  };
  auto run_decoder = [&](int64_t pos, int64_t S) -> Status {
    VX_RETURN_IF_ERROR(model_->decode(x_.data(), S, pos, cfg_.delay_tokens, &logits_));
    stats_.n_decoder_calls++;
    if (static_cast<int64_t>(logits_.size()) != S * info_.vocab_size)
      return Status::error(strf("text_decoder returned %" PRId64 " logits, expected %" PRId64 " x vocab_size %" PRId64,
                                static_cast<int64_t>(logits_.size()), S, info_.vocab_size));
    return Status();
  };
  // The argmax of row `row` of the last call (the position pos).
  auto next = [&](int64_t row, int64_t pos, int64_t* id) -> Status {
    *id = argmax(logits_.data() + row * info_.vocab_size, info_.vocab_size);
    if (*id < 0) return Status::error(strf("text_decoder produced NaN logits at position %" PRId64, pos));
    return Status();
  };

  while (!finished() && !stop_requested()) {
    const double t0 = now_ms();
    if (dec_pos_ < P) {
      // Prefill the whole prompt once its audio embeddings exist, in chunks of <= max_dec_tokens.
      // (Its first output is the argmax at P-1 anyway; one batch is cheaper than P single steps.)
      if (enc_tokens_ < P) break;
      const int64_t S = std::min(info_.max_dec_tokens, P - dec_pos_);
      VX_RETURN_IF_ERROR(model_->embed(prompt_.data() + dec_pos_, S, &tok_emb_));
      VX_RETURN_IF_ERROR(add_audio(dec_pos_, S));
      VX_RETURN_IF_ERROR(run_decoder(dec_pos_, S));
      dec_pos_ += S;
      stats_.decoder_ms += now_ms() - t0;
      if (dec_pos_ == P) {  // the argmax at the last prompt position is the first generated token
        int64_t id;
        VX_RETURN_IF_ERROR(next(S - 1, P - 1, &id));
        emit(id, P);
        ++*n_new;
      }
    } else {
      // Greedy steps over k positions with audio embeddings: the last generated token at dec_pos_, then
      // guessed PADs; keep the argmaxes up to the first guess that was wrong (draft.h). k = 1: one step.
      const int64_t available = std::min(enc_tokens_, generation_end()) - dec_pos_;
      if (available <= 0) break;
      const int64_t k = policy_.choose(available);
      ids_.assign(static_cast<size_t>(k), info_.streaming_pad_id);
      ids_[0] = next_token_;
      VX_RETURN_IF_ERROR(model_->embed(ids_.data(), k, &tok_emb_));
      VX_RETURN_IF_ERROR(add_audio(dec_pos_, k));
      VX_RETURN_IF_ERROR(run_decoder(dec_pos_, k));
      const double dt = now_ms() - t0;
      stats_.decoder_ms += dt;
      stats_.step_ms.push_back(dt);
      stats_.n_step_calls++;
      stats_.n_step_positions += k;
      int64_t accepted = 0, n_pad = 0;
      for (int64_t i = 0; i < k; ++i) {
        int64_t id;
        VX_RETURN_IF_ERROR(next(i, dec_pos_, &id));
        ++dec_pos_;
        ++accepted;
        emit(id, dec_pos_);
        ++*n_new;
        if (finished() || stop_requested() || id != info_.streaming_pad_id) break;  // next input was a PAD guess
        ++n_pad;
      }
      policy_.observe(k, dt, accepted, n_pad);
    }
  }
  return Status();
}

int64_t Stream::generation_end() const {
  // After flush, transformers' generate length: the last audio embedding is never consumed.
  return flushed_ ? stream_len_ / info_.samples_per_token - 1 : enc_tokens_;
}

void Stream::emit(int64_t id, int64_t q) {
  next_token_ = id;
  ++stats_.n_generated;
  if (stats_.first_token_ms < 0 && t_first_feed_ms_ >= 0) stats_.first_token_ms = now_ms() - t_first_feed_ms_;
  if (id == info_.eos_id) eos_ = true;

  TokenEvent ev;
  ev.id = id;
  ev.position = q;
  ev.time_ms = static_cast<double>((q - info_.left_pad_tokens - cfg_.delay_tokens) * info_.ms_per_token);
  ev.is_special = id >= 0 && id < info_.num_special_tokens;
  if (streamer_) {
    ev.text = streamer_->push(id);
    if (finished()) ev.text += streamer_->finish();  // release a dangling partial character as U+FFFD
  }
  // Words and segments: on_segment runs here, before on_token of the token that finished the segment.
  TokenKind kind = TokenKind::Text;
  bool starts_word = false;
  if (id == info_.streaming_pad_id) {
    kind = TokenKind::Pad;
  } else if (id == info_.eos_id) {
    kind = TokenKind::Eos;
  } else if (ev.is_special) {
    kind = TokenKind::OtherSpecial;
  } else if (tok_) {
    starts_word = starts_with_ascii_space(tok_->token_bytes(id));
  }
  transcript_.push(kind, starts_word, ev.text, ev.time_ms);
  token_ids_.push_back(id);
  token_times_ms_.push_back(ev.time_ms);
  pending_text_ += ev.text;
  if (cfg_.on_token) cfg_.on_token(ev);
}

std::string Stream::take_text() {
  std::string out;
  out.swap(pending_text_);
  return out;
}

std::string Stream::text() const { return tok_ ? tok_->decode(token_ids_) : std::string(); }

}  // namespace voxtral_rt::detail
