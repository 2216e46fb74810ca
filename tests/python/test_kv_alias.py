"""Attention reads the KV rings in place (docs/design.md, "Attention reads the caches in place"): the C++ runner's
aliasing slice kernel and whole-ring masks give the tokens of the copying prefix path, on streams that wrap both
rings many times, and the Python runtime (same mask widths) gives the runner's tokens."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch

from voxtral_rt.audio import load_audio
from voxtral_rt.model import ATTEND_BLOCK, attended_slots
from voxtral_rt.protocol import transcribe
from voxtral_rt.engine import PteEngine
from conftest import speech

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "runner" / "build"
RUNNER = BUILD / "voxtral_realtime_runner"
# The tiny fixture's rings: decoder 24 + 16 = 40 positions, encoder 40 + 4 * 8 = 72 frames (18 tokens). 12 s of
# audio is 150 tokens (+ 32 left pad, delay, right pad): the decoder ring wraps ~5 times, the encoder ring ~10.
LONG_S = 12.0


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    p = tmp_path_factory.mktemp("alias") / "long.wav"
    sf.write(p, speech(16000, LONG_S, 7), 16000)
    return p


def _cpp(tiny, pte: str, wav: Path, *args: str, alias: bool) -> dict:
    assert RUNNER.exists(), f"{RUNNER} missing: build it with `make runner`"
    env = {**os.environ, "VOXTRAL_RT_KV_ALIAS": "1" if alias else "0"}
    r = subprocess.run([str(RUNNER), "--model_path", str(tiny[pte]), "--tokenizer_path", str(tiny["dir"] / "tekken.json"),
                        "--json", "--audio_path", str(wav), *args], capture_output=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return json.loads(r.stdout)


class _Recording(PteEngine):
    """PteEngine that keeps every encoder output and logits vector, and the masks' widths."""

    def __init__(self, path, whole_ring: bool) -> None:
        super().__init__(path, whole_ring)
        self.outputs: list[torch.Tensor] = []
        self.enc_widths: list[tuple[int, int]] = []  # (valid slots, attended slots)
        self.dec_widths: list[tuple[int, int]] = []

    def encode(self, mel, enc_pos):
        m = self.meta
        end = enc_pos + mel.shape[2] // m["mel_frames_per_token"] * m["enc_frames_per_token"]
        slots = m["enc_cache_slots"]
        self.enc_widths.append((min(end, slots), attended_slots(end, slots, self.whole_ring)))
        self.outputs.append(super().encode(mel, enc_pos))
        return self.outputs[-1]

    def decode(self, h, pos, n_delay):
        slots = self.meta["dec_cache_slots"]
        end = pos + h.shape[0]
        self.dec_widths.append((min(end, slots), attended_slots(end, slots, self.whole_ring)))
        self.outputs.append(super().decode(h, pos, n_delay))
        return self.outputs[-1]


def test_kernel_unit_tests():
    r = subprocess.run([str(BUILD / "voxtral_rt_kernel_tests")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and " 0 failed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.parametrize("pte", ["fp32", "q"])
def test_whole_ring_masks_same_results_python(tiny, long_wav, pte):
    """The .pte over the whole ring (masked columns) vs over the valid prefix, through the Python runtime: the same
    tokens and, within float rounding, the same encoder outputs and logits; both rings are attended whole before
    they wrap (the band the policy adds) and after."""
    audio = load_audio(long_wav)
    runs = []
    for whole in (True, False):
        e = _Recording(tiny[pte], whole)
        # one position per decoder call: the two runs then make the same calls, compared output by output
        runs.append((transcribe(e, tiny["tok"], audio, chunk_samples=1280, draft_tokens=0), e))
    (r_whole, e_whole), (r_prefix, e_prefix) = runs
    assert r_whole["token_ids"] == r_prefix["token_ids"]
    assert len(e_whole.outputs) == len(e_prefix.outputs)
    for a, b in zip(e_whole.outputs, e_prefix.outputs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for which, widths in (("enc", e_whole.enc_widths), ("dec", e_whole.dec_widths)):
        slots = e_whole.meta[f"{which}_cache_slots"]
        # the prefix (in whole blocks) at first, where one block is less than 3/4 of the ring
        assert 4 * ATTEND_BLOCK >= 3 * slots or any(valid <= attended < slots for valid, attended in widths), which
        assert any(valid < attended == slots for valid, attended in widths), which  # widened before the wrap
        assert sum(valid == slots for valid, _ in widths) > 50, which  # and many calls after it


@pytest.mark.parametrize("pte", ["fp32", "q"])
@pytest.mark.parametrize("args,chunk,delay_ms", [
    ((), 0, None),  # offline: encoder chunks of 8 tokens, decoder prefill chunks of 16
    (("--streaming", "--chunk_ms", "80"), 1280, None),
    (("--streaming", "--chunk_ms", "130", "--delay_ms", "160"), 2080, 160),
])
def test_long_stream_alias_same_tokens(tiny, long_wav, pte, args, chunk, delay_ms):
    """C++ with the alias == C++ copying (VOXTRAL_RT_KV_ALIAS=0) == Python (whole-ring widths) == Python prefix path."""
    alias = _cpp(tiny, pte, long_wav, *args, alias=True)
    copy = _cpp(tiny, pte, long_wav, *args, alias=False)
    audio = load_audio(long_wav)
    py = transcribe(PteEngine(tiny[pte]), tiny["tok"], audio, delay_ms=delay_ms, chunk_samples=chunk)
    py_prefix = transcribe(PteEngine(tiny[pte], whole_ring=False), tiny["tok"], audio, delay_ms=delay_ms,
                           chunk_samples=chunk)
    assert alias["token_ids"] == copy["token_ids"] == py["token_ids"] == py_prefix["token_ids"]
    assert alias["text"] == py["text"]
    assert len(alias["token_ids"]) > 4 * 40 - 32  # the decoder ring (40 slots) wrapped several times
    assert len(set(alias["token_ids"])) > 3


@pytest.fixture(scope="module")
def narrow(tiny, tmp_path_factory):
    """The tiny model with a 5-position decoder window: its ring (5 + 16 slots) is narrower than a prefill chunk
    of 16, so chunks straddle the wrap and the first calls already attend most of the ring."""
    from conftest import exported

    return {**tiny, "w5": exported(tmp_path_factory, "tiny_w5", tiny["dir"], "--sliding-window", "5")}


@pytest.mark.parametrize("args,chunk", [((), 0), (("--streaming", "--chunk_ms", "80"), 1280)])
def test_narrow_decoder_window_alias_same_tokens(narrow, long_wav, args, chunk):
    alias = _cpp(narrow, "w5", long_wav, *args, alias=True)
    copy = _cpp(narrow, "w5", long_wav, *args, alias=False)
    audio = load_audio(long_wav)
    py = transcribe(PteEngine(narrow["w5"]), narrow["tok"], audio, chunk_samples=chunk)
    py_prefix = transcribe(PteEngine(narrow["w5"], whole_ring=False), narrow["tok"], audio, chunk_samples=chunk)
    assert alias["token_ids"] == copy["token_ids"] == py["token_ids"] == py_prefix["token_ids"]
    assert len(set(alias["token_ids"])) > 3
