// Words and segments (transcript.h); Python twin: voxtral_rt/transcript.py.
#include "transcript.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>

namespace voxtral_rt::detail {

namespace {

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Closing quotes and brackets that may follow a sentence end ("Stop." / (Really?) / «Non !»).
const char* const kClosers[] = {"\"", "'", ")", "]", "}", "\u201d", "\u2019", "\u00bb", "\u300d", "\u300f"};
// Sentence ends: ASCII, the ellipsis character, CJK and fullwidth forms.
const char* const kSentenceEnds[] = {".", "?", "!", "\u2026", "\u3002", "\uff1f", "\uff01"};

// Keep the last `cap` of `v` once it holds 2 * cap (amortised O(1), as Stream::trim_history).
template <typename T>
void trim(std::vector<T>* v, int64_t cap) {
  if (cap <= 0 || v->size() < 2 * static_cast<size_t>(cap)) return;
  v->erase(v->begin(), v->begin() + static_cast<std::ptrdiff_t>(v->size() - static_cast<size_t>(cap)));
}

}  // namespace

bool starts_with_ascii_space(std::string_view bytes) { return !bytes.empty() && is_ascii_space(bytes[0]); }

std::string strip_ascii_space(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_ascii_space(s[b])) ++b;
  while (e > b && is_ascii_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool ends_sentence(const std::string& word) {
  std::string w = strip_ascii_space(word);
  for (bool stripped = true; stripped;) {
    stripped = false;
    for (const char* c : kClosers) {
      if (ends_with(w, c)) {
        w.resize(w.size() - std::strlen(c));
        stripped = true;
      }
    }
  }
  return std::any_of(std::begin(kSentenceEnds), std::end(kSentenceEnds), [&](const char* e) { return ends_with(w, e); });
}

Word TranscriptBuilder::as_word(const OpenWord& w) {
  Word out;
  out.text = strip_ascii_space(w.raw);
  out.start_ms = w.start_ms;
  out.end_ms = w.end_ms;
  return out;
}

void TranscriptBuilder::start_word(double time_ms) {
  word_ = OpenWord();
  word_.active = true;
  word_.end_ms = time_ms;  // the first token's time: the word has been heard to its end
  word_.start_ms = std::max(prev_end_ms_, time_ms - cfg_.max_word_ms);
}

void TranscriptBuilder::close_word() {
  if (!word_.active) return;
  word_.active = false;
  Word w = as_word(word_);
  if (w.text.empty()) return;  // whitespace only: no word
  prev_end_ms_ = w.end_ms;
  segment_.text += word_.raw;
  segment_.words.push_back(w);
  const bool sentence_end = ends_sentence(w.text);
  words_.push_back(std::move(w));
  trim(&words_, cfg_.max_history);
  if (sentence_end) close_segment();
}

void TranscriptBuilder::close_segment() {
  if (segment_.words.empty()) return;
  segment_.start_ms = segment_.words.front().start_ms;
  segment_.end_ms = segment_.words.back().end_ms;
  ++n_finished_segments_;
  segments_.push_back(std::move(segment_));
  segment_ = Segment();
  if (cfg_.on_segment) cfg_.on_segment(segments_.back());
  trim(&segments_, cfg_.max_history);
}

void TranscriptBuilder::push(TokenKind kind, bool starts_word, const std::string& text, double time_ms) {
  if (kind == TokenKind::Text) {
    pad_run_ = 0;
    if (starts_word || !word_.active) {
      close_word();
      start_word(time_ms);
    }
    word_.raw += text;
    return;
  }
  // A special token ends the word. Its text can only be the U+FFFD of a character left incomplete by the word's
  // last token (the tokenizer decodes each run of text tokens on its own): it belongs to that word.
  if (word_.active) word_.raw += text;
  close_word();
  if (kind == TokenKind::Pad) {
    ++pad_run_;
    if (cfg_.pause_ms > 0 && static_cast<double>(pad_run_) * cfg_.ms_per_token >= cfg_.pause_ms) close_segment();
  } else {
    pad_run_ = 0;
    if (kind == TokenKind::Eos) close_segment();
  }
}

void TranscriptBuilder::finish() {
  close_word();
  close_segment();
  pad_run_ = 0;
}

void TranscriptBuilder::reset() {
  word_ = OpenWord();
  segment_ = Segment();
  prev_end_ms_ = 0;
  pad_run_ = 0;
  words_.clear();
  segments_.clear();
  n_finished_segments_ = 0;
}

std::vector<Word> TranscriptBuilder::words() const {
  std::vector<Word> out = words_;
  if (word_.active) {
    Word w = as_word(word_);
    if (!w.text.empty()) out.push_back(std::move(w));
  }
  return out;
}

std::vector<Segment> TranscriptBuilder::segments() const {
  std::vector<Segment> out = segments_;
  Segment open = segment_;
  if (word_.active) {
    Word w = as_word(word_);
    if (!w.text.empty()) {
      open.text += word_.raw;
      open.words.push_back(std::move(w));
    }
  }
  if (!open.words.empty()) {
    open.start_ms = open.words.front().start_ms;
    open.end_ms = open.words.back().end_ms;
    out.push_back(std::move(open));
  }
  return out;
}

}  // namespace voxtral_rt::detail
