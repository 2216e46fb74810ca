"""Memory of the export process: glibc's allocator tuned for the gigabyte-sized tensors that come and go, and
the progress log that reports resident memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
import time

_T0 = time.time()
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)


def _rss_gb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**30
    except OSError:  # not Linux
        return float("nan")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def wall_s() -> float:
    """Seconds since the exporter started (since this module was imported)."""
    return time.time() - _T0


def log(msg: str) -> None:
    peak = peak_rss_gb()
    print(f"[{wall_s():7.1f}s rss {_rss_gb():5.1f} GB, peak {peak:5.1f} GB] {msg}", file=sys.stderr, flush=True)


def return_freed_memory_to_os() -> None:
    """Large tensors come and go by the gigabyte during quantization and export. glibc keeps freed chunks below
    its (adaptive, up to 32 MB) mmap threshold in the heap, where fragmentation pins them: measured, torch.export
    of the decoder left ~190 MB per layer resident that no live object held. A fixed 1 MiB threshold makes every
    big allocation its own mapping, unmapped on free; malloc_trim releases what is already pinned."""
    if hasattr(_LIBC, "mallopt"):  # glibc only; elsewhere this is a no-op
        _LIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops the adaptive raise)
        _LIBC.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    trim()


def trim() -> None:
    gc.collect()
    if hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
