"""Command line: `python -m voxtral_rt {synth,transcribe,eval} ...`. Thin: parse, validate, call the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO


class UsageError(Exception):
    pass


DRAFT_TOKENS_HELP = ("most guessed [STREAMING_PAD] positions per decoder call, verified exactly (the tokens are the same "
                     "for every value): 0 = one position per call; N = up to N guesses; -1 (default) = adapt to this "
                     "machine and the audio (measures call costs and the PAD share)")
EVAL_DESCRIPTION = """`python -m voxtral_rt eval MODEL DATA_DIR`: word error rate, real-time factor and per-step latency.

MODEL is a checkpoint directory (eager PyTorch), a `.pte` (ExecuTorch Python runtime), or with `--runner PATH` a
`.pte` run by the C++ `voxtral_realtime_runner` (one process per file, `--json --stats`)."""


def _cmd_synth(a: argparse.Namespace) -> int:
    from .synth import synth

    t0 = time.time()
    if a.pad_share is not None and not 0.0 < a.pad_share < 1.0:
        raise UsageError(f"--pad-share must be in (0, 1), got {a.pad_share}")
    synth(a.out_dir, preset=a.preset, seed=a.seed, fmt=a.fmt, pad_share=a.pad_share)
    share = "" if a.pad_share is None else f", PAD share {a.pad_share}"
    print(f"wrote {a.preset} checkpoint ({a.fmt}{share}) to {a.out_dir} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


def _find_tokenizer(explicit: str | None, *dirs: Path) -> Path:
    if explicit:
        return Path(explicit)
    for d in dirs:
        if (d / "tekken.json").exists():
            return d / "tekken.json"
    raise UsageError(f"no tekken.json found in {', '.join(map(str, dirs))}; pass --tokenizer")


def _check_tokenizer(engine, tok) -> None:
    """A .pte compares every id and number it carries; an eager model has only its vocab size to compare."""
    from .engine import PteEngine

    if isinstance(engine, PteEngine):
        engine.check_tokenizer(tok)
    elif tok.vocab_size != engine.model.args.vocab_size:
        raise UsageError(f"tokenizer vocab size {tok.vocab_size} does not match the model's "
                         f"{engine.model.args.vocab_size}")


class OutputError(Exception):
    """--output-file cannot be written (exit code 5, as the runner's)."""


def _open_output(path: str | None) -> TextIO:
    """stdout, or --output-file (created or truncated) -- opened before the model loads, so a typo fails fast."""
    if not path:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        raise OutputError(f"--output-file {path}: cannot open for writing: {e.strerror or e}") from None


def _cmd_transcribe(a: argparse.Namespace) -> int:
    from .audio import load_audio
    from .engine import load_engine
    from .output import VTT_HEADER, delta_event, json_line, segment_event, srt_cue, vtt_cue
    from .protocol import transcribe
    from .tokenizer import Tekken
    from .transcript import Segment

    if a.pte:
        if len(a.paths) != 1:
            raise UsageError("with --pte give only AUDIO")
        model_dir, audio_path = None, a.paths[0]
    else:
        if len(a.paths) != 2:
            raise UsageError("usage: transcribe MODEL_DIR AUDIO  (or: transcribe --pte model.pte AUDIO)")
        model_dir, audio_path = a.paths
        if not Path(model_dir).is_dir():
            raise UsageError(f"{model_dir}: not a model directory")
    if a.chunk_ms < 0:
        raise UsageError("--chunk-ms must be >= 0")
    if a.json and a.format not in (None, "json"):
        raise UsageError(f"--json means --format json; it conflicts with --format {a.format}")
    fmt = "json" if a.json else (a.format or "text")
    if a.segment_pause_ms < 0:
        raise UsageError("--segment-pause-ms must be >= 0 (0 = never end a segment at a pause)")
    if a.draft_tokens < -1:
        raise UsageError("--draft-tokens must be >= -1 (-1 = adaptive, 0 = one position per decoder call)")
    out = _open_output(a.output_file)

    def write(text: str) -> None:  # every piece at once: jsonl/srt/vtt are read while they are written
        out.write(text)
        out.flush()

    try:
        audio = load_audio(audio_path)
        engine = load_engine(model_dir, a.pte, a.dtype)
        tok = Tekken.from_file(_find_tokenizer(a.tokenizer, Path(a.pte).parent if a.pte else Path(model_dir)))
        _check_tokenizer(engine, tok)
        sr = tok.audio.sampling_rate
        chunk = int(round(a.chunk_ms * sr / 1000))
        if a.chunk_ms > 0 and chunk == 0:
            raise UsageError("--chunk-ms is shorter than one sample")

        # srt/vtt cues and jsonl events as segments finish and tokens come (runner/main.cpp's Emitter).
        n_segments = 0

        def on_segment(seg: Segment) -> None:
            nonlocal n_segments
            if fmt == "srt":
                write(srt_cue(n_segments + 1, seg))
            elif fmt == "vtt":
                write(vtt_cue(seg))
            elif fmt == "jsonl":
                write(json_line(segment_event(n_segments, seg)))
            n_segments += 1

        def on_delta(text: str, time_ms: float) -> None:
            if fmt == "jsonl":
                write(json_line(delta_event(text, time_ms)))

        if fmt == "vtt":
            write(VTT_HEADER)
        t0 = time.time()
        res = transcribe(engine, tok, audio, delay_ms=a.delay_ms, chunk_samples=chunk, draft_tokens=a.draft_tokens,
                         segment_pause_ms=a.segment_pause_ms, on_delta=on_delta, on_segment=on_segment)
        wall_ms = (time.time() - t0) * 1000
        audio_ms = 1000.0 * len(audio) / sr
        delay_ms = int(res["delay_ms"])  # a whole number of ms, an integer in the runner's JSON
        if fmt == "json":  # the runner's --json: its keys, sorted and compact as nlohmann writes them
            write(json.dumps({"text": res["text"], "token_ids": res["token_ids"], "token_times_ms": res["token_times_ms"],
                              "segments": res["segments"], "delay_ms": delay_ms, "audio_ms": audio_ms,
                              "finished": res["finished"]}, ensure_ascii=False, sort_keys=True,
                             separators=(",", ":")) + "\n")
        elif fmt == "text":
            write(res["text"] + "\n")
        elif fmt == "jsonl":
            # stats: the runner's keys that the Python engines measure too
            stats = {"audio_ms": audio_ms, "wall_ms": wall_ms, "rtf": wall_ms / audio_ms if audio_ms else 0.0,
                     "n_generated": len(res["token_ids"])}
            write(json_line({"type": "transcript.text.done", "text": res["text"], "delay_ms": delay_ms,
                             "audio_ms": audio_ms, "finished": res["finished"], "stats": stats}))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from .evaluate import load_pairs, run_python, run_runner, summarize
    from .tokenizer import Tekken

    pairs = load_pairs(a.data_dir)
    if a.limit > 0:
        pairs = pairs[: a.limit]
    mp = Path(a.model)
    is_pte = mp.suffix == ".pte"
    if not is_pte and not mp.is_dir():
        raise UsageError(f"{a.model}: neither a model directory nor a .pte file")
    if a.runner and not is_pte:
        raise UsageError("--runner needs a .pte model")
    if a.draft_tokens < -1:
        raise UsageError("--draft-tokens must be >= -1 (-1 = adaptive, 0 = one position per decoder call)")
    if a.streaming and a.chunk_ms <= 0:
        raise UsageError("--chunk-ms must be > 0 with --streaming")
    tok_path = _find_tokenizer(a.tokenizer, mp.parent if is_pte else mp)
    tok = Tekken.from_file(tok_path)
    t0 = time.perf_counter()
    if a.runner:
        if not Path(a.runner).is_file():
            raise UsageError(f"{a.runner}: runner binary not found (build it with `make runner`)")
        engine_name, load_s = "runner", None
        rows, timing = run_runner(a.runner, mp, tok_path, pairs, streaming=a.streaming, chunk_ms=a.chunk_ms,
                                  delay_ms=a.delay_ms, threads=a.threads, draft_tokens=a.draft_tokens)
    else:
        import torch

        from .engine import load_engine

        if a.threads:
            torch.set_num_threads(a.threads)
        engine = load_engine(None if is_pte else mp, mp if is_pte else None, a.dtype)
        _check_tokenizer(engine, tok)
        load_s = time.perf_counter() - t0
        engine_name = "pte" if is_pte else f"eager-{a.dtype}"
        chunk = int(round(a.chunk_ms * tok.audio.sampling_rate / 1000)) if a.streaming else 0
        rows, timing = run_python(engine, tok, pairs, chunk_samples=chunk, delay_ms=a.delay_ms,
                                  draft_tokens=a.draft_tokens)
    summary = summarize(rows, timing, model=str(a.model), engine=engine_name, streaming=a.streaming,
                        chunk_ms=a.chunk_ms, delay_ms=a.delay_ms, draft_tokens=a.draft_tokens, load_s=load_s)
    if a.details:
        with open(a.details, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(json.dumps(summary, ensure_ascii=False, indent=1 if a.pretty else None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m voxtral_rt", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    from .synth import add_synth_args

    s = sub.add_parser("synth", help="write a synthetic checkpoint in the real on-disk format (random weights)")
    add_synth_args(s)
    s.set_defaults(fn=_cmd_synth)

    t = sub.add_parser("transcribe", help="transcribe an audio file (eager model or .pte)",
                       description="transcribe MODEL_DIR AUDIO, or transcribe --pte model.pte AUDIO")
    t.add_argument("paths", nargs="+", metavar="MODEL_DIR AUDIO")
    t.add_argument("--pte", help="run an exported .pte (ExecuTorch Python runtime) instead of the eager model")
    t.add_argument("--tokenizer", help="tekken.json (default: next to the model / .pte)")
    t.add_argument("--delay-ms", type=float, default=None,
                   help="transcription delay: a multiple of 80 ms in 80..1200, or 2400 (default: the one the .pte was "
                        "exported with; for a model dir, tekken.json's)")
    t.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="eager model dtype")
    t.add_argument("--chunk-ms", type=float, default=0, help="feed audio in chunks of N ms, as a live stream (0 = all at once)")
    t.add_argument("--format", choices=["text", "json", "srt", "vtt", "jsonl"], default=None,
                   help="text (default); json: one object {text, token_ids, token_times_ms, segments, ...}; srt, vtt: "
                        "subtitles, a cue per segment; jsonl: one JSON event per line as tokens come "
                        "(transcript.text.delta / .segment / .done). The same keys and bytes as the C++ runner's")
    t.add_argument("--json", action="store_true", help="the same as --format json")
    t.add_argument("--output-file", help="write the output to this file (created or truncated) instead of stdout")
    t.add_argument("--segment-pause-ms", type=float, default=640,
                   help="a run of [STREAMING_PAD] this long (ms) ends a segment; segments also end after . ? ! and at "
                        "EOS; 0 = never at pauses (default 640)")
    t.add_argument("--draft-tokens", type=int, default=-1, help=DRAFT_TOKENS_HELP)
    t.set_defaults(fn=_cmd_transcribe)

    e = sub.add_parser("eval", help="word error rate, RTF and step latency over DATA_DIR/*.wav + *.txt",
                       description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    e.add_argument("--draft-tokens", type=int, default=-1, help=DRAFT_TOKENS_HELP)
    e.add_argument("--details", help="write one JSON line per utterance (ref, hyp, token ids, timing) here")
    e.add_argument("--pretty", action="store_true", help="indent the JSON")
    e.set_defaults(fn=_cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import quiet_known_noise

    quiet_known_noise()
    try:
        return args.fn(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 5  # the runner's exit code for output errors
    except (ValueError, OSError, RuntimeError) as e:  # ConfigError, CheckpointError, AudioError are ValueErrors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1
