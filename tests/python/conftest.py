"""Shared fixtures: one tiny synthetic checkpoint exported once per test session (fp32 and 8da4w+8w)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def run_export(model_dir: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXPORT), "--model-path", str(model_dir), "--output", str(out),
                           "--max-enc-tokens", "8", "--max-dec-tokens", "16", *flags],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def demo_pte(tmp_path_factory) -> Path:
    """The demo model (models/demo) exported once per test session, as `make demo` does it (8da4w linears +
    8-bit embedding)."""
    out = tmp_path_factory.mktemp("demo") / "demo_8da4w.pte"
    r = subprocess.run([sys.executable, str(EXPORT), "--model-path", str(ROOT / "models" / "demo"), "--output", str(out),
                        "--qlinear", "8da4w", "--qlinear-encoder", "8da4w", "--qembedding", "8w"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    from voxtral_rt.synth import synth
    from voxtral_rt.tokenizer import Tekken

    d = synth(tmp_path_factory.mktemp("exp") / "tiny", "tiny", seed=5)
    fp32 = d / "fp32.pte"  # all fp32, caches too: the one compared with eager fp32 for exact tokens
    r = run_export(d, fp32, "--kv-dtype", "fp32")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done:" in r.stderr and "peak RSS" in r.stderr  # progress + final figures are printed
    q = d / "q.pte"  # as users export it: quantized, fp16 caches (the default)
    r = run_export(d, q, "--qlinear", "8da4w", "--qlinear-encoder", "8da4w", "--qembedding", "8w")
    assert r.returncode == 0, r.stderr[-3000:]
    return {"dir": d, "fp32": fp32, "q": q, "tok": Tekken.from_file(d / "tekken.json")}


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

    d = synth(tmp_path_factory.mktemp("eos") / "tiny", "tiny", seed=5)
    tok = Tekken.from_file(d / "tekken.json")
    sd = load_file(d / MISTRAL_WEIGHTS)
    (name,) = [n for n in sd if n.endswith("tok_embeddings.weight")]
    w = sd[name].clone()
    w[tok.eos_id] *= EOS_SCALE
    sd[name] = w
    save_file(sd, d / MISTRAL_WEIGHTS, metadata={"format": "pt"})
    pte = d / "fp32.pte"
    r = run_export(d, pte)
    assert r.returncode == 0, r.stderr[-3000:]
    audio = speech(16000, 6.0, seed=1)
    wav = d / "a.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    return {"dir": d, "tok": tok, "pte": pte, "audio": audio, "wav": wav}
