"""Cost per call and per token at given stream positions: the long-stream table (10 s, 60 s, 10 min, past the
window), for one or two .pte files side by side.

    python bench/bench_positions.py --pte kv16.pte [--baseline-pte kv32.pte] --tokens tokens.json \\
        [--seconds 10,60,600,900] [--dec-k 1,2,4,8,16] [--enc-tokens 16] [--rounds 2]

Each .pte runs `runner/build/voxtral_rt_kv_bench --modes runner` (the runner's own attention path: the valid
prefix in 64-slot blocks, then from 3/4 of a ring the whole ring aliased) at the decoder and encoder positions of each stream time; the
.pte files take turns, --rounds times, so machine noise hits both alike. Only the position matters for the
cost (the caches are not filled; the work and the traffic are those of a real stream at that point).

Per token with multi-position decoding: a call of k positions yields 1 + (the run of [STREAMING_PAD] outputs
that follow, up to k - 1) tokens. --tokens is a runner `--json` output (its token_ids, e.g. speech-like audio
through a `synth --pad-share` model, or real speech): replaying its tokens with calls of k positions gives the
tokens per call for each k; ms per token = ms per call / tokens per call, and `best` is the k with the fewest
ms per token (what the adaptive policy converges to). The JSON records the PAD share of those tokens.

Prints ONE JSON object (progress on stderr) with the machine's read bandwidth and load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_runner import memory_bandwidth_gbs  # noqa: E402

KV_BENCH = ROOT / "runner" / "build" / "voxtral_rt_kv_bench"
MS_PER_TOKEN = 80
ENC_FRAMES_PER_TOKEN = 4


def left_pad_tokens(pte: str) -> int:
    """The .pte's own left pad (metadata): the decoder position of stream time 0."""
    from executorch.runtime import Runtime

    return int(Runtime.get().load_program(pte).load_method("left_pad_tokens").execute([])[0])


def tokens_per_call(ids: list[int], pad_id: int, k: int) -> float:
    """Tokens a call of k positions yields on average when decoding `ids` greedily call after call."""
    calls = q = 0
    while q < len(ids):
        n = 1
        while n < k and q + n < len(ids) and ids[q + n - 1] == pad_id:
            n += 1
        q += n
        calls += 1
    return len(ids) / max(calls, 1)


def run_kv_bench(pte: str, dec_pos: list[int], enc_pos: list[int], dec_k: str, enc_tokens: int, reps: int) -> list[dict]:
    cmd = [str(KV_BENCH), "--model_path", pte, "--dec_pos", ",".join(map(str, dec_pos)),
           "--enc_pos", ",".join(map(str, enc_pos)), "--dec_k", dec_k, "--enc_tokens", str(enc_tokens),
           "--modes", "runner", "--reps", str(reps), "--rounds", "1", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pte", required=True)
    p.add_argument("--baseline-pte", help="timed alternately with --pte")
    p.add_argument("--tokens", required=True, help="runner --json output whose token_ids set the tokens per call")
    p.add_argument("--pad-id", type=int, default=32, help="[STREAMING_PAD] id (32 in tekken.json)")
    p.add_argument("--seconds", default="10,60,600,900", help="stream times (s)")
    p.add_argument("--dec-k", default="1,2,4,8,16", help="positions per decoder call")
    p.add_argument("--enc-tokens", type=int, default=16, help="audio tokens per encoder call")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reps", type=int, default=3, help="timed calls per round (after a warm-up)")
    a = p.parse_args()
    if not KV_BENCH.exists():
        raise SystemExit(f"{KV_BENCH} missing: build the runner (make runner)")
    ids = json.loads(Path(a.tokens).read_text())["token_ids"]
    ks = [int(k) for k in a.dec_k.split(",")]
    tpc = {k: tokens_per_call(ids, a.pad_id, k) for k in ks}
    seconds = [float(s) for s in a.seconds.split(",")]
    left_pad = left_pad_tokens(a.pte)
    if a.baseline_pte and left_pad_tokens(a.baseline_pte) != left_pad:
        raise SystemExit("--pte and --baseline-pte have different left pads: their stream positions would differ")
    dec_pos = [left_pad + round(s * 1000 / MS_PER_TOKEN) for s in seconds]
    enc_pos = [ENC_FRAMES_PER_TOKEN * d for d in dec_pos]
    ptes = {"ours": a.pte, **({"baseline": a.baseline_pte} if a.baseline_pte else {})}
    runs: dict[str, list[dict]] = {name: [] for name in ptes}
    load = os.getloadavg()[0]
    for r in range(a.rounds):
        for name, pte in ptes.items():
            print(f"round {r + 1}/{a.rounds}: {name} {pte}", file=sys.stderr, flush=True)
            runs[name] += run_kv_bench(pte, dec_pos, enc_pos, a.dec_k, a.enc_tokens, a.reps)
    out: dict = {"tokens": {"file": a.tokens, "n": len(ids), "pad_share": ids.count(a.pad_id) / max(len(ids), 1),
                            "tokens_per_call": {str(k): round(v, 3) for k, v in tpc.items()}},
                 "machine": {"load_avg_start": load, **memory_bandwidth_gbs()}, "ptes": ptes, "positions": []}
    for s, dp, ep in zip(seconds, dec_pos, enc_pos):
        row: dict = {"stream_s": s, "dec_pos": dp, "enc_pos": ep}
        for name in ptes:
            def best_ms(call: str, pos: int, k: int) -> float:
                ms = [x["ms_min"] for x in runs[name] if x["call"] == call and x["pos"] == pos and x["k"] == k]
                return min(ms)
            dec = {str(k): round(best_ms("decoder", dp, k), 1) for k in ks}
            per_tok = {k: best_ms("decoder", dp, k) / tpc[k] for k in ks}
            kbest = min(per_tok, key=per_tok.get)
            row[name] = {"decoder_ms_per_call": dec,
                         "decoder_ms_per_token": {str(k): round(v, 1) for k, v in per_tok.items()},
                         "best_k": kbest, "best_ms_per_token": round(per_tok[kbest], 1),
                         "encoder_ms_per_call": round(best_ms("encoder", ep, a.enc_tokens), 1),
                         "encoder_ms_per_token": round(best_ms("encoder", ep, a.enc_tokens) / a.enc_tokens, 1)}
        out["positions"].append(row)
    for name in ptes:
        base = out["positions"][0][name]["best_ms_per_token"]
        out.setdefault("per_token_vs_first", {})[name] = [
            round(row[name]["best_ms_per_token"] / base, 2) for row in out["positions"]]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
