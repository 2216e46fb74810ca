"""The C++ runner built with AddressSanitizer + UBSan (`make runner-asan` -> runner/build-asan, part of `make test`):
the unit tests, the public-API test (including concurrent sessions and LiveSession) and CLI runs on the tiny .pte
(--stdin: reader thread + LiveSession worker, also interrupted by Ctrl+C), leak checks on.
A sanitizer report anywhere fails the test; the tokens must equal the release build's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speech

ROOT = Path(__file__).resolve().parents[2]
ASAN = ROOT / "runner" / "build-asan"
RELEASE = ROOT / "runner" / "build" / "voxtral_realtime_runner"
ENV = {
    **os.environ,
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:strict_string_checks=1:check_initialization_order=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    "LSAN_OPTIONS": f"suppressions={ROOT / 'fuzz' / 'lsan.supp'}",
}
REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")

pytestmark = pytest.mark.skipif(not (ASAN / "voxtral_realtime_runner").exists(),
                                reason="ASan build missing: `make runner-asan` (make test builds it)")


def _run(cmd: list[str], stdin: bytes | None = None, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, timeout=timeout, env={**ENV, **(env or {})})
    err = r.stderr.decode(errors="replace")
    for rep in REPORTS:
        assert rep not in err, err[-6000:]
    return r


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("asan")
    sf.write(d / "a.wav", speech(16000, 2.6, 3), 16000)
    sf.write(d / "b.flac", speech(44100, 1.9, 4, channels=2), 44100)
    sf.write(d / "long.wav", speech(16000, 12.0, 7), 16000)  # wraps both tiny rings 5-10 times
    return d


def test_unit_tests_under_asan():
    r = _run([ASAN / "voxtral_rt_tests"])
    out = r.stdout.decode()
    assert r.returncode == 0 and " 0 failed" in out, out[-3000:] + r.stderr.decode()[-3000:]


def test_alias_kernel_under_asan():
    r = _run([ASAN / "voxtral_rt_kernel_tests"])
    out = r.stdout.decode()
    assert r.returncode == 0 and " 0 failed" in out, out[-3000:] + r.stderr.decode()[-3000:]


@pytest.mark.parametrize("pte", ["fp32", "q"])
def test_public_api_and_concurrent_sessions_under_asan(tiny, audio, pte):
    r = _run([ASAN / "voxtral_rt_pte_tests", tiny[pte], tiny["dir"] / "tekken.json", audio / "a.wav"])
    out = r.stdout.decode()
    assert r.returncode == 0 and " 0 failed" in out, out[-3000:] + r.stderr.decode()[-3000:]


def _cli(binary: Path, tiny, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return _run([binary, "--model_path", tiny["fp32"], "--tokenizer_path", tiny["dir"] / "tekken.json", *args], stdin=stdin)


@pytest.mark.parametrize("args", [
    ("--audio_path", "a.wav"),
    ("--audio_path", "b.flac", "--streaming", "--chunk_ms", "130", "--delay_ms", "160"),
    ("--stdin", "--stdin_format", "s16le", "--sample_rate", "48000"),
    ("--stdin", "--stdin_format", "s16le", "--sample_rate", "48000", "--min_feed_ms", "300"),
])
def test_cli_under_asan_same_tokens_as_release(tiny, audio, args):
    args = [str(audio / a) if a.endswith((".wav", ".flac")) else a for a in args]
    stdin = None
    if "--stdin" in args:
        stdin = (np.clip(speech(48000, 1.5, 5), -1, 1) * 32767).astype("<i2").tobytes()
    got = _cli(ASAN / "voxtral_realtime_runner", tiny, "--json", *args, stdin=stdin)
    assert got.returncode == 0, got.stderr.decode()[-3000:]
    ref = _cli(RELEASE, tiny, "--json", *args, stdin=stdin)
    assert ref.returncode == 0
    assert json.loads(got.stdout)["token_ids"] == json.loads(ref.stdout)["token_ids"]


@pytest.mark.parametrize("alias", ["1", "0"])
def test_long_stream_kv_alias_under_asan(tiny, audio, alias):
    """A stream that wraps both KV rings many times, with the K/V slices aliased (1) or copied (0): no report, and
    the release build's tokens (which test_kv_alias checks against the Python runtime)."""
    args = ["--json", "--audio_path", str(audio / "long.wav"), "--streaming", "--chunk_ms", "80"]
    got = _run([ASAN / "voxtral_realtime_runner", "--model_path", tiny["fp32"], "--tokenizer_path",
                tiny["dir"] / "tekken.json", *args], env={"VOXTRAL_RT_KV_ALIAS": alias})
    assert got.returncode == 0, got.stderr.decode()[-3000:]
    ref = _cli(RELEASE, tiny, *args)
    assert ref.returncode == 0
    assert json.loads(got.stdout)["token_ids"] == json.loads(ref.stdout)["token_ids"]


def test_cli_error_paths_under_asan(tiny, audio, tmp_path):
    """Bad inputs exit with their code and no sanitizer report (nothing leaks on the error paths)."""
    corrupt = tmp_path / "corrupt.pte"
    b = bytearray(tiny["fp32"].read_bytes())
    for i in range(300, 4000, 97):  # flip bytes across the program flatbuffer
        b[i] ^= 0x5A
    corrupt.write_bytes(bytes(b))
    trunc = tmp_path / "trunc.pte"
    trunc.write_bytes(tiny["fp32"].read_bytes()[:20000])
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    tok = str(tiny["dir"] / "tekken.json")
    for model, extra, stdin, code in [
        (corrupt, ["--audio_path", str(audio / "a.wav")], None, 2),
        (trunc, ["--audio_path", str(audio / "a.wav")], None, 2),
        (tiny["fp32"], ["--audio_path", str(junk)], None, 3),
        (tiny["fp32"], ["--stdin", "--stdin_format", "f32le"], np.array([0.1, np.nan], "<f4").tobytes(), 3),
        (tiny["fp32"], ["--stdin"], b"\x01\x02\x03", 3),
        (tiny["fp32"], ["--audio_path", str(audio / "a.wav"), "--delay_ms", "100"], None, 1),
    ]:
        r = _run([ASAN / "voxtral_realtime_runner", "--model_path", model, "--tokenizer_path", tok, *extra], stdin=stdin)
        assert r.returncode == code, (model, extra, r.returncode, r.stderr.decode()[-2000:])
        assert "error" in r.stderr.decode().lower()


def test_cli_stdin_interrupted_under_asan(tiny):
    """Ctrl+C with a backlog queued: the worker stops, both threads end, nothing leaks; exit 130."""
    pcm = (np.clip(speech(16000, 2.0, 6), -1, 1) * 32767).astype("<i2").tobytes() * 100  # 200 s: still running
    p = subprocess.Popen([str(ASAN / "voxtral_realtime_runner"), "--model_path", str(tiny["fp32"]), "--tokenizer_path",
                          str(tiny["dir"] / "tekken.json"), "--stdin", "--json"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    p.stdin.write(pcm)  # returns once the reader has queued nearly all of it
    p.stdin.flush()
    time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    for rep in REPORTS:
        assert rep not in err.decode(errors="replace"), err.decode(errors="replace")[-6000:]
    assert p.returncode == 130 and "token_ids" in json.loads(out)


@pytest.mark.parametrize("fmt", ["srt", "vtt", "jsonl"])
def test_cli_output_formats_under_asan(tiny, audio, tmp_path, fmt):
    """Cues and events written from the live worker (--stdin) and at the end, to a file: no report, and the
    release build's output (jsonl: the same events; `done` carries timings)."""
    stdin = (np.clip(speech(16000, 2.0, 8), -1, 1) * 32767).astype("<i2").tobytes()
    outs = []
    for binary in (ASAN / "voxtral_realtime_runner", RELEASE):
        f = tmp_path / f"{binary.parent.name}.{fmt}"
        r = _cli(binary, tiny, "--stdin", "--format", fmt, "--output_file", str(f), "--segment_pause_ms", "160",
                 stdin=stdin)
        assert r.returncode == 0 and r.stdout == b"", r.stderr.decode()[-3000:]
        outs.append(f.read_text().splitlines())
    if fmt == "jsonl":
        assert [json.loads(x)["type"] for x in outs[0]][-1] == "transcript.text.done"
        outs = [[x for x in o if "transcript.text.done" not in x] for o in outs]
    assert outs[0] == outs[1]
    assert any("-->" in x or "transcript.text.segment" in x for x in outs[0])  # at least one segment written


def _c_example(binary_dir: Path, model: Path, tok: Path, wav: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[int]]:
    """runner/tools/c_api_example.c (compiled as C, linked to that build's libvoxtral_rt.so): its exit code and the
    token ids of its "tokens:" line."""
    r = _run([binary_dir / "voxtral_rt_c_example", model, tok, wav, *args])
    lines = [ln for ln in r.stderr.decode().splitlines() if "tokens:" in ln]
    return r, ([int(x) for x in lines[-1].split("tokens:")[1].split()] if lines else [])


@pytest.mark.parametrize("wav, args, flags", [
    ("a.wav", [], []),
    ("b.flac", ["130", "160"], ["--delay_ms", "160"]),
])
def test_c_api_example_under_asan(tiny, audio, wav, args, flags):
    """The C API from a C program through the ASan build of libvoxtral_rt.so, streamed in chunks, its segments and
    words read: no report, no leak, and the release CLI's tokens and text."""
    tok = tiny["dir"] / "tekken.json"
    r, ids = _c_example(ASAN, tiny["fp32"], tok, audio / wav, *args)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    ref = _cli(RELEASE, tiny, "--json", "--audio_path", str(audio / wav), *flags)
    assert ref.returncode == 0
    want = json.loads(ref.stdout)
    assert ids == want["token_ids"] and len(ids) > 0
    out = r.stdout.decode().splitlines()
    assert out[0] == want["text"]
    assert any(line.startswith("[") for line in out[1:])  # the segments and their words were read too


def test_c_api_example_error_paths_under_asan(tiny, audio, tmp_path):
    """Load, audio and session errors through the C API: the message, the exit code, and nothing leaks."""
    tok = tiny["dir"] / "tekken.json"
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    for model, wav, args, code, want in [
        (tmp_path / "missing.pte", audio / "a.wav", [], 2, "cannot open model: No such file or directory"),
        (tiny["fp32"], junk, [], 3, "cannot read audio"),
        (tiny["fp32"], audio / "a.wav", ["80", "100"], 1, "delay 100 ms is not supported"),
    ]:
        r, _ = _c_example(ASAN, model, tok, wav, *args)
        assert r.returncode == code and want in r.stderr.decode(), (model, wav, args, r.stderr.decode()[-2000:])
