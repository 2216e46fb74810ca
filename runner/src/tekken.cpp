#include "tekken.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace voxtral_rt::detail {
namespace {

// mistral_common Tekkenizer.DEPRECATED_SPECIAL_TOKENS (used when a legacy file has no `special_tokens`).
const char* const kDeprecatedSpecials[] = {
    "<unk>",          "<s>",           "</s>",           "[INST]",           "[/INST]",
    "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]",
    "[IMG]",          "<pad>",         "[IMG_BREAK]",    "[IMG_END]",        "[PREFIX]",
    "[MIDDLE]",       "[SUFFIX]",      "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
};

// Continuation-byte range allowed right after lead byte b (Unicode Table 3-7), and the sequence length.
bool utf8_lead(unsigned char b, int* need, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    *need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    *need = 2;
    if (b == 0xE0) *lo = 0xA0;
    if (b == 0xED) *hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    *need = 3;
    if (b == 0xF0) *lo = 0x90;
    if (b == 0xF4) *hi = 0x8F;
  } else {
    return false;
  }
  return true;
}

// Number of valid continuation bytes after the lead at s[i] (<= need).
int utf8_valid_continuations(std::string_view s, size_t i, int need, unsigned char lo, unsigned char hi) {
  int k = 0;
  while (k < need && i + 1 + k < s.size()) {
    const auto c = static_cast<unsigned char>(s[i + 1 + k]);
    const bool ok = (k == 0) ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) break;
    ++k;
  }
  return k;
}

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// "v13" -> 13; -1 if not of that form.
int version_number(const std::string& v) {
  if (v.size() < 2 || v[0] != 'v') return -1;
  int n = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] < '0' || v[i] > '9') return i > 1 ? n : -1;  // "v7m1" -> 7
    n = n * 10 + (v[i] - '0');
  }
  return n;
}

}  // namespace

bool base64_decode(std::string_view in, std::string* out) {
  out->clear();
  if (in.size() % 4 != 0) return false;
  out->reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int n_pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++n_pad;
      } else {
        if (n_pad) return false;  // data after padding
        v[k] = b64_value(c);
        if (v[k] < 0) return false;
      }
    }
    const uint32_t triple = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out->push_back(static_cast<char>((triple >> 16) & 0xFF));
    if (n_pad < 2) out->push_back(static_cast<char>((triple >> 8) & 0xFF));
    if (n_pad < 1) out->push_back(static_cast<char>(triple & 0xFF));
  }
  return true;
}

std::string utf8_decode_replace(std::string_view s) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    int need;
    unsigned char lo, hi;
    if (!utf8_lead(b, &need, &lo, &hi)) {
      out += kReplacement;
      ++i;
      continue;
    }
    const int k = utf8_valid_continuations(s, i, need, lo, hi);
    if (k == need) {
      out.append(s.data() + i, static_cast<size_t>(need) + 1);
    } else {
      out += kReplacement;  // one U+FFFD for the maximal subpart (lead + valid continuations)
    }
    i += static_cast<size_t>(k) + 1;
  }
  return out;
}

size_t utf8_stable_prefix(std::string_view s) {
  // A trailing lead byte followed only by valid continuations (fewer than needed) may still complete.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t i = n - back;
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation: keep looking for its lead
    int need;
    unsigned char lo, hi;
    if (!utf8_lead(b, &need, &lo, &hi)) return n;  // ASCII or invalid lead: all decided
    const int k = utf8_valid_continuations(s, i, need, lo, hi);
    if (static_cast<size_t>(k) == back - 1 && k < need) return i;  // valid but incomplete tail
    return n;
  }
  return n;
}

Status Tekken::from_file(const std::string& path, std::unique_ptr<Tekken>* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::error(path + ": cannot open tokenizer file");
  std::stringstream ss;
  ss << f.rdbuf();
  if (!f.good() && !f.eof()) return Status::error(path + ": read error");
  return from_json_text(ss.str(), path, out);
}

Status Tekken::from_json_text(const std::string& text, const std::string& where, std::unique_ptr<Tekken>* out) {
  using nlohmann::json;
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::error(where + ": not valid JSON (expected a tekken.json)");
  auto err = [&](const std::string& what) { return Status::error(where + ": " + what + " (not a tekken.json?)"); };

  const auto cfg = j.find("config");
  if (cfg == j.end() || !cfg->is_object()) return err("missing 'config'");
  auto get_int = [&](const char* key, int64_t* v) -> bool {
    auto it = cfg->find(key);
    if (it == cfg->end() || !it->is_number_integer()) return false;
    *v = it->get<int64_t>();
    return true;
  };
  auto tok = std::unique_ptr<Tekken>(new Tekken());  // private constructor: make_unique can't reach it
  if (!get_int("default_vocab_size", &tok->vocab_size_)) return err("missing config.default_vocab_size");
  if (!get_int("default_num_special_tokens", &tok->num_special_)) return err("missing config.default_num_special_tokens");
  if (tok->num_special_ <= 0 || tok->vocab_size_ <= tok->num_special_)
    return err("config.default_vocab_size must exceed config.default_num_special_tokens");
  std::string version;
  if (auto it = cfg->find("version"); it != cfg->end() && it->is_string()) version = it->get<std::string>();

  // ---- special tokens
  tok->specials_.resize(static_cast<size_t>(tok->num_special_));
  std::vector<bool> named(tok->specials_.size(), false);
  auto set_special = [&](int64_t rank, const std::string& name) -> Status {
    if (rank < 0 || rank >= tok->num_special_)
      return err("special token '" + name + "' has rank " + std::to_string(rank) + " outside [0, num_special)");
    if (named[static_cast<size_t>(rank)]) return err("two special tokens with rank " + std::to_string(rank));
    named[static_cast<size_t>(rank)] = true;
    tok->specials_[static_cast<size_t>(rank)] = name;
    return Status();
  };
  if (auto it = j.find("special_tokens"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return err("'special_tokens' is not a list");
    for (const auto& s : *it) {
      auto r = s.find("rank");
      auto n = s.find("token_str");
      if (!s.is_object() || r == s.end() || n == s.end() || !r->is_number_integer() || !n->is_string())
        return err("special_tokens entries need integer 'rank' and string 'token_str'");
      VX_RETURN_IF_ERROR(set_special(r->get<int64_t>(), n->get<std::string>()));
    }
  } else {
    const int v = version_number(version);
    if (v < 0 || v > 7)
      return err("no 'special_tokens' list (required for tokenizer version " + (version.empty() ? "?" : version) +
                 " > v7)");
    int64_t rank = 0;
    for (const char* name : kDeprecatedSpecials) VX_RETURN_IF_ERROR(set_special(rank++, name));
  }
  for (size_t r = 0; r < named.size(); ++r) {
    if (!named[r]) tok->specials_[r] = "<SPECIAL_" + std::to_string(r) + ">";
  }
  for (size_t r = 0; r < tok->specials_.size(); ++r) {
    if (!tok->special_ids_.emplace(tok->specials_[r], static_cast<int64_t>(r)).second)
      return err("duplicate special token '" + tok->specials_[r] + "'");
  }

  // ---- regular vocabulary: ranks 0 .. vocab_size - num_special - 1
  const auto vocab = j.find("vocab");
  if (vocab == j.end() || !vocab->is_array()) return err("missing 'vocab' list");
  const auto n_inner = static_cast<size_t>(tok->vocab_size_ - tok->num_special_);
  if (vocab->size() < n_inner)
    return err("'vocab' has " + std::to_string(vocab->size()) + " entries, fewer than default_vocab_size - "
               "default_num_special_tokens = " + std::to_string(n_inner));
  tok->offsets_.reserve(n_inner + 1);
  tok->offsets_.push_back(0);
  std::string bytes;
  for (size_t r = 0; r < n_inner; ++r) {
    const auto& e = (*vocab)[r];
    auto rank = e.find("rank");
    auto tb = e.find("token_bytes");
    if (!e.is_object() || rank == e.end() || tb == e.end() || !tb->is_string())
      return err("vocab entry " + std::to_string(r) + " needs 'rank' and 'token_bytes'");
    if (!rank->is_number_integer() || rank->get<int64_t>() != static_cast<int64_t>(r))
      return err("vocab entry " + std::to_string(r) + " has rank != its index");
    if (!base64_decode(tb->get_ref<const std::string&>(), &bytes))
      return err("vocab entry " + std::to_string(r) + ": token_bytes is not valid base64");
    tok->blob_ += bytes;
    if (tok->blob_.size() > UINT32_MAX) return err("vocabulary too large");
    tok->offsets_.push_back(static_cast<uint32_t>(tok->blob_.size()));
  }
  *out = std::move(tok);
  return Status();
}

int64_t Tekken::special_id(const std::string& name) const {
  auto it = special_ids_.find(name);
  return it == special_ids_.end() ? -1 : it->second;
}

std::string_view Tekken::token_bytes(int64_t id) const {
  if (id < num_special_ || id >= vocab_size_) return {};
  const auto r = static_cast<size_t>(id - num_special_);
  return std::string_view(blob_).substr(offsets_[r], offsets_[r + 1] - offsets_[r]);
}

std::string Tekken::decode(const int64_t* ids, size_t n) const {
  std::string out, run;
  for (size_t i = 0; i < n; ++i) {
    if (is_special(ids[i])) {
      out += utf8_decode_replace(run);
      run.clear();
    } else {
      run += token_bytes(ids[i]);
    }
  }
  out += utf8_decode_replace(run);
  return out;
}

std::string TekkenStreamer::push(int64_t id) {
  if (tok_.is_special(id)) return finish();  // a special id ends the run
  pending_ += tok_.token_bytes(id);
  const size_t n = utf8_stable_prefix(pending_);
  std::string out = utf8_decode_replace(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string TekkenStreamer::finish() {
  std::string out = utf8_decode_replace(pending_);
  pending_.clear();
  return out;
}

}  // namespace voxtral_rt::detail
