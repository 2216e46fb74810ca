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


def make_engine(model_dir: str | None, pte: str | None, dtype: str):
    """Build the engine (eager model or .pte) and return it with the directory to look for tekken.json in."""
    import torch

    if pte:
        from .engine import PteEngine

        return PteEngine(pte), Path(pte).parent
    from .checkpoint import load_model
    from .protocol import EagerEngine

    model, _ = load_model(model_dir, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    return EagerEngine(model.eval()), Path(model_dir)


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
        engine, tok_dir = make_engine(model_dir, a.pte, a.dtype)
        tok = Tekken.from_file(_find_tokenizer(a.tokenizer, tok_dir))
        if hasattr(engine, "check_tokenizer"):
            engine.check_tokenizer(tok)
        elif tok.vocab_size != engine.model.args.vocab_size:
            raise UsageError(f"tokenizer vocab size {tok.vocab_size} does not match the model's "
                             f"{engine.model.args.vocab_size}")
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
    from .protocol import DRAFT_TOKENS_HELP

    t.add_argument("--draft-tokens", type=int, default=-1, help=DRAFT_TOKENS_HELP)
    t.set_defaults(fn=_cmd_transcribe)

    from .evaluate import add_parser as add_eval_parser  # `eval`: WER / RTF / step latency over a data dir

    add_eval_parser(sub)
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
