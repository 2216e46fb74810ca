"""Log-mel front-end: filterbank and offline mel vs transformers / mistral-common; windowed == offline; export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxtral_rt.config import REAL_ENCODER, TINY_MODEL
from voxtral_rt.mel import LogMel, MelSpec, export_log_mel, log_mel, log_mel_frames, mel_filters, window_length

ENC = REAL_ENCODER
SR = ENC.sampling_rate
HOP = ENC.hop_length
N_FFT = ENC.window_size
SILENCE = (ENC.global_log_mel_max - 8.0 + 4.0) / 4.0  # -0.625 for the real config


def _signals(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    t = np.arange(n) / SR
    noise = rng.standard_normal(n)
    # "Speech-like": low-passed noise with a syllable-rate envelope plus a few harmonics of a gliding pitch.
    env = np.sin(2 * np.pi * 3.0 * t) ** 2
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * np.cumsum(f0 * k) / SR) / k for k in range(1, 6))
    speech = env * (0.2 * voiced + 0.05 * np.convolve(noise, np.ones(6) / 6, "same"))
    return {
        "speech": speech,
        "sine": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "near_silent_1e-5": 1e-5 * noise,
        "quiet_1e-3": 1e-3 * noise,
        "silence": np.zeros(n),
    }


def _padded(x: np.ndarray) -> np.ndarray:
    # Leading/trailing zeros >= n_fft/2 as the streaming protocol guarantees (reflect padding == zero padding).
    return np.concatenate([np.zeros(1280), x, np.zeros(1280 + 77)]).astype(np.float32)


@pytest.fixture(scope="module")
def hf_fe():
    from transformers.models.voxtral_realtime import VoxtralRealtimeFeatureExtractor

    return VoxtralRealtimeFeatureExtractor(
        feature_size=ENC.num_mel_bins, sampling_rate=SR, hop_length=HOP, n_fft=N_FFT, win_length=N_FFT,
        global_log_mel_max=ENC.global_log_mel_max,
    )


def test_spec_from_encoder() -> None:
    s = MelSpec.from_encoder(ENC)
    assert (s.n_fft, s.hop, s.n_mels, s.n_bins, s.sampling_rate) == (400, 160, 128, 201, 16000)
    assert s.floor == -6.5
    assert window_length(8, ENC) == 1520


def test_filterbank_matches_references(hf_fe) -> None:
    from mistral_common.audio import mel_filter_bank as mc_bank
    from transformers.audio_utils import mel_filter_bank as hf_bank

    f = mel_filters(128, 400, 16000)
    assert f.dtype == torch.float32 and tuple(f.shape) == (201, 128)
    assert torch.equal(f, torch.from_numpy(hf_fe.mel_filters.astype(np.float32)))
    assert torch.equal(f, torch.from_numpy(mc_bank(201, 128, 0.0, 8000.0, 16000).astype(np.float32)))
    # Another geometry, to make sure nothing is tied to 128/400.
    g = mel_filters(80, 512, 16000)
    ref = hf_bank(num_frequency_bins=257, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                  sampling_rate=16000, norm="slaney", mel_scale="slaney")
    assert torch.equal(g, torch.from_numpy(ref.astype(np.float32)))


def test_offline_matches_transformers(hf_fe) -> None:
    worst = {}
    for name, x in _signals(16000 + 1234).items():
        pcm = _padded(x)
        ref = hf_fe(pcm, sampling_rate=SR, return_tensors="pt").input_features[0]
        ours = log_mel(torch.from_numpy(pcm), ENC)
        assert ours.shape == ref.shape == (128, len(pcm) // HOP)
        worst[name] = (ours - ref).abs().max().item()
    print("offline log_mel vs transformers, max abs diff:", worst)
    assert max(worst.values()) <= 1e-6, worst


def test_silence_is_exact_floor() -> None:
    pcm = torch.zeros(12800)
    assert torch.all(log_mel(pcm, ENC) == SILENCE)
    assert torch.all(log_mel_frames(torch.zeros(window_length(9, ENC)), ENC) == SILENCE)
    assert SILENCE == -0.625


def _windowed_vs_offline(pcm: np.ndarray, rng: np.random.Generator, trials: int) -> float:
    off = log_mel(torch.from_numpy(pcm), ENC)
    total = off.shape[1]
    # Zero-extend so frame i's window [hop*i - n_fft/2, hop*i + n_fft/2) is always inside the buffer.
    ext = np.concatenate([np.zeros(N_FFT // 2, np.float32), pcm, np.zeros(N_FFT, np.float32)])
    worst = 0.0
    cases = [(0, 1), (0, 8), (total - 1, 1), (total - 8, 8), (0, total)]
    cases += [(int(f0), int(rng.integers(1, total - f0 + 1))) for f0 in rng.integers(0, total, trials)]
    for f0, n in cases:
        w = torch.from_numpy(ext[HOP * f0 : HOP * f0 + window_length(n, ENC)].copy())
        got = log_mel_frames(w, ENC)
        assert got.shape == (128, n)
        worst = max(worst, (got - off[:, f0 : f0 + n]).abs().max().item())
    return worst


def test_windowed_equals_offline() -> None:
    rng = np.random.default_rng(7)
    worst = {}
    for name, x in _signals(16000).items():
        worst[name] = _windowed_vs_offline(_padded(x), rng, trials=12)
    print("windowed vs offline frames, max abs diff:", worst)
    assert max(worst.values()) <= 1e-4, worst
    assert worst["silence"] == 0.0


def _f64_truth(pcm: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.concatenate([np.zeros(200), pcm, np.zeros(200)]))
    total = len(pcm) // HOP
    idx = torch.arange(total)[:, None] * HOP + torch.arange(N_FFT)[None, :]
    p = torch.fft.rfft(x[idx] * torch.hann_window(N_FFT, dtype=torch.float64)).abs() ** 2
    mel = p @ mel_filters(128, N_FFT, SR).double()
    return ((mel.clamp(min=1e-10).log10().clamp(min=-6.5) + 4) / 4).T


def test_full_scale_tone_accuracy() -> None:
    """Full-scale pure tones leak -60..-80 dB energy into far bins, where float32 rounding of ANY transform
    (torch.stft included) shows up at the 1e-4 level. Require the windowed path to be as accurate as the
    reference itself (against a float64 ground truth)."""
    t = np.arange(16000) / SR
    pcm = _padded(np.sin(2 * np.pi * 1234.5 * t))
    truth = _f64_truth(pcm)
    off = log_mel(torch.from_numpy(pcm), ENC).double()
    w = torch.from_numpy(np.concatenate([np.zeros(200, np.float32), pcm[: HOP * off.shape[1] + 40]]))
    win = log_mel_frames(w, ENC).double()
    e_off = (off - truth).abs().max().item()
    e_win = (win - truth).abs().max().item()
    print(f"full-scale tone: offline vs f64 {e_off:.2e}, windowed vs f64 {e_win:.2e}, "
          f"windowed vs offline {(win - off).abs().max().item():.2e}")
    assert e_win <= 2 * e_off + 1e-5


def test_other_config_tiny() -> None:
    enc = TINY_MODEL.encoder
    x = _padded(_signals(4000)["speech"])
    off = log_mel(torch.from_numpy(x), enc)
    w = torch.from_numpy(np.concatenate([np.zeros(enc.window_size // 2, np.float32), x[: HOP * 20 + 40]]))
    assert (log_mel_frames(w, enc) - off[:, :20]).abs().max().item() <= 1e-4


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="hop\\*n"):
        log_mel_frames(torch.zeros(window_length(3, ENC) + 1), ENC)
    with pytest.raises(ValueError, match="hop\\*n"):
        log_mel_frames(torch.zeros(N_FFT - HOP), ENC)
    with pytest.raises(ValueError, match="1-D"):
        log_mel(torch.zeros(2, 1000), ENC)
    with pytest.raises(ValueError, match="more than"):
        log_mel(torch.zeros(100), ENC)
    with pytest.raises(ValueError, match="max_frames"):
        export_log_mel(ENC, 1)


def test_export_dynamic_frames() -> None:
    ep = export_log_mel(ENC, max_frames=64)
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not any("fft" in o or "stft" in o for o in ops), ops
    eager = LogMel(ENC)
    rng = torch.Generator().manual_seed(0)
    for n in (1, 2, 8, 37, 64):
        w = torch.randn(window_length(n, ENC), generator=rng) * 0.1
        got = ep.module()(w)
        assert got.shape == (1, 128, n)
        assert (got - eager(w)).abs().max().item() <= 1e-6
