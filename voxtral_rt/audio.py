"""Audio input: any soundfile-readable file (or an in-memory array) -> float32 mono PCM at 16 kHz.

Matches mistral-common's loading path (``Audio.from_bytes(strict=False)`` + ``Audio.resample``), which is
also what the transformers processor and vLLM feed the model:

1. decode with soundfile as float32 (libsndfile's own integer->float scaling, e.g. int16 / 32768);
2. multi-channel: the float32 mean over channels (mistral-common's lenient path, HF, vLLM all average);
3. resample with ``soxr.resample(x, sr, 16000, quality="HQ")`` on the float32 array, only if sr differs.

16-bit round trip (docs/model.md, "Audio input"): transformers' processor and vLLM's offline path re-encode the 16 kHz
audio as 16-bit WAV before computing the mel. We do NOT quantize: samples stay float32. For 16-bit files at
16 kHz (the common case) this is identical (checked: libsndfile's int16 -> float32 -> int16 round trip is
exact, both directions scale by 32768). For float, 24-bit or resampled input we differ from that path by at
most half an LSB of 16-bit audio (2**-16 ~ 1.5e-5) per sample -- far below anything the model can hear -- and
for float samples beyond [-1, 1) by the clipping that path applies (we keep them).

Invalid input raises `AudioError` (a ValueError) with one message naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["AudioError", "load_audio", "to_mono_16k", "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE"]

# Plausible range for real recordings (telephony 8 kHz is the usual floor; 768 kHz the top of pro DACs).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000


class AudioError(ValueError):
    """Audio input that cannot be turned into 16 kHz mono PCM."""


def load_audio(path: str | Path, target_sr: int = 16000) -> np.ndarray:
    """Read `path` (WAV/FLAC/OGG/MP3/... anything libsndfile reads) -> float32 [N] mono at `target_sr`."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: file not found")
    if not p.is_file():
        raise AudioError(f"{p}: not a regular file")
    try:
        with sf.SoundFile(str(p)) as f:
            sr = int(f.samplerate)
            data = f.read(dtype="float32")
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        # soundfile raises LibsndfileError (a RuntimeError) for unknown/corrupt formats.
        raise AudioError(f"{p}: cannot decode audio ({e})") from None
    return _to_mono_resampled(data, sr, target_sr, str(p))


def to_mono_16k(samples: np.ndarray, sr: int, target_sr: int = 16000) -> np.ndarray:
    """In-memory version of `load_audio`: `samples` is [N] or [N, channels] (soundfile layout).

    Float input is cast to float32 first (the dtype mistral-common reads files in); int16/int32 PCM is scaled
    to [-1, 1) the way libsndfile does (x / 2**15, x / 2**31).
    """
    a = np.asarray(samples)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / np.float32(2**15)
    elif a.dtype == np.int32:
        a = (a.astype(np.float64) / 2**31).astype(np.float32)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32, copy=False)
    else:
        raise AudioError(f"<array>: unsupported sample dtype {a.dtype} (use float, int16 or int32)")
    return _to_mono_resampled(a, sr, target_sr, "<array>")


def _to_mono_resampled(a: np.ndarray, sr: int, target_sr: int, where: str) -> np.ndarray:
    import soxr

    for name, rate in (("sample rate", sr), ("target sample rate", target_sr)):
        if isinstance(rate, bool) or int(rate) != rate or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise AudioError(
                f"{where}: {name} {rate!r} Hz is outside the supported range {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
            )
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise AudioError(f"{where}: audio has no channels")
        # Same op as mistral-common's lenient path: float32 mean over the channel axis.
        a = a.mean(axis=1) if a.shape[1] > 1 else a[:, 0]
    elif a.ndim != 1:
        raise AudioError(f"{where}: expected samples shaped [N] or [N, channels], got shape {a.shape}")
    if a.shape[0] == 0:
        raise AudioError(f"{where}: audio is empty (0 samples)")
    if not np.isfinite(a).all():
        # NaN/Inf would silently poison every mel frame they touch; refuse rather than guess a repair.
        bad = int((~np.isfinite(a)).sum())
        raise AudioError(f"{where}: audio contains {bad} non-finite (NaN/Inf) samples")
    if sr != target_sr:
        a = soxr.resample(a, int(sr), int(target_sr), quality="HQ")
        if a.shape[0] == 0:
            raise AudioError(f"{where}: audio too short to resample from {sr} Hz to {target_sr} Hz")
        if not np.isfinite(a).all():
            # Samples near the float32 limit (~3e38) overflow the resampler's filter; same error as the C++ reader.
            raise AudioError(f"{where}: resampling from {sr} Hz overflowed to NaN/Inf (samples too large in magnitude)")
    return np.ascontiguousarray(a, dtype=np.float32)
