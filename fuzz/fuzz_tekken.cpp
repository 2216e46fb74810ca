// The tokenizer: tekken.json loading and decoding. Byte 0 picks the mode:
//   even: the rest is a tekken.json text -> Tekken::from_json_text; if it loads, decode ids taken from the
//         input's tail (including out-of-range and special ids) and check that the incremental streamer
//         releases exactly Tekken::decode's text.
//   odd:  the rest is a sequence of token bytes for a fixed byte-level vocabulary -> the same streamer
//         invariant on arbitrary (invalid, truncated, overlong) UTF-8, plus utf8/base64 helpers.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tekken.h"

using voxtral_rt::detail::Tekken;
using voxtral_rt::detail::TekkenStreamer;

namespace {

const int kSpecial = 4;  // <unk> <s> </s> [X]

// One token per byte value (ids kSpecial..kSpecial+255), so any byte string is an id sequence.
const Tekken& byte_tokenizer() {
  static const std::unique_ptr<Tekken> tok = [] {
    static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    nlohmann::json j;
    j["config"] = {{"default_vocab_size", kSpecial + 256}, {"default_num_special_tokens", kSpecial}, {"version", "v13"}};
    j["special_tokens"] = nlohmann::json::array();
    const char* names[] = {"<unk>", "<s>", "</s>", "[X]"};
    for (int r = 0; r < kSpecial; ++r) j["special_tokens"].push_back({{"rank", r}, {"token_str", names[r]}});
    j["vocab"] = nlohmann::json::array();
    for (int b = 0; b < 256; ++b) {
      std::string enc = {tbl[b >> 2], tbl[(b & 3) << 4], '=', '='};
      j["vocab"].push_back({{"rank", b}, {"token_bytes", enc}});
    }
    std::unique_ptr<Tekken> t;
    if (!Tekken::from_json_text(j.dump(), "bytes.json", &t).ok()) __builtin_trap();
    return t;
  }();
  return *tok;
}

void check_streamer(const Tekken& tok, const std::vector<int64_t>& ids) {
  TekkenStreamer st(tok);
  std::string streamed;
  for (int64_t id : ids) streamed += st.push(id);
  streamed += st.finish();
  if (streamed != tok.decode(ids)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    std::unique_ptr<Tekken> tok;
    const auto s = Tekken::from_json_text(std::string(rest), "fuzz.json", &tok);
    if (!s.ok()) {
      if (s.message().find("fuzz.json") == std::string::npos) __builtin_trap();  // errors name the file
      return 0;
    }
    if (tok->vocab_size() <= tok->num_special_tokens() || tok->num_special_tokens() <= 0) __builtin_trap();
    // ids from the last bytes, spread over [-2, vocab + 2)
    std::vector<int64_t> ids;
    const int64_t span = tok->vocab_size() + 4;
    for (size_t i = size > 64 ? size - 64 : 1; i + 1 < size; i += 2)
      ids.push_back(static_cast<int64_t>((data[i] | (data[i + 1] << 8)) % span) - 2);
    check_streamer(*tok, ids);
    for (int64_t id = 0; id < tok->num_special_tokens() && id < 64; ++id) {
      const std::string& name = tok->special_name(id);
      if (tok->special_id(name) != id) __builtin_trap();
    }
    return 0;
  }
  const Tekken& tok = byte_tokenizer();
  std::vector<int64_t> ids;
  for (size_t i = 1; i < size; ++i) {
    // 0xFF 0xNN escapes a special id (NN % kSpecial), to split runs
    if (data[i] == 0xFF && i + 1 < size) {
      ids.push_back(data[++i] % kSpecial);
    } else {
      ids.push_back(kSpecial + data[i]);
    }
  }
  check_streamer(tok, ids);
  // helpers on the raw bytes
  const std::string out = voxtral_rt::detail::utf8_decode_replace(rest);
  if (voxtral_rt::detail::utf8_decode_replace(out) != out) __builtin_trap();  // output is valid UTF-8
  const size_t p = voxtral_rt::detail::utf8_stable_prefix(rest);
  if (p > rest.size() || rest.size() - p > 3) __builtin_trap();
  std::string b;
  voxtral_rt::detail::base64_decode(rest, &b);
  return 0;
}
