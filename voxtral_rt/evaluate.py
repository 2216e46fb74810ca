"""Word error rate, real-time factor and per-step latency over a data set (`python -m voxtral_rt eval`, cli.py).

A data set is a directory of `NAME.wav` files, each with its reference transcript in `NAME.txt` (UTF-8, one line).
Both transcripts are normalized before scoring: lowercase, punctuation other than apostrophes removed, whitespace
collapsed (the model's text keeps the leading space of its first token; this strips it). WER is corpus-level
(jiwer: total substitutions + deletions + insertions over total reference words).

Two ways to transcribe it, each returning (rows, timing): `run_python` over an Engine (eager or .pte), timed by
the session itself (`SessionStats`), and `run_runner`, one C++ `voxtral_realtime_runner --json --stats` process
per file, read from its JSON (a figure missing there is an error). `summarize` scores the rows.

Timing: `rtf` = transcription wall time / audio duration, summed over files (model loading excluded).
`step_ms` = latency of one generation call of the text decoder (embedding + decoder): for the Python engines,
percentiles over every call of every file; for the runner, its per-file p50/p95, median over files. With
streaming, the Python engines also report `feed_ms`: the wall time of each `feed()` of one chunk.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from .audio import load_audio
from .engine import Engine
from .protocol import StreamingSession
from .tokenizer import Tekken

_PUNCT = re.compile(r"[^\w\s']+")


def normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def load_pairs(data_dir: str | Path) -> list[tuple[Path, str]]:
    """Sorted (wav, normalized reference) pairs; every wav needs its .txt."""
    d = Path(data_dir)
    if not d.is_dir():
        raise ValueError(f"{d}: not a directory")
    wavs = sorted(d.glob("*.wav"))
    if not wavs:
        raise ValueError(f"{d}: no *.wav files")
    out = []
    for w in wavs:
        t = w.with_suffix(".txt")
        if not t.is_file():
            raise ValueError(f"{w}: no reference transcript {t.name}")
        out.append((w, normalize(t.read_text(encoding="utf-8"))))
    return out


def _pct(xs: list[float]) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "max": round(float(a.max()), 3), "n": int(a.size)}


def run_python(engine: Engine, tok: Tekken, pairs: list[tuple[Path, str]], chunk_samples: int = 0,
               delay_ms: float | None = None, draft_tokens: int = -1) -> tuple[list[dict], dict]:
    """Transcribe every pair through `engine`, in chunks of chunk_samples as a live stream (0: all at once)."""
    params = engine.stream_params(tok, delay_ms)
    step_ms: list[float] = []
    feed_ms: list[float] = []
    rows = []
    for wav, ref in pairs:
        audio = load_audio(wav)
        s = StreamingSession(engine, params, draft_tokens=draft_tokens)
        t0 = time.perf_counter()
        step = chunk_samples if chunk_samples > 0 else len(audio)
        for i in range(0, len(audio), step):
            s.feed(audio[i : i + step])
        s.flush()
        wall = time.perf_counter() - t0
        step_ms += s.stats.step_ms
        feed_ms += s.stats.feed_ms
        rows.append({"file": wav.name, "ref": ref, "hyp": normalize(tok.decode(s.token_ids)),
                     "token_ids": s.token_ids, "audio_s": len(audio) / tok.audio.sampling_rate,
                     "wall_s": wall})
    timing = {"step_ms": _pct(step_ms)}
    if chunk_samples > 0:
        timing["feed_ms"] = _pct(feed_ms)
    return rows, timing


def _field(j: dict, wav: Path, *keys: str):
    """j[keys[0]][keys[1]]... of the runner's JSON for `wav`; missing: an error naming it."""
    v = j
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            raise RuntimeError(f"runner output for {wav} has no '{'.'.join(keys)}' (a runner from another checkout?)")
        v = v[k]
    return v


def run_runner(runner: str | Path, pte: str | Path, tokenizer: str | Path, pairs: list[tuple[Path, str]],
               streaming: bool = False, chunk_ms: float = 80, delay_ms: float | None = None, threads: int = 0,
               draft_tokens: int = -1) -> tuple[list[dict], dict]:
    """Transcribe every pair with the C++ runner, one process per file (`--json --stats`)."""
    base = [str(runner), "--model_path", str(pte), "--tokenizer_path", str(tokenizer), "--json", "--stats",
            "--draft_tokens", str(draft_tokens)]
    if streaming:
        base += ["--streaming", "--chunk_ms", str(int(chunk_ms))]
    if delay_ms is not None:
        base += ["--delay_ms", str(int(delay_ms))]
    if threads:
        base += ["--threads", str(threads)]
    rows, p50, p95 = [], [], []
    for wav, ref in pairs:
        r = subprocess.run(base + ["--audio_path", str(wav)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"runner failed on {wav} (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        j = json.loads(r.stdout)
        p50.append(float(_field(j, wav, "stats", "decoder_step_p50_ms")))
        p95.append(float(_field(j, wav, "stats", "decoder_step_p95_ms")))
        rows.append({"file": wav.name, "ref": ref, "hyp": normalize(_field(j, wav, "text")),
                     "token_ids": _field(j, wav, "token_ids"), "audio_s": _field(j, wav, "audio_ms") / 1000,
                     "wall_s": float(_field(j, wav, "stats", "wall_ms")) / 1000})
    step = {"p50": round(statistics.median(p50), 3), "p95": round(statistics.median(p95), 3),
            "note": "runner --stats per-file percentiles, median over files"}
    return rows, {"step_ms": step}


def summarize(rows: list[dict], timing: dict, *, model: str, engine: str, streaming: bool, chunk_ms: float,
              delay_ms: float | None, draft_tokens: int, load_s: float | None) -> dict:
    """The scores of `rows` (WER, RTF) with the run's settings and `timing`; the first 10 wrong utterances."""
    import jiwer

    refs = [r["ref"] for r in rows]
    hyps = [r["hyp"] for r in rows]
    # jiwer rejects empty references; score those by hand (every hypothesis word is an insertion).
    scored = [(r, h) for r, h in zip(refs, hyps) if r]
    out = jiwer.process_words([r for r, _ in scored], [h for _, h in scored]) if scored else None
    extra_ins = sum(len(h.split()) for r, h in zip(refs, hyps) if not r)
    n_words = sum(len(r.split()) for r in refs)
    s, d, i = (out.substitutions, out.deletions, out.insertions + extra_ins) if out else (0, 0, extra_ins)
    audio_s = sum(r["audio_s"] for r in rows)
    wall_s = sum(r["wall_s"] for r in rows)
    wrong = [r for r in rows if r["ref"] != r["hyp"]]
    return {
        "model": model, "engine": engine, "mode": "streaming" if streaming else "offline",
        "chunk_ms": chunk_ms if streaming else None, "delay_ms": delay_ms, "draft_tokens": draft_tokens,
        "n_utterances": len(rows), "n_ref_words": n_words,
        "wer": round((s + d + i) / max(1, n_words), 5), "substitutions": s, "deletions": d, "insertions": i,
        "n_wrong_utterances": len(wrong),
        "audio_s": round(audio_s, 3), "wall_s": round(wall_s, 3), "rtf": round(wall_s / audio_s, 5) if audio_s else None,
        "load_s": round(load_s, 3) if load_s is not None else None,
        **timing,
        "errors": [{"file": r["file"], "ref": r["ref"], "hyp": r["hyp"]} for r in wrong[:10]],
    }
