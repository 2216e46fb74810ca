"""Output formats of `python -m voxtral_rt transcribe` (json, srt, vtt, jsonl events), the same bytes and keys as the
C++ runner's. C++ twin: runner/src/output.{h,cpp}.

jsonl events, one JSON object per line, named after OpenAI's streaming transcription events
(`transcript.text.delta` / `.segment` / `.done` of the audio transcriptions API):

    {"type": "transcript.text.delta", "delta": " go", "time_ms": 5200.0}      text released by one token
    {"type": "transcript.text.segment", "id": "seg_0", "text": " go left", "start_ms": .., "end_ms": .., "words": [..]}
    {"type": "transcript.text.done", "text": .., "delay_ms": .., "audio_ms": .., "finished": .., "stats": {..}}

Unlike OpenAI's segment `start`/`end` (seconds), times are in ms, named with their unit as everywhere here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

from .transcript import Segment, Word

FORMATS = ("text", "json", "srt", "vtt", "jsonl")
VTT_HEADER = "WEBVTT\n\n"
_SPACES = re.compile(r"[ \t\n\v\f\r]+")


def word_json(w: Word) -> dict:
    return w.to_dict()  # {"text", "start_ms", "end_ms"}


def segment_json(s: Segment) -> dict:
    return s.to_dict()  # {"text", "start_ms", "end_ms", "words": [...]}


def segments_json(segments: Iterable[Segment]) -> list[dict]:
    return [segment_json(s) for s in segments]


def delta_event(delta: str, time_ms: float) -> dict:
    return {"type": "transcript.text.delta", "delta": delta, "time_ms": float(time_ms)}


def segment_event(index: int, s: Segment) -> dict:
    return {"type": "transcript.text.segment", "id": f"seg_{index}", **segment_json(s)}


def json_line(obj: Any) -> str:
    """One JSON value on one line, compact and UTF-8 as the runner writes it (nlohmann's dump)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def _clock(ms: float, sep: str) -> str:
    t = int(math.floor(max(0.0, ms) + 0.5))  # C++ llround for t >= 0
    return f"{t // 3600000:02d}:{t // 60000 % 60:02d}:{t // 1000 % 60:02d}{sep}{t % 1000:03d}"


def srt_time(ms: float) -> str:
    """HH:MM:SS,mmm"""
    return _clock(ms, ",")


def vtt_time(ms: float) -> str:
    """HH:MM:SS.mmm"""
    return _clock(ms, ".")


def cue_text(text: str) -> str:
    """Every run of ASCII whitespace made one space, trimmed (a blank line would end the cue)."""
    return _SPACES.sub(" ", text).strip(" ")


def srt_cue(number: int, s: Segment) -> str:
    return f"{number}\n{srt_time(s.start_ms)} --> {srt_time(s.end_ms)}\n{cue_text(s.text)}\n\n"


def vtt_cue(s: Segment) -> str:
    text = cue_text(s.text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"{vtt_time(s.start_ms)} --> {vtt_time(s.end_ms)}\n{text}\n\n"
