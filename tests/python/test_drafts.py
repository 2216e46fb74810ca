"""Multi-position decoding: decoder calls that verify guessed `[STREAMING_PAD]` positions give exactly the tokens of
one position per call -- eager, `.pte` (Python) and the C++ runner, for every draft setting, delay and chunk size,
streams that wrap the caches, and an EOS inside a call.

The tiny random model emits PAD at 0 % of steps, so most tests wrap it in `PadBiased`: the same model with a
constant added to the PAD logit (tuned so PAD wins ~75 % of steps, as on speech, while the other steps still come
from the model), and optionally an EOS forced at one position. Such a wrapper is still a deterministic function of
the inputs, i.e. a valid model to decode greedily. The demo model (trained) emits PAD at 64-85 % of steps on its
samples, so the C++ runner is tested on it directly.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import speech
from voxtral_rt.audio import load_audio
from voxtral_rt.checkpoint import load_model
from voxtral_rt.engine import EagerEngine, PteEngine, StreamParams
from voxtral_rt.protocol import DraftPolicy, StreamingSession, transcribe

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "runner" / "build" / "voxtral_realtime_runner"
DEMO = ROOT / "models" / "demo"
PAD_BIAS = 3.3  # tiny seed 5: ~75 % PAD on `speech`


class PadBiased:
    """Engine wrapper: logits[PAD] += bias at every position, and EOS forced at position eos_pos (if given)."""

    def __init__(self, engine, tok, bias: float = PAD_BIAS, eos_pos: int | None = None) -> None:
        self.e, self.pad, self.eos, self.bias, self.eos_pos = engine, tok.streaming_pad_id, tok.eos_id, bias, eos_pos
        self.max_mel_frames, self.max_enc_tokens = engine.max_mel_frames, engine.max_enc_tokens
        self.max_dec_tokens, self.stream_params = engine.max_dec_tokens, engine.stream_params
        self.calls: list[tuple[int, int]] = []

    def preprocess(self, window):
        return self.e.preprocess(window)

    def encode(self, mel, enc_pos):
        return self.e.encode(mel, enc_pos)

    def embed(self, ids):
        return self.e.embed(ids)

    def decode(self, h, pos, n_delay):
        self.calls.append((pos, h.shape[0]))
        logits = self.e.decode(h, pos, n_delay).clone()
        logits[:, self.pad] += self.bias
        if self.eos_pos is not None and pos <= self.eos_pos < pos + h.shape[0]:
            logits[self.eos_pos - pos, self.eos] += 1e4
        return logits


@pytest.fixture(scope="module")
def eager(tiny):
    model, _ = load_model(tiny["dir"], dtype=torch.float32)
    return EagerEngine(model.eval(), max_enc_tokens=8, max_dec_tokens=16)  # the tiny .pte's limits


def pad_share(ids: list[int], tok) -> float:
    return float(np.mean([t == tok.streaming_pad_id for t in ids]))


@pytest.mark.parametrize("delay_ms", [80, 480, 2400])
def test_eager_drafts_equal_one_position(eager, tiny, delay_ms):
    tok = tiny["tok"]
    audio = speech(16000, 6.0, seed=delay_ms)  # 75 tokens: wraps the tiny decoder (24) and encoder (40 frames) windows
    ref_engine = PadBiased(eager, tok)
    ref = transcribe(ref_engine, tok, audio, delay_ms=delay_ms, draft_tokens=0)
    assert 0.5 < pad_share(ref["token_ids"], tok) < 0.95  # drafts are accepted and rejected
    assert all(n == 1 for pos, n in ref_engine.calls if pos >= 32 + delay_ms // 80 + 1)
    for draft in (1, 3, 15, -1):
        for chunk in (0, 1280, 777, 160000):
            eng = PadBiased(eager, tok)
            got = transcribe(eng, tok, audio, delay_ms=delay_ms, chunk_samples=chunk, draft_tokens=draft)
            assert got["token_ids"] == ref["token_ids"], (draft, chunk)
            if draft == 15 and chunk == 0:
                assert len(eng.calls) < len(ref_engine.calls) / 2  # PAD runs verified in batches


def test_eager_one_sample_chunks(eager, tiny):
    tok = tiny["tok"]
    audio = speech(16000, 0.4, seed=3)
    ref = transcribe(PadBiased(eager, tok), tok, audio, draft_tokens=0)
    assert transcribe(PadBiased(eager, tok), tok, audio, chunk_samples=1, draft_tokens=4)["token_ids"] == ref["token_ids"]


def test_eos_inside_a_call(eager, tiny):
    tok = tiny["tok"]
    audio = speech(16000, 4.0, seed=9)
    prompt = 32 + 6 + 1
    for eos_pos in (prompt + 5, prompt + 11):
        ref_engine = PadBiased(eager, tok, bias=50.0, eos_pos=eos_pos)  # all PAD until the EOS
        ref = transcribe(ref_engine, tok, audio, draft_tokens=0)
        assert ref["eos"] and ref["token_ids"][-1] == tok.eos_id and len(ref["token_ids"]) == eos_pos - prompt + 2
        eng = PadBiased(eager, tok, bias=50.0, eos_pos=eos_pos)
        got = transcribe(eng, tok, audio, draft_tokens=7)
        assert got["token_ids"] == ref["token_ids"]
        assert any(pos <= eos_pos < pos + n - 1 for pos, n in eng.calls)  # the EOS was inside a multi-position call


def test_pte_drafts_equal_eager(eager, tiny):
    tok = tiny["tok"]
    pte = PteEngine(tiny["fp32"])
    for seed in (1, 2):
        audio = speech(16000, 5.0, seed=seed)
        ref = transcribe(PadBiased(eager, tok), tok, audio, draft_tokens=0)
        for draft, chunk in ((0, 0), (3, 0), (-1, 1280), (15, 4000)):
            got = transcribe(PadBiased(pte, tok), tok, audio, chunk_samples=chunk, draft_tokens=draft)
            assert got["token_ids"] == ref["token_ids"], (seed, draft, chunk)


def test_session_counts_calls_and_rejects_bad_option(eager, tiny):
    tok = tiny["tok"]
    s = StreamingSession(PadBiased(eager, tok), StreamParams.from_tokenizer(tok), draft_tokens=7)
    s.feed(speech(16000, 3.0, seed=4))
    s.flush()
    assert s.n_decoder_positions >= len(s.token_ids) - 1 and s.n_decoder_calls < len(s.token_ids) - 1
    with pytest.raises(ValueError, match="draft_tokens"):
        StreamingSession(eager, StreamParams.from_tokenizer(tok), draft_tokens=-2)


def test_policy_measures_then_picks_the_fastest():
    p = DraftPolicy(8, adaptive=True)
    assert [p.choose(8) for _ in range(1)] == [1]
    for k, ms in ((1, 10.0), (2, 11.0), (4, 12.0), (8, 13.0)):
        assert p.choose(8) == k
        p.observe(k, ms, [0] * k, pad_id=0)  # all PAD
    assert p.choose(8) == 8 and p.choose(3) == 2
    slow = DraftPolicy(8, adaptive=True)
    for k in (1, 2, 4, 8):
        slow.observe(k, 10.0 * k, [5], pad_id=0)  # rows cost full price, no guess is right
    for _ in range(60):
        slow.observe(1, 10.0, [5], pad_id=0)
    assert slow.choose(8) == 1
    assert DraftPolicy(5, adaptive=False).choose(9) == 5


def _runner(pte: Path, tok: Path, wav: Path, *flags: str) -> dict:
    r = subprocess.run([str(RUNNER), "--model_path", str(pte), "--tokenizer_path", str(tok), "--audio_path", str(wav),
                        "--json", "--stats", *flags], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_runner_drafts_on_demo_model(demo_pte):
    """Trained model, PAD at ~75 % of steps: the C++ runner gives the Python .pte's tokens for every setting."""
    tok = DEMO / "tekken.json"
    from voxtral_rt.tokenizer import Tekken

    engine = PteEngine(demo_pte)
    for wav in sorted((DEMO / "samples").glob("*.wav"))[:2]:
        ref = transcribe(engine, Tekken.from_file(tok), load_audio(wav), draft_tokens=0)["token_ids"]
        one = _runner(demo_pte, tok, wav, "--draft_tokens", "0")
        assert one["token_ids"] == ref
        assert one["stats"]["tokens_per_step_call"] == 1.0
        for flags in (("--draft_tokens", "3"), ("--draft_tokens", "-1"), ("--draft_tokens", "7", "--streaming",
                      "--chunk_ms", "1000"), ("--streaming", "--chunk_ms", "80")):
            got = _runner(demo_pte, tok, wav, *flags)
            assert got["token_ids"] == ref, flags
            if flags == ("--draft_tokens", "3"):
                assert got["stats"]["tokens_per_step_call"] > 1.5  # PAD guesses were accepted


def test_runner_drafts_on_tiny(tiny, tmp_path):
    """Random model (no PAD): every guess is rejected, the tokens are still those of one position per call."""
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, speech(16000, 4.0, seed=6), 16000, subtype="FLOAT")
    ref = _runner(tiny["q"], tiny["dir"] / "tekken.json", wav, "--draft_tokens", "0")
    for flags in (("--draft_tokens", "5"), ("--draft_tokens", "-1", "--streaming", "--chunk_ms", "130")):
        assert _runner(tiny["q"], tiny["dir"] / "tekken.json", wav, *flags)["token_ids"] == ref["token_ids"]
    r = subprocess.run([str(RUNNER), "--model_path", str(tiny["q"]), "--tokenizer_path", str(tiny["dir"] / "tekken.json"),
                        "--audio_path", str(wav), "--draft_tokens", "-2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--draft_tokens" in r.stderr
