"""Accuracy of word times and pause segmentation on the demo model (the figures in docs/design.md "Words and
segments"):

    python bench/word_times.py [--n 40] [--seed 4242]

Renders n held-out two-sentence utterances exactly as tools/train_demo.py renders its data (espeak-ng words, random
gaps: 40-300 ms inside a sentence, 350-1200 ms between the two), so every word's span is known; transcribes them with
the eager fp32 demo model; and prints ONE JSON object: for the correctly transcribed words, end_ms - true end and
start_ms - true start (min / p5 / median / p95 / max, share of ends in [0, 80) ms); the PAD run before each word
inside a sentence and at the sentence break; and for pause thresholds 640..960 ms, the share of in-sentence
transitions split and of sentence breaks missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import train_demo as td  # noqa: E402
from voxtral_rt.checkpoint import load_model  # noqa: E402
from voxtral_rt.engine import EagerEngine  # noqa: E402
from voxtral_rt.protocol import transcribe  # noqa: E402
from voxtral_rt.tokenizer import Tekken  # noqa: E402


def _stats(x: np.ndarray) -> dict:
    return {"min": float(x.min()), "p5": float(np.percentile(x, 5)), "median": float(np.median(x)),
            "p95": float(np.percentile(x, 95)), "max": float(x.max()), "n": int(x.size)}


class _Bank:  # td.render wants bank.wav[(voice, word)]
    def __init__(self, wav: dict) -> None:
        self.wav = wav


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=4242)
    a = ap.parse_args()

    demo = ROOT / "models" / "demo"
    tok = Tekken.from_file(demo / "tekken.json")
    model, _ = load_model(demo, dtype=torch.float32)
    engine = EagerEngine(model.eval())
    with tempfile.TemporaryDirectory() as d:
        _, _, spell = td.make_tokenizer(Path(d), tok.vocab_size)
    gram = td.Sentences(list(spell))
    voices = td.draw_voices(True, td.N_TEST_VOICES, 0)
    end_err, start_err, inside, between = [], [], [], []
    n_wrong = 0
    for k in range(a.n):
        rng = np.random.default_rng([k, a.seed])
        voice = voices[int(rng.integers(len(voices)))]
        sents = [gram.sentence(rng) for _ in range(2)]
        bank = _Bank({(voice, w): td.espeak(voice, w) for s in sents for w in s})
        audio, spans = td.render(rng, bank, voice, sents)
        r = transcribe(engine, tok, audio)
        words = [w for s in r["segments"] for w in s["words"]]
        if [w["text"] for w in words] != [w for s in sents for w in s]:
            n_wrong += 1
            continue
        for w, (_, s0, s1) in zip(words, spans):
            end_err.append(w["end_ms"] - s1 / 16)
            start_err.append(w["start_ms"] - s0 / 16)
        runs, run = [], 0  # PAD tokens before each word's first token
        for t in r["token_ids"]:
            if t == tok.streaming_pad_id:
                run += 1
            else:
                if not tok.is_special(t) and tok.token_bytes(t)[:1] == b" ":
                    runs.append(run * 80)
                run = 0
        for i in range(1, len(runs)):
            (between if i == len(sents[0]) else inside).append(runs[i])
    e, s = np.array(end_err), np.array(start_err)
    inside_a, between_a = np.array(inside), np.array(between)
    print(json.dumps({
        "utterances": a.n, "wrong_transcripts": n_wrong,
        "end_minus_true_end_ms": {**_stats(e), "share_in_0_80": float(np.mean((e >= 0) & (e < 80)))},
        "start_minus_true_start_ms": _stats(s),
        "pad_run_ms_inside_sentence": _stats(inside_a), "pad_run_ms_sentence_break": _stats(between_a),
        "pause_threshold": {str(t): {"inside_split": float(np.mean(inside_a >= t)),
                                     "break_missed": float(np.mean(between_a < t))} for t in (640, 720, 800, 880, 960)},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
