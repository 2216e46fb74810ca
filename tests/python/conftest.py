"""Shared fixtures: one tiny synthetic checkpoint exported once per test run (fp32 and 8da4w+8w), the demo model
and the EOS model exported once. `make test` runs the suite on pytest-xdist workers; what they share is built once
(build_once) by the first worker that asks, and the others wait for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "export" / "export_voxtral_rt.py"
RUNNER_BIN = ROOT / "runner" / "build" / "voxtral_realtime_runner"


def speech(sr: int, seconds: float, seed: int, channels: int = 1, spread: float = 0.5) -> np.ndarray:
    """Deterministic speech-like test signal (harmonics of a gliding pitch, syllable envelope, light noise).
    Multi-channel: channel c is the mono signal times 0.5 + spread * c."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    ph = 2 * np.pi * np.cumsum(130 + 50 * np.sin(2 * np.pi * 1.1 * t)) / sr
    x = sum(np.sin(k * ph) / k for k in range(1, 5)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t)) ** 2
    x = (0.2 * x + 0.03 * rng.standard_normal(len(t))).astype(np.float32)
    return x if channels == 1 else np.stack([x * (0.5 + spread * c) for c in range(channels)], 1)


def foreign_program(path: Path, meta: dict) -> Path:
    """A valid ExecuTorch program that is not a voxtral-rt export: one method and the given int constants."""
    import torch
    from executorch.exir import to_edge

    class M(torch.nn.Module):
        def forward(self, x):
            return x + 1

    ep = torch.export.export(M(), (torch.zeros(2),))
    path.write_bytes(to_edge({"forward": ep}, constant_methods=meta).to_executorch().buffer)
    return path


def planned_bytes(pte: Path) -> tuple[int, int]:
    """The .pte's memory plan as Module's shared arenas hold it: per mem id, the largest method's planned bytes, for
    id 1 (activations) and id 2 (mutable buffers: K/V rings and conv state). Id 0 is reserved."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    prog = deserialize_pte_binary(pte.read_bytes())
    prog = getattr(prog, "program", prog)
    top = [0, 0]
    for plan in prog.execution_plan:
        for i, n in enumerate(list(plan.non_const_buffer_sizes)[1:3]):
            top[i] = max(top[i], n)
    return top[0], top[1]


def build_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The directory `name`, filled by `build(dir)` once per test run and shared by all workers (each worker's
    basetemp sits in one run directory). A failed build leaves nothing behind, so every worker that asks for it
    reports the failure itself."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(exist_ok=True)
    d = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (d / ".built").exists():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            try:
                build(d)
            except BaseException:
                shutil.rmtree(d, ignore_errors=True)
                raise
            (d / ".built").touch()
    return d


def _worker_index() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)


def exported(tmp_path_factory, name: str, model_dir: Path, *flags: str, tiny_shapes: bool = True) -> Path:
    """`name`.pte of model_dir exported with flags, once per test run; the exporter's stderr is kept beside it
    (export.log) so that every test can check what it printed."""
    def build(d: Path) -> None:
        r = run_export(model_dir, d / f"{name}.pte", *flags, tiny_shapes=tiny_shapes)
        assert r.returncode == 0, r.stderr[-3000:]
        (d / "export.log").write_text(r.stderr)
        shutil.copy(model_dir / "tekken.json", d)  # beside the .pte, as users keep it (the CLIs look there)

    return build_once(tmp_path_factory, name, build) / f"{name}.pte"


def run_export(model_dir: Path, out: Path, *flags: str, tiny_shapes: bool = True) -> subprocess.CompletedProcess:
    """The export CLI; tiny_shapes: small encoder/decoder chunks (8/16 tokens), else the exporter's defaults."""
    shapes = ["--max-enc-tokens", "8", "--max-dec-tokens", "16"] if tiny_shapes else []
    return subprocess.run([sys.executable, str(EXPORT), "--model-path", str(model_dir), "--output", str(out),
                           *shapes, *flags], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def demo_pte(tmp_path_factory) -> Path:
    """The demo model (models/demo) exported once per test session, as `make demo` does it (8da4w linears +
    8-bit embedding)."""
    return exported(tmp_path_factory, "demo_8da4w", ROOT / "models" / "demo", "--qlinear", "8da4w",
                    "--qlinear-encoder", "8da4w", "--qembedding", "8w", tiny_shapes=False)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    from voxtral_rt.synth import synth
    from voxtral_rt.tokenizer import Tekken

    d = build_once(tmp_path_factory, "tiny", lambda d: synth(d, "tiny", seed=5))
    exports = {
        "fp32": ("--kv-dtype", "fp32"),  # all fp32, caches too: the one compared with eager fp32 for exact tokens
        "q": ("--qlinear", "8da4w", "--qlinear-encoder", "8da4w", "--qembedding", "8w"),  # as users export it:
    }                                                                                  # quantized, fp16 caches
    order = list(exports)[::-1] if _worker_index() % 2 else list(exports)  # two workers export one each
    ptes = {k: exported(tmp_path_factory, f"tiny_{k}", d, *exports[k]) for k in order}
    log = (ptes["fp32"].parent / "export.log").read_text()
    assert "done:" in log and "peak RSS" in log  # progress + final figures are printed
    return {"dir": d, **ptes, "tok": Tekken.from_file(d / "tekken.json")}


EOS_SCALE = 9.0  # tiny seed 5 on speech(6 s, seed 1): first EOS at generated token 8, ordinary tokens again after 20


@pytest.fixture(scope="session")
def eos_model(tmp_path_factory):
    """The tiny random checkpoint with its EOS row (tied embedding and head) scaled so that EOS wins mid-stream: it
    then emits a run of EOS and, after it, ordinary tokens again (test_live_eos, test_c_api)."""
    import soundfile as sf
    from safetensors.torch import load_file, save_file

    from voxtral_rt.checkpoint import MISTRAL_WEIGHTS
    from voxtral_rt.synth import synth
    from voxtral_rt.tokenizer import Tekken

    def build(d: Path) -> None:
        synth(d, "tiny", seed=5)
        sd = load_file(d / MISTRAL_WEIGHTS)
        (name,) = [n for n in sd if n.endswith("tok_embeddings.weight")]
        w = sd[name].clone()
        w[Tekken.from_file(d / "tekken.json").eos_id] *= EOS_SCALE
        sd[name] = w
        save_file(sd, d / MISTRAL_WEIGHTS, metadata={"format": "pt"})
        sf.write(d / "a.wav", speech(16000, 6.0, seed=1), 16000, subtype="FLOAT")

    d = build_once(tmp_path_factory, "eos", build)
    tok = Tekken.from_file(d / "tekken.json")
    pte = exported(tmp_path_factory, "eos_fp32", d)
    audio = speech(16000, 6.0, seed=1)
    wav = d / "a.wav"
    return {"dir": d, "tok": tok, "pte": pte, "audio": audio, "wav": wav}
