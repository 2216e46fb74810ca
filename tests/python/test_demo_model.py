"""The trained demo model (models/demo): every bundled held-out WAV transcribes to its text through every layer --
eager PyTorch, the `.pte` via `python -m voxtral_rt transcribe --pte`, and the C++ runner offline and streaming.
samples/voices.tsv gives each sample's kind (`tools/train_demo.py`: words = espeak-ng words synthesized one by one;
espeak / flite = whole sentences) and voice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from voxtral_rt.audio import load_audio
from voxtral_rt.checkpoint import MISTRAL_WEIGHTS, load_model
from voxtral_rt.evaluate import normalize
from voxtral_rt.engine import EagerEngine
from voxtral_rt.protocol import transcribe
from voxtral_rt.tokenizer import Tekken

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
TOKENIZER = DEMO / "tekken.json"
RUNNER = ROOT / "runner" / "build" / "voxtral_realtime_runner"
SAMPLES = sorted((DEMO / "samples").glob("*.wav"))


def _ref(wav: Path) -> str:
    return normalize(wav.with_suffix(".txt").read_text())


def _py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtral_rt", *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


def test_bundle_is_a_small_native_checkpoint():
    from safetensors import safe_open

    assert len(SAMPLES) >= 3
    assert all(w.with_suffix(".txt").is_file() for w in SAMPLES)
    kinds = {line.split("\t")[0]: line.split("\t")[1] for line in (DEMO / "samples" / "voices.tsv").read_text().splitlines()}
    assert sorted(kinds) == [w.stem for w in SAMPLES]  # every sample says how it was made (`make demo` prints it)
    assert set(kinds.values()) <= {"words", "espeak", "flite"}
    weights = DEMO / MISTRAL_WEIGHTS
    assert weights.stat().st_size < 10_000_000
    with safe_open(str(weights), framework="pt") as f:
        names = list(f.keys())
        assert all(f.get_slice(n).get_dtype() == "BF16" for n in names)
    assert any(n.startswith("mm_streams_embeddings.embedding_module.whisper_encoder.") for n in names)
    assert Tekken.from_file(TOKENIZER).vocab_size == json.loads((DEMO / "params.json").read_text())["vocab_size"]


def test_eager_transcribes_samples():
    model, _ = load_model(DEMO, dtype=torch.float32)
    engine = EagerEngine(model.eval())
    tok = Tekken.from_file(TOKENIZER)
    for wav in SAMPLES:
        res = transcribe(engine, tok, load_audio(wav))
        assert normalize(res["text"]) == _ref(wav), wav.name
        # Streaming in 80 ms chunks makes the same tokens.
        assert transcribe(engine, tok, load_audio(wav), chunk_samples=1280)["token_ids"] == res["token_ids"], wav.name


def test_eager_cli():
    wav = SAMPLES[0]
    r = _py("transcribe", str(DEMO), str(wav))
    assert r.returncode == 0, r.stderr[-2000:]
    assert normalize(r.stdout) == _ref(wav)


def test_pte_cli_transcribes_samples(demo_pte):
    for wav in SAMPLES:
        r = _py("transcribe", "--pte", str(demo_pte), "--tokenizer", str(TOKENIZER), str(wav))
        assert r.returncode == 0, r.stderr[-2000:]
        assert normalize(r.stdout) == _ref(wav), wav.name


def _runner(pte: Path, wav: Path, *flags: str) -> dict:
    assert RUNNER.exists(), f"{RUNNER} missing: build it with `make runner`"
    r = subprocess.run([str(RUNNER), "--model_path", str(pte), "--tokenizer_path", str(TOKENIZER),
                        "--audio_path", str(wav), "--json", *flags], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_runner_transcribes_samples_offline_and_streaming(demo_pte):
    for wav in SAMPLES:
        offline = _runner(demo_pte, wav)
        assert normalize(offline["text"]) == _ref(wav), wav.name
        streaming = _runner(demo_pte, wav, "--streaming", "--chunk_ms", "80")
        assert streaming["token_ids"] == offline["token_ids"], wav.name


def test_eval_cli_on_samples(demo_pte):
    r = _py("eval", str(demo_pte), str(DEMO / "samples"), "--tokenizer", str(TOKENIZER), "--runner", str(RUNNER),
            "--streaming", "--chunk-ms", "80")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["wer"] == 0.0 and out["n_utterances"] == len(SAMPLES) and out["engine"] == "runner"
    assert out["rtf"] > 0 and out["step_ms"]["p50"] > 0


def test_live_input_same_tokens_as_offline(demo_pte):
    """Live input on a trained model: LiveSession fed from a producer thread in tiny pieces (the public-API
    test's `live` part), and each clip written to --stdin at once (fed as a backlog), give the offline tokens."""
    tests = ROOT / "runner" / "build" / "voxtral_rt_pte_tests"
    r = subprocess.run([str(tests), str(demo_pte), str(TOKENIZER), str(SAMPLES[0]), "live"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and " 0 failed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    for wav in SAMPLES:
        offline = _runner(demo_pte, wav)
        s = subprocess.run([str(RUNNER), "--model_path", str(demo_pte), "--tokenizer_path", str(TOKENIZER), "--stdin",
                            "--stdin_format", "f32le", "--json"], input=load_audio(wav).astype("<f4").tobytes(),
                           capture_output=True, timeout=600)
        assert s.returncode == 0, s.stderr.decode()[-2000:]
        assert json.loads(s.stdout)["token_ids"] == offline["token_ids"], wav.name
