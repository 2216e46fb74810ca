"""Bounded libFuzzer runs (`make fuzz-build` -> fuzz/build, part of `make test`): every committed input under
fuzz/corpus/<target> (seeds and regression-* crashers) must pass, then a few thousand fresh mutations with a
fixed seed. Long campaigns: `make fuzz FUZZ_SECONDS=600`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
ENV = {**os.environ, "LSAN_OPTIONS": f"suppressions={FUZZ / 'lsan.supp'}"}
# runs per target: ~3-5 s each on one slow core
TARGETS = {
    "audio_file": ["-runs=1500", "-max_len=16384"],
    "tekken": ["-runs=8000", "-max_len=8192", f"-dict={FUZZ / 'tekken.dict'}"],
    "pcm_stdin": ["-runs=6000", "-max_len=8192"],
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_smoke(target, tmp_path):
    binary = FUZZ / "build" / f"fuzz_{target}"
    # make test builds the fuzzers (and installs clang), so a missing binary is a failure, not a skip.
    assert binary.exists(), f"{binary} missing: run `make fuzz-build` (needs clang)"
    corpus = FUZZ / "corpus" / target
    assert len(list(corpus.iterdir())) >= 5
    r = subprocess.run([binary, "-runs=0", corpus], capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([binary, *TARGETS[target], "-seed=1", "-max_total_time=30", "-timeout=20", "-rss_limit_mb=2048",
                        f"-artifact_prefix={tmp_path}/", work, corpus], capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Done" in r.stderr
