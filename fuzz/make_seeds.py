"""Regenerate the seed corpora under fuzz/corpus/ (small files; run from the repo root with the venv python).

Seeds only: files found by fuzzing that crashed once are kept next to them as regression-*/ inputs."""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

C = Path(__file__).resolve().parent / "corpus"
rng = np.random.default_rng(1)


def tone(sr: int, n: int, ch: int = 1) -> np.ndarray:
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(n)
    return x.astype(np.float32) if ch == 1 else np.stack([x * (c + 1) / ch for c in range(ch)], 1).astype(np.float32)


def audio_file() -> None:
    d = C / "audio_file"
    d.mkdir(parents=True, exist_ok=True)
    cases = [
        ("pcm16_16k.wav", 16000, 300, 1, "WAV", "PCM_16"), ("pcm_u8_8k.wav", 8000, 400, 1, "WAV", "PCM_U8"),
        ("pcm24_48k.wav", 48000, 200, 1, "WAV", "PCM_24"), ("pcm32_44k.wav", 44100, 150, 1, "WAV", "PCM_32"),
        ("float_22k.wav", 22050, 200, 1, "WAV", "FLOAT"), ("double_16k.wav", 16000, 80, 1, "WAV", "DOUBLE"),
        ("stereo_16k.wav", 16000, 200, 2, "WAV", "PCM_16"), ("six_ch_48k.wav", 48000, 60, 6, "WAV", "PCM_16"),
        ("ulaw_8k.wav", 8000, 400, 1, "WAV", "ULAW"), ("imaadpcm_8k.wav", 8000, 505, 1, "WAV", "IMA_ADPCM"),
        ("msadpcm_16k.wav", 16000, 500, 1, "WAV", "MS_ADPCM"), ("gsm_8k.wav", 8000, 320, 1, "WAV", "GSM610"),
        ("pcm16_16k.flac", 16000, 600, 1, "FLAC", "PCM_16"), ("stereo_44k.flac", 44100, 300, 2, "FLAC", "PCM_24"),
        ("vorbis_16k.ogg", 16000, 1600, 1, "OGG", "VORBIS"), ("pcm16_16k.aiff", 16000, 200, 1, "AIFF", "PCM_16"),
        ("float_16k.au", 16000, 100, 1, "AU", "FLOAT"), ("pcm16_16k.caf", 16000, 100, 1, "CAF", "PCM_16"),
        ("pcm16_16k.w64", 16000, 100, 1, "W64", "PCM_16"), ("pcm16_16k.rf64", 16000, 100, 1, "RF64", "PCM_16"),
        ("pcm16_16k.wavex", 16000, 100, 2, "WAVEX", "PCM_16"),
    ]
    for name, sr, n, ch, fmt, sub in cases:
        b = io.BytesIO()
        sf.write(b, tone(sr, n, ch), sr, format=fmt, subtype=sub)
        (d / name).write_bytes(b.getvalue())
    b = io.BytesIO()
    x = tone(16000, 100)
    x[50] = np.nan
    sf.write(b, x, 16000, format="WAV", subtype="FLOAT")
    (d / "nan_float.wav").write_bytes(b.getvalue())
    b = io.BytesIO()
    sf.write(b, tone(16000, 400), 16000, format="WAV", subtype="PCM_16")
    (d / "truncated.wav").write_bytes(b.getvalue()[:500])


def tekken_json(n_special: int, tokens: list[bytes], version: str = "v13", specials: bool = True) -> bytes:
    j = {"config": {"pattern": "x", "default_vocab_size": n_special + len(tokens),
                    "default_num_special_tokens": n_special, "version": version},
         "vocab": [{"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": None} for i, t in enumerate(tokens)]}
    if specials:
        names = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[STREAMING_PAD]", "[STREAMING_WORD]", "[AUDIO]"]
        j["special_tokens"] = [{"rank": i, "token_str": names[i] if i < len(names) else f"<SPECIAL_{i}>", "is_control": True}
                               for i in range(n_special)]
    return json.dumps(j).encode()


def tekken() -> None:
    # byte 0 even: tekken.json text (+ ids in the tail); odd: byte-level token ids (0xFF NN = special NN % 4)
    d = C / "tekken"
    d.mkdir(parents=True, exist_ok=True)
    toks = [bytes([b]) for b in (32, 97, 98, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80)]
    toks += [b" hello", "é".encode(), "€!".encode(), b"\xff\xfe"]
    (d / "small.json").write_bytes(b"\x00" + tekken_json(8, toks))
    (d / "legacy_v3.json").write_bytes(b"\x02" + tekken_json(20, toks[:5], version="v3", specials=False))
    (d / "ids_tail.json").write_bytes(b"\x00" + tekken_json(8, toks) + bytes(range(40)))
    (d / "bytes_utf8.bin").write_bytes(b"\x01" + "héllo wörld € 😀".encode())
    (d / "bytes_invalid.bin").write_bytes(b"\x01" + b"\xe2\x82\xff\x01\xf0\x9f\x98\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80")
    (d / "bytes_specials.bin").write_bytes(b"\x03" + b"ab\xe2\x82\xff\x02\xac\xf0\x9f\xff\x01\x98\x80")
    (d / "base64.bin").write_bytes(b"\x01" + b"aGVsbG8gd29ybGQ=")


def pcm_stdin() -> None:
    # byte 0 = format (bit 0: f32le) | rate index << 1 (16k 8k 11.025k 22.05k 44.1k 48k 1k 768k), bytes 1-2 split seed
    d = C / "pcm_stdin"
    d.mkdir(parents=True, exist_ok=True)
    s16 = (tone(16000, 200) * 32767).astype("<i2").tobytes()
    f32 = tone(16000, 100).astype("<f4").tobytes()
    (d / "s16_16k.bin").write_bytes(bytes([0, 7, 1]) + s16)
    (d / "s16_8k_odd.bin").write_bytes(bytes([1 << 1, 3, 9]) + s16[:-1])
    (d / "f32_48k.bin").write_bytes(bytes([1 | (5 << 1), 5, 0]) + f32)
    (d / "f32_44k_nan.bin").write_bytes(bytes([1 | (4 << 1), 1, 1]) + f32[:200] + struct.pack("<f", float("nan")) + f32[200:300])
    (d / "f32_768k_inf.bin").write_bytes(bytes([1 | (7 << 1), 2, 2]) + f32[:64] + struct.pack("<f", float("inf")))
    (d / "s16_1k.bin").write_bytes(bytes([6 << 1, 9, 9]) + s16[:100])


if __name__ == "__main__":
    audio_file()
    tekken()
    pcm_stdin()
    for p in sorted(C.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(C)}  {p.stat().st_size} B")
