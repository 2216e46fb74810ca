"""Words and segments from the generated tokens, built incrementally as the tokens come.

C++ twin: runner/src/transcript.{h,cpp} (same rules, same names; tests compare the two on the demo model).

Input per token: its kind (text, [STREAMING_PAD], EOS, another special), whether its bytes start with whitespace,
the text it released (`TextStream`: complete UTF-8 only) and its delay-corrected time.

* word: the text between word boundaries. A boundary is a special token (PAD, [STREAMING_WORD], EOS, ...) or a
  text token whose bytes start with ASCII whitespace (tekken's " word" tokens). A word whose text is only
  whitespace is no word (its text is dropped from the segments).
* end_ms: the time of the word's first token. The model emits a word's first token once it has heard the word's
  end plus the delay (tools/train_demo.py "Targets"), so the true end lies in (end_ms - 80, end_ms]; later tokens
  of the word follow one per position and carry no timing.
* start_ms: the previous word's end_ms (0 for the first word), but at most max_word_ms before end_ms: the token
  stream says where a word ends, never where it starts.
* segment: consecutive words. It ends when a run of PAD reaches pause_ms (0 = never), after a word whose text ends
  a sentence (. ? ! ... optionally followed by closing quotes/brackets), at an EOS, and at finish(). Its times are
  its first word's start and its last word's end.

docs/design.md "Words and segments" explains the choices and the accuracy limits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .tokenizer import Tekken

__all__ = ["Word", "Segment", "TokenKind", "TranscriptBuilder", "token_kind", "words_and_segments", "ends_sentence",
           "DEFAULT_PAUSE_MS", "MAX_WORD_MS"]

DEFAULT_PAUSE_MS = 640  # SessionOptions::segment_pause_ms
MAX_WORD_MS = 1000.0  # TranscriptConfig::max_word_ms

_ASCII_SPACE = " \t\n\v\f\r"
# Closing quotes and brackets that may follow a sentence end; the sentence ends (ASCII, ellipsis, CJK/fullwidth).
_CLOSERS = ('"', "'", ")", "]", "}", "\u201d", "\u2019", "\u00bb", "\u300d", "\u300f")
_SENTENCE_ENDS = (".", "?", "!", "\u2026", "\u3002", "\uff1f", "\uff01")


@dataclass
class Word:
    text: str  # without surrounding whitespace
    start_ms: float = 0.0
    end_ms: float = 0.0

    def to_dict(self) -> dict:
        return {"text": self.text, "start_ms": self.start_ms, "end_ms": self.end_ms}


@dataclass
class Segment:
    text: str = ""  # its words as in the transcript (leading space kept, as whisper's segments)
    start_ms: float = 0.0
    end_ms: float = 0.0
    words: list[Word] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "start_ms": self.start_ms, "end_ms": self.end_ms,
                "words": [w.to_dict() for w in self.words]}


class TokenKind(enum.Enum):
    TEXT = 0
    PAD = 1
    EOS = 2
    OTHER_SPECIAL = 3


def strip_ascii_space(s: str) -> str:
    return s.strip(_ASCII_SPACE)


def ends_sentence(word: str) -> bool:
    """The (whitespace-stripped) word ends a sentence: its last character, after closing quotes and brackets,
    is . ? ! ... (U+2026) or the CJK/fullwidth forms."""
    w = strip_ascii_space(word)
    stripped = True
    while stripped:
        stripped = False
        for c in _CLOSERS:
            if w.endswith(c):
                w = w[: -len(c)]
                stripped = True
    return w.endswith(_SENTENCE_ENDS)


def token_kind(tok: Tekken, token_id: int) -> tuple[TokenKind, bool]:
    """(kind, starts_word) of a generated id; starts_word: a text token whose bytes start with ASCII whitespace."""
    if token_id == tok.streaming_pad_id:
        return TokenKind.PAD, False
    if token_id == tok.eos_id:
        return TokenKind.EOS, False
    if tok.is_special(token_id):
        return TokenKind.OTHER_SPECIAL, False
    b = tok.token_bytes(token_id)
    return TokenKind.TEXT, bool(b) and chr(b[0]) in _ASCII_SPACE


class TranscriptBuilder:
    """Incremental words and segments (C++ twin: detail::TranscriptBuilder)."""

    def __init__(self, pause_ms: float = DEFAULT_PAUSE_MS, ms_per_token: float = 80.0, max_word_ms: float = MAX_WORD_MS,
                 on_segment: Callable[[Segment], None] | None = None) -> None:
        if pause_ms < 0:
            raise ValueError(f"segment pause must be >= 0 ms (0 = never end a segment at a pause), got {pause_ms}")
        self.pause_ms = pause_ms
        self.ms_per_token = ms_per_token
        self.max_word_ms = max_word_ms
        self.on_segment = on_segment
        self.reset()

    def reset(self) -> None:
        self._word_raw = ""
        self._word_start = self._word_end = 0.0
        self._word_active = False
        self._segment = Segment()
        self._prev_end = 0.0
        self._pad_run = 0
        self._words: list[Word] = []
        self._segments: list[Segment] = []

    # ---- input

    def push(self, kind: TokenKind, starts_word: bool, text: str, time_ms: float) -> None:
        if kind is TokenKind.TEXT:
            self._pad_run = 0
            if starts_word or not self._word_active:
                self._close_word()
                self._start_word(time_ms)
            self._word_raw += text
            return
        # A special token ends the word. Its text can only be the U+FFFD of a character left incomplete by the
        # word's last token (each run of text tokens is decoded on its own): it belongs to that word.
        if self._word_active:
            self._word_raw += text
        self._close_word()
        if kind is TokenKind.PAD:
            self._pad_run += 1
            if self.pause_ms > 0 and self._pad_run * self.ms_per_token >= self.pause_ms:
                self._close_segment()
        else:
            self._pad_run = 0
            if kind is TokenKind.EOS:
                self._close_segment()

    def finish(self) -> None:
        """End of the stream: the open word and segment are finished. Idempotent."""
        self._close_word()
        self._close_segment()
        self._pad_run = 0

    # ---- output

    def words(self) -> list[Word]:
        """Finished words + the open one (if it has text)."""
        out = list(self._words)
        w = self._open_word()
        if w is not None:
            out.append(w)
        return out

    def segments(self) -> list[Segment]:
        """Finished segments + the open one (if it has words)."""
        out = list(self._segments)
        seg = Segment(self._segment.text, 0.0, 0.0, list(self._segment.words))
        w = self._open_word()
        if w is not None:
            seg.text += self._word_raw
            seg.words.append(w)
        if seg.words:
            seg.start_ms, seg.end_ms = seg.words[0].start_ms, seg.words[-1].end_ms
            out.append(seg)
        return out

    # ---- internals

    def _open_word(self) -> Word | None:
        if not self._word_active:
            return None
        text = strip_ascii_space(self._word_raw)
        return Word(text, self._word_start, self._word_end) if text else None

    def _start_word(self, time_ms: float) -> None:
        self._word_active = True
        self._word_raw = ""
        self._word_end = float(time_ms)  # the first token's time: the word has been heard to its end
        self._word_start = max(self._prev_end, self._word_end - self.max_word_ms)

    def _close_word(self) -> None:
        if not self._word_active:
            return
        self._word_active = False
        w = Word(strip_ascii_space(self._word_raw), self._word_start, self._word_end)
        if not w.text:
            return  # whitespace only: no word
        self._prev_end = w.end_ms
        self._segment.text += self._word_raw
        self._segment.words.append(w)
        self._words.append(w)
        if ends_sentence(w.text):
            self._close_segment()

    def _close_segment(self) -> None:
        seg = self._segment
        if not seg.words:
            return
        seg.start_ms, seg.end_ms = seg.words[0].start_ms, seg.words[-1].end_ms
        self._segments.append(seg)
        self._segment = Segment()
        if self.on_segment is not None:
            self.on_segment(seg)


class TokenFeeder:
    """Drives a TranscriptBuilder from generated ids, releasing text as the C++ Stream::emit does (TekkenStreamer):
    `push` returns the text the token released; with `last` (the stream ends at this token) it also releases a
    dangling partial character (as U+FFFD), which goes to the same token."""

    def __init__(self, tok: Tekken, builder: TranscriptBuilder) -> None:
        self.tok = tok
        self.builder = builder
        self._stream = tok.text_stream()

    def push(self, token_id: int, time_ms: float, last: bool = False) -> str:
        text = self._stream.feed(token_id)
        if last:
            text += self._stream.flush()
        kind, starts = token_kind(self.tok, token_id)
        self.builder.push(kind, starts, text, time_ms)
        return text


def words_and_segments(tok: Tekken, token_ids: Iterable[int], token_times_ms: Iterable[float],
                       pause_ms: float = DEFAULT_PAUSE_MS, ms_per_token: float = 80.0,
                       finished: bool = True) -> tuple[list[Word], list[Segment]]:
    """Words and segments of a whole token sequence (`finished`: the stream has ended at its last token, as
    after a flush or a stopping EOS: the last word and segment are finished)."""
    b = TranscriptBuilder(pause_ms, ms_per_token)
    feeder = TokenFeeder(tok, b)
    ids, times = [int(i) for i in token_ids], [float(t) for t in token_times_ms]
    for k, (i, t) in enumerate(zip(ids, times)):
        feeder.push(i, t, last=finished and k == len(ids) - 1)
    if finished:
        b.finish()
    return b.words(), b.segments()
