"""Bad and unusual inputs, end to end: each gets a clear error naming the problem (one `error:` line, its exit
code, no crash) or a correct transcript (the same tokens as the Python reference path). Nothing hangs: every
run has a timeout. docs/robustness.md, "Bad inputs", lists these rows and the tests that cover them.

C++ CLI exit codes: 1 bad flags, 2 model/tokenizer load failed, 3 audio input error, 130 interrupted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtral_rt.audio import load_audio
from voxtral_rt.protocol import transcribe
from voxtral_rt.engine import PteEngine
from conftest import foreign_program, speech

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "runner" / "build" / "voxtral_realtime_runner"
EXPORT = ROOT / "export" / "export_voxtral_rt.py"
CRASH = ("Segmentation fault", "Sanitizer", "Traceback", "terminate called", "Aborted")


def cpp(tiny, *args: str, model: Path | None = None, tok: Path | None = None, stdin: bytes | None = None,
        timeout: int = 120) -> subprocess.CompletedProcess:
    assert RUNNER.exists(), f"{RUNNER} missing: build it with `make runner`"
    cmd = [str(RUNNER), "--model_path", str(model or tiny["fp32"]), "--tokenizer_path",
           str(tok or tiny["dir"] / "tekken.json"), *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)


def expect_error(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    err = r.stderr.decode(errors="replace")
    assert r.returncode == code, (r.returncode, err[-2000:])
    for c in CRASH:
        assert c not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def tokens(r: subprocess.CompletedProcess) -> list[int]:
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    return json.loads(r.stdout)["token_ids"]


def py_tokens(tiny, path: Path, delay_ms: int | None = None) -> list[int]:
    return transcribe(PteEngine(tiny["fp32"]), tiny["tok"], load_audio(path), delay_ms=delay_ms)["token_ids"]


# ---------------------------------------------------------------------------------------------- audio files

@pytest.mark.parametrize("name,sr,channels,fmt,subtype", [
    ("u8_8k", 8000, 1, "WAV", "PCM_U8"),
    ("pcm16_8k", 8000, 1, "WAV", "PCM_16"),
    ("pcm24_48k", 48000, 1, "WAV", "PCM_24"),
    ("float_16k", 16000, 1, "WAV", "FLOAT"),
    ("stereo_16k", 16000, 2, "WAV", "PCM_16"),
    ("six_ch_48k", 48000, 6, "WAV", "PCM_16"),
])
def test_formats_rates_channels_same_tokens_as_python(tiny, tmp_path, name, sr, channels, fmt, subtype):
    """8-bit/24-bit/float WAV, 8 kHz/48 kHz, stereo/6-channel: the transcript of the Python reference path."""
    p = tmp_path / f"{name}.wav"
    sf.write(p, speech(sr, 2.3, 7, channels, spread=0.5 / channels), sr, format=fmt, subtype=subtype)
    got = tokens(cpp(tiny, "--json", "--audio_path", str(p)))
    assert got == py_tokens(tiny, p)
    assert len(set(got)) > 3


def test_truncated_wav_transcribes_what_is_there(tiny, tmp_path):
    """A WAV cut short (its header announces more frames than the file holds): the frames that are there."""
    p = tmp_path / "cut.wav"
    sf.write(p, speech(16000, 3.0, 8), 16000, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.6)])
    assert len(load_audio(p)) < 0.65 * 3.0 * 16000  # the reference reads the shorter audio too
    assert tokens(cpp(tiny, "--json", "--audio_path", str(p))) == py_tokens(tiny, p)
    # cut inside the header: an error
    p.write_bytes(data[:30])
    expect_error(cpp(tiny, "--audio_path", str(p)), 3, str(p))


def test_corrupt_audio_files(tiny, tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.wav"
    sf.write(good, speech(16000, 1.0, 9), 16000, subtype="PCM_16")
    data = bytearray(good.read_bytes())
    cases = {}
    bad_fmt = bytearray(data)
    bad_fmt[20:36] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()  # the fmt chunk's fields
    cases["fmt_garbage.wav"] = bytes(bad_fmt)
    cases["random.wav"] = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    cases["text.wav"] = b"this is not audio\n" * 100
    cases["riff_only.wav"] = b"RIFF\x00\x00\x00\x00WAVEjunk"
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        expect_error(cpp(tiny, "--audio_path", str(p)), 3, str(p))
    expect_error(cpp(tiny, "--audio_path", str(tmp_path)), 3, str(tmp_path))  # a directory
    expect_error(cpp(tiny, "--audio_path", str(tmp_path / "none.wav")), 3, "none.wav")


def test_zero_length_audio(tiny, tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    expect_error(cpp(tiny, "--audio_path", str(p)), 3, "empty")
    expect_error(cpp(tiny, "--stdin", stdin=b""), 3, "no audio")


def test_nan_inf_samples(tiny, tmp_path):
    x = speech(16000, 1.0, 10)
    x[1234] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    expect_error(cpp(tiny, "--audio_path", str(p)), 3, "sample 1234 is NaN or Inf")
    expect_error(cpp(tiny, "--audio_path", str(p), "--streaming"), 3, "sample 1234 is NaN or Inf")
    y = speech(48000, 1.0, 11)
    y[777] = np.inf
    q = tmp_path / "inf48k.wav"
    sf.write(q, y, 48000, subtype="FLOAT")
    expect_error(cpp(tiny, "--audio_path", str(q)), 3, "sample 777 is NaN or Inf")  # found before resampling
    huge = speech(8000, 1.0, 12)
    huge[100:102] = [3e38, -3e38]  # finite, but overflows the resampler
    h = tmp_path / "huge8k.wav"
    sf.write(h, huge, 8000, subtype="FLOAT")
    expect_error(cpp(tiny, "--audio_path", str(h)), 3, "far outside [-1, 1]")
    pcm = speech(16000, 0.5, 13)
    pcm[10] = np.inf
    expect_error(cpp(tiny, "--stdin", "--stdin_format", "f32le", stdin=pcm.astype("<f4").tobytes()), 3,
                 "sample 10 is NaN or Inf")


def test_sample_rates_out_of_range(tiny, tmp_path):
    p = tmp_path / "500hz.wav"
    sf.write(p, speech(500, 2.0, 14), 500, subtype="PCM_16")
    expect_error(cpp(tiny, "--audio_path", str(p)), 3, "500 Hz is outside the supported range 1000..768000 Hz")
    one = tmp_path / "one_frame_48k.wav"
    sf.write(one, np.full((1, 6), 0.1, np.float32), 48000, subtype="PCM_16")
    expect_error(cpp(tiny, "--audio_path", str(one)), 3, "too short to resample")
    expect_error(cpp(tiny, "--stdin", "--sample_rate", "100", stdin=b"\x00\x00" * 100), 1, "--sample_rate")


def test_stdin_ends_mid_sample_and_writer_disconnects(tiny):
    expect_error(cpp(tiny, "--stdin", "--stdin_format", "f32le", stdin=b"\x00" * 4003), 3, "middle of a sample")
    # The writer goes away mid-stream (pipe closed): end of audio, the transcript so far, exit 0.
    pcm = (speech(16000, 2.0, 15) * 32767).astype("<i2").tobytes()
    p = subprocess.Popen([str(RUNNER), "--model_path", str(tiny["fp32"]), "--tokenizer_path",
                          str(tiny["dir"] / "tekken.json"), "--stdin", "--json"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(pcm[: len(pcm) // 2 + 1], timeout=120)  # stops in the middle of a sample, too
    assert p.returncode == 3 and b"middle of a sample" in err
    p = subprocess.Popen([str(RUNNER), "--model_path", str(tiny["fp32"]), "--tokenizer_path",
                          str(tiny["dir"] / "tekken.json"), "--stdin", "--json"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(pcm[: len(pcm) // 2], timeout=120)  # writes, then closes the pipe
    assert p.returncode == 0, err.decode()[-2000:]
    ref = transcribe(PteEngine(tiny["fp32"]), tiny["tok"],
                     np.frombuffer(pcm[: len(pcm) // 2], "<i2").astype(np.float32) / 32768.0)
    assert json.loads(out)["token_ids"] == ref["token_ids"]


def test_sigint_mid_stream_prints_partial_transcript(tiny):
    """Ctrl+C on a live stream: exit 130, the text so far still printed, no hang."""
    p = subprocess.Popen([str(RUNNER), "--model_path", str(tiny["fp32"]), "--tokenizer_path",
                          str(tiny["dir"] / "tekken.json"), "--stdin", "--json"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write((speech(16000, 3.0, 16) * 32767).astype("<i2").tobytes())
    p.stdin.flush()
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)  # stdin still open: the runner is blocked in read()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "token_ids" in json.loads(out)


def test_multi_hour_file_bounded_memory(tiny, tmp_path):
    """A long file is decoded and resampled block by block: the runner's peak RSS does not grow with it.
    (40 min of 8 kHz here, to stay cheap; bench/long_session.py and docs/robustness.md have the 2-hour figures.)"""
    sr, minutes = 8000, 40
    p = tmp_path / "long8k.wav"
    rng = np.random.default_rng(17)
    with sf.SoundFile(p, "w", sr, 1, subtype="PCM_16") as f:
        for _ in range(minutes):
            f.write((0.01 * rng.standard_normal(sr * 60)).astype(np.float32))
    short = tmp_path / "short8k.wav"
    sf.write(short, (0.01 * rng.standard_normal(sr * 60)).astype(np.float32), sr, subtype="PCM_16")

    def peak_mib(path: Path) -> tuple[float, subprocess.CompletedProcess]:
        r = cpp(tiny, "--audio_path", str(path), "--stats", timeout=600)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        line = [ln for ln in r.stderr.decode().splitlines() if "peak RSS" in ln][0]
        return float(line.split("peak RSS")[1].split()[0]), r

    rss_short, _ = peak_mib(short)
    rss_long, r = peak_mib(p)
    decoded_mib = minutes * 60 * 16000 * 4 / 2**20  # what holding the resampled audio would take: 146 MiB
    assert rss_long < rss_short + 16, (rss_short, rss_long)
    assert rss_long < decoded_mib / 2
    assert "audio 2400.00 s" in r.stderr.decode()


# ---------------------------------------------------------------------------------------------- model files

def test_pte_missing_corrupt_truncated(tiny, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, speech(16000, 1.0, 18), 16000)
    a = ["--audio_path", str(wav)]
    expect_error(cpp(tiny, *a, model=tmp_path / "none.pte"), 2, "none.pte", "No such file")
    expect_error(cpp(tiny, *a, model=tmp_path), 2, "is a directory")
    empty = tmp_path / "empty.pte"
    empty.write_bytes(b"")
    expect_error(cpp(tiny, *a, model=empty), 2, "empty")
    src = tiny["fp32"].read_bytes()
    for n in (16, 5000, len(src) // 2):
        t = tmp_path / f"trunc{n}.pte"
        t.write_bytes(src[:n])
        expect_error(cpp(tiny, *a, model=t), 2, str(t))
    # bytes flipped in the program flatbuffer: verified at load (13 of 60 such files used to segfault)
    rng = np.random.default_rng(1)
    for i in range(8):
        b = bytearray(src)
        for pos in rng.integers(8, 4096, 4):
            b[pos] ^= 0xFF
        c = tmp_path / f"flip{i}.pte"
        c.write_bytes(bytes(b))
        r = cpp(tiny, *a, model=c)
        err = r.stderr.decode(errors="replace")
        assert r.returncode in (0, 2, 4), (i, r.returncode, err[-1500:])  # an error, or a (garbage) transcript
        assert not any(x in err for x in CRASH)
    wav_as_model = tmp_path / "audio.pte"
    wav_as_model.write_bytes(wav.read_bytes())
    expect_error(cpp(tiny, *a, model=wav_as_model), 2, "corrupt, truncated or not an ExecuTorch program")


def test_pte_other_format_version_or_not_ours(tiny, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, speech(16000, 1.0, 19), 16000)
    future = foreign_program(tmp_path / "future.pte", {"format_version": 99})
    expect_error(cpp(tiny, "--audio_path", str(wav), model=future), 2, "unsupported format_version 99", "re-export")
    other = foreign_program(tmp_path / "other.pte", {"something": 1})
    expect_error(cpp(tiny, "--audio_path", str(wav), model=other), 2, "missing metadata 'format_version'")
    for old in (1, 2):
        older = foreign_program(tmp_path / f"older{old}.pte", {"format_version": old})
        expect_error(cpp(tiny, "--audio_path", str(wav), model=older), 2, f"unsupported format_version {old}", "re-export")
    partial = foreign_program(tmp_path / "partial.pte", {"format_version": 3})
    expect_error(cpp(tiny, "--audio_path", str(wav), model=partial), 2, "missing metadata")


def test_tokenizer_errors(tiny, tmp_path):
    from voxtral_rt.config import REAL_AUDIO
    from voxtral_rt.tokenizer import write_tekken_json

    wav = tmp_path / "a.wav"
    sf.write(wav, speech(16000, 1.0, 20), 16000)
    a = ["--audio_path", str(wav)]
    other = write_tekken_json(tmp_path / "other_tekken.json", 4000, REAL_AUDIO)
    expect_error(cpp(tiny, *a, tok=other), 2, "does not match model", "vocab size 4000 vs 3000")
    expect_error(cpp(tiny, *a, tok=tmp_path / "none.json"), 2, "none.json")
    notjson = tmp_path / "broken.json"
    notjson.write_text('{"config": {')
    expect_error(cpp(tiny, *a, tok=notjson), 2, "not valid JSON")
    j = json.loads((tiny["dir"] / "tekken.json").read_text())
    j["special_tokens"] = [s for s in j["special_tokens"] if s["token_str"] != "[STREAMING_PAD]"]
    nopad = tmp_path / "nopad.json"
    nopad.write_text(json.dumps(j))
    expect_error(cpp(tiny, *a, tok=nopad), 2, "[STREAMING_PAD]")


@pytest.mark.parametrize("delay", ["100", "0", "-5", "1280", "1360", "2320"])
def test_delay_not_allowed(tiny, tmp_path, delay):
    wav = tmp_path / "a.wav"
    sf.write(wav, speech(16000, 0.5, 21), 16000)
    r = cpp(tiny, "--audio_path", str(wav), "--delay_ms", delay)
    if delay == "1280":  # 16 tokens: not allowed (1..15 or 30)
        expect_error(r, 1, "delay 1280 ms is not supported", "multiple of 80 ms")
    else:
        expect_error(r, 1, "delay")


# ---------------------------------------------------------------------------------------------- checkpoints (export)

def _export_error(model_dir: Path, tmp_path: Path) -> str:
    r = subprocess.run([sys.executable, str(EXPORT), "--model-path", str(model_dir), "--output",
                        str(tmp_path / "x.pte")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr[-3000:]
    assert not (tmp_path / "x.pte").exists()
    return lines[0]


def _ckpt_copy(tiny, dst: Path, edit=None, params=None, raw=None) -> Path:
    import torch  # noqa: F401  (safetensors.torch needs it)
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    (dst / "tekken.json").write_bytes((tiny["dir"] / "tekken.json").read_bytes())
    (dst / "params.json").write_text(params if params is not None else (tiny["dir"] / "params.json").read_text())
    src = tiny["dir"] / "consolidated.safetensors"
    if raw is not None:
        (dst / "consolidated.safetensors").write_bytes(raw(src.read_bytes()))
    else:
        sd = load_file(str(src))
        if edit:
            edit(sd)
        save_file(sd, str(dst / "consolidated.safetensors"))
    return dst


def test_bad_params_json_export(tiny, tmp_path):
    """Eager CLI: tests/python/test_cli.py::test_bad_inputs ("bad params"); here the export path."""
    p = json.loads((tiny["dir"] / "params.json").read_text())
    del p["n_kv_heads"]
    d = _ckpt_copy(tiny, tmp_path / "missing_field", params=json.dumps(p))
    assert "params.json" in (line := _export_error(d, tmp_path)) and "n_kv_heads" in line
    d = _ckpt_copy(tiny, tmp_path / "not_json", params='{"dim": 96,')
    assert "params.json" in (line := _export_error(d, tmp_path)) and "not valid JSON" in line
    p = json.loads((tiny["dir"] / "params.json").read_text())
    p["dim"] = "ninety-six"
    d = _ckpt_copy(tiny, tmp_path / "wrong_type", params=json.dumps(p))
    assert "dim" in _export_error(d, tmp_path)


def test_bad_checkpoint_export(tiny, tmp_path):
    """Loader API: tests/python/test_checkpoint.py (missing/unexpected/mis-shaped/truncated); here the export CLI."""
    name = "layers.1.feed_forward.w2.weight"
    d = _ckpt_copy(tiny, tmp_path / "missing", edit=lambda sd: sd.pop(name))
    assert f"missing tensor '{name}'" in _export_error(d, tmp_path)
    import torch

    d = _ckpt_copy(tiny, tmp_path / "extra", edit=lambda sd: sd.__setitem__("output.weight", torch.zeros(3)))
    assert "unexpected tensor 'output.weight'" in _export_error(d, tmp_path)

    def shrink(sd):
        sd["layers.0.attention.wk.weight"] = sd["layers.0.attention.wk.weight"][:-1].contiguous()

    d = _ckpt_copy(tiny, tmp_path / "misshaped", edit=shrink)
    assert "shape mismatch" in _export_error(d, tmp_path)
    d = _ckpt_copy(tiny, tmp_path / "truncated", raw=lambda b: b[: len(b) // 2])
    assert "truncated or corrupt" in _export_error(d, tmp_path)
