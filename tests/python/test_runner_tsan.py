"""The C++ runner built with ThreadSanitizer (`make runner-tsan` -> runner/build-tsan, part of `make test`): the
public-API test (LiveSession's producer / worker / consumer threads, concurrent sessions) and the CLI's --stdin
path (reader thread + LiveSession worker: a backlog, a paced writer with --min_feed_ms, Ctrl+C mid-run) on the
tiny .pte. One thread in ExecuTorch's pool (VOXTRAL_RT_THREADS=1 / --threads 1): the wheel's pool is not
instrumented, so TSan would report its every hand-off. A report fails the test; tokens must equal the release
build's."""

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
TSAN = ROOT / "runner" / "build-tsan"
TSAN_CLI = TSAN / "voxtral_realtime_runner"
RELEASE = ROOT / "runner" / "build" / "voxtral_realtime_runner"
ENV = {**os.environ, "VOXTRAL_RT_THREADS": "1", "TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1"}
REPORT = "ThreadSanitizer"

pytestmark = pytest.mark.skipif(not (TSAN / "voxtral_rt_pte_tests").exists(),
                                reason="TSan build missing: `make runner-tsan` (make test builds it)")


def _check(r_err: bytes) -> str:
    err = r_err.decode(errors="replace")
    assert REPORT not in err, err[-6000:]
    return err


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("tsan")
    x = speech(16000, 2.6, 3)
    sf.write(d / "a.wav", x, 16000)
    return d / "a.wav", (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("pte", ["fp32", "q"])
def test_public_api_and_live_session_under_tsan(tiny, clip, pte):
    r = subprocess.run([str(TSAN / "voxtral_rt_pte_tests"), str(tiny[pte]), str(tiny["dir"] / "tekken.json"),
                        str(clip[0])], capture_output=True, timeout=600, env=ENV)
    _check(r.stderr)
    out = r.stdout.decode()
    assert r.returncode == 0 and " 0 failed" in out, out[-3000:]


def _cli(binary: Path, tiny, *args: str) -> list[str]:
    return [str(binary), "--model_path", str(tiny["fp32"]), "--tokenizer_path", str(tiny["dir"] / "tekken.json"),
            "--threads", "1", "--json", "--stdin", *args]


def test_cli_stdin_under_tsan(tiny, clip):
    pcm = clip[1]
    ref = subprocess.run(_cli(RELEASE, tiny), input=pcm, capture_output=True, timeout=600)
    assert ref.returncode == 0
    ref_ids = json.loads(ref.stdout)["token_ids"]
    # the whole clip at once (a backlog)
    r = subprocess.run(_cli(TSAN_CLI, tiny), input=pcm, capture_output=True, timeout=600, env=ENV)
    _check(r.stderr)
    assert r.returncode == 0 and json.loads(r.stdout)["token_ids"] == ref_ids
    # a paced writer, 40 ms pieces, fed 300 ms at a time
    p = subprocess.Popen(_cli(TSAN_CLI, tiny, "--min_feed_ms", "300"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV)
    for i in range(0, len(pcm), 1280):
        p.stdin.write(pcm[i:i + 1280])
        p.stdin.flush()
        time.sleep(0.005)
    out, err = p.communicate(timeout=600)
    _check(err)
    assert p.returncode == 0 and json.loads(out)["token_ids"] == ref_ids
    # Ctrl+C while the reader waits and the worker may run: 130, partial transcript, no report
    p = subprocess.Popen(_cli(TSAN_CLI, tiny), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ENV)
    p.stdin.write(pcm * 30)  # 78 s: the worker is still busy with the backlog at the signal
    p.stdin.flush()
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    _check(err)
    assert p.returncode == 130 and "token_ids" in json.loads(out)
