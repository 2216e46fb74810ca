"""Words and segments (voxtral_rt/transcript.py; C++ twin runner/src/transcript.cpp).

* the shared cases of tests/data/transcript_cases.json give the listed words, segments and finishing tokens in
  Python (here) and C++ (voxtral_rt_tests, run here too);
* real tekken ids map to the right kinds and word starts;
* on the demo model, with speech whose word boundaries are known (espeak-ng words, as tools/train_demo.py renders
  them), a word's end_ms is its true end rounded up to the 80 ms grid, its start is never after its true start,
  and a pause between two sentences splits them into two segments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from voxtral_rt.tokenizer import Tekken
from voxtral_rt.transcript import (TokenKind, TranscriptBuilder, ends_sentence, token_kind, words_and_segments)

ROOT = Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "tests" / "data" / "transcript_cases.json").read_text(encoding="utf-8"))
DEMO = ROOT / "models" / "demo"


def _run_case(c: dict) -> tuple[list, list, list]:
    closed_at: list[int] = []
    index = 0

    def on_segment(_seg) -> None:
        closed_at.append(index)

    b = TranscriptBuilder(pause_ms=c["pause_ms"], on_segment=on_segment)
    for t in c["tokens"]:
        if t[0] == "text":
            starts = t[3] if len(t) > 3 else t[1][:1] in (" ", "\t", "\n", "\v", "\f", "\r") and t[1] != ""
            b.push(TokenKind.TEXT, starts, t[1], t[2])
        else:
            kind = {"pad": TokenKind.PAD, "eos": TokenKind.EOS}.get(t[0], TokenKind.OTHER_SPECIAL)
            b.push(kind, False, t[2] if len(t) > 2 else "", t[1])
        index += 1
    index = -1
    if c["finish"]:
        b.finish()
        b.finish()  # idempotent
    words = [w.to_dict() for w in b.words()]
    segments = [s.to_dict() for s in b.segments()]
    if c["max_history"]:  # Python keeps every record; the C++ builder trims to the last N..2N
        words = words[-len(c["words"]):]
        segments = segments[-len(c["segments"]):]
    return words, segments, closed_at


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_cases_python(case):
    words, segments, closed_at = _run_case(case)
    assert words == case["words"]
    assert segments == case["segments"]
    assert closed_at == case["closed_at"]


def test_shared_cases_cpp():
    """The same cases through the C++ builder (runner/build/voxtral_rt_tests; `make runner` builds it)."""
    binary = ROOT / "runner" / "build" / "voxtral_rt_tests"
    assert binary.exists(), f"{binary} missing: build it with `make runner`"
    r = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert "ok   transcript_cases" in r.stdout and "ok   stream_words_and_segments" in r.stdout, r.stdout[-3000:]


def test_sentence_ends():
    for w in ("stop.", 'Why?"', "(Really!)", "no\u2026", "\u597d\u3002", "\u00abNon !\u00bb"):
        assert ends_sentence(w), w
    for w in ("3.5", "go", "", '"', "e.g"):
        assert not ends_sentence(w), w


def test_token_kinds_and_words_from_ids():
    """Ids of the demo tokenizer: PAD / EOS / [STREAMING_WORD] / text tokens with and without a leading space."""
    tok = Tekken.from_file(DEMO / "tekken.json")
    pad, eos, word = tok.streaming_pad_id, tok.eos_id, tok.streaming_word_id
    c, all_, two = 1272, 1599, 1925  # " c", "all", " one" in the demo vocabulary
    assert (tok.token_bytes(c), tok.token_bytes(all_), tok.token_bytes(two)) == (b" c", b"all", b" one")
    assert token_kind(tok, pad) == (TokenKind.PAD, False)
    assert token_kind(tok, eos) == (TokenKind.EOS, False)
    assert token_kind(tok, word) == (TokenKind.OTHER_SPECIAL, False)
    assert token_kind(tok, c) == (TokenKind.TEXT, True) and token_kind(tok, all_) == (TokenKind.TEXT, False)
    ids = [pad, c, all_, pad, word, all_, two] + [pad] * 8 + [two, eos]
    times = [80.0 * (k + 1) for k in range(len(ids))]
    words, segments = words_and_segments(tok, ids, times, pause_ms=640)
    assert [(w.text, w.start_ms, w.end_ms) for w in words] == [
        ("call", 0.0, 160.0), ("all", 160.0, 480.0), ("one", 480.0, 560.0), ("one", 560.0, 1280.0)]
    assert [s.text for s in segments] == [" callall one", " one"]
    assert "".join(s.text for s in segments) == tok.decode(ids)


# ----------------------------------------------------------------------------------------- demo model, known times

def _espeak_words(words: list[str]):
    sys.path.insert(0, str(ROOT / "tools"))
    import train_demo as td

    voice = td.draw_voices(True, td.N_TEST_VOICES, 0)[0]  # a held-out voice
    return {w: td.espeak(voice, w) for w in set(words)}


def _render(sentences: list[list[str]], wav: dict, word_gap_s: float, sentence_gap_s: float):
    """Words back to back with fixed gaps -> (audio, [(word, start ms, end ms)])."""
    sr, parts, spans, n = 16000, [np.zeros(2400, np.float32)], [], 2400
    for si, sent in enumerate(sentences):
        for wi, w in enumerate(sent):
            if wi or si:
                gap = np.zeros(int((word_gap_s if wi else sentence_gap_s) * sr), np.float32)
                parts.append(gap)
                n += len(gap)
            parts.append(wav[w])
            spans.append((w, 1000 * n / sr, 1000 * (n + len(wav[w])) / sr))
            n += len(wav[w])
    parts.append(np.zeros(4000, np.float32))
    audio = np.concatenate(parts)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32), spans


@pytest.fixture(scope="module")
def demo_engine():
    from voxtral_rt.checkpoint import load_model
    from voxtral_rt.engine import EagerEngine

    model, _ = load_model(DEMO, dtype=torch.float32)
    return EagerEngine(model.eval()), Tekken.from_file(DEMO / "tekken.json")


def test_demo_word_times_and_pause_segments(demo_engine):
    from voxtral_rt.protocol import transcribe

    engine, tok = demo_engine
    sentences = [["call", "two", "six", "one"], ["go", "left", "and", "then", "turn", "right"]]
    audio, spans = _render(sentences, _espeak_words([w for s in sentences for w in s]), 0.12, 1.5)
    r = transcribe(engine, tok, audio)
    segs = r["segments"]
    # The 1.5 s pause splits the sentences (and nothing else does: in-sentence PAD runs stay under 640 ms).
    assert [[w["text"] for w in s["words"]] for s in segs] == sentences, r["text"]
    words = [w for s in segs for w in s["words"]]
    end_err = np.array([w["end_ms"] - e for w, (_, _, e) in zip(words, spans)])
    # The model emits each word at the first position its training target allows: its end on the 80 ms grid
    # (espeak's 5 ms trim margin aside).
    assert np.all((end_err > -10) & (end_err < 80 + 1e-9)), end_err
    assert np.all(np.array([w["end_ms"] for w in words]) % 80 == 0)
    # A start is the previous word's end (or 1 s before its own): never after the true start but for the grid step.
    start_err = np.array([w["start_ms"] - s for w, (_, s, _) in zip(words, spans)])
    assert np.all(start_err <= 80) and np.all(start_err >= -1000), start_err
    assert words[len(sentences[0])]["start_ms"] == words[len(sentences[0])]["end_ms"] - 1000  # after the pause
    # Segment times are their words' span; segments follow each other.
    for s in segs:
        assert (s["start_ms"], s["end_ms"]) == (s["words"][0]["start_ms"], s["words"][-1]["end_ms"])
    assert segs[0]["end_ms"] <= segs[1]["start_ms"]
    assert "".join(s["text"] for s in segs) == r["text"]
    # pause 0: one segment, the same words.
    one = transcribe(engine, tok, audio, segment_pause_ms=0)["segments"]
    assert len(one) == 1 and one[0]["words"] == words
