// Output formats of the CLI (json, srt, vtt, jsonl events), kept out of main.cpp so the unit tests can check them.
// Python twin: voxtral_rt/output.py (same functions and keys; tests compare the two byte for byte).
//
// jsonl events, one JSON object per line, named after OpenAI's streaming transcription events
// (`transcript.text.delta` / `.segment` / `.done` of the audio transcriptions API):
//   {"type": "transcript.text.delta", "delta": " go", "time_ms": 5200.0}           text released by one token
//   {"type": "transcript.text.segment", "id": "seg_0", "text": " go left", "start_ms": .., "end_ms": .., "words": [..]}
//   {"type": "transcript.text.done", "text": .., "delay_ms": .., "audio_ms": .., "finished": .., "stats": {..}}
// Unlike OpenAI's segment `start`/`end` (seconds), times are in ms, named with their unit as everywhere here.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt::detail {

nlohmann::ordered_json word_json(const Word& w);          // {"text", "start_ms", "end_ms"}
nlohmann::ordered_json segment_json(const Segment& s);    // {"text", "start_ms", "end_ms", "words": [...]}
nlohmann::ordered_json segments_json(const std::vector<Segment>& segments);

nlohmann::ordered_json delta_event(const std::string& delta, double time_ms);
nlohmann::ordered_json segment_event(int64_t index, const Segment& s);  // "id": "seg_<index>"
// A JSON value as one line (invalid UTF-8 replaced, so a line is always valid JSON).
std::string json_line(const nlohmann::ordered_json& j);

// "HH:MM:SS,mmm" (SRT) / "HH:MM:SS.mmm" (WebVTT), rounded to the ms; hours grow past 99 if need be.
std::string srt_time(double ms);
std::string vtt_time(double ms);
// Cue text: the segment's text with every run of ASCII whitespace made one space, trimmed (a blank line
// would end the cue).
std::string cue_text(const std::string& text);
// One cue, ending in a blank line. SRT numbers cues from 1; WebVTT escapes & < > (cue text markup).
std::string srt_cue(int64_t number, const Segment& s);
std::string vtt_cue(const Segment& s);
constexpr const char* kVttHeader = "WEBVTT\n\n";

}  // namespace voxtral_rt::detail
