"""Eager model + protocol vs the independent references: transformers' VoxtralRealtimeForConditionalGeneration
(logits, greedy generation) and mistral-common's encode_transcription (prompt, padding).

Checkpoints are generated in the real on-disk formats with unusual shapes and randomized norms/biases;
transformers loads the HF-format directory itself (from_pretrained), our loader reads both formats.
"""

from __future__ import annotations

import io
import random
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from voxtral_rt.audio import load_audio
from voxtral_rt.checkpoint import load_model
from voxtral_rt.config import TINY_MODEL, ConfigError
from voxtral_rt.engine import EagerEngine, StreamParams
from voxtral_rt.protocol import offline_padded_audio, transcribe
from voxtral_rt.synth import synth
from voxtral_rt.tokenizer import Tekken

# Odd shapes on purpose: 5 query heads over 1 KV head, head_dim 12, encoder 5 heads, small windows so
# both sliding windows are exceeded by a few seconds of audio.
ODD = replace(
    TINY_MODEL, dim=80, n_heads=5, n_kv_heads=1, head_dim=12, hidden_dim=136, vocab_size=2100, sliding_window=20,
    encoder=replace(TINY_MODEL.encoder, dim=40, n_heads=5, head_dim=16, hidden_dim=72, sliding_window=28),
)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    out = {}
    for fmt in ("mistral", "hf"):
        out[fmt] = synth(root / fmt, args=ODD, seed=3, fmt=fmt)
    return out


@pytest.fixture(scope="module")
def hf_model(ckpts):
    from transformers import VoxtralRealtimeForConditionalGeneration

    m = VoxtralRealtimeForConditionalGeneration.from_pretrained(ckpts["hf"], dtype=torch.float32)
    return m.eval()


@pytest.fixture(scope="module")
def tok(ckpts):
    return Tekken.from_file(ckpts["mistral"] / "tekken.json")


def _signal(kind: str, sr: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    if kind == "near_silent":
        return (1e-4 * rng.standard_normal(len(t))).astype(np.float32)
    # speech-like: amplitude-modulated harmonics with a gliding pitch, plus noise bursts
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
    ph = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * ph) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t)) ** 2
    x = 0.2 * x + 0.05 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 1.3 * t) > 0.6)
    return x.astype(np.float32)


AUDIOS = {
    "mono16k": lambda p: sf.write(p, _signal("speech", 16000, 3.3, 1), 16000),
    "stereo44k": lambda p: sf.write(p, np.stack([_signal("speech", 44100, 2.2, 2), _signal("speech", 44100, 2.2, 3)], 1), 44100),
    "near_silent": lambda p: sf.write(p, _signal("near_silent", 16000, 1.5, 4), 16000),
    "pcm16_8k": lambda p: sf.write(p, _signal("speech", 8000, 4.7, 5), 8000, subtype="PCM_16"),
}


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    out = {}
    for name, write in AUDIOS.items():
        write(d / f"{name}.wav")
        out[name] = d / f"{name}.wav"
    return out


def mistral_common_request(tekken_path, audio16k: np.ndarray, delay_ms: int):
    """(prompt ids, padded audio) from mistral-common's own OFFLINE streaming request encoding."""
    from mistral_common.protocol.transcription.request import StreamingMode, TranscriptionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    mt = MistralTokenizer.from_file(str(tekken_path))
    buf = io.BytesIO()
    sf.write(buf, audio16k, 16000, format="WAV", subtype="FLOAT")
    req = TranscriptionRequest(audio=buf.getvalue(), streaming=StreamingMode.OFFLINE, target_streaming_delay_ms=delay_ms, language=None)
    enc = mt.encode_transcription(req)
    return list(enc.tokens), np.asarray(enc.audios[0].audio_array, dtype=np.float32)


def hf_generate(hf, padded: np.ndarray, prompt: list[int], n_delay: int) -> list[int]:
    from transformers.models.voxtral_realtime.feature_extraction_voxtral_realtime import VoxtralRealtimeFeatureExtractor

    feats = VoxtralRealtimeFeatureExtractor()(padded, sampling_rate=16000, return_tensors="pt")["input_features"]
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([prompt]), input_features=feats, num_delay_tokens=n_delay, do_sample=False)
    return out[0, len(prompt):].tolist()


# ----------------------------------------------------------------------------- protocol vs mistral-common


@pytest.mark.parametrize("delay_ms", [80, 160, 480, 1200, 2400])
def test_prompt_and_padding_match_mistral_common(ckpts, tok, delay_ms):
    for n in [1, 1279, 1280, 16000, 21761]:
        audio = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
        ref_tokens, ref_audio = mistral_common_request(ckpts["mistral"] / "tekken.json", audio, delay_ms)
        p = StreamParams.from_tokenizer(tok, delay_ms)
        assert p.prompt == ref_tokens
        ours = offline_padded_audio(audio, p)
        assert ours.shape == ref_audio.shape
        np.testing.assert_array_equal(ours, ref_audio)


@pytest.mark.parametrize("bad", [0, 40, 100, 1280, 1600, 2000, 4800, -80])
def test_unsupported_delays_rejected(tok, bad):
    with pytest.raises(ConfigError, match="delay"):
        StreamParams.from_tokenizer(tok, bad)


# ----------------------------------------------------------------------------- logits vs transformers


@pytest.mark.parametrize("fmt", ["mistral", "hf"])
def test_logits_match_transformers(ckpts, hf_model, tok, fmt):
    """Teacher-forced logits at every position, our chunked path vs transformers' one-shot forward."""
    from transformers.models.voxtral_realtime.feature_extraction_voxtral_realtime import VoxtralRealtimeFeatureExtractor

    model, _ = load_model(ckpts[fmt], dtype=torch.float32)
    model.eval()
    n_delay = 6
    p = StreamParams.from_tokenizer(tok, 480)
    padded = offline_padded_audio(_signal("speech", 16000, 4.0, 7), p)
    feats = VoxtralRealtimeFeatureExtractor()(padded, sampling_rate=16000, return_tensors="pt")["input_features"]
    n_audio = feats.shape[-1] // 8
    rng = random.Random(0)
    ids = torch.tensor([p.prompt + [rng.randrange(ODD.vocab_size) for _ in range(n_audio - len(p.prompt))]])
    with torch.no_grad():
        ref = hf_model(input_ids=ids, input_features=feats, num_delay_tokens=n_delay).logits[0]
    worst = 0.0
    for enc_chunk, dec_chunk in [(64, 64), (5, 3), (1, 1)]:
        model.setup_caches(enc_chunk, dec_chunk)
        with torch.no_grad():
            emb = torch.cat([model.encode(feats[..., 8 * t: 8 * min(t + enc_chunk, n_audio)], torch.tensor([4 * t]))[0]
                             for t in range(0, n_audio, enc_chunk)])
            got = torch.cat([
                model.decode(model.embed(ids[:, q: q + dec_chunk]) + emb[None, q: q + dec_chunk], torch.tensor([q]),
                             torch.tensor([n_delay]), all_logits=True)[0]
                for q in range(0, n_audio, dec_chunk)])
        worst = max(worst, (got - ref).abs().max().item())
    print(f"max |dlogits| vs transformers ({fmt}): {worst:.2e} (logit scale {ref.abs().max():.1f})")
    assert worst <= 1e-4


def test_bf16_close_to_fp32(ckpts):
    m32, _ = load_model(ckpts["mistral"], dtype=torch.float32)
    m16, _ = load_model(ckpts["mistral"], dtype=torch.bfloat16)
    for m in (m32, m16):
        m.eval().setup_caches(8, 8)
    torch.manual_seed(0)
    mel = torch.randn(1, 128, 64)
    with torch.no_grad():
        a32, a16 = m32.encode(mel, torch.tensor([0])), m16.encode(mel, torch.tensor([0]))
        assert m16.dtype == torch.bfloat16
        rel = ((a32 - a16.float()).norm() / a32.norm()).item()
        l32 = m32.decode(a32[:, :4] + m32.embed(torch.tensor([[1, 2, 3, 4]])), torch.tensor([0]), torch.tensor([6]))
        l16 = m16.decode(a16[:, :4] + m16.embed(torch.tensor([[1, 2, 3, 4]])), torch.tensor([0]), torch.tensor([6]))
    rel_l = ((l32 - l16).norm() / l32.norm()).item()
    print(f"bf16 vs fp32 relative error: audio emb {rel:.3e}, logits {rel_l:.3e}")
    # The synthetic weights are deliberately chaotic (gain 2, see synth.py), which amplifies bf16 rounding;
    # this bounds gross errors (a wrong cast or dtype mix-up gives O(1)), not bf16 accuracy.
    assert torch.isfinite(l16).all()
    assert rel < 5e-2 and rel_l < 0.2


# ----------------------------------------------------------------------------- greedy tokens vs transformers


CASES = [(a, d, f) for a in AUDIOS for d in (160, 480, 2400) for f in ("mistral",)] + [
    ("mono16k", 480, "hf"), ("stereo44k", 160, "hf"), ("near_silent", 2400, "hf")]


@pytest.fixture(scope="module")
def engines(ckpts):
    out = {}
    for fmt in ("mistral", "hf"):
        model, _ = load_model(ckpts[fmt], dtype=torch.float32)
        out[fmt] = EagerEngine(model.eval(), max_enc_tokens=16, max_dec_tokens=16)
    return out


@pytest.mark.parametrize("audio_name,delay_ms,fmt", CASES)
def test_greedy_tokens_match_transformers(ckpts, hf_model, tok, engines, audio_files, audio_name, delay_ms, fmt):
    audio = load_audio(audio_files[audio_name])
    prompt, padded = mistral_common_request(ckpts["mistral"] / "tekken.json", audio, delay_ms)
    ref = hf_generate(hf_model, padded, prompt, delay_ms // 80)
    got = transcribe(engines[fmt], tok, audio, delay_ms=delay_ms)
    assert got["token_ids"] == ref
    if audio_name != "near_silent":  # silence legitimately gives one repeated token
        assert len(set(ref)) > 3, "degenerate synthetic model: greedy output is (nearly) one repeated token"
    assert got["text"] == tok.decode(ref)


# ----------------------------------------------------------------------------- streaming == offline


def test_streaming_equals_offline_any_chunk_size(tok, engines, audio_files):
    audio = load_audio(audio_files["mono16k"])
    eng = engines["mistral"]
    offline = transcribe(eng, tok, audio)
    rng = random.Random(1)
    sizes = [1, 7, 160, 1279, 1280, 1281, 4000, 16000 * 10] + [rng.randint(2, 30000) for _ in range(3)]
    for chunk in sizes:
        got = transcribe(eng, tok, audio, chunk_samples=chunk)
        assert got["token_ids"] == offline["token_ids"], f"chunk {chunk}"


def test_streaming_random_irregular_chunks(tok, engines, audio_files):
    from voxtral_rt.protocol import StreamingSession

    audio = load_audio(audio_files["stereo44k"])
    eng = engines["mistral"]
    offline = transcribe(eng, tok, audio, delay_ms=160)
    rng = random.Random(2)
    s = StreamingSession(eng, StreamParams.from_tokenizer(tok, 160))
    i = 0
    while i < len(audio):
        n = rng.choice([1, 3, 500, 1280, 2600, 9000])
        s.feed(audio[i: i + n])
        i += n
    s.flush()
    assert s.flush() == []  # idempotent
    assert s.token_ids == offline["token_ids"]
