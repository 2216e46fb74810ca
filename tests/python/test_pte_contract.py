"""The .pte contract (voxtral_rt/pte.py) is one list: the C++ runner reads the same keys in the same order, the
exporter writes exactly them, and both runtimes require every one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from voxtral_rt.engine import PteEngine, PteError
from voxtral_rt.pte import FORMAT_VERSION, METADATA, METADATA_KEYS, METHODS
from conftest import foreign_program

ROOT = Path(__file__).resolve().parents[2]
UNIT_TESTS = ROOT / "runner" / "build" / "voxtral_rt_tests"  # `make test` builds it first


def test_python_and_cpp_read_the_same_keys():
    """runner/src/metadata.h's VOXTRAL_RT_METADATA_KEYS, as compiled (the C++ unit test checks each is required)."""
    assert UNIT_TESTS.exists(), f"{UNIT_TESTS} missing: build it with `make runner`"
    r = subprocess.run([str(UNIT_TESTS), "--list-keys"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert tuple(r.stdout.split()) == METADATA_KEYS
    assert len(set(METADATA_KEYS)) == len(METADATA_KEYS) and all(meaning for _, meaning in METADATA)


def test_export_writes_exactly_the_contract(tiny):
    from executorch.runtime import Runtime

    for pte in (tiny["fp32"], tiny["q"]):
        names = set(Runtime.get().load_program(str(pte)).method_names)
        assert names == set(METHODS) | set(METADATA_KEYS), pte.name
    meta = PteEngine(tiny["fp32"]).meta
    assert tuple(meta) == METADATA_KEYS and meta["format_version"] == FORMAT_VERSION


def test_python_requires_every_key(tmp_path):
    """A file of this version with no methods: the engine names every method and every other key as missing."""
    pte = foreign_program(tmp_path / "bare.pte", {"format_version": FORMAT_VERSION})
    with pytest.raises(PteError, match="missing method") as e:
        PteEngine(pte)
    named = str(e.value).split("missing method(s) ")[1].split(";")[0].split(", ")
    assert named == [*METHODS, *METADATA_KEYS[1:]]
