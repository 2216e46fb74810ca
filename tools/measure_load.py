#!/usr/bin/env python3
"""Load a checkpoint with voxtral_rt.checkpoint.load_model(dtype=bf16) and report time and memory as JSON.

    python tools/measure_load.py MODEL_DIR [--dtype bf16|fp32] [--no-touch]

The weights are memory-mapped, so load_model itself reads almost nothing; by default every weight page is
then touched once (what the first forward pass would do) so peak_rss_gb is the realistic peak with all
weights resident. Fields: load_s (load_model), touch_s, peak_rss_gb (VmHWM of this process), file_gb,
rss_over_file (peak / file size; the target for bf16 is <= ~1.2).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from voxtral_rt.checkpoint import detect_format, file_bytes, load_model  # noqa: E402
import voxtral_rt.model  # noqa: E402,F401  (import cost is not load time)


def peak_rss_bytes() -> int:
    try:  # VmHWM is the high-water mark of resident memory (anonymous + file-backed pages)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def touch(model: torch.nn.Module) -> float:
    """Read one element per 4 KiB page of every parameter (forces the mmap in) and return a checksum."""
    s = 0.0
    for p in model.parameters():
        flat = p.detach().reshape(-1)
        step = max(1, 4096 // flat.element_size())
        s += flat[::step].float().sum().item()
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--no-touch", action="store_true", help="do not page in the weights after loading")
    a = ap.parse_args(argv)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    fmt = detect_format(a.model_dir)
    size = file_bytes(a.model_dir, fmt)
    rss0 = peak_rss_bytes()
    t0 = time.perf_counter()
    model, args = load_model(a.model_dir, dtype=dtype)
    load_s = time.perf_counter() - t0
    rss_load = peak_rss_bytes()
    touch_s = None
    if not a.no_touch:
        t1 = time.perf_counter()
        touch(model)
        touch_s = time.perf_counter() - t1
    peak = peak_rss_bytes()
    out = {
        "format": fmt,
        "dtype": a.dtype,
        "load_s": round(load_s, 3),
        "touch_s": None if touch_s is None else round(touch_s, 3),
        "peak_rss_gb": round(peak / 1e9, 3),
        "peak_rss_after_load_gb": round(rss_load / 1e9, 3),
        "baseline_rss_gb": round(rss0 / 1e9, 3),
        "file_gb": round(size / 1e9, 3),
        "rss_over_file": round(peak / size, 3),
        "params": sum(p.numel() for p in model.parameters()),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
