"""`python -m voxtral_rt` bad input: one clear line on stderr, non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtral_rt.synth import synth

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtral_rt", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("cli") / "m", "tiny", seed=1)


def _error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


def test_transcribe_json_ok(model, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(20000)).astype(np.float32), 16000)
    r = cli("transcribe", str(model), str(wav), "--json", "--delay-ms", "160")
    assert r.returncode == 0, r.stderr[-2000:]
    j = json.loads(r.stdout)
    assert {"text", "token_ids", "token_times_ms"} <= set(j) and j["delay_ms"] == 160


def test_bad_inputs(model, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(4000, np.float32), 16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "params.json").write_text((model / "params.json").read_text().replace('"n_heads"', '"n_headz"', 1))
    (broken / "consolidated.safetensors").write_bytes((model / "consolidated.safetensors").read_bytes())
    cases = {
        "delay": (["transcribe", str(model), str(wav), "--delay-ms", "100"], "delay"),
        "no model": (["transcribe", str(tmp_path / "nope"), str(wav)], "nope"),
        "no audio": (["transcribe", str(model), str(tmp_path / "x.wav")], "x.wav"),
        "empty audio": (["transcribe", str(model), str(empty)], "empty"),
        "bad params": (["transcribe", str(broken), str(wav)], "n_heads"),
        "truncated weights": None,
    }
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    for f in ("params.json", "tekken.json"):
        (trunc / f).write_bytes((model / f).read_bytes())
    (trunc / "consolidated.safetensors").write_bytes((model / "consolidated.safetensors").read_bytes()[:100000])
    cases["truncated weights"] = (["transcribe", str(trunc), str(wav)], "safetensors")
    for name, (args, needle) in cases.items():
        line = _error_line(cli(*args))
        assert needle in line, (name, line)
