"""Side by side, method by method: our .pte against the upstream ExecuTorch example's .pte, same inputs, same run.

    python bench/compare_upstream.py --ours 4b.pte --upstream upstream/model.pte [--contexts 125,750,7500] [--repeats 5]

Both files are run in the ExecuTorch Python runtime (the upstream design needs the `llama::` custom ops, which
only the Python runtime has after `executorch.extension.llm.custom_ops` is imported). One streaming step is
80 ms of audio: one encoder call on 8 mel frames and one decoder call on one position, at a context of
`c` audio tokens (c * 80 ms into the stream: 125 = 10 s, 750 = 60 s, 7500 = 10 min). The caches are not
filled first: each design's attention cost depends only on its position (ours: the valid prefix; upstream:
always the whole ring), and stale cache contents do not change the time.

Prints JSON: per context and method, min and median ms over repeats for both, and the ratio upstream/ours
(> 1: ours is faster). The first call of each method is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from voxtral_rt.model import ring_mask  # noqa: E402


def _load(path: Path, names: list[str]) -> dict:
    from executorch.runtime import Runtime

    prog = Runtime.get().load_program(str(path))
    missing = [n for n in names if n not in prog.method_names]
    if missing:
        raise SystemExit(f"{path}: missing method(s) {missing}; have {sorted(prog.method_names)}")
    return {n: prog.load_method(n) for n in names}


def _time(fn, repeats: int) -> dict:
    fn()  # warm-up (first call packs / allocates)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return {"min": round(min(ts), 2), "median": round(statistics.median(ts), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", type=Path, required=True, help=".pte from export/export_voxtral_rt.py")
    p.add_argument("--upstream", type=Path, required=True, help="model.pte from executorch's examples/models/voxtral_realtime "
                   "(--streaming recipe)")
    p.add_argument("--contexts", default="125,750,7500", help="stream positions in 80 ms tokens (default 10 s, 60 s, 10 min)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="runtime threads (default: all cores)")
    a = p.parse_args(argv)

    import executorch.kernels.quantized  # noqa: F401  quantized_decomposed kernels
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  llama:: ops for the upstream design

    if a.threads:
        torch.set_num_threads(a.threads)
    meta_names = ["dim", "enc_sliding_window", "enc_cache_slots", "dec_sliding_window", "dec_cache_slots"]
    ours = _load(a.ours, ["audio_encoder", "text_decoder", *meta_names])
    meta = {n: int(ours[n].execute([])[0]) for n in meta_names}
    up = _load(a.upstream, ["encode_audio_chunk", "text_decoder"])
    dim = meta["dim"]
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(1, 128, 8, generator=g) * 0.5  # one 80 ms step of normalized log-mel
    emb = torch.randn(1, 1, dim, generator=g) * 0.05
    out: dict = {"ours": str(a.ours), "upstream": str(a.upstream), "repeats": a.repeats,
                 "threads": torch.get_num_threads(), "contexts": {}}
    for c in [int(x) for x in a.contexts.split(",")]:
        enc_pos = 4 * c  # encoder frames
        enc_mask = ring_mask(enc_pos, 4, meta["enc_sliding_window"], meta["enc_cache_slots"])
        dec_mask = ring_mask(c, 1, meta["dec_sliding_window"], meta["dec_cache_slots"])
        r = {
            "encoder_ours_ms": _time(lambda: ours["audio_encoder"].execute([mel, torch.tensor([enc_pos]), enc_mask]),
                                     a.repeats),
            "encoder_upstream_ms": _time(
                lambda: up["encode_audio_chunk"].execute([mel, torch.arange(enc_pos, enc_pos + 4)]), a.repeats),
            "decoder_ours_ms": _time(
                lambda: ours["text_decoder"].execute([emb, torch.tensor([c]), torch.tensor([6]), dec_mask]), a.repeats),
            "decoder_upstream_ms": _time(lambda: up["text_decoder"].execute([emb, torch.tensor([c])]), a.repeats),
        }
        for m in ("encoder", "decoder"):
            r[f"{m}_ratio_upstream_over_ours"] = round(r[f"{m}_upstream_ms"]["median"] / r[f"{m}_ours_ms"]["median"], 2)
        step_ours = r["encoder_ours_ms"]["median"] + r["decoder_ours_ms"]["median"]
        step_up = r["encoder_upstream_ms"]["median"] + r["decoder_upstream_ms"]["median"]
        r["step_ours_ms"], r["step_upstream_ms"] = round(step_ours, 1), round(step_up, 1)
        r["step_ratio_upstream_over_ours"] = round(step_up / step_ours, 2)
        out["contexts"][f"{c} tokens ({c * 0.08:.0f} s)"] = r
        print(json.dumps({c: r}), flush=True, file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
