"""Live-lag benchmark of the C++ runner: speech-like audio paced into --stdin, per-token emission lag.

    python bench/bench_live.py --pte model.pte --tokenizer tekken.json [--audio-s 60] [--pace 1.0] [--repeats 3]
    python bench/bench_live.py --pte new.pte --runner-args "--draft_tokens 4" \\
        --baseline-pte old.pte [--baseline-runner other/voxtral_realtime_runner] [--baseline-runner-args ...]

The audio is `voxtral_rt.speechlike.speech_with_pauses` (utterances and pauses, so a `synth --pad-share` model
and a real one emit [STREAMING_PAD] through the pauses). Three modes per runner, interleaved with the baseline
(A, B, A, B, ...) so that machine noise hits both alike:

- live: s16le written to --stdin in --chunk-ms pieces at --pace x real time (1.0 = real time, 0.5 = half
  speed, for a machine that cannot keep up). The clock starts when the runner has read the first chunk (so
  model loading is not counted); chunk i is due at start + i * chunk / pace, and a token's audio counts as
  written when the chunk holding the end of its delay-corrected audio time was due. Per-token lag = emission
  time (the runner's `--json --stats` token_emit_ms, steady clock) - that time. Lag figures cover the
  tokens of real audio (not the right pad after the end of input): p50 / p95 / max in wall ms, p95 in audio
  ms beyond the delay (x pace - delay_ms: the issue's goal), drift (least-squares slope of lag against audio
  time, wall ms per s of audio, over the tokens decided before the end of input: ~0 when the runner keeps up,
  ~(RTF - 1/pace) x 1000 when it does not), and end lag
  (runner exit - the due time of the last chunk; the runner then has the right pad to decode).
- backlog: the whole clip written to --stdin at once; throughput = audio s per wall s (the runner's wall).
- offline: --audio_path on the same samples (16-bit WAV); offline RTF.

Per mode also: the [STREAMING_PAD] share of the generated tokens (and mean PAD / text run lengths), decoder ms
per generated token, generated tokens per decoder call, encoder / decoder call counts, and every other numeric
figure the runner's --stats reports (e.g. a chosen draft length). The token ids of all modes must be identical
(`tokens_identical`). Prints ONE JSON object (progress on stderr): per runner and mode the min and median over
repeats; baseline/ours ratios of the medians; this machine's read bandwidth. Benchmarks want both cores: run
nothing else heavy at the same time (the JSON records the load average at the start).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_runner import memory_bandwidth_gbs  # noqa: E402

from voxtral_rt.speechlike import speech_with_pauses  # noqa: E402

RUNNER = ROOT / "runner" / "build" / "voxtral_realtime_runner"
SR = 16000
F_SETPIPE_SZ = 1031  # linux/fcntl.h


# ----------------------------------------------------------------------------- one run


def _pipe_pending(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        data = data[os.write(fd, data):]


def run_runner(runner: Path, pte: Path, tok: Path, extra: list[str], threads: int, *, wav: Path | None = None,
               pcm: bytes | None = None, chunk_bytes: int = 0, pace: float = 0.0, timeout: float = 7200) -> dict:
    """One runner process. wav: offline file. pcm + pace > 0: paced --stdin; pcm + pace == 0: all at once.
    Returns the runner's JSON plus the bench's own timings (monotonic seconds)."""
    cmd = [str(runner), "--model_path", str(pte), "--tokenizer_path", str(tok), "--json", "--stats"]
    if threads:
        cmd += ["--threads", str(threads)]
    if wav is not None:
        cmd += ["--audio_path", str(wav)]
    else:
        cmd += ["--stdin", "--stdin_format", "s16le"]
    cmd += extra
    t_spawn = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if pcm is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: dict = {"t_spawn": t_spawn}
    writer_err: list[BaseException] = []
    if pcm is not None:
        fd = proc.stdin.fileno()
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)  # room for 32 s of audio: a slow reader does not block the clock
        except OSError:
            pass

        def write() -> None:
            try:
                view = memoryview(pcm)
                if pace <= 0:  # backlog: everything at once
                    out["t_start"] = time.monotonic()
                    _write_all(fd, view)
                else:
                    n_chunks = (len(pcm) + chunk_bytes - 1) // chunk_bytes
                    _write_all(fd, view[:chunk_bytes])
                    while _pipe_pending(fd) > 0 and proc.poll() is None:  # the runner is loading the model
                        time.sleep(0.0005)
                    t_start = out["t_start"] = time.monotonic()
                    period = chunk_bytes / 2 / SR / pace
                    behind = 0.0
                    for i in range(1, n_chunks):
                        due = t_start + i * period
                        now = time.monotonic()
                        if due > now:
                            time.sleep(due - now)
                        behind = max(behind, time.monotonic() - due)
                        _write_all(fd, view[i * chunk_bytes:(i + 1) * chunk_bytes])
                    out["t_last_due"] = t_start + (n_chunks - 1) * period
                    out["period_s"] = period
                    out["writer_behind_max_ms"] = 1000 * behind
                out["t_input_closed"] = time.monotonic()
            except BrokenPipeError:
                pass
            except BaseException as e:  # noqa: BLE001 - reported below
                writer_err.append(e)
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        wt = threading.Thread(target=write, daemon=True)
        wt.start()
    # Read the pipes while waiting (a full stderr pipe would stall the runner); stamp the exit.
    res: dict = {}

    def drain(name: str, f) -> None:
        res[name] = f.read()

    readers = [threading.Thread(target=drain, args=(n, f), daemon=True) for n, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    rc = proc.wait(timeout=timeout)
    out["t_exit"] = time.monotonic()
    for r in readers:
        r.join()
    if pcm is not None:
        wt.join()
    if writer_err:
        raise writer_err[0]
    if rc != 0:
        raise SystemExit(f"runner failed ({rc}): {' '.join(cmd)}\n{res['stderr'].decode(errors='replace')[-2000:]}")
    out["json"] = json.loads(res["stdout"])
    return out


# ----------------------------------------------------------------------------- figures


def _runs(mask: np.ndarray) -> list[int]:
    if len(mask) == 0:
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(edges[1::2] - edges[::2])


def pad_draft_tokens_per_call(pad: np.ndarray, k: int) -> float:
    """Tokens per decoder call that exact k-position decoding with [STREAMING_PAD] guesses would reach on this
    token sequence: a call feeds the known token and k-1 PAD guesses; its outputs are valid up to and including
    the first non-PAD (each output checks the next guess). The ceiling for a PAD drafter on this audio, whatever
    a call of k positions costs; compare it with the runner's tokens_per_decoder_call."""
    i, calls, n = 0, 0, len(pad)
    while i < n:
        m = 0
        while m < k - 1 and i + m < n and pad[i + m]:
            m += 1
        i += m + 1
        calls += 1
    return n / max(1, calls)


def common_figures(j: dict, pad_id: int) -> dict:
    s = j["stats"]
    ids = np.array(j["token_ids"], dtype=np.int64)
    pad = ids == pad_id
    n_gen = max(1, s["n_generated"])
    f = {
        "pad_share": float(pad.mean()) if len(ids) else 0.0,
        "pad_run_mean": float(np.mean(_runs(pad))) if pad.any() else 0.0,
        "text_run_mean": float(np.mean(_runs(~pad))) if (~pad).any() else 0.0,
        **{f"pad_draft_tokens_per_call_k{k}": pad_draft_tokens_per_call(pad, k) for k in (2, 4, 8)},
        "rtf": s["rtf"],
        "wall_ms": s["wall_ms"],
        "decoder_ms_per_token": s["decoder_ms"] / n_gen,
        "tokens_per_decoder_call": s["n_generated"] / max(1, s["n_decoder_calls"]),
        "encoder_ms_per_token": s["encoder_ms_per_token"],
        "n_encoder_calls": s["n_encoder_calls"],
        "n_decoder_calls": s["n_decoder_calls"],
        "n_generated": s["n_generated"],
        "feed_p95_ms": s["feed_p95_ms"],
        "peak_rss_mib": s["peak_rss_mib"],
    }
    known = set(f) | {"token_emit_ms", "t0_steady_ms", "audio_ms", "decoder_ms", "encoder_ms", "n_feeds", "load_ms",
                      "first_token_ms", "rss_after_load_mib", "rss_end_mib", "n_audio_tokens", "mel_ms"}
    for k, v in s.items():  # whatever else the runner reports (e.g. a chosen draft length), passed through
        if k not in known and isinstance(v, (int, float)) and not isinstance(v, bool):
            f.setdefault(k, v)
    f["eos"] = bool(len(ids) and ids[-1] == j.get("eos_id", -1))
    return f


def live_figures(r: dict, pace: float, audio_ms: float) -> dict:
    j = r["json"]
    s = j["stats"]
    emit_ms = np.array(s["token_emit_ms"], dtype=np.float64)
    times = np.array(j["token_times_ms"], dtype=np.float64)
    if len(emit_ms) != len(times):
        raise SystemExit(f"runner reported {len(emit_ms)} emission times for {len(times)} tokens")
    # The runner's steady clock is CLOCK_MONOTONIC, as time.monotonic(): its t0 (start of feeding) must fall
    # between our spawn and the first chunk being read.
    t0 = s["t0_steady_ms"] / 1000.0
    if not (r["t_spawn"] - 0.5 <= t0 <= r["t_start"] + 0.5):
        raise SystemExit(f"runner clock does not match time.monotonic(): t0 {t0:.3f} not in "
                         f"[{r['t_spawn']:.3f}, {r['t_start']:.3f}]")
    emit = t0 + emit_ms / 1000.0
    chunk_ms = r["period_s"] * pace * 1000.0
    real = times <= audio_ms + 1e-6  # tokens of real audio; the rest come from the right pad after the end
    last_chunk = int(np.ceil(audio_ms / chunk_ms)) - 1
    idx = np.clip(np.ceil(times / chunk_ms).astype(np.int64) - 1, 0, last_chunk)
    written = r["t_start"] + idx * r["period_s"]
    lag = (emit - written) * 1000.0  # wall ms
    lr = lag[real]
    # Drift over the tokens decided before the end of input: the last delay's worth come out at the flush, early.
    steady = times + j["delay_ms"] <= audio_ms
    tr, ls = times[steady] / 1000.0, lag[steady]
    slope = float(np.polyfit(tr, ls, 1)[0]) if len(ls) >= 2 and np.ptp(tr) > 0 else 0.0
    return {
        "lag_p50_ms": float(np.percentile(lr, 50)),
        "lag_p95_ms": float(np.percentile(lr, 95)),
        "lag_max_ms": float(lr.max()),
        "lag_p95_audio_ms_beyond_delay": float(np.percentile(lr, 95)) * pace - j["delay_ms"],
        "drift_ms_per_audio_s": slope,
        "end_lag_ms": (r["t_exit"] - r["t_last_due"]) * 1000.0,
        "first_token_lag_ms": float(lag[0]),
        "writer_behind_max_ms": r["writer_behind_max_ms"],
    }


def summarize(per_run: list[dict]) -> dict:
    out: dict = {}
    for k in per_run[0]:
        vals = [d[k] for d in per_run if k in d]
        if all(isinstance(v, bool) for v in vals):
            out[k] = any(vals)
        else:
            out[k] = {"min": min(vals), "median": statistics.median(vals)}
    return out


# ----------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runner", type=Path, default=RUNNER, help="voxtral_realtime_runner (default: runner/build/)")
    p.add_argument("--pte", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--runner-args", default="", help='extra runner flags, one string (e.g. "--draft_tokens 4")')
    p.add_argument("--baseline-runner", type=Path, help="a second runner, run interleaved (default: --runner)")
    p.add_argument("--baseline-pte", type=Path, help="a second .pte, run interleaved (default: --pte)")
    p.add_argument("--baseline-runner-args", default="", help="extra flags for the baseline runner")
    p.add_argument("--baseline-tokenizer", type=Path, help="the baseline .pte's tekken.json (default: --tokenizer)")
    p.add_argument("--audio-s", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0, help="speech_with_pauses seed (synth --pad-share calibrates on 1000)")
    p.add_argument("--pace", type=float, default=1.0, help="live feed speed, x real time (1.0 = real time)")
    p.add_argument("--chunk-ms", type=int, default=80, help="live feed chunk (the runner reads as much per read)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--modes", default="live,backlog,offline")
    a = p.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    if not set(modes) <= {"live", "backlog", "offline"} or not modes:
        p.error("--modes: a comma list of live, backlog, offline")
    if a.pace <= 0:
        p.error("--pace must be > 0")
    from voxtral_rt.tokenizer import Tekken

    sides = {"ours": (a.runner, a.pte, shlex.split(a.runner_args), a.tokenizer)}
    if a.baseline_runner or a.baseline_pte or a.baseline_runner_args or a.baseline_tokenizer:
        sides["baseline"] = (a.baseline_runner or a.runner, a.baseline_pte or a.pte,
                             shlex.split(a.baseline_runner_args), a.baseline_tokenizer or a.tokenizer)
    toks = {name: Tekken.from_file(side[3]) for name, side in sides.items()}
    for name, (runner, pte, _, tok_path) in sides.items():
        for f in (runner, pte, tok_path):
            if not f.exists():
                raise SystemExit(f"{name}: {f} missing")

    audio = speech_with_pauses(a.audio_s, SR, a.seed)
    s16 = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    audio_ms = 1000.0 * len(s16) / SR
    chunk_bytes = 2 * max(1, SR * a.chunk_ms // 1000)
    result: dict = {
        "audio": {"signal": "voxtral_rt.speechlike.speech_with_pauses", "seconds": a.audio_s, "seed": a.seed},
        "pace": a.pace, "chunk_ms": a.chunk_ms, "repeats": a.repeats, "threads": a.threads or os.cpu_count(),
        "machine": {"nproc": os.cpu_count(), "loadavg_at_start": os.getloadavg()[0]},
    }
    try:
        result["machine"]["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result["machine"].update(memory_bandwidth_gbs())
    runs: dict = {name: {m: [] for m in modes} for name in sides}
    ids_seen: dict = {}
    with tempfile.TemporaryDirectory() as td:
        import soundfile as sf

        wav = Path(td) / "live.wav"
        sf.write(wav, s16, SR, subtype="PCM_16")  # the same samples as the stdin runs
        pcm = s16.tobytes()
        for rep in range(a.repeats):
            for mode in modes:
                for name, (runner, pte, extra, tok_path) in sides.items():
                    if mode == "offline":
                        r = run_runner(runner, pte, tok_path, extra, a.threads, wav=wav)
                    else:
                        r = run_runner(runner, pte, tok_path, extra + ["--chunk_ms", str(a.chunk_ms)], a.threads,
                                       pcm=pcm, chunk_bytes=chunk_bytes, pace=a.pace if mode == "live" else 0.0)
                    j = r["json"]
                    j["eos_id"] = toks[name].eos_id
                    fig = common_figures(j, toks[name].streaming_pad_id)
                    if mode == "live":
                        fig.update(live_figures(r, a.pace, audio_ms))
                    if mode == "backlog":
                        fig["throughput_audio_s_per_s"] = j["audio_ms"] / j["stats"]["wall_ms"]
                    runs[name][mode].append(fig)
                    ids_seen.setdefault(name, []).append(j["token_ids"])
                    brief = {k: round(fig[k], 3) for k in ("pad_share", "rtf", "lag_p95_ms", "end_lag_ms",
                                                           "throughput_audio_s_per_s") if k in fig}
                    print(f"[{rep + 1}/{a.repeats}] {name} {mode}: {json.dumps(brief)}", file=sys.stderr, flush=True)
    for name, (runner, pte, extra, _) in sides.items():
        side = {"runner": str(runner), "pte": str(pte), "runner_args": extra,
                "tokens_identical": all(t == ids_seen[name][0] for t in ids_seen[name])}
        side.update({m: summarize(runs[name][m]) for m in modes})
        result[name] = side
    if "baseline" in sides:
        ratio: dict = {}
        for m in modes:
            o, b = result["ours"][m], result["baseline"][m]
            ratio[m] = {k: b[k]["median"] / o[k]["median"] for k in o
                        if isinstance(o[k], dict) and k in b and o[k]["median"] not in (0, 0.0)}
        result["baseline_over_ours"] = ratio
        result["same_tokens_as_baseline"] = ids_seen["ours"][0] == ids_seen["baseline"][0]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
