"""`python -m voxtral_rt eval MODEL DATA_DIR`: word error rate, real-time factor and per-step latency.

MODEL is a checkpoint directory (eager PyTorch), a `.pte` (ExecuTorch Python runtime), or with `--runner PATH` a
`.pte` run by the C++ `voxtral_realtime_runner` (one process per file, `--json --stats`).

DATA_DIR holds `NAME.wav` files, each with its reference transcript in `NAME.txt` (UTF-8, one line). Both
transcripts are normalized before scoring: lowercase, punctuation other than apostrophes removed, whitespace
collapsed (the model's text keeps the leading space of its first token; this strips it). WER is corpus-level
(jiwer: total substitutions + deletions + insertions over total reference words).

Timing: `rtf` = transcription wall time / audio duration, summed over files (model loading excluded).
`step_ms` = latency of one text-decoder step (one 80 ms audio token): for the Python engines, percentiles over
every step of every file; for the runner, its per-file p50/p95 (`--stats`), median over files. With
`--streaming`, the Python engines also report `feed_ms`: the wall time of each `feed()` of one chunk.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

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


class _Timed:
    """Engine wrapper that records the wall time of every text-decoder call after the prompt prefill."""

    def __init__(self, engine) -> None:
        self.e = engine
        self.max_mel_frames, self.max_enc_tokens, self.max_dec_tokens = (
            engine.max_mel_frames, engine.max_enc_tokens, engine.max_dec_tokens)
        self.default_delay_ms = engine.default_delay_ms
        self.decode_ms: list[float] = []
        self.prompt_len = 0  # calls from this position on are generation calls (one or more positions)

    def preprocess(self, window):
        return self.e.preprocess(window)

    def encode(self, mel, enc_pos):
        return self.e.encode(mel, enc_pos)

    def embed(self, ids):
        return self.e.embed(ids)

    def decode(self, h, pos, n_delay):
        t0 = time.perf_counter()
        out = self.e.decode(h, pos, n_delay)
        if pos >= self.prompt_len:  # a generation call (prompt prefill chunks are not steps)
            self.decode_ms.append(1000 * (time.perf_counter() - t0))
        return out


def _run_python(engine, tok, pairs, chunk_samples: int, delay_ms, draft_tokens: int) -> tuple[list[dict], dict]:
    from .audio import load_audio
    from .protocol import StreamParams, StreamingSession

    timed = _Timed(engine)
    params = StreamParams.from_tokenizer(tok, delay_ms, timed)
    timed.prompt_len = len(params.prompt)
    feed_ms: list[float] = []
    rows = []
    for wav, ref in pairs:
        audio = load_audio(wav)
        s = StreamingSession(timed, params, draft_tokens=draft_tokens)
        t0 = time.perf_counter()
        step = chunk_samples if chunk_samples > 0 else len(audio)
        for i in range(0, len(audio), step):
            t1 = time.perf_counter()
            s.feed(audio[i : i + step])
            if chunk_samples > 0:
                feed_ms.append(1000 * (time.perf_counter() - t1))
        s.flush()
        wall = time.perf_counter() - t0
        rows.append({"file": wav.name, "ref": ref, "hyp": normalize(tok.decode(s.token_ids)),
                     "token_ids": s.token_ids, "audio_s": len(audio) / tok.audio.sampling_rate,
                     "wall_s": wall})
    timing = {"step_ms": _pct(timed.decode_ms)}
    if chunk_samples > 0:
        timing["feed_ms"] = _pct(feed_ms)
    return rows, timing


_RE_WALL = re.compile(r"audio ([\d.]+) s \| wall ([\d.]+) ms")
_RE_STEP = re.compile(r"decoder step p50 ([\d.]+) ms, p95 ([\d.]+) ms")


def _run_runner(runner: str, pte: str, tokenizer: Path, pairs, streaming: bool, chunk_ms: float, delay_ms,
                threads: int, draft_tokens: int) -> tuple[list[dict], dict]:
    base = [runner, "--model_path", pte, "--tokenizer_path", str(tokenizer), "--json", "--stats",
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
        m = _RE_WALL.search(r.stderr)
        st = _RE_STEP.search(r.stderr)
        if st:
            p50.append(float(st.group(1)))
            p95.append(float(st.group(2)))
        rows.append({"file": wav.name, "ref": ref, "hyp": normalize(j["text"]), "token_ids": j["token_ids"],
                     "audio_s": j["audio_ms"] / 1000, "wall_s": float(m.group(2)) / 1000 if m else float("nan")})
    step = {"p50": round(statistics.median(p50), 3), "p95": round(statistics.median(p95), 3),
            "note": "runner --stats per-file percentiles, median over files"} if p50 else {}
    return rows, {"step_ms": step}


def evaluate(model: str, data_dir: str, *, runner: str | None = None, streaming: bool = False, chunk_ms: float = 80,
             tokenizer: str | None = None, delay_ms: float | None = None, dtype: str = "fp32", limit: int = 0,
             threads: int = 0, draft_tokens: int = -1) -> tuple[dict, list[dict]]:
    """Transcribe every pair in data_dir; return (summary, per-utterance rows)."""
    import jiwer

    from .cli import UsageError, _find_tokenizer, make_engine
    from .tokenizer import Tekken

    pairs = load_pairs(data_dir)
    if limit > 0:
        pairs = pairs[:limit]
    mp = Path(model)
    is_pte = mp.suffix == ".pte"
    if not is_pte and not mp.is_dir():
        raise UsageError(f"{model}: neither a model directory nor a .pte file")
    if runner and not is_pte:
        raise UsageError("--runner needs a .pte model")
    if draft_tokens < -1:
        raise UsageError("--draft-tokens must be >= -1 (-1 = adaptive, 0 = one position per decoder call)")
    if streaming and chunk_ms <= 0:
        raise UsageError("--chunk-ms must be > 0 with --streaming")
    tok_path = _find_tokenizer(tokenizer, mp.parent if is_pte else mp)
    tok = Tekken.from_file(tok_path)
    t0 = time.perf_counter()
    if runner:
        if not Path(runner).is_file():
            raise UsageError(f"{runner}: runner binary not found (build it with `make runner`)")
        engine_name = "runner"
        rows, timing = _run_runner(runner, str(mp), tok_path, pairs, streaming, chunk_ms, delay_ms, threads, draft_tokens)
        load_s = None
    else:
        if threads:
            import torch

            torch.set_num_threads(threads)
        engine, _ = make_engine(None if is_pte else str(mp), str(mp) if is_pte else None, dtype)
        if hasattr(engine, "check_tokenizer"):
            engine.check_tokenizer(tok)
        elif tok.vocab_size != engine.model.args.vocab_size:
            raise UsageError(f"tokenizer vocab size {tok.vocab_size} does not match the model's {engine.model.args.vocab_size}")
        load_s = time.perf_counter() - t0
        engine_name = "pte" if is_pte else f"eager-{dtype}"
        chunk = int(round(chunk_ms * tok.audio.sampling_rate / 1000)) if streaming else 0
        rows, timing = _run_python(engine, tok, pairs, chunk, delay_ms, draft_tokens)
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
    summary = {
        "model": str(model), "engine": engine_name, "mode": "streaming" if streaming else "offline",
        "chunk_ms": chunk_ms if streaming else None, "delay_ms": delay_ms, "draft_tokens": draft_tokens,
        "n_utterances": len(rows), "n_ref_words": n_words,
        "wer": round((s + d + i) / max(1, n_words), 5), "substitutions": s, "deletions": d, "insertions": i,
        "n_wrong_utterances": len(wrong),
        "audio_s": round(audio_s, 3), "wall_s": round(wall_s, 3), "rtf": round(wall_s / audio_s, 5) if audio_s else None,
        "load_s": round(load_s, 3) if load_s is not None else None,
        **timing,
        "errors": [{"file": r["file"], "ref": r["ref"], "hyp": r["hyp"]} for r in wrong[:10]],
    }
    return summary, rows


def _cmd_eval(a: argparse.Namespace) -> int:
    summary, rows = evaluate(a.model, a.data_dir, runner=a.runner, streaming=a.streaming, chunk_ms=a.chunk_ms,
                             tokenizer=a.tokenizer, delay_ms=a.delay_ms, dtype=a.dtype, limit=a.limit, threads=a.threads,
                             draft_tokens=a.draft_tokens)
    if a.details:
        with open(a.details, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(json.dumps(summary, ensure_ascii=False, indent=1 if a.pretty else None))
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the `eval` subcommand on the CLI's subparsers."""
    e = sub.add_parser("eval", help="word error rate, RTF and step latency over DATA_DIR/*.wav + *.txt",
                       description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model", metavar="MODEL_DIR_OR_PTE")
    e.add_argument("data_dir", metavar="DATA_DIR", help="NAME.wav files with reference transcripts NAME.txt")
    e.add_argument("--runner", help="run the .pte with this voxtral_realtime_runner binary instead of Python")
    e.add_argument("--streaming", action="store_true", help="feed audio in --chunk-ms pieces, as a live stream")
    e.add_argument("--chunk-ms", type=float, default=80, help="chunk size with --streaming (default 80)")
    e.add_argument("--tokenizer", help="tekken.json (default: next to the model / .pte)")
    e.add_argument("--delay-ms", type=float, default=None, help="transcription delay (default: the .pte's, else tekken.json's)")
    e.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="eager model dtype")
    e.add_argument("--limit", type=int, default=0, help="only the first N files (sorted by name)")
    e.add_argument("--threads", type=int, default=0, help="CPU threads (torch / runner --threads; 0 = default)")
    from .protocol import DRAFT_TOKENS_HELP

    e.add_argument("--draft-tokens", type=int, default=-1, help=DRAFT_TOKENS_HELP)
    e.add_argument("--details", help="write one JSON line per utterance (ref, hyp, token ids, timing) here")
    e.add_argument("--pretty", action="store_true", help="indent the JSON")
    e.set_defaults(fn=_cmd_eval)
    return e


if __name__ == "__main__":  # pragma: no cover
    from .cli import main

    sys.exit(main(["eval", *sys.argv[1:]]))
