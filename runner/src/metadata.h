// .pte metadata (constant methods, docs/design.md): key names declared once, read through one helper.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "status.h"
#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt::detail {

// Every int64 constant method of format_version 3, in design.md order. All are required. The same list, with a
// line on each key, is voxtral_rt/pte.py's METADATA (the exporter writes it); tests/python/test_pte_contract.py
// compares the two through `voxtral_rt_tests --list-keys`.
#define VOXTRAL_RT_METADATA_KEYS(X) \
  X(format_version)                 \
  X(sample_rate)                    \
  X(hop_length)                     \
  X(window_size)                    \
  X(num_mel_bins)                   \
  X(samples_per_token)              \
  X(mel_frames_per_token)           \
  X(enc_frames_per_token)           \
  X(dim)                            \
  X(vocab_size)                     \
  X(enc_sliding_window)             \
  X(dec_sliding_window)             \
  X(enc_cache_slots)                \
  X(dec_cache_slots)                \
  X(max_mel_frames)                 \
  X(max_enc_tokens)                 \
  X(max_dec_tokens)                 \
  X(default_delay_tokens)           \
  X(left_pad_tokens)                \
  X(right_pad_buffer_tokens)        \
  X(bos_id)                         \
  X(eos_id)                         \
  X(streaming_pad_id)               \
  X(streaming_word_id)              \
  X(num_special_tokens)             \
  X(ms_per_token)

// The keys' names, in that order.
inline constexpr const char* kMetadataKeys[] = {
#define VX_KEY_NAME(name) #name,
    VOXTRAL_RT_METADATA_KEYS(VX_KEY_NAME)
#undef VX_KEY_NAME
};

constexpr int64_t kFormatVersion = 3;  // 2: attention masks are method inputs; 3: all-position logits

// Methods the runner calls (besides the metadata).
constexpr const char* kPreprocessorMethod = "preprocessor";
constexpr const char* kAudioEncoderMethod = "audio_encoder";
constexpr const char* kTokenEmbeddingMethod = "token_embedding";
constexpr const char* kTextDecoderMethod = "text_decoder";

// Reads one int metadata value; returns a Status naming the key on failure.
using ReadIntFn = std::function<Status(const char* key, int64_t* value)>;

// Fills *info from read_int and checks it (format_version first, then consistency). `where` names the
// model file in messages.
Status read_model_info(const ReadIntFn& read_int, const std::string& where, ModelInfo* info);
Status validate_model_info(const ModelInfo& info, const std::string& where);

// Attended widths are whole blocks of this many slots (the extra columns masked). XNNPACK's softmax and P.V sum a
// row in an order that depends on its length; with the length a multiple of 64 the columns past a query's own
// end only add exact zeros, so a position's result does not depend on how many positions share its call: the
// multi-position decoder calls give bit-identical rows (measured on the chaotic 4b weights: exact 64-blocks, 0
// of 260 tokens differ between 1, 4 and 8 positions per call; without, 30). At most 63 extra columns.
constexpr int64_t kAttendBlock = 64;

// Ring slots a call attends when it ends at position `end` (exclusive): the valid prefix min(end, slots) rounded
// up to whole kAttendBlock blocks (capped at `slots`), or with whole_ring all `slots` once at least 3/4 of them are
// valid. A whole-ring slice is an alias, not a copy (alias_kernels.h), and costs about what copying the prefix
// does at 0.7 (decoder) to 0.8 (encoder) of the ring (measured: docs/design.md). Same as
// voxtral_rt.model.attended_slots.
int64_t attended_slots(int64_t end, int64_t slots, bool whole_ring);

// The additive attention mask (0 / -inf) of `n` queries at positions start..start+n-1 over the first
// L = attended_slots(start + n, slots, whole_ring) slots of a KV ring (position p in slot p % slots): a query
// at q sees positions q - window + 1 .. q; slots this stream has not written yet are -inf (they hold zeros
// or an earlier stream's values: finite, so masked columns add exact zeros). Writes [n][L] row-major into
// *mask and returns L. Same as voxtral_rt.model.ring_mask.
int64_t ring_mask(int64_t start, int64_t n, int64_t window, int64_t slots, std::vector<float>* mask,
                  bool whole_ring = false);

// Protocol arithmetic shared by the session and the tests.
Status delay_tokens_for(const ModelInfo& info, int delay_ms, int64_t* delay_tokens);

}  // namespace voxtral_rt::detail
