"""Log-mel front-end (docs/model.md, "Mel front-end"), offline and windowed, on one frame grid.

Reference definition (transformers' VoxtralRealtimeFeatureExtractor, vLLM, mistral-common's filterbank):
STFT with n_fft = win = window_size, hop = hop_length, periodic Hann, center=True (reflect pad n_fft/2),
power |X|^2, drop the last frame, Slaney mel filterbank (0 .. sr/2), log10(max(., 1e-10)),
floor at global_log_mel_max - 8 (a fixed constant, not the per-clip max), then (x + 4) / 4.

Frame i of a signal is centred at sample hop*i and covers [hop*i - n_fft/2, hop*i + n_fft/2).

* `log_mel(pcm, enc)`: the offline reference, bit-for-bit the transformers computation (torch.stft).
* `LogMel` / `log_mel_frames(window, enc)`: center=False over ``hop*n + n_fft - hop`` samples -> n frames, built
  from plain ops (index gather, matmul DFT) so it exports to ExecuTorch/XNNPACK. Given stream samples starting
  at hop*f0 - n_fft/2 (zeros before the stream start) it returns exactly frames f0 .. f0+n-1 of the offline
  grid; since the padded stream starts and ends with >= n_fft/2 zeros, the reference's reflect padding only
  ever reflects zeros, so zero-filling is identical.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import EncoderArgs

__all__ = ["MelSpec", "mel_filters", "log_mel", "log_mel_frames", "LogMel", "export_log_mel", "window_length"]

# Fixed constants of the reference log-mel (not model config): power clamp and the (x + 4) / 4 normalisation.
LOG_EPS = 1e-10
NORM_OFFSET = 4.0
NORM_SCALE = 4.0
# Dynamic range kept below global_log_mel_max (in log10 units).
FLOOR_RANGE = 8.0


@dataclass(frozen=True)
class MelSpec:
    """Front-end constants, all derived from the encoder config."""

    sampling_rate: int
    n_fft: int  # = window_size = win_length
    hop: int
    n_mels: int
    floor: float  # global_log_mel_max - 8

    @classmethod
    def from_encoder(cls, enc: EncoderArgs) -> "MelSpec":
        return cls(
            sampling_rate=enc.sampling_rate,
            n_fft=enc.window_size,
            hop=enc.hop_length,
            n_mels=enc.num_mel_bins,
            floor=enc.global_log_mel_max - FLOOR_RANGE,
        )

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1


def window_length(n_frames: int, enc: EncoderArgs) -> int:
    """Samples `LogMel` needs for `n_frames` frames: hop*n + n_fft - hop."""
    return enc.hop_length * n_frames + enc.window_size - enc.hop_length


# ----------------------------------------------------------------------------- filterbank


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney: linear (3 mel per 200 Hz) below 1 kHz, logarithmic above (27 mel per factor 6.4).
    f = np.asarray(f, dtype=np.float64)
    lin = 3.0 * f / 200.0
    logpart = 15.0 + np.log(np.maximum(f, 1e-300) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(f >= 1000.0, logpart, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = 200.0 * m / 3.0
    logpart = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, logpart, lin)


@functools.lru_cache(maxsize=8)
def _mel_filters_np(n_mels: int, n_fft: int, sr: int) -> np.ndarray:
    n_bins = n_fft // 2 + 1
    # Band edges equally spaced in mel between 0 Hz and Nyquist; FFT bin centre frequencies.
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(0.0)), _hz_to_mel(np.float64(sr / 2)), n_mels + 2))
    bin_hz = np.linspace(0.0, sr // 2, n_bins)
    # Triangle m rises from edge m to edge m+1 and falls to edge m+2.
    dist = edges_hz[None, :] - bin_hz[:, None]  # [n_bins, n_mels + 2]
    width = np.diff(edges_hz)  # [n_mels + 1]
    rising = -dist[:, :-2] / width[:-1]
    falling = dist[:, 2:] / width[1:]
    tri = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney area normalisation: each triangle integrates to (about) the same energy.
    tri *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[None, :]
    if (tri.max(axis=0) == 0.0).any():
        raise ValueError(f"mel filterbank: {n_mels} mel bins is too many for n_fft={n_fft} (some filters are empty)")
    return tri


def mel_filters(n_mels: int, n_fft: int, sr: int) -> torch.Tensor:
    """Slaney mel filterbank [n_fft//2 + 1, n_mels], computed in float64, returned as float32."""
    return torch.from_numpy(_mel_filters_np(n_mels, n_fft, sr).astype(np.float32))


# ----------------------------------------------------------------------------- offline reference


def _finish(mel: torch.Tensor, floor: float) -> torch.Tensor:
    """mel power -> normalised log-mel (shared by both paths)."""
    log_spec = torch.clamp(mel, min=LOG_EPS).log10()
    log_spec = torch.clamp(log_spec, min=floor)
    return (log_spec + NORM_OFFSET) / NORM_SCALE


def log_mel(pcm: torch.Tensor, enc: EncoderArgs) -> torch.Tensor:
    """Offline log-mel of float32 PCM [N] -> [n_mels, N // hop] (the transformers computation, op for op)."""
    spec = MelSpec.from_encoder(enc)
    if pcm.dim() != 1:
        raise ValueError(f"log_mel expects a 1-D waveform, got shape {tuple(pcm.shape)}")
    if pcm.shape[0] <= spec.n_fft // 2:
        raise ValueError(f"log_mel needs more than {spec.n_fft // 2} samples (reflect padding), got {pcm.shape[0]}")
    pcm = pcm.to(torch.float32)
    window = torch.hann_window(spec.n_fft, periodic=True, dtype=torch.float32)
    stft = torch.stft(
        pcm, spec.n_fft, spec.hop, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    power = stft[..., :-1].abs() ** 2  # the last frame is dropped: N//hop frames
    filters = mel_filters(spec.n_mels, spec.n_fft, spec.sampling_rate)
    return _finish(filters.T @ power, spec.floor)


# ----------------------------------------------------------------------------- windowed (exportable)


class LogMel(nn.Module):
    """forward(window f32 [hop*n + n_fft - hop]) -> f32 [1, n_mels, n]; plain ops only (no stft/fft).

    Frames are gathered by index, the Hann window is folded into real DFT bases (cos and sin, built in float64)
    so the transform is two matmuls, then power -> filterbank matmul -> log10 / floor / normalise.
    """

    def __init__(self, enc: EncoderArgs) -> None:
        super().__init__()
        spec = MelSpec.from_encoder(enc)
        self.spec = spec
        n_fft, n_bins = spec.n_fft, spec.n_bins
        t = np.arange(n_fft)
        # Periodic Hann (as torch.hann_window), kept in float64 until the folded bases are rounded once to float32.
        hann = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).numpy()
        # Reduce k*t mod n_fft in integers so the float64 angle stays exact for every (t, k).
        phase = 2.0 * math.pi * ((t[:, None] * np.arange(n_bins)[None, :]) % n_fft) / n_fft
        # Real and imaginary DFT bases with the window folded in: [n_fft, n_bins] each.
        cos_basis = (hann[:, None] * np.cos(phase)).astype(np.float32)
        sin_basis = (-hann[:, None] * np.sin(phase)).astype(np.float32)
        self.register_buffer("dft_re", torch.from_numpy(cos_basis), persistent=False)
        self.register_buffer("dft_im", torch.from_numpy(sin_basis), persistent=False)
        self.register_buffer("offsets", torch.arange(n_fft, dtype=torch.int64), persistent=False)
        self.register_buffer("filters", mel_filters(spec.n_mels, n_fft, spec.sampling_rate), persistent=False)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        n = (window.shape[0] - (spec.n_fft - spec.hop)) // spec.hop
        # Frame j = window[j*hop : j*hop + n_fft], gathered with one [n, n_fft] index.
        idx = torch.arange(n, dtype=torch.int64).unsqueeze(1) * spec.hop + self.offsets.unsqueeze(0)
        frames = window[idx]
        # Two matmuls rather than one and a split: slicing would add copy ops outside the XNNPACK delegate.
        re = frames @ self.dft_re  # [n, n_bins]
        im = frames @ self.dft_im
        power = re * re + im * im
        mel = power @ self.filters  # [n, n_mels]
        return _finish(mel, spec.floor).transpose(0, 1).unsqueeze(0)


def export_log_mel(enc: EncoderArgs, max_frames: int) -> torch.export.ExportedProgram:
    """torch.export `LogMel` with a dynamic frame count n in [1, max_frames >= 2] (input hop*n + n_fft - hop).

    Tracing sees n only as (len - (n_fft - hop)) // hop, and PyTorch's 0/1-specialisation would otherwise add a
    runtime guard n != 1 (from broadcasting / contiguity checks). `backed_size_oblivious` makes those checks
    take the general path without guarding, which is also correct for n == 1 (tested down to n = 1, eager,
    exported and through ExecuTorch + XNNPACK).
    """
    import torch.fx.experimental._config as fx_config

    if max_frames < 2:  # torch.export.Dim needs min < max
        raise ValueError(f"max_frames must be >= 2, got {max_frames}")
    spec = MelSpec.from_encoder(enc)
    module = LogMel(enc).eval()
    n = torch.export.Dim("n_mel_frames", min=1, max=max_frames)
    example = torch.zeros(window_length(min(8, max_frames), enc))
    with fx_config.patch(backed_size_oblivious=True):
        return torch.export.export(
            module, (example,), dynamic_shapes={"window": {0: spec.hop * n + (spec.n_fft - spec.hop)}}
        )


@functools.lru_cache(maxsize=4)
def _log_mel_module(enc: EncoderArgs) -> LogMel:
    return LogMel(enc).eval()


def log_mel_frames(window: torch.Tensor, enc: EncoderArgs) -> torch.Tensor:
    """n frames from ``hop*n + n_fft - hop`` samples (center=False) -> [n_mels, n]; see `LogMel`."""
    spec = MelSpec.from_encoder(enc)
    if window.dim() != 1:
        raise ValueError(f"log_mel_frames expects a 1-D window, got shape {tuple(window.shape)}")
    extra = window.shape[0] - (spec.n_fft - spec.hop)
    if extra < spec.hop or extra % spec.hop:
        raise ValueError(
            f"log_mel_frames needs hop*n + {spec.n_fft - spec.hop} samples (n >= 1), got {window.shape[0]}"
        )
    with torch.no_grad():
        return _log_mel_module(enc)(window.to(torch.float32))[0]
