#include "metadata.h"

#include <cinttypes>
#include <limits>

#include "log.h"
#include "util.h"

namespace voxtral_rt::detail {

Status read_model_info(const ReadIntFn& read_int, const std::string& where, ModelInfo* info) {
  // format_version first: a newer/older layout may not have the other keys at all.
  VX_RETURN_IF_ERROR(read_int("format_version", &info->format_version));
  if (info->format_version != kFormatVersion) {
    return Status::error(where + ": unsupported format_version " + std::to_string(info->format_version) +
                         " (this runner reads " + std::to_string(kFormatVersion) +
                         "); re-export with export/export_voxtral_rt.py from the same checkout");
  }
#define VX_READ_KEY(name) VX_RETURN_IF_ERROR(read_int(#name, &info->name));
  VOXTRAL_RT_METADATA_KEYS(VX_READ_KEY)
#undef VX_READ_KEY
#define VX_LOG_KEY(name) VX_LOG_DEBUG("metadata %s = %" PRId64, #name, info->name);
  VOXTRAL_RT_METADATA_KEYS(VX_LOG_KEY)
#undef VX_LOG_KEY
  return validate_model_info(*info, where);
}

Status validate_model_info(const ModelInfo& m, const std::string& where) {
  auto bad = [&](const std::string& what) {
    return Status::error(where + ": inconsistent metadata: " + what + "; re-export the model");
  };
#define VX_CHECK_POSITIVE(name) \
  if (m.name <= 0) return bad(std::string(#name) + " = " + std::to_string(m.name) + " must be > 0");
  VX_CHECK_POSITIVE(sample_rate)
  VX_CHECK_POSITIVE(hop_length)
  VX_CHECK_POSITIVE(window_size)
  VX_CHECK_POSITIVE(num_mel_bins)
  VX_CHECK_POSITIVE(samples_per_token)
  VX_CHECK_POSITIVE(mel_frames_per_token)
  VX_CHECK_POSITIVE(enc_frames_per_token)
  VX_CHECK_POSITIVE(dim)
  VX_CHECK_POSITIVE(vocab_size)
  VX_CHECK_POSITIVE(max_mel_frames)
  VX_CHECK_POSITIVE(max_enc_tokens)
  VX_CHECK_POSITIVE(max_dec_tokens)
  VX_CHECK_POSITIVE(default_delay_tokens)
  VX_CHECK_POSITIVE(num_special_tokens)
  VX_CHECK_POSITIVE(ms_per_token)
  VX_CHECK_POSITIVE(enc_sliding_window)
  VX_CHECK_POSITIVE(dec_sliding_window)
#undef VX_CHECK_POSITIVE
  if (m.left_pad_tokens < 0 || m.right_pad_buffer_tokens < 0) return bad("negative padding");
  if (m.samples_per_token != m.hop_length * m.mel_frames_per_token)
    return bad(strf("samples_per_token %" PRId64 " != hop_length %" PRId64 " x mel_frames_per_token %" PRId64,
                   m.samples_per_token, m.hop_length, m.mel_frames_per_token));
  if (m.window_size % 2) return bad("window_size must be even");
  if (m.samples_per_token * 1000 != m.ms_per_token * m.sample_rate)
    return bad(strf("ms_per_token %" PRId64 " != 1000 x samples_per_token %" PRId64 " / sample_rate %" PRId64,
                   m.ms_per_token, m.samples_per_token, m.sample_rate));
  if (m.max_mel_frames < m.mel_frames_per_token)
    return bad("max_mel_frames is smaller than one token of mel frames");
  for (int64_t id : {m.bos_id, m.eos_id, m.streaming_pad_id, m.streaming_word_id}) {
    if (id < 0 || id >= m.num_special_tokens) return bad(strf("special id %" PRId64 " outside [0, %" PRId64 ")", id,
                                                             m.num_special_tokens));
  }
  if (m.num_special_tokens >= m.vocab_size) return bad("num_special_tokens >= vocab_size");
  // A chunk's own writes must not overwrite keys its first query still needs.
  if (m.enc_cache_slots < m.enc_sliding_window + m.max_enc_tokens * m.enc_frames_per_token - 1)
    return bad(strf("enc_cache_slots %" PRId64 " < enc_sliding_window %" PRId64 " + longest chunk %" PRId64 " - 1",
                   m.enc_cache_slots, m.enc_sliding_window, m.max_enc_tokens * m.enc_frames_per_token));
  if (m.dec_cache_slots < m.dec_sliding_window + m.max_dec_tokens - 1)
    return bad(strf("dec_cache_slots %" PRId64 " < dec_sliding_window %" PRId64 " + max_dec_tokens %" PRId64 " - 1",
                   m.dec_cache_slots, m.dec_sliding_window, m.max_dec_tokens));
  return Status();
}

int64_t attended_slots(int64_t end, int64_t slots, bool whole_ring) {
  const int64_t r = (end + kAttendBlock - 1) / kAttendBlock * kAttendBlock;
  const int64_t valid = r < slots ? r : slots;
  return whole_ring && 4 * valid >= 3 * slots ? slots : valid;  // integers: Python computes the same
}

int64_t ring_mask(int64_t start, int64_t n, int64_t window, int64_t slots, std::vector<float>* mask,
                  bool whole_ring) {
  const int64_t end = start + n;
  const int64_t len = attended_slots(end, slots, whole_ring);
  mask->assign(static_cast<size_t>(n * len), -std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < len && j < end; ++j) {  // j >= end: not written in this stream
    const int64_t slot_pos = j + (end - 1 - j) / slots * slots;  // end - 1 - j >= 0: plain division floors
    for (int64_t i = 0; i < n; ++i) {
      const int64_t delta = start + i - slot_pos;
      if (delta >= 0 && delta < window) (*mask)[static_cast<size_t>(i * len + j)] = 0.0f;
    }
  }
  return len;
}

Status delay_tokens_for(const ModelInfo& info, int delay_ms, int64_t* delay_tokens) {
  if (delay_ms == -1) {
    *delay_tokens = info.default_delay_tokens;
    return Status();
  }
  const int64_t step = info.ms_per_token;
  const std::string allowed = "use a multiple of " + std::to_string(step) + " ms from " + std::to_string(step) +
                              " to " + std::to_string(15 * step) + " ms, or " + std::to_string(30 * step) +
                              " ms (-1 = model default " + std::to_string(info.default_delay_tokens * step) + " ms)";
  if (delay_ms <= 0 || delay_ms % step != 0)
    return Status::error("delay " + std::to_string(delay_ms) + " ms is not supported: " + allowed);
  const int64_t n = delay_ms / step;
  if (!((n >= 1 && n <= 15) || n == 30))
    return Status::error("delay " + std::to_string(delay_ms) + " ms is not supported: " + allowed);
  *delay_tokens = n;
  return Status();
}

}  // namespace voxtral_rt::detail
