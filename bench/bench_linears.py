"""What XNNPACK's 4-bit linears reach on this machine: decoder layers' seven linears and the LM head of the real
model (dim 3072), M = 1 (one decoding step), as 8da4w with several group sizes, in the Python runtime. Eight
distinct layers are timed together (~0.5 GB of weights), so they stream from DRAM as in the real decoder; one
layer alone (65 MB) would partly sit in this CPU's L3 and look faster than it is.

    python bench/bench_linears.py [--group-sizes 32,128,0] [--repeats 30]

Prints JSON: min / median ms per call and the effective weight bandwidth (int4 + one bf16 scale per group, the
layout XNNPACK packs) -- compare it with the machine's read bandwidth (bench_runner.py measures it). Group 0 =
one scale per output channel. Needs ~3 GB of RAM; run nothing heavy alongside.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 3072
LAYER = [(DIM, 4096), (DIM, 1024), (DIM, 1024), (4096, DIM), (DIM, 9216), (DIM, 9216), (9216, DIM)]  # wq wk wv wo w1 w3 w2
HEAD = [(DIM, 131072)]


class Linears(nn.Module):
    def __init__(self, shapes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.lin = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in shapes)
        self.inputs = sorted({i for i, _ in shapes})

    def forward(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        by_dim = dict(zip(self.inputs, xs))
        return [m(by_dim[m.in_features]) for m in self.lin]


def time_linears(shapes: list[tuple[int, int]], group_size: int, repeats: int, tmp: Path) -> dict:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackDynamicallyQuantizedPartitioner,
        XnnpackPartitioner,
    )
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from voxtral_rt.export.quantize import quantize_linears

    torch.manual_seed(0)
    m = Linears(shapes).eval()
    quantize_linears(m, "8da4w", group_size, "bench", quiet=True)
    xs = tuple(torch.randn(1, 1, d) for d in m.inputs)
    ep = torch.export.export(m, xs, strict=True)
    et = to_edge_transform_and_lower(ep, partitioner=[XnnpackDynamicallyQuantizedPartitioner(), XnnpackPartitioner()],
                                     compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    path = tmp / f"lin_{group_size}.pte"
    path.write_bytes(et.buffer)
    method = Runtime.get().load_program(str(path)).load_method("forward")
    method.execute(list(xs))  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        method.execute(list(xs))
        ts.append((time.perf_counter() - t) * 1e3)
    n = sum(i * o for i, o in shapes)
    weight_bytes = n / 2 + (n / group_size * 2 if group_size else sum(o for _, o in shapes) * 2)
    return {"min_ms": round(min(ts), 3), "median_ms": round(statistics.median(ts), 3),
            "weight_mb": round(weight_bytes / 1e6, 1), "gbs_at_min": round(weight_bytes / min(ts) / 1e6, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group-sizes", default="32,128,0")
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args()
    import executorch.kernels.quantized  # noqa: F401

    out: dict = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as td:
        for name, shapes in (("decoder_8_layers_x_7_linears", LAYER * 8), ("lm_head", HEAD)):
            out[name] = {}
            for gs in (int(g) for g in a.group_sizes.split(",")):
                out[name][f"group_{gs}" if gs else "per_channel"] = time_linears(shapes, gs, a.repeats, Path(td))
                print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
