"""Synthetic checkpoints: real on-disk formats, determinism, transformers compatibility (tiny preset only)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from voxtral_rt.checkpoint import (expected_shapes, internal_to_hf, internal_to_native, load_state_dict, rope_heads,
                                   rope_native_to_hf)
from voxtral_rt.config import REAL_AUDIO, REAL_MODEL, TINY_MODEL, AudioArgs, ModelArgs
from voxtral_rt.cli import main as cli_main
from voxtral_rt.synth import SafetensorsWriter, convert_to_hf, hf_config, synth, synth_state_dict

A = TINY_MODEL


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {f: synth(root / f, "tiny", seed=0, fmt=f) for f in ("mistral", "hf")}


def _header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)), n


def test_mistral_layout(dirs):
    d = dirs["mistral"]
    assert sorted(p.name for p in d.iterdir()) == ["consolidated.safetensors", "params.json", "tekken.json"]
    assert ModelArgs.from_params_json(d / "params.json") == A
    assert AudioArgs.from_tekken_json(d / "tekken.json") == REAL_AUDIO
    header, n = _header(d / "consolidated.safetensors")
    assert n % 8 == 0
    assert set(header) == {internal_to_native(k) for k in expected_shapes(A)}
    assert {v["dtype"] for v in header.values()} == {"BF16"}
    assert "mm_streams_embeddings.embedding_module.whisper_encoder.conv_layers.0.conv.weight" in header


def test_hf_layout(dirs):
    d = dirs["hf"]
    assert sorted(p.name for p in d.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json", "tekken.json",
    ]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "voxtral_realtime" and cfg["dtype"] == "bfloat16"
    assert cfg["audio_config"]["rope_parameters"]["rope_theta"] == 1e6  # transformers' encoder default is 1e4
    assert cfg["text_config"]["vocab_size"] == A.vocab_size  # not merged over the 4B default
    assert "num_key_value_heads" not in cfg["audio_config"]
    pp = json.loads((d / "preprocessor_config.json").read_text())
    assert pp["feature_extractor_type"] == "VoxtralRealtimeFeatureExtractor" and pp["global_log_mel_max"] == 1.5
    assert ModelArgs.from_hf_config(d / "config.json") == A
    header, _ = _header(d / "model.safetensors")
    assert header.pop("__metadata__") == {"format": "pt"}
    assert set(header) == {internal_to_hf(k) for k in expected_shapes(A)}


def test_weights_match_generator_and_are_not_degenerate(dirs):
    ref = synth_state_dict(A, seed=0)
    with safe_open(str(dirs["mistral"] / "consolidated.safetensors"), "pt") as f:
        for n, t in ref.items():
            assert torch.equal(f.get_tensor(internal_to_native(n)), t), n
    with safe_open(str(dirs["hf"] / "model.safetensors"), "pt") as f:
        perm = rope_heads(A)
        for n, t in ref.items():
            want = rope_native_to_hf(t, perm[n]) if n in perm else t
            assert torch.equal(f.get_tensor(internal_to_hf(n)), want), n
    for n, t in ref.items():
        assert torch.isfinite(t).all(), n
        if n.endswith("norm.weight"):
            assert 0.05 < t.float().std() < 0.2 and abs(t.float().mean() - 1) < 0.1, n  # random around 1
        elif t.ndim == 1:
            assert 0.05 < t.float().std() < 0.2, n  # small random biases, not zeros
    w = ref["layers.0.feed_forward.w1.weight"].float()
    assert abs(w.std().item() * A.dim**0.5 - 2) < 0.1  # gain 2 / sqrt(fan_in), see synth._std


def test_deterministic_per_seed(tmp_path, dirs):
    again = synth(tmp_path / "again", "tiny", seed=0)
    assert (again / "consolidated.safetensors").read_bytes() == (dirs["mistral"] / "consolidated.safetensors").read_bytes()
    other = synth_state_dict(A, seed=1)
    assert not torch.equal(other["norm.weight"], synth_state_dict(A, seed=0)["norm.weight"])


def test_transformers_loads_hf_dir(dirs, tmp_path):
    """transformers reads our HF dir with no missing/unexpected keys, and its in-memory weights (renamed,
    `model.`-prefixed, with lm_head) load back through our HF reader to the native weights."""
    from transformers import VoxtralRealtimeForConditionalGeneration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = VoxtralRealtimeForConditionalGeneration.from_pretrained(dirs["hf"], output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.dtype == torch.bfloat16
    assert model.config.audio_config.rope_parameters["rope_theta"] == 1e6
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["lm_head.weight"] = sd["lm_head.weight"].clone()  # tied in memory; a separate copy on disk
    mem = tmp_path / "mem"
    mem.mkdir()
    for f in ("config.json", "preprocessor_config.json"):
        (mem / f).write_bytes((dirs["hf"] / f).read_bytes())
    save_file(sd, str(mem / "model.safetensors"))
    ours = load_state_dict(mem, A)
    native = load_state_dict(dirs["mistral"], A)
    assert all(torch.equal(ours[n], native[n]) for n in native)


def test_convert_to_hf_matches_synth(dirs, tmp_path):
    """Our Mistral -> HF writer reproduces the synthesized HF checkpoint byte for byte, and reads back."""
    out = convert_to_hf(dirs["mistral"], tmp_path / "conv")
    for f in ("model.safetensors", "config.json", "preprocessor_config.json", "tekken.json"):
        assert (out / f).read_bytes() == (dirs["hf"] / f).read_bytes(), f
    a, b = load_state_dict(out, A), load_state_dict(dirs["mistral"], A)
    assert all(torch.equal(a[n], b[n]) for n in b)


def test_main_synth(tmp_path):
    assert cli_main(["synth", str(tmp_path / "x"), "--preset", "tiny", "--seed", "5", "--format", "hf"]) == 0
    ref = synth_state_dict(A, seed=5)
    sd = load_state_dict(tmp_path / "x", A)
    assert all(torch.equal(sd[n], ref[n]) for n in ref)
    with pytest.raises(SystemExit):
        cli_main(["synth", str(tmp_path / "y"), "--preset", "huge"])


def test_writer_roundtrip_and_checks(tmp_path):
    p = tmp_path / "w.safetensors"
    a = torch.randn(5, 3)
    b = torch.randn(7, dtype=torch.float64).to(torch.bfloat16)
    w = SafetensorsWriter(p, [("a", (5, 3), torch.float32), ("b", (7,), torch.bfloat16)], {"k": "v"})
    w.write("a", a[:2])
    w.write("a", a[2:])
    with pytest.raises(ValueError, match="expected tensor 'b'"):
        w.write("a", a)
    w.write("b", b)
    w.close()
    assert not (tmp_path / "w.safetensors.tmp").exists()
    with safe_open(str(p), "pt") as f:
        assert f.metadata() == {"k": "v"}
        assert torch.equal(f.get_tensor("a"), a) and torch.equal(f.get_tensor("b"), b)
    w = SafetensorsWriter(tmp_path / "v.safetensors", [("a", (5, 3), torch.float32)])
    w.write("a", a[:1])
    with pytest.raises(ValueError, match="not fully written"):
        w.close()
    assert not (tmp_path / "v.safetensors").exists() and not (tmp_path / "v.safetensors.tmp").exists()


def test_4b_preset_plan_only(tmp_path):
    """The 4B path without generating 8.9 GB: shapes, file size plan, and the HF config round trip."""
    shapes = expected_shapes(REAL_MODEL)
    w = SafetensorsWriter(tmp_path / "big.safetensors", [(internal_to_native(n), s, torch.bfloat16) for n, s in shapes.items()])
    assert w.data_bytes == 2 * 4_429_679_360
    w.abort()
    cfg = hf_config(REAL_MODEL, REAL_AUDIO)
    cfg.save_pretrained(tmp_path)
    from transformers import VoxtralRealtimeFeatureExtractor

    VoxtralRealtimeFeatureExtractor().save_pretrained(tmp_path)
    assert ModelArgs.from_hf_config(tmp_path / "config.json") == REAL_MODEL
    c = json.loads((tmp_path / "config.json").read_text())
    assert c["text_config"]["num_key_value_heads"] == 8 and c["audio_config"]["head_dim"] == 64
    assert c["default_num_delay_tokens"] == 6


# ----------------------------------------------------------------------------- --pad-share


def _pad_runs(pad: np.ndarray) -> list[int]:
    runs, n = [], 0
    for p in pad:
        if p:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs + ([n] if n else [])


@pytest.mark.parametrize("share", [0.5, 0.75, 0.9])
def test_pad_share_measured_on_speechlike_audio(tmp_path, share):
    """The eager tiny model emits [STREAMING_PAD] at the requested share of generated steps (+-0.04) on speech-like
    audio it was not calibrated on (another seed), exactly on the tokens the gate's energy rule predicts, in bursts."""
    from voxtral_rt.checkpoint import load_model
    from voxtral_rt.engine import EagerEngine
    from voxtral_rt.protocol import transcribe
    from voxtral_rt.speechlike import speech_with_pauses
    from voxtral_rt.synth import pad_gate_energy, pad_gate_threshold
    from voxtral_rt.tokenizer import Tekken

    d = synth(tmp_path / "m", "tiny", pad_share=share)
    model, args = load_model(d)
    tok = Tekken.from_file(d / "tekken.json")
    audio = speech_with_pauses(90.0, seed=7)
    r = transcribe(EagerEngine(model), tok, audio)
    ids = np.array(r["token_ids"])
    assert not r["eos"] and len(ids) == r["n_audio_tokens"] - (1 + 32 + 6)  # no early EOS: the whole stream
    pad = ids == tok.streaming_pad_id
    assert abs(pad.mean() - share) <= 0.04, pad.mean()
    # Token i is decided at decoder position 32 + 6 + i, i.e. by real audio token 6 + i.
    energy = pad_gate_energy(audio, args.encoder)[6:]
    n = min(len(energy), len(ids))
    gated = energy[:n] < pad_gate_threshold(share, args.encoder)
    assert (gated == pad[:n]).mean() >= 0.99
    # Bursty as on speech: whole pauses are PAD (runs of 8+), and PAD runs are no shorter on average than independent
    # draws at the same share would give (1 / (1 - p); measured: 2.2x that at 0.5 and 0.75, 1.0x at 0.9).
    runs = _pad_runs(pad)
    assert max(runs) >= 8 and np.mean(runs) >= 0.95 / (1.0 - pad.mean())


def test_pad_share_same_weights_in_both_formats_and_only_gate_rows_change(tmp_path):
    ref = synth_state_dict(A, seed=0, pad_share=0.75)
    plain = synth_state_dict(A, seed=0)
    for fmt in ("mistral", "hf"):
        d = synth(tmp_path / fmt, "tiny", seed=0, fmt=fmt, pad_share=0.75)
        sd = load_state_dict(d, A)
        assert all(torch.equal(sd[n], ref[n]) for n in ref), fmt
    changed = {n for n in ref if not torch.equal(ref[n], plain[n])}
    assert "tok_embeddings.weight" in changed and "whisper_encoder.conv_layers.0.conv.bias" in changed
    assert not any(".wq." in n or ".wk." in n or n.startswith("layers.") for n in changed), changed
    # Outside the gate's rows/columns the values are the plain random ones.
    e, p = ref["tok_embeddings.weight"], plain["tok_embeddings.weight"]
    assert torch.equal(e[33:], p[33:]) and torch.equal(e[32, 1:], p[32, 1:]) and e[32, 0] == 1.0
    assert cli_main(["synth", str(tmp_path / "x"), "--pad-share", "0.75"]) == 0
    with pytest.raises(ValueError, match="pad-share"):
        synth(tmp_path / "y", "tiny", pad_share=1.0)
