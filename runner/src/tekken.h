// Tekken (tekken.json) decoder: ids -> text, byte-exact with mistral-common's Tekkenizer.decode
// (special-token policy IGNORE), plus an incremental streamer for live output.
//
// Rules (mistral_common/tokens/tokenizers/tekken.py, 1.13):
//   * ids < num_special_tokens are special (dropped); id >= num_special is BPE rank id - num_special,
//     whose bytes are base64(vocab[rank].token_bytes); only the first vocab_size - num_special ranks count.
//   * each run of regular ids between specials is decoded on its own, bytes.decode("utf-8", "replace"):
//     a character split by a special token becomes U+FFFD. Nothing is stripped.
//   * special names come from `special_tokens` ([{rank, token_str}], filled up with <SPECIAL_i>) or, for
//     legacy files (version <= v7) without that key, mistral-common's 20 deprecated names.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "status.h"

namespace voxtral_rt::detail {

class Tekken {
 public:
  static Status from_file(const std::string& path, std::unique_ptr<Tekken>* out);
  // `where` names the source in error messages.
  static Status from_json_text(const std::string& text, const std::string& where, std::unique_ptr<Tekken>* out);

  int64_t vocab_size() const { return vocab_size_; }
  int64_t num_special_tokens() const { return num_special_; }
  bool is_special(int64_t id) const { return id >= 0 && id < num_special_; }
  // Id of a special token by name ("<s>", "[STREAMING_PAD]", ...), or -1.
  int64_t special_id(const std::string& name) const;
  const std::string& special_name(int64_t id) const { return specials_[static_cast<size_t>(id)]; }
  // Raw bytes of a regular id (empty for specials and out-of-range ids).
  std::string_view token_bytes(int64_t id) const;

  std::string decode(const int64_t* ids, size_t n) const;
  std::string decode(const std::vector<int64_t>& ids) const { return decode(ids.data(), ids.size()); }

 private:
  int64_t vocab_size_ = 0;
  int64_t num_special_ = 0;
  std::vector<std::string> specials_;
  std::unordered_map<std::string, int64_t> special_ids_;
  std::string blob_;                 // all regular token bytes, concatenated
  std::vector<uint32_t> offsets_;    // rank r -> blob_[offsets_[r], offsets_[r+1])
};

// Incremental decode: concatenating every push() and finish() result gives exactly Tekken::decode(ids).
// Only complete UTF-8 is released; bytes of a character still being spelled out are held back.
class TekkenStreamer {
 public:
  explicit TekkenStreamer(const Tekken& tok) : tok_(tok) {}
  std::string push(int64_t id);
  std::string finish();  // end of ids: releases (as U+FFFD) any dangling partial character
  void reset() { pending_.clear(); }

 private:
  const Tekken& tok_;
  std::string pending_;  // undecided tail of the current run of regular ids
};

// Python's bytes.decode("utf-8", errors="replace"), re-encoded as UTF-8 (U+FFFD per maximal invalid subpart).
std::string utf8_decode_replace(std::string_view bytes);
// Length of the longest prefix whose replace-decoding cannot change when more bytes are appended
// (everything but a trailing, still-valid incomplete sequence).
size_t utf8_stable_prefix(std::string_view bytes);

// Standard base64 (RFC 4648, '=' padding). False on invalid input.
bool base64_decode(std::string_view in, std::string* out);

}  // namespace voxtral_rt::detail
