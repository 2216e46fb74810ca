"""The C++ runner (built by `make runner`) against the Python paths on the same exported tiny model:
same tokens offline, streaming at any chunk size, and from stdin (a backlog fed in one piece, --min_feed_ms);
clear errors on bad input."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtral_rt.audio import load_audio
from voxtral_rt.protocol import transcribe
from voxtral_rt.engine import PteEngine
from conftest import speech

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "runner" / "build"
RUNNER = BUILD / "voxtral_realtime_runner"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    assert RUNNER.exists(), f"{RUNNER} missing: build it with `make runner`"
    return subprocess.run([str(RUNNER), *args], input=stdin, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("rwav")
    out = {}
    sf.write(d / "mono16k.wav", speech(16000, 3.1, 1), 16000)
    sf.write(d / "stereo44k.flac", speech(44100, 2.4, 2, channels=2), 44100)
    sf.write(d / "pcm24_48k.wav", speech(48000, 1.7, 3), 48000, subtype="PCM_24")
    for p in d.iterdir():
        out[p.stem] = p
    return out


def _py(tiny, path, delay_ms=None, chunk=0):
    return transcribe(PteEngine(tiny["fp32"]), tiny["tok"], load_audio(path), delay_ms=delay_ms, chunk_samples=chunk)


def _cpp(tiny, *args: str, stdin: bytes | None = None) -> dict:
    r = run("--model_path", str(tiny["fp32"]), "--tokenizer_path", str(tiny["dir"] / "tekken.json"), "--json", *args, stdin=stdin)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return json.loads(r.stdout)


def test_cpp_unit_tests():
    r = subprocess.run([str(BUILD / "voxtral_rt_tests")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and " 0 failed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.parametrize("name,delay_ms", [("mono16k", 480), ("stereo44k", 160), ("pcm24_48k", 2400)])
def test_offline_same_tokens_as_python(tiny, wavs, name, delay_ms):
    ref = _py(tiny, wavs[name], delay_ms)
    got = _cpp(tiny, "--audio_path", str(wavs[name]), "--delay_ms", str(delay_ms))
    assert got["token_ids"] == ref["token_ids"]
    assert got["text"] == ref["text"]
    assert got["token_times_ms"] == pytest.approx(ref["token_times_ms"])
    assert len(set(ref["token_ids"])) > 3


@pytest.mark.parametrize("chunk_ms", [1, 80, 130, 1000])
def test_streaming_chunks_same_tokens(tiny, wavs, chunk_ms):
    ref = _py(tiny, wavs["mono16k"])
    got = _cpp(tiny, "--audio_path", str(wavs["mono16k"]), "--streaming", "--chunk_ms", str(chunk_ms))
    assert got["token_ids"] == ref["token_ids"]


def test_stdin_s16le_and_f32le(tiny, wavs):
    ref = _py(tiny, wavs["mono16k"])
    x = load_audio(wavs["mono16k"])
    got = _cpp(tiny, "--stdin", "--stdin_format", "f32le", stdin=x.astype("<f4").tobytes())
    assert got["token_ids"] == ref["token_ids"]
    pcm16 = (np.clip(x, -1, 1) * 32767).astype("<i2")
    ref16 = transcribe(PteEngine(tiny["fp32"]), tiny["tok"], pcm16.astype(np.float32) / 32768.0)
    got16 = _cpp(tiny, "--stdin", "--stdin_format", "s16le", stdin=pcm16.tobytes())
    assert got16["token_ids"] == ref16["token_ids"]


def test_quantized_pte_matches_python_runtime(tiny, wavs):
    ref = transcribe(PteEngine(tiny["q"]), tiny["tok"], load_audio(wavs["mono16k"]))
    r = run("--model_path", str(tiny["q"]), "--tokenizer_path", str(tiny["dir"] / "tekken.json"), "--json",
            "--audio_path", str(wavs["mono16k"]))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert json.loads(r.stdout)["token_ids"] == ref["token_ids"]


def test_stats_output(tiny, wavs):
    r = run("--model_path", str(tiny["fp32"]), "--tokenizer_path", str(tiny["dir"] / "tekken.json"),
            "--audio_path", str(wavs["mono16k"]), "--stats")
    assert r.returncode == 0
    err = r.stderr.decode()
    for key in ("load", "real-time factor", "p50", "p95", "RSS"):
        assert key.lower() in err.lower(), key


def test_json_stats_token_emit_ms(tiny, wavs):
    """--json --stats gives each token's emission time (ms from the start of feeding, non-decreasing, within the
    run's wall time) and the start on the steady clock (bench/bench_live.py measures live lag from these)."""
    pcm = (np.clip(load_audio(wavs["mono16k"]), -1, 1) * 32767).astype("<i2").tobytes()
    for args, stdin in ((("--audio_path", str(wavs["mono16k"])), None), (("--stdin",), pcm)):
        j = _cpp(tiny, "--stats", *args, stdin=stdin)
        emit, s = j["stats"]["token_emit_ms"], j["stats"]
        assert len(emit) == len(j["token_ids"]) == s["n_generated"] > 0
        assert all(b >= a for a, b in zip(emit, emit[1:])) and 0 <= emit[0] and emit[-1] <= s["wall_ms"]
        assert s["t0_steady_ms"] > 0
    assert "token_emit_ms" not in _cpp(tiny, "--audio_path", str(wavs["mono16k"])).get("stats", {})


def test_stderr_quiet_unless_verbose(tiny, wavs, tmp_path):
    """A plain run prints the transcript and nothing on stderr: ExecuTorch's own start-up logs are routed through
    the library's log callback (Debug level: shown with --verbose), its errors as warnings."""
    args = ["--model_path", str(tiny["fp32"]), "--tokenizer_path", str(tiny["dir"] / "tekken.json"),
            "--audio_path", str(wavs["mono16k"])]
    r = run(*args)
    assert r.returncode == 0 and r.stdout.strip() and r.stderr.decode() == ""
    v = run(*args, "--verbose").stderr.decode()
    assert "voxtral_rt: metadata format_version = 3" in v and "\nI 00:" not in "\n" + v
    bad = tmp_path / "short.pte"
    bad.write_bytes(tiny["fp32"].read_bytes()[:4096])
    e = run("--model_path", str(bad), *args[2:]).stderr.decode()
    assert "voxtral_rt: executorch: File size is too small" in e and "error: " in e


def test_errors_are_clear(tiny, wavs, tmp_path):
    tok = str(tiny["dir"] / "tekken.json")
    bad = tmp_path / "bad.pte"
    bad.write_bytes(tiny["fp32"].read_bytes()[:4096])
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    from voxtral_rt.config import REAL_AUDIO
    from voxtral_rt.tokenizer import write_tekken_json

    other_tok = write_tekken_json(tmp_path / "other.json", 4000, REAL_AUDIO)
    cases = [
        (["--model_path", str(tmp_path / "none.pte"), "--tokenizer_path", tok, "--audio_path", str(wavs["mono16k"])], 2),
        (["--model_path", str(bad), "--tokenizer_path", tok, "--audio_path", str(wavs["mono16k"])], 2),
        (["--model_path", str(tiny["fp32"]), "--tokenizer_path", str(other_tok), "--audio_path", str(wavs["mono16k"])], 2),
        (["--model_path", str(tiny["fp32"]), "--tokenizer_path", tok, "--audio_path", str(empty)], 3),
        (["--model_path", str(tiny["fp32"]), "--tokenizer_path", tok, "--audio_path", str(junk)], 3),
        (["--model_path", str(tiny["fp32"]), "--tokenizer_path", tok, "--audio_path", str(wavs["mono16k"]), "--delay_ms", "100"], None),
        (["--model_path", str(tiny["fp32"]), "--tokenizer_path", tok], 1),
    ]
    for args, code in cases:
        r = run(*args)
        err = r.stderr.decode()
        assert r.returncode != 0, args
        if code is not None:
            assert r.returncode == code, (args, r.returncode, err[-500:])
        assert "error" in err.lower(), (args, err[-500:])
        assert r.returncode > 0  # an exit code, not a signal (no crash)
    # stdin closed mid-sample (odd byte count for s16le)
    r = run("--model_path", str(tiny["fp32"]), "--tokenizer_path", tok, "--stdin", "--stdin_format", "s16le", stdin=b"\x01\x02\x03")
    assert r.returncode == 3 and "error" in r.stderr.decode().lower()


def _cpp_file_stdin(tiny, path: Path, *args: str) -> dict:
    with open(path, "rb") as f:
        r = subprocess.run([str(RUNNER), "--model_path", str(tiny["fp32"]), "--tokenizer_path",
                            str(tiny["dir"] / "tekken.json"), "--json", "--stdin", *args],
                           stdin=f, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return json.loads(r.stdout)


def test_stdin_backlog_is_fed_in_one_piece(tiny, wavs, tmp_path):
    """A whole clip available at once on --stdin (a stream that fell behind): the reader queues it while the model
    works and each feed() takes everything queued -- the same tokens, far fewer encoder calls than one per 80 ms."""
    x = load_audio(wavs["mono16k"])
    ref = _py(tiny, wavs["mono16k"])
    raw = tmp_path / "clip.f32"
    raw.write_bytes(x.astype("<f4").tobytes())
    got = _cpp_file_stdin(tiny, raw, "--stdin_format", "f32le", "--stats")
    per80 = _cpp(tiny, "--audio_path", str(wavs["mono16k"]), "--streaming", "--chunk_ms", "80", "--stats")
    assert got["token_ids"] == ref["token_ids"] == per80["token_ids"]
    # 64 KiB reads (1 s of f32): at most one feed per read, however the reader and the worker interleave
    assert got["stats"]["n_feeds"] <= 4 and got["stats"]["max_backlog_ms"] >= 1000
    assert 2 * got["stats"]["n_encoder_calls"] <= per80["stats"]["n_encoder_calls"], (got["stats"], per80["stats"])


def _paced_stdin(tiny, pcm16: bytes, *args: str, piece_ms: int = 80, sleep_s: float = 0.01) -> dict:
    """Writes s16le in piece_ms pieces with a pause after each, like a live source (faster than real time)."""
    p = subprocess.Popen([str(RUNNER), "--model_path", str(tiny["fp32"]), "--tokenizer_path",
                          str(tiny["dir"] / "tekken.json"), "--json", "--stats", "--stdin", *args],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    step = 16 * piece_ms * 2
    for i in range(0, len(pcm16), step):
        p.stdin.write(pcm16[i:i + step])
        p.stdin.flush()
        time.sleep(sleep_s)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()[-2000:]
    return json.loads(out)


def test_min_feed_ms(tiny, wavs):
    """--min_feed_ms N: feeds of at least N ms (less CPU, more latency), the same tokens. --stdin from a paced
    writer; --streaming groups its --chunk_ms pieces."""
    x = load_audio(wavs["mono16k"])  # 3.1 s
    pcm16 = (np.clip(x, -1, 1) * 32767).astype("<i2")
    ref = transcribe(PteEngine(tiny["fp32"]), tiny["tok"], pcm16.astype(np.float32) / 32768.0)
    paced = _paced_stdin(tiny, pcm16.tobytes())
    assert paced["token_ids"] == ref["token_ids"]
    batched = _paced_stdin(tiny, pcm16.tobytes(), "--min_feed_ms", "1000")
    assert batched["token_ids"] == ref["token_ids"]
    assert batched["stats"]["n_feeds"] <= 4  # every feed but the last has >= 1 s
    s = _cpp(tiny, "--audio_path", str(wavs["mono16k"]), "--streaming", "--chunk_ms", "80", "--min_feed_ms", "1000",
             "--stats")
    assert s["token_ids"] == _py(tiny, wavs["mono16k"])["token_ids"]
    assert s["stats"]["n_feeds"] == 3  # 13 pieces of 80 ms (1.04 s) per feed: 1.04 + 1.04 + 1.02 s
    for bad in (["--stdin", "--min_feed_ms", "-1"], ["--audio_path", str(wavs["mono16k"]), "--min_feed_ms", "500"]):
        r = run("--model_path", str(tiny["fp32"]), "--tokenizer_path", str(tiny["dir"] / "tekken.json"), *bad,
                stdin=b"")
        assert r.returncode == 1 and b"--min_feed_ms" in r.stderr
