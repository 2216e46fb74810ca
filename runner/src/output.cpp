// CLI output formats (output.h); Python twin: voxtral_rt/output.py.
#include "output.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>

namespace voxtral_rt::detail {

nlohmann::ordered_json word_json(const Word& w) {
  return nlohmann::ordered_json{{"text", w.text}, {"start_ms", w.start_ms}, {"end_ms", w.end_ms}};
}

nlohmann::ordered_json segment_json(const Segment& s) {
  nlohmann::ordered_json words = nlohmann::ordered_json::array();
  for (const Word& w : s.words) words.push_back(word_json(w));
  return nlohmann::ordered_json{{"text", s.text}, {"start_ms", s.start_ms}, {"end_ms", s.end_ms}, {"words", std::move(words)}};
}

nlohmann::ordered_json segments_json(const std::vector<Segment>& segments) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const Segment& s : segments) out.push_back(segment_json(s));
  return out;
}

nlohmann::ordered_json delta_event(const std::string& delta, double time_ms) {
  return nlohmann::ordered_json{{"type", "transcript.text.delta"}, {"delta", delta}, {"time_ms", time_ms}};
}

nlohmann::ordered_json segment_event(int64_t index, const Segment& s) {
  nlohmann::ordered_json j{{"type", "transcript.text.segment"}, {"id", "seg_" + std::to_string(index)}};
  j.update(segment_json(s));
  return j;
}

std::string json_line(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

namespace {

std::string clock_time(double ms, char sep) {
  const int64_t t = std::llround(std::max(0.0, ms));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%02" PRId64 ":%02" PRId64 ":%02" PRId64 "%c%03" PRId64, t / 3600000,
                t / 60000 % 60, t / 1000 % 60, sep, t % 1000);
  return buf;
}

}  // namespace

std::string srt_time(double ms) { return clock_time(ms, ','); }
std::string vtt_time(double ms) { return clock_time(ms, '.'); }

std::string cue_text(const std::string& text) {
  std::string out;
  bool space = false;
  for (const char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

std::string srt_cue(int64_t number, const Segment& s) {
  return std::to_string(number) + "\n" + srt_time(s.start_ms) + " --> " + srt_time(s.end_ms) + "\n" +
         cue_text(s.text) + "\n\n";
}

std::string vtt_cue(const Segment& s) {
  std::string text;
  for (const char c : cue_text(s.text)) {
    if (c == '&') {
      text += "&amp;";
    } else if (c == '<') {
      text += "&lt;";
    } else if (c == '>') {
      text += "&gt;";
    } else {
      text += c;
    }
  }
  return vtt_time(s.start_ms) + " --> " + vtt_time(s.end_ms) + "\n" + text + "\n\n";
}

}  // namespace voxtral_rt::detail
