"""Per-op profile of one text_decoder step (one position) of an exported .pte, from ETDump: the XNNPACK per-op
timings (XNNProfiler, on when the module has an event tracer), the ops left outside XNNPACK, each delegate call's
time outside its ops (xnn reshape/setup on every call), and the method's own overhead.

    python bench/profile_decoder.py MODEL.pte [--pos-s 10] [--steps 24] [--warmup 3] [--threads N] [--no-etdump]

The decoder runs at consecutive positions from --pos-s seconds (12.5 positions per second) as a stream does (the
attended length L grows by one per step), then as many steps at one fixed position (L constant). The KV cache
holds whatever it holds: timing does not depend on its values. A .pte with a `delay_scales` method (delay
conditioning computed once per session, an input of text_decoder) is handled too.

Prints JSON, per phase: ms per step by category and by XNNPACK op type / portable op, the linears (the 8-bit
dynamically quantized FCs, i.e. what bench_linears.py times, LM head included) and the non-linear remainder,
in three views -- `quiet`: median over the fastest quarter of the steps (on a shared 2-core machine, a pool
thread that loses its core stalls the op it is in by scheduler ticks; the fastest steps are the least hit),
`all`: median over every step, `floor_by_category_ms`: sum of each event's minimum (optimistic). Plus the
contention seen (involuntary context switches per step, CPU seconds per wall second). --no-etdump loads without
the event tracer and only times the steps (wall). The Python runtime runs the .pte's slice_copy as a copy (the
C++ runner aliases whole-ring slices). Loads the model once: the 4b model takes ~20 s and ~6 GB.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
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
CONVERT = re.compile(r"^Convert \(NC, F32, Q")  # dynamic quantization of activations, when not fused into the FC
OVH = "delegate overhead (per-call reshape/setup, outside ops)"


def xnn_category(name: str, prev: str, nxt: str) -> str:
    """Coarse category of one XNNPACK op (name without the '#k' suffix; prev/next: its neighbours in the graph)."""
    if LINEAR_FC.match(name) or CONVERT.match(name):
        return "linear_q (8da4w FC)"
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
    # A .pte whose delay conditioning is computed once per session (delay_scales method, an input of text_decoder).
    if "delay_scales" in m.method_names():
        delay_in = m.run_method("delay_scales", [torch.tensor([n_delay])])[0].clone()
    else:
        delay_in = torch.tensor([n_delay])
    for p in positions:
        args = [torch.randn(1, 1, dim), torch.tensor([p]), delay_in, ring_mask(p, 1, win, slots)]
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
    native_name = {e._instruction_id: e.name[len("native_call_"):] for e in ev if e.name.startswith("native_call_")}
    strip = lambda n: re.sub(r" #\d+$", "", n)
    execute = next((e.perf_data.raw[-n_runs:] for b in insp.event_blocks for e in b.events
                    if e.name == "Method::execute" and e.perf_data and len(e.perf_data.raw) >= n_runs), None)
    cat = defaultdict(lambda: [0.0] * n_runs)  # category -> ms per run
    op = defaultdict(lambda: [0.0] * n_runs)  # XNNPACK op type / portable op -> ms per run
    floor: dict[str, dict[str, float]] = {label: defaultdict(float) for label in runs}
    counts: dict[str, int] = defaultdict(int)
    top = [0.0] * n_runs  # sum of the top-level events (delegate calls and portable ops)
    for k, e in enumerate(ev):
        if not e.perf_data:
            continue
        raw = e.perf_data.raw
        if e.is_delegated_op:
            c = xnn_category(strip(e.name), strip(ev[k - 1].name) if k else "",
                             strip(ev[k + 1].name) if k + 1 < len(ev) else "")
            key = "xnn: " + strip(e.name)
            for i in range(n_runs):
                cat[c][i] += raw[i]
                op[key][i] += raw[i]
                cat[OVH][i] -= raw[i]
        elif e.name == "DELEGATE_CALL":
            c = key = OVH
            for i in range(n_runs):
                top[i] += raw[i]
                cat[c][i] += raw[i]
        elif e.name == "OPERATOR_CALL":
            name = native_name.get(e._instruction_id, "?")
            c, key = "outside XNNPACK: " + name, "portable: " + name
            for i in range(n_runs):
                top[i] += raw[i]
                cat[c][i] += raw[i]
                op[key][i] += raw[i]
        else:
            continue
        counts["delegate calls" if e.name == "DELEGATE_CALL" else key] += 1
        if c != OVH:  # a call's min minus its ops' mins would be biased: no floor for the overhead
            for label, idx in runs.items():
                floor[label][c] += min(raw[i] for i in idx if i < n_runs)
    if execute is not None:
        cat["method overhead (executor loop)"] = [execute[i] - top[i] for i in range(n_runs)]
    r3 = lambda x: round(x, 3)
    out = {}
    for label, idx in runs.items():
        idx = [i for i in idx if i < n_runs]
        step = {i: sum(cat[c][i] for c in cat) for i in idx}
        quiet = sorted(idx, key=lambda i: step[i])[:max(3, len(idx) // 4)]

        def view(sel: list[int]) -> dict:
            by = {c: statistics.median(cat[c][i] for i in sel) for c in cat}
            st = statistics.median(step[i] for i in sel)
            lin = statistics.median(sum(v[i] for c, v in cat.items() if c.startswith("linear_q")) for i in sel)
            ops = {o: statistics.median(op[o][i] for i in sel) for o in op}
            return {"step_ms": r3(st), "linear_q_ms": r3(lin), "non_linear_ms": r3(st - lin),
                    "step_over_linears": r3(st / max(lin, 1e-9)),
                    "by_category_ms": {c: r3(by[c]) for c in sorted(by, key=lambda c: -by[c])},
                    "by_op_ms": {o: r3(ops[o]) for o in sorted(ops, key=lambda o: -ops[o])[:30]}}

        out[label] = {"runs": len(idx), "quiet_runs": len(quiet), "execute_ms_per_run": [r3(step[i]) for i in idx],
                      "quiet": view(quiet), "all": view(idx),
                      "floor_by_category_ms": {c: r3(v) for c, v in sorted(floor[label].items(), key=lambda kv: -kv[1])}}
    out["counts_per_step"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pte")
    p.add_argument("--pos-s", type=float, default=10.0, help="stream position of the first profiled step, seconds")
    p.add_argument("--steps", type=int, default=24, help="profiled steps per phase")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--n-delay", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="pool threads (0: the runtime's default)")
    p.add_argument("--no-etdump", action="store_true", help="time plain steps without the event tracer")
    p.add_argument("--keep-etdump", default=None, help="write the ETDump here (default: a temporary file)")
    a = p.parse_args()

    t0 = time.perf_counter()
    if a.threads:  # before loading: XNNPACK runtimes keep the pool they were created with
        from executorch.extension.pybindings import portable_lib as pl
        pl._unsafe_reset_threadpool(a.threads)
    m = load(a.pte, not a.no_etdump)
    const = lambda n: int(m.run_method(n, [])[0])
    meta = {k: const(k) for k in ("dim", "dec_sliding_window", "dec_cache_slots", "format_version")}
    load_s = time.perf_counter() - t0
    pos0 = int(round(a.pos_s * 12.5))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    w = run_steps(m, meta, list(range(max(pos0 - a.warmup, 0), pos0)), a.n_delay)
    nw = len(w)  # run index of the first profiled step in the text_decoder block
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    grow = run_steps(m, meta, list(range(pos0, pos0 + a.steps)), a.n_delay)
    fixed = run_steps(m, meta, [pos0 + a.steps - 1] * (a.steps + 1), a.n_delay)[1:]
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    res = {"pte": a.pte, "meta": meta, "load_s": round(load_s, 1), "threads": a.threads or torch.get_num_threads(),
           "position": pos0, "attended_L": min(pos0 + 1, meta["dec_cache_slots"]),
           "wall_ms_median": {"growing_L": round(statistics.median(grow), 2), "fixed_L": round(statistics.median(fixed), 2)},
           "wall_ms_min": {"growing_L": round(min(grow), 2), "fixed_L": round(min(fixed), 2)},
           "wall_ms_all": {"warmup": [round(x, 1) for x in w], "growing_L": [round(x, 1) for x in grow],
                           "fixed_L": [round(x, 1) for x in fixed]},
           "etdump": not a.no_etdump,
           # contention: other jobs on the 2 cores preempt the pool's threads (each preemption ~ a 4 ms tick)
           "loadavg_before_after": [load_before, Path("/proc/loadavg").read_text().split()[:3]],
           "involuntary_ctx_switches_per_step": round((ru1.ru_nivcsw - ru0.ru_nivcsw) / (2 * a.steps + 1), 1),
           "cpu_s_per_wall_s": round((ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
                                     / max(sum(grow) + sum(fixed), 1e-9) * 1e3, 2)}
    if not a.no_etdump:
        path = a.keep_etdump or tempfile.mkstemp(suffix=".etdp")[1]
        m.write_etdump_result_to_file(path)
        ns = a.steps
        res.update(analyse(path, {"growing_L": range(nw, nw + ns), "fixed_L": range(nw + ns + 1, nw + 2 * ns + 1)}))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
