"""Shared fixtures: one tiny synthetic checkpoint exported once per test session (fp32 and 8da4w+8w)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "export" / "export_voxtral_rt.py"


def run_export(model_dir: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXPORT), "--model-path", str(model_dir), "--output", str(out),
                           "--max-enc-tokens", "8", "--max-dec-tokens", "16", *flags],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    from voxtral_rt.synth import synth
    from voxtral_rt.tokenizer import Tekken

    d = synth(tmp_path_factory.mktemp("exp") / "tiny", "tiny", seed=5)
    fp32 = d / "fp32.pte"
    r = run_export(d, fp32)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done:" in r.stderr and "peak RSS" in r.stderr  # progress + final figures are printed
    q = d / "q.pte"
    r = run_export(d, q, "--qlinear", "8da4w", "--qlinear-encoder", "8da4w", "--qembedding", "8w")
    assert r.returncode == 0, r.stderr[-3000:]
    return {"dir": d, "fp32": fp32, "q": q, "tok": Tekken.from_file(d / "tekken.json")}
