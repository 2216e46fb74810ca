// Words and segments from the generated tokens, built incrementally as the tokens come.
// Python twin: voxtral_rt/transcript.py (same rules, same names; tests compare the two on the demo model).
//
// Input per token: its kind (text, [STREAMING_PAD], EOS, another special), whether its bytes start with
// whitespace, the text it released (Tekken streamer: complete UTF-8 only) and its delay-corrected time.
//
//   word     = the text between word boundaries. A boundary is a special token (PAD, [STREAMING_WORD], EOS, ...)
//              or a text token whose bytes start with ASCII whitespace (tekken's " word" tokens). A word whose
//              text is only whitespace is no word (its text is dropped from the segments).
//   end_ms   = the time of the word's first token. The model emits a word's first token once it has heard the
//              word's end plus the delay (tools/train_demo.py "Targets"), so the true end lies in
//              (end_ms - 80, end_ms]; later tokens of the word follow one per position and carry no timing.
//   start_ms = the previous word's end_ms (0 for the first word), but at most max_word_ms before end_ms: the
//              token stream says where a word ends, never where it starts.
//   segment  = consecutive words. It ends when a run of PAD reaches pause_ms (0 = never), after a word whose
//              text ends a sentence (. ? ! ... optionally followed by closing quotes/brackets), at an EOS, and
//              at finish(). Its times are its first word's start and its last word's end.
// docs/design.md "Words and segments" explains the choices and the accuracy limits.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt::detail {

enum class TokenKind { Text, Pad, Eos, OtherSpecial };

struct TranscriptConfig {
  double pause_ms = 640;       // a PAD run this long ends a segment; 0 = never
  double ms_per_token = 80;    // one PAD = this much audio
  double max_word_ms = 1000;   // longest assumed word: bounds a start after a pause
  int64_t max_history = 0;     // 0 = keep every finished word/segment; N = the last N..2N of each
  SegmentCallback on_segment;  // called for every finished segment
};

// True if the UTF-8 text (whitespace-stripped) ends a sentence: its last character, after closing quotes and
// brackets, is one of . ? ! ... (U+2026) and the CJK/fullwidth 。？！.
bool ends_sentence(const std::string& word);
// `s` without leading and trailing ASCII whitespace (space, \t, \n, \v, \f, \r).
std::string strip_ascii_space(const std::string& s);
// A text token that starts a word: its bytes start with ASCII whitespace.
bool starts_with_ascii_space(std::string_view bytes);

class TranscriptBuilder {
 public:
  explicit TranscriptBuilder(TranscriptConfig cfg = {}) : cfg_(std::move(cfg)) {}

  // One generated token. `starts_word`: a text token whose bytes start with whitespace (ignored otherwise).
  void push(TokenKind kind, bool starts_word, const std::string& text, double time_ms);
  // End of the stream: the open word and segment are finished. Idempotent; a later push() starts anew.
  void finish();
  void reset();

  std::vector<Word> words() const;         // finished words + the open one (if it has text)
  std::vector<Segment> segments() const;   // finished segments + the open one (if it has words)
  int64_t n_finished_segments() const { return n_finished_segments_; }  // counts trimmed ones too

 private:
  struct OpenWord {
    std::string raw;  // released text, leading whitespace included
    double start_ms = 0, end_ms = 0;
    bool active = false;
  };
  void close_word();     // the open word is finished: into the open segment (if it has text)
  void close_segment();  // the open segment is finished: on_segment, into segments_
  void start_word(double time_ms);
  static Word as_word(const OpenWord& w);

  TranscriptConfig cfg_;
  OpenWord word_;
  Segment segment_;             // open segment (empty words = none)
  double prev_end_ms_ = 0;      // end of the last finished word
  int64_t pad_run_ = 0;         // PAD tokens since the last other token
  std::vector<Word> words_;     // finished words
  std::vector<Segment> segments_;  // finished segments
  int64_t n_finished_segments_ = 0;
};

}  // namespace voxtral_rt::detail
