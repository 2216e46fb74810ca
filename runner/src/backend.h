// The four model calls of the .pte interface (docs/design.md), behind an interface so the streaming
// protocol (stream.h) can be driven by a fake model in tests. The ExecuTorch implementation is
// et_backend.h. Outputs are copied into caller-owned vectors (resized by the callee), so they stay valid
// across later calls.
#pragma once

#include <cstdint>
#include <vector>

#include "status.h"
#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt::detail {

class ModelBackend {
 public:
  virtual ~ModelBackend() = default;
  virtual const ModelInfo& info() const = 0;

  // window: hop*n + window_size - hop stream samples starting at hop*f0 - window_size/2
  // -> mel: [num_mel_bins][n] (row-major, mel-bin major), 1 <= n <= max_mel_frames.
  virtual Status preprocess(const float* window, int64_t n_frames, std::vector<float>* mel) = 0;
  // mel: [num_mel_bins][mel_frames_per_token * k] of tokens t0..t0+k-1, enc_pos = enc_frames_per_token * t0
  // -> emb: [k][dim]. enc_pos == 0 starts a new stream (resets the conv state).
  virtual Status encode(const float* mel, int64_t n_tokens, int64_t enc_pos, std::vector<float>* emb) = 0;
  // ids: [n] -> emb: [n][dim], 1 <= n <= max_dec_tokens.
  virtual Status embed(const int64_t* ids, int64_t n, std::vector<float>* emb) = 0;
  // x: [n][dim] summed embeddings at positions pos..pos+n-1 -> logits of every position: [n][vocab_size].
  virtual Status decode(const float* x, int64_t n, int64_t pos, int64_t delay_tokens, std::vector<float>* logits) = 0;
  // Diagnostics (VOXTRAL_RT_MEM_TRACE): log how much of the backend's own memory is resident.
  virtual void trace_planned_memory() const {}
};

}  // namespace voxtral_rt::detail
