"""Per-op profile of one text_decoder step (one position) of an exported .pte, from ETDump: the XNNPACK per-op
timings (XNNProfiler, on when the module has an event tracer), the ops left outside XNNPACK, each delegate call's
time outside its ops (xnn reshape/setup, input and output copies), and the method's own overhead.

    python bench/profile_decoder.py MODEL.pte [--pos-s 10] [--steps 12] [--warmup 3] [--no-etdump]

The decoder runs at consecutive positions from --pos-s seconds (12.5 positions per second) as a stream does: the
attended length L grows by one each step, so every delegate whose inputs change shape is reshaped each step. The
KV cache holds whatever it holds (timing does not depend on its values). Then the same steps again at one fixed
position (L constant: no reshape), which isolates the cost of the reshapes.

Prints JSON: ms per step (median over steps) by category and by XNNPACK op type / portable op, the linears'
share (8-bit dynamic-quant FC + the activation converts they need, i.e. what bench_linears.py times) and the
non-linear remainder. --no-etdump loads without the event tracer and times the plain steps (the tracer's overhead
is the difference). Loads the model once: the 4b model takes ~20 s and ~6 GB.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voxtral_rt.model import ring_mask  # noqa: E402

LINEAR_FC = re.compile(r"^Fully Connected \(NC, Q")  # dynamically quantized (8da4w / 8da8w) or weight-only int
CONVERT = re.compile(r"^Convert \(NC, F32, Q")  # the dynamic quantization of the activations feeding them


def xnn_category(name: str, prev: str, nxt: str) -> str:
    """Coarse category of one XNNPACK op (name without the '#k' suffix; prev/next: its neighbours in the graph)."""
    if LINEAR_FC.match(name):
        return "linear_q (8da4w FC)"
    if CONVERT.match(name):
        return "linear_q convert (dyn. quant of activations)"
    if name.startswith("Fully Connected (NC, F32)"):
        # fp32 linears: the delay MLP (FC, GELU, FC) or RoPE's pair rotation (linear(x, R), head_dim x head_dim)
        return "delay MLP (fp32 FC + GELU)" if (nxt.startswith("GELU") or prev.startswith("GELU")) else "RoPE rotation (fp32 FC)"
    if name.startswith("GELU"):
        return "delay MLP (fp32 FC + GELU)"
    if name.startswith(("Batch Matrix Multiply", "Softmax")):
        return "attention (bmm, softmax)"
    if name.startswith(("Cosine", "Sine", "Exp", "Divide")):
        return "cos/sin (RoPE, delay embedding)"
    if name.startswith(("Static Reshape", "Transpose", "Copy", "Concatenate", "Slice", "Even Split")):
        return "layout (reshape/transpose/copy)"
    if name.startswith(("Square", "Mean", "Reciprocal Square Root")):
        return "rmsnorm stats"
    return "elementwise (mul/add/sigmoid...)"


def load(path: str, etdump: bool):
    from executorch.extension.pybindings import portable_lib as pl

    import executorch.kernels.quantized  # noqa: F401  registers quantized_decomposed kernels

    return pl._load_for_executorch(path, enable_etdump=etdump)


def run_steps(m, meta: dict, positions: list[int], n_delay: int) -> list[float]:
    dim, win, slots = meta["dim"], meta["dec_sliding_window"], meta["dec_cache_slots"]
    torch.manual_seed(0)
    walls = []
    for p in positions:
        args = [torch.randn(1, 1, dim), torch.tensor([p]), torch.tensor([n_delay]), ring_mask(p, 1, win, slots)]
        t = time.perf_counter()
        m.run_method("text_decoder", args)
        walls.append((time.perf_counter() - t) * 1e3)
    return walls


def analyse(etdump_path: str, runs: dict[str, range]) -> dict:
    from executorch.devtools import Inspector

    insp = Inspector(etdump_path=etdump_path)
    # The decoder's block: the one with delegate calls (the metadata methods form their own small blocks).
    block = max(insp.event_blocks, key=lambda b: sum(e.name == "DELEGATE_CALL" for e in b.events))
    ev = block.events
    n_runs = len(next(e for e in ev if e.name == "DELEGATE_CALL").perf_data.raw)
    execute = next((b for b in insp.event_blocks for e in b.events if e.name == "Method::execute"
                    and e.perf_data and len(e.perf_data.raw) >= n_runs), None)
    out = {}
    for label, idx in runs.items():
        idx = [i for i in idx if i < n_runs]
        cat = defaultdict(lambda: [0.0] * len(idx))  # category -> ms per run
        op = defaultdict(lambda: [0.0] * len(idx))  # XNNPACK op type / portable op -> ms per run
        counts = defaultdict(int)
        deleg_total = [0.0] * len(idx)
        inner = defaultdict(lambda: [0.0] * len(idx))  # delegate instruction id -> sum of its ops
        native_name = {}
        for e in ev:
            if e.name.startswith("native_call_"):
                native_name[e._instruction_id] = e.name[len("native_call_"):]
        for k, e in enumerate(ev):
            if not e.perf_data:
                continue
            raw = e.perf_data.raw
            vals = [raw[i] for i in idx]
            if e.is_delegated_op:
                base = re.sub(r" #\d+$", "", e.name)
                prev = re.sub(r" #\d+$", "", ev[k - 1].name) if k else ""
                nxt = re.sub(r" #\d+$", "", ev[k + 1].name) if k + 1 < len(ev) else ""
                c = xnn_category(base, prev, nxt)
                for j, v in enumerate(vals):
                    cat[c][j] += v
                    op["xnn: " + base][j] += v
                    inner[e._instruction_id][j] += v
                counts["xnn: " + base] += 1
            elif e.name == "DELEGATE_CALL":
                counts["delegate calls"] += 1
                for j, v in enumerate(vals):
                    deleg_total[j] += v
            elif e.name == "OPERATOR_CALL":
                name = native_name.get(e._instruction_id, "?")
                counts["portable: " + name] += 1
                for j, v in enumerate(vals):
                    cat["outside XNNPACK: " + name][j] += v
                    op["portable: " + name][j] += v
        inner_sum = [sum(inner[i][j] for i in inner) for j in range(len(idx))]
        cat["delegate overhead (reshape/setup/copies)"] = [deleg_total[j] - inner_sum[j] for j in range(len(idx))]
        total_ev = [sum(cat[c][j] for c in cat) for j in range(len(idx))]
        if execute is not None:
            ex = next(e for e in execute.events if e.name == "Method::execute").perf_data.raw
            ex = [ex[-n_runs:][i] for i in idx]
            cat["method overhead (executor loop, mem)"] = [ex[j] - total_ev[j] for j in range(len(idx))]
        med = lambda xs: round(statistics.median(xs), 3)
        step = [sum(cat[c][j] for c in cat) for j in range(len(idx))]
        lin = [sum(v[j] for c, v in cat.items() if c.startswith("linear_q")) for j in range(len(idx))]
        out[label] = {
            "runs": len(idx),
            "step_ms_median": med(step),
            "linear_q_ms": med(lin),
            "non_linear_ms": med([s - l for s, l in zip(step, lin)]),
            "step_over_linears": round(statistics.median(step) / max(statistics.median(lin), 1e-9), 3),
            "by_category_ms": dict(sorted(((c, med(v)) for c, v in cat.items()), key=lambda kv: -kv[1])),
            "by_op_ms": dict(sorted(((c, med(v)) for c, v in op.items()), key=lambda kv: -kv[1])[:40]),
        }
    out["counts_per_step"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pte")
    p.add_argument("--pos-s", type=float, default=10.0, help="stream position of the first profiled step, seconds")
    p.add_argument("--steps", type=int, default=12, help="profiled steps per phase")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--n-delay", type=int, default=6)
    p.add_argument("--no-etdump", action="store_true", help="time plain steps without the event tracer")
    p.add_argument("--keep-etdump", default=None, help="write the ETDump here (default: a temporary file)")
    a = p.parse_args()

    t0 = time.perf_counter()
    m = load(a.pte, not a.no_etdump)
    const = lambda n: int(m.run_method(n, [])[0])
    meta = {k: const(k) for k in ("dim", "dec_sliding_window", "dec_cache_slots", "format_version")}
    load_s = time.perf_counter() - t0
    pos0 = int(round(a.pos_s * 12.5))
    # Warm-up, then consecutive positions (L grows: reshapes), then one fixed position (no reshape).
    w = run_steps(m, meta, list(range(pos0 - a.warmup, pos0)), a.n_delay)
    grow = run_steps(m, meta, list(range(pos0, pos0 + a.steps)), a.n_delay)
    fixed = run_steps(m, meta, [pos0 + a.steps - 1] * (a.steps + 1), a.n_delay)[1:]
    res = {"pte": a.pte, "meta": meta, "load_s": round(load_s, 1), "threads": torch.get_num_threads(),
           "position": pos0, "attended_L": min(pos0 + 1, meta["dec_cache_slots"]),
           "wall_ms_median": {"growing_L": round(statistics.median(grow), 2), "fixed_L": round(statistics.median(fixed), 2)},
           "wall_ms_all": {"warmup": [round(x, 1) for x in w], "growing_L": [round(x, 1) for x in grow],
                           "fixed_L": [round(x, 1) for x in fixed]},
           "etdump": not a.no_etdump}
    if not a.no_etdump:
        path = a.keep_etdump or tempfile.mkstemp(suffix=".etdp")[1]
        m.write_etdump_result_to_file(path)
        nw, ns = a.warmup, a.steps
        res.update(analyse(path, {"growing_L": range(nw, nw + ns), "fixed_L": range(nw + ns + 1, nw + 2 * ns + 1)}))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
