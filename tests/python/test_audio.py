"""Audio loading vs mistral-common's own path (Audio.from_file(strict=False) + resample(16000))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtral_rt.audio import AudioError, load_audio, to_mono_16k


def _signal(sr: int, channels: int, seconds: float = 0.4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    # Different content per channel so averaging is actually exercised.
    cols = [0.4 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.1 * rng.standard_normal(n) for c in range(channels)]
    x = np.stack(cols, axis=1) * 0.9
    return x[:, 0] if channels == 1 else x


def _mistral_common(path: Path) -> np.ndarray:
    from mistral_common.tokens.tokenizers.audio import Audio

    a = Audio.from_file(str(path), strict=False)
    a.resample(16000)
    return a.audio_array


CASES = [
    # (sample rate, channels, container, subtype)
    (16000, 1, "WAV", "PCM_16"),
    (16000, 2, "WAV", "PCM_24"),
    (8000, 1, "WAV", "PCM_U8"),
    (44100, 2, "WAV", "FLOAT"),
    (48000, 6, "WAV", "PCM_16"),
    (48000, 1, "WAV", "PCM_32"),
    (22050, 1, "FLAC", "PCM_16"),
    (44100, 2, "FLAC", "PCM_24"),
    (32000, 1, "OGG", "VORBIS"),
]


@pytest.mark.parametrize("sr,channels,fmt,subtype", CASES)
def test_matches_mistral_common(tmp_path: Path, sr: int, channels: int, fmt: str, subtype: str) -> None:
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(str(path), _signal(sr, channels), sr, format=fmt, subtype=subtype)
    ours = load_audio(path)
    ref = _mistral_common(path)
    assert ours.dtype == np.float32 and ours.ndim == 1
    assert ours.shape == ref.shape
    assert np.array_equal(ours, ref)  # same decode, same float32 channel mean, same soxr call: bit-exact
    assert ours.shape[0] == pytest.approx(0.4 * 16000, abs=2)


def test_16bit_16k_stays_on_16bit_grid(tmp_path: Path) -> None:
    # The reference's 16-bit WAV round trip is lossless here, so keeping float changes nothing for 16-bit input.
    pcm = (np.random.default_rng(1).standard_normal(8000) * 6000).clip(-32768, 32767).astype(np.int16)
    path = tmp_path / "a.wav"
    sf.write(str(path), pcm, 16000, subtype="PCM_16")
    x = load_audio(path)
    assert np.array_equal(x * 32768, pcm.astype(np.float32))
    assert np.array_equal(to_mono_16k(pcm, 16000), x)


def test_in_memory_matches_file(tmp_path: Path) -> None:
    x = _signal(44100, 2).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(str(path), x, 44100, subtype="FLOAT")
    assert np.array_equal(to_mono_16k(x, 44100), load_audio(path))
    # float64 input is cast to float32 first, like a float file read.
    assert np.array_equal(to_mono_16k(x.astype(np.float64), 44100), load_audio(path))
    # Single-column 2-D input is plain mono.
    assert np.array_equal(to_mono_16k(x[:, :1], 44100), to_mono_16k(x[:, 0], 44100))


def test_int32_scaling_matches_soundfile(tmp_path: Path) -> None:
    pcm = (np.random.default_rng(2).standard_normal(4000) * 2**29).astype(np.int32)
    path = tmp_path / "a.wav"
    sf.write(str(path), pcm, 16000, subtype="PCM_32")
    assert np.array_equal(to_mono_16k(pcm, 16000), load_audio(path))


def test_target_rate(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(str(path), _signal(16000, 1, seconds=1.0), 16000)
    assert load_audio(path, target_sr=8000).shape == (8000,)


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x01garbage" + bytes(range(200)))
    with pytest.raises(AudioError, match="cannot decode") as e:
        load_audio(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path: Path, bad: float) -> None:
    x = np.zeros(1000, np.float32)
    x[500] = bad
    path = tmp_path / "nan.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(path)
    with pytest.raises(AudioError, match="non-finite"):
        to_mono_16k(x, 16000)


@pytest.mark.parametrize("sr", [0, 10, -16000, 10_000_000, 16000.5])
def test_absurd_sample_rate(sr) -> None:
    with pytest.raises(AudioError, match="sample rate"):
        to_mono_16k(np.zeros(100, np.float32), sr)


def test_bad_arrays() -> None:
    with pytest.raises(AudioError, match="shape"):
        to_mono_16k(np.zeros((2, 3, 4), np.float32), 16000)
    with pytest.raises(AudioError, match="dtype"):
        to_mono_16k(np.zeros(10, np.uint64), 16000)
    with pytest.raises(AudioError, match="channels"):
        to_mono_16k(np.zeros((10, 0), np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        to_mono_16k(np.zeros(0, np.float32), 16000)


def test_resampler_overflow_is_an_error():
    """float32 samples near 3e38 overflow soxr's filter at 8 kHz -> 16 kHz; that must not pass as audio."""
    x = np.full(8000, 3.0e38, dtype=np.float32)
    x[::2] *= -1
    with pytest.raises(AudioError, match="overflowed"):
        to_mono_16k(x, 8000)
