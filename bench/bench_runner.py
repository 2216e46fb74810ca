"""Benchmark the C++ runner on a .pte: offline and streaming, repeated, figures against the memory-bandwidth bound.

    python bench/bench_runner.py --pte model.pte --tokenizer tekken.json [--audio-s 60] [--repeats 3]
    python bench/bench_runner.py --pte new.pte --baseline old.pte --tokenizer tekken.json   # A/B, interleaved
    python bench/bench_runner.py --full   # build the 4b synthetic checkpoint + export it first (heavy)
    python bench/bench_runner.py --full --upstream   # also export the upstream example (same checkpoint, its CPU
                                                     # recipe; ~27 min, ~22 GB) and compare method by method

Prints one JSON object: per mode the min and median over repeats of RTF, per-feed (80 ms chunk) latency
p50/p95, decoder ms per token, encoder ms per 80 ms of audio, load time and peak RSS; the .pte size; this
machine's measured memory bandwidth; and the decoder's weight-bandwidth bound per token.
Benchmarks want both cores: run nothing else heavy at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUNNER = ROOT / "runner" / "build" / "voxtral_realtime_runner"


def memory_bandwidth_gbs(size_mb: int = 1024, repeats: int = 5) -> dict:
    """Read bandwidth (sum over a large array, like weight streaming) and copy bandwidth, best of N."""
    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    a = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
    b = torch.empty_like(a)
    read, copy = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        a.sum()
        read.append(a.numel() * 4 / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        b.copy_(a)
        copy.append(2 * a.numel() * 4 / (time.perf_counter() - t) / 1e9)  # read + write
    return {"read_gbs": max(read), "copy_gbs": max(copy)}


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    ph = 2 * np.pi * np.cumsum(120 + 60 * np.sin(2 * np.pi * 0.7 * t)) / sr
    x = sum(np.sin(k * ph) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t)) ** 2
    return (0.2 * x + 0.03 * rng.standard_normal(len(t))).astype(np.float32)


def run_once(pte: Path, tok: Path, wav: Path, streaming: bool, chunk_ms: int, threads: int) -> dict:
    cmd = [str(RUNNER), "--model_path", str(pte), "--tokenizer_path", str(tok), "--audio_path", str(wav),
           "--json", "--stats", "--threads", str(threads)]
    if streaming:
        cmd += ["--streaming", "--chunk_ms", str(chunk_ms)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if r.returncode != 0:
        raise SystemExit(f"runner failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout)["stats"]


def summarize(runs: list[dict]) -> dict:
    out = {}
    derived = []
    for s in runs:
        s = dict(s)
        n_gen = max(1, s["n_generated"])
        s["decoder_ms_per_token"] = s["decoder_ms"] / n_gen
        s["encoder_ms_per_80ms_audio"] = s["encoder_ms_per_token"]
        derived.append(s)
    for key in ("rtf", "wall_ms", "feed_p50_ms", "feed_p95_ms", "decoder_step_p50_ms", "decoder_step_p95_ms",
                "decoder_ms_per_token", "encoder_ms_per_80ms_audio", "mel_ms", "load_ms", "first_token_ms", "peak_rss_mib",
                "rss_after_load_mib", "rss_end_mib"):
        vals = [d[key] for d in derived]
        out[key] = {"min": min(vals), "median": statistics.median(vals)}
    out["n_generated"] = derived[0]["n_generated"]
    out["n_audio_tokens"] = derived[0]["n_audio_tokens"]
    return out


def decoder_weight_bytes(pte_meta: dict | None, model_dir: Path | None) -> float | None:
    """Bytes of decoder + LM head weights streamed per token at 8da4w group 32: int4 + one bf16 scale per group
    (XNNPACK's blockwise 4-bit layout)."""
    if model_dir is None:
        return None
    from voxtral_rt.checkpoint import expected_shapes, read_args

    args = read_args(model_dir)
    n = sum(int(np.prod(s)) for k, s in expected_shapes(args).items() if k.startswith("layers.") and len(s) == 2)
    n += args.vocab_size * args.dim  # untied 8da4w head
    return n * (0.5 + 2 / 32)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pte", type=Path)
    p.add_argument("--tokenizer", type=Path)
    p.add_argument("--model-dir", type=Path, help="checkpoint the .pte came from (for the bandwidth bound)")
    p.add_argument("--full", action="store_true", help="synthesize + export the 4b checkpoint under artifacts/bench first")
    p.add_argument("--audio-s", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-ms", type=int, default=80)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--modes", default="offline,streaming")
    p.add_argument("--baseline", type=Path, help="another .pte of ours, run interleaved with --pte on the same audio "
                   "(A, B, A, B, ...): reports both and the baseline/ours ratio of the medians")
    p.add_argument("--upstream", nargs="?", const="auto", type=str,
                   help="also time the upstream example's .pte method by method against ours (bench/compare_upstream.py); "
                        "give its model.pte, or nothing with --full to export it from the same checkpoint")
    a = p.parse_args()
    if not RUNNER.exists():
        raise SystemExit(f"{RUNNER} missing: run `make runner`")
    if a.full:
        d = ROOT / "artifacts" / "bench"
        a.model_dir = d / "4b"
        a.pte = d / "4b_8da4w.pte"
        a.tokenizer = a.model_dir / "tekken.json"
        if not (a.model_dir / "consolidated.safetensors").exists():
            subprocess.run([sys.executable, "-m", "voxtral_rt", "synth", str(a.model_dir), "--preset", "4b"], check=True, cwd=ROOT)
        if not a.pte.exists():
            subprocess.run([sys.executable, str(ROOT / "export" / "export_voxtral_rt.py"), "--model-path", str(a.model_dir),
                            "--output", str(a.pte), "--qlinear", "8da4w", "--qlinear-encoder", "8da4w", "--qembedding", "8w"],
                           check=True)
        if a.upstream == "auto":
            up_dir = d / "upstream"
            if not (up_dir / "model.pte").exists():
                # The upstream example's recommended CPU recipe (its README), from the same checkpoint.
                subprocess.run([sys.executable, "-m", "executorch.examples.models.voxtral_realtime.export_voxtral_rt",
                                "--model-path", str(a.model_dir), "--backend", "xnnpack", "--streaming",
                                "--sliding-window", "2048", "--qlinear-encoder", "8da4w", "--qlinear", "8da4w",
                                "--qembedding", "8w", "--output-dir", str(up_dir)], check=True)
            a.upstream = str(up_dir / "model.pte")
    if a.pte is None or a.tokenizer is None:
        p.error("give --pte and --tokenizer, or --full")
    if a.upstream == "auto":
        p.error("--upstream without a path needs --full")
    result: dict = {"pte": str(a.pte), "pte_mib": a.pte.stat().st_size / 2**20, "audio_s": a.audio_s,
                    "repeats": a.repeats, "threads": a.threads or os.cpu_count()}
    result["memory_bandwidth"] = memory_bandwidth_gbs()
    with tempfile.TemporaryDirectory() as td:
        import soundfile as sf

        wav = Path(td) / "bench.wav"
        sf.write(wav, speechlike(a.audio_s), 16000)
        for mode in a.modes.split(","):
            runs, base_runs = [], []
            for _ in range(a.repeats):  # interleaved, so that machine noise hits both alike
                runs.append(run_once(a.pte, a.tokenizer, wav, mode == "streaming", a.chunk_ms, a.threads))
                if a.baseline:
                    base_runs.append(run_once(a.baseline, a.tokenizer, wav, mode == "streaming", a.chunk_ms, a.threads))
            result[mode] = summarize(runs)
            print(f"{mode}: {json.dumps(result[mode])}", file=sys.stderr, flush=True)
            if a.baseline:
                base = result.setdefault("baseline", {"pte": str(a.baseline)})[mode] = summarize(base_runs)
                result[mode]["baseline_over_ours"] = {
                    k: base[k]["median"] / result[mode][k]["median"]
                    for k in ("rtf", "feed_p50_ms", "feed_p95_ms", "decoder_ms_per_token", "encoder_ms_per_80ms_audio",
                              "load_ms", "rss_after_load_mib", "peak_rss_mib")}
                print(f"{mode} baseline/ours: {json.dumps(result[mode]['baseline_over_ours'])}", file=sys.stderr, flush=True)
    wb = decoder_weight_bytes(None, a.model_dir)
    if wb:
        bw = result["memory_bandwidth"]["read_gbs"]
        bound_ms = wb / (bw * 1e9) * 1000
        result["decoder_weight_gb_per_token"] = wb / 1e9
        result["decoder_bound_ms_per_token"] = bound_ms
        for mode in a.modes.split(","):
            result[mode]["decoder_vs_bound"] = result[mode]["decoder_ms_per_token"]["median"] / bound_ms
    if a.upstream:
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "compare_upstream.py"), "--ours", str(a.pte),
                            "--upstream", a.upstream], capture_output=True, text=True, check=True)
        result["vs_upstream"] = json.loads(r.stdout)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
