"""The C API (runner/include/voxtral_rt/voxtral_rt_c.h, runner/build/libvoxtral_rt.so, built by `make runner`)
through ctypes, with the structs defined here as a binding would: the demo model's samples and a tiny model fed
in chunks give the CLI's `--json` tokens, times and text, and the Python twin's words and segments; callbacks fire
with their user_data; bad inputs give clear error strings, never a crash. The same library under ASan:
test_runner_asan.py."""

from __future__ import annotations

import ctypes as C
import json
import re
import subprocess
import threading
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import speech
from voxtral_rt.audio import load_audio
from voxtral_rt.tokenizer import Tekken
from voxtral_rt.transcript import words_and_segments

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "runner" / "build"
LIB_PATH = BUILD / "libvoxtral_rt.so"
RUNNER = BUILD / "voxtral_realtime_runner"
HEADER = ROOT / "runner" / "include" / "voxtral_rt" / "voxtral_rt_c.h"
DEMO = ROOT / "models" / "demo"
SAMPLES = sorted((DEMO / "samples").glob("*.wav"))


# ---------------------------------------------------------------------------------------------- the binding

class ModelParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("threads", C.c_int32), ("model_path", C.c_char_p),
                ("tokenizer_path", C.c_char_p), ("packed_cache_path", C.c_char_p), ("use_mmap", C.c_bool),
                ("max_sessions", C.c_int32), ("reserved", C.c_uint64 * 8)]


class Token(C.Structure):
    _fields_ = [("id", C.c_int64), ("position", C.c_int64), ("time_ms", C.c_double), ("is_special", C.c_bool),
                ("text", C.c_char_p)]


class Word(C.Structure):
    _fields_ = [("text", C.c_char_p), ("start_ms", C.c_double), ("end_ms", C.c_double)]


class Segment(C.Structure):
    _fields_ = [("text", C.c_char_p), ("start_ms", C.c_double), ("end_ms", C.c_double), ("n_words", C.c_size_t),
                ("words", C.POINTER(C.POINTER(Word)))]


TOKEN_CB = C.CFUNCTYPE(None, C.POINTER(Token), C.c_void_p)
SEGMENT_CB = C.CFUNCTYPE(None, C.POINTER(Segment), C.c_void_p)
LOG_CB = C.CFUNCTYPE(None, C.c_int32, C.c_char_p, C.c_void_p)


class SessionParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("delay_ms", C.c_int32), ("max_enc_tokens", C.c_int32),
                ("draft_tokens", C.c_int32), ("max_history", C.c_int64), ("stop_at_eos", C.c_bool),
                ("segment_pause_ms", C.c_int32), ("token_callback", TOKEN_CB), ("token_callback_user_data", C.c_void_p),
                ("segment_callback", SEGMENT_CB), ("segment_callback_user_data", C.c_void_p),
                ("reserved", C.c_uint64 * 8)]


P = C.c_void_p
SIGNATURES = {  # name: (restype, argtypes)
    "voxtral_rt_version": (C.c_char_p, []),
    "voxtral_rt_log_set": (None, [LOG_CB, P]),
    "voxtral_rt_log_route_executorch": (None, []),
    "voxtral_rt_model_default_params": (ModelParams, []),
    "voxtral_rt_model_load": (P, [C.POINTER(ModelParams), C.c_char_p, C.c_size_t]),
    "voxtral_rt_model_free": (None, [P]),
    "voxtral_rt_model_sample_rate": (C.c_int32, [P]),
    "voxtral_rt_model_ms_per_token": (C.c_int32, [P]),
    "voxtral_rt_model_default_delay_ms": (C.c_int32, [P]),
    "voxtral_rt_model_info": (C.c_bool, [P, C.c_char_p, C.POINTER(C.c_int64)]),
    "voxtral_rt_session_default_params": (SessionParams, []),
    "voxtral_rt_session_create": (P, [P, C.POINTER(SessionParams), C.c_char_p, C.c_size_t]),
    "voxtral_rt_session_feed": (C.c_int64, [P, P, C.c_size_t]),
    "voxtral_rt_session_flush": (C.c_int64, [P]),
    "voxtral_rt_session_reset": (None, [P]),
    "voxtral_rt_session_stop": (None, [P]),
    "voxtral_rt_session_free": (None, [P]),
    "voxtral_rt_session_error": (C.c_char_p, [P]),
    "voxtral_rt_session_text": (C.c_char_p, [P]),
    "voxtral_rt_session_take_text": (C.c_char_p, [P]),
    "voxtral_rt_session_finished": (C.c_bool, [P]),
    "voxtral_rt_session_delay_ms": (C.c_int32, [P]),
    "voxtral_rt_session_n_tokens": (C.c_size_t, [P]),
    "voxtral_rt_session_token_ids": (C.POINTER(C.c_int64), [P]),
    "voxtral_rt_session_token_times_ms": (C.POINTER(C.c_double), [P]),
    "voxtral_rt_session_n_words": (C.c_size_t, [P]),
    "voxtral_rt_session_word": (C.POINTER(Word), [P, C.c_size_t]),
    "voxtral_rt_session_n_segments": (C.c_size_t, [P]),
    "voxtral_rt_session_segment": (C.POINTER(Segment), [P, C.c_size_t]),
    "voxtral_rt_transcribe": (P, [P, P, C.c_size_t, C.POINTER(SessionParams), C.c_char_p, C.c_size_t]),
    "voxtral_rt_audio_load": (P, [C.c_char_p, C.c_int32, C.c_char_p, C.c_size_t]),
    "voxtral_rt_audio_samples": (C.POINTER(C.c_float), [P]),
    "voxtral_rt_audio_n_samples": (C.c_size_t, [P]),
    "voxtral_rt_audio_free": (None, [P]),
}


@pytest.fixture(scope="module")
def lib():
    assert LIB_PATH.exists(), f"{LIB_PATH} missing: build it with `make runner`"
    lib = C.CDLL(str(LIB_PATH))
    for name, (res, args) in SIGNATURES.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


def _pcm(x: np.ndarray) -> tuple[P, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return P(x.ctypes.data), x  # keep x alive alongside the pointer


def _load(lib, pte: Path, tok: Path, **kw):
    p = lib.voxtral_rt_model_default_params()
    p.model_path, p.tokenizer_path = str(pte).encode(), str(tok).encode()
    for k, v in kw.items():
        setattr(p, k, v)
    err = C.create_string_buffer(512)
    m = lib.voxtral_rt_model_load(C.byref(p), err, len(err))
    return m, err.value.decode()


class Recorder:
    """Token callback state: what a binding would collect. user_data is checked against `tag` on every call."""

    def __init__(self, lib, tag: int, stop_after: int = 0):
        self.ids, self.times, self.text, self.positions, self.user_data = [], [], [], [], set()
        self.lib, self.tag, self.stop_after, self.session = lib, tag, stop_after, None

        def on_token(tok, user_data):
            t = tok.contents
            self.ids.append(t.id)
            self.times.append(t.time_ms)
            self.positions.append(t.position)
            self.text.append(t.text.decode())
            self.user_data.add(user_data)
            if self.stop_after and len(self.ids) == self.stop_after:
                self.lib.voxtral_rt_session_stop(self.session)  # allowed from inside a callback

        self.cb = TOKEN_CB(on_token)  # must outlive the session

    def params(self, lib, **kw) -> SessionParams:
        p = lib.voxtral_rt_session_default_params()
        p.token_callback, p.token_callback_user_data = self.cb, self.tag
        for k, v in kw.items():
            setattr(p, k, v)
        return p


def _session(lib, model, params: SessionParams | None = None):
    err = C.create_string_buffer(512)
    s = lib.voxtral_rt_session_create(model, C.byref(params) if params is not None else None, err, len(err))
    return s, err.value.decode()


def _tokens(lib, s) -> tuple[list[int], list[float]]:
    n = lib.voxtral_rt_session_n_tokens(s)
    ids, times = lib.voxtral_rt_session_token_ids(s), lib.voxtral_rt_session_token_times_ms(s)
    return [ids[i] for i in range(n)], [times[i] for i in range(n)]


def _stream(lib, s, pcm: np.ndarray, chunk: int) -> str:
    """Feeds pcm in `chunk`-sample pieces and flushes; returns the take_text() pieces joined."""
    taken = []
    for i in range(0, len(pcm), chunk):
        ptr, keep = _pcm(pcm[i:i + chunk])
        assert lib.voxtral_rt_session_feed(s, ptr, len(keep)) >= 0, lib.voxtral_rt_session_error(s)
        taken.append(lib.voxtral_rt_session_take_text(s).decode())
    assert lib.voxtral_rt_session_flush(s) >= 0, lib.voxtral_rt_session_error(s)
    taken.append(lib.voxtral_rt_session_take_text(s).decode())
    return "".join(taken)


def _word(w) -> tuple[str, float, float]:
    return (w.text.decode(), w.start_ms, w.end_ms)


def _segment(seg) -> tuple:
    return (seg.text.decode(), seg.start_ms, seg.end_ms, [_word(seg.words[j].contents) for j in range(seg.n_words)])


class SegmentRecorder:
    """Segment callback state; user_data is checked against `tag` on every call."""

    def __init__(self, tag: int):
        self.segments, self.user_data = [], set()

        def on_segment(seg, user_data):
            self.segments.append(_segment(seg.contents))
            self.user_data.add(user_data)

        self.tag, self.cb = tag, SEGMENT_CB(on_segment)


def _words_and_segments(lib, s) -> tuple[list, list]:
    words = [_word(lib.voxtral_rt_session_word(s, i).contents) for i in range(lib.voxtral_rt_session_n_words(s))]
    segs = [_segment(lib.voxtral_rt_session_segment(s, i).contents) for i in range(lib.voxtral_rt_session_n_segments(s))]
    return words, segs


def _twin(tok: Tekken, ids: list[int], times: list[float], pause_ms: int) -> tuple[list, list]:
    """The Python twin's words and segments of a finished token sequence (voxtral_rt/transcript.py)."""
    w, sg = words_and_segments(tok, ids, times, pause_ms=pause_ms)
    return ([(x.text, x.start_ms, x.end_ms) for x in w],
            [(x.text, x.start_ms, x.end_ms, [(y.text, y.start_ms, y.end_ms) for y in x.words]) for x in sg])


def _cli_segments(cli_json: dict) -> list:
    return [(g["text"], g["start_ms"], g["end_ms"], [(w["text"], w["start_ms"], w["end_ms"]) for w in g["words"]])
            for g in cli_json["segments"]]


def _cli(pte: Path, tok: Path, wav: Path, *flags: str) -> dict:
    r = subprocess.run([str(RUNNER), "--model_path", str(pte), "--tokenizer_path", str(tok), "--audio_path", str(wav),
                        "--json", *flags], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------------------------- tests

def test_abi_version_defaults_and_exports(lib):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert lib.voxtral_rt_version().decode() == version
    mp, sp = lib.voxtral_rt_model_default_params(), lib.voxtral_rt_session_default_params()
    # struct_size is the library's sizeof: it equals this binding's, so the layouts agree field for field in size.
    assert mp.struct_size == C.sizeof(ModelParams) and sp.struct_size == C.sizeof(SessionParams)
    assert (mp.threads, mp.use_mmap, mp.max_sessions, mp.model_path, mp.packed_cache_path) == (0, True, 0, None, None)
    assert (sp.delay_ms, sp.max_enc_tokens, sp.draft_tokens, sp.max_history, sp.stop_at_eos, sp.segment_pause_ms) == \
        (-1, 0, -1, 0, True, 640)
    assert not sp.token_callback and not sp.segment_callback and sp.token_callback_user_data is None
    assert list(mp.reserved) == [0] * 8 and list(sp.reserved) == [0] * 8
    # Exactly the functions the header declares are exported, and nothing else (C++ internals are local).
    declared = set(re.findall(r"VOXTRAL_RT_API[^;]*?\b(voxtral_rt_\w+)\(", HEADER.read_text()))
    nm = subprocess.run(["nm", "-D", "--defined-only", str(LIB_PATH)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in nm.stdout.splitlines() if line.split()[1:2] == ["T"]}
    assert declared == exported, (declared - exported, exported - declared)
    assert all(s.split()[-1].startswith("voxtral_rt_") for s in nm.stdout.splitlines()), nm.stdout


def test_demo_samples_same_tokens_as_cli(lib, demo_pte):
    tok = DEMO / "tekken.json"
    model, err = _load(lib, demo_pte, tok)
    assert model, err
    try:
        assert lib.voxtral_rt_model_sample_rate(model) == 16000 and lib.voxtral_rt_model_ms_per_token(model) == 80
        for wav in SAMPLES:
            ref = _cli(demo_pte, tok, wav)
            rec = Recorder(lib, tag=0xC0FFEE)
            s, err = _session(lib, model, rec.params(lib))
            assert s, err
            rec.session = s
            pcm = load_audio(wav)
            taken = _stream(lib, s, pcm, 1280)  # 80 ms chunks, as a live app would feed them
            ids, times = _tokens(lib, s)
            assert ids == ref["token_ids"], wav.name
            assert times == ref["token_times_ms"], wav.name
            assert lib.voxtral_rt_session_text(s).decode() == ref["text"] == taken == "".join(rec.text), wav.name
            assert rec.ids == ids and rec.times == times and rec.user_data == {0xC0FFEE}
            assert _words_and_segments(lib, s)[1] == _cli_segments(ref), wav.name
            assert lib.voxtral_rt_session_finished(s)
            assert lib.voxtral_rt_session_flush(s) == 0  # idempotent
            # The library's audio loader gives the Python reference's samples.
            a = lib.voxtral_rt_audio_load(str(wav).encode(), 16000, None, 0)
            assert a
            n = lib.voxtral_rt_audio_n_samples(a)
            assert np.array_equal(np.ctypeslib.as_array(lib.voxtral_rt_audio_samples(a), (n,)), pcm)
            lib.voxtral_rt_audio_free(a)
            lib.voxtral_rt_session_free(s)
    finally:
        lib.voxtral_rt_model_free(model)


@pytest.fixture(scope="module")
def tiny_model(lib, tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("capi")
    sf.write(d / "a.wav", speech(16000, 2.6, 3), 16000)
    sf.write(d / "b.flac", speech(44100, 1.9, 4, channels=2), 44100)
    model, err = _load(lib, tiny["fp32"], tiny["dir"] / "tekken.json")
    assert model, err
    yield {"model": model, "pte": tiny["fp32"], "tok": tiny["dir"] / "tekken.json", "a": d / "a.wav",
           "b": d / "b.flac"}
    lib.voxtral_rt_model_free(model)


@pytest.mark.parametrize("chunk", [1000, 1280, 7777])
def test_tiny_chunks_and_delay_same_tokens_as_cli(lib, tiny_model, chunk):
    t = tiny_model
    for wav, delay in [(t["a"], -1), (t["b"], 160)]:
        flags = ["--delay_ms", str(delay)] if delay > 0 else []
        ref = _cli(t["pte"], t["tok"], wav, *flags)
        rec = Recorder(lib, tag=7)
        s, err = _session(lib, t["model"], rec.params(lib, delay_ms=delay, draft_tokens=chunk % 3))
        assert s, err
        # The library's loader (channel mean + soxr, as the CLI) for the 44.1 kHz stereo file.
        a = lib.voxtral_rt_audio_load(str(wav).encode(), lib.voxtral_rt_model_sample_rate(t["model"]), None, 0)
        n = lib.voxtral_rt_audio_n_samples(a)
        pcm = np.ctypeslib.as_array(lib.voxtral_rt_audio_samples(a), (n,)).copy()
        lib.voxtral_rt_audio_free(a)
        taken = _stream(lib, s, pcm, chunk)
        ids, times = _tokens(lib, s)
        assert ids == ref["token_ids"] and times == ref["token_times_ms"], (wav.name, chunk)
        assert taken == ref["text"] == lib.voxtral_rt_session_text(s).decode()
        assert rec.ids == ids and rec.user_data == {7}
        want_delay = delay if delay > 0 else lib.voxtral_rt_model_default_delay_ms(t["model"])
        assert lib.voxtral_rt_session_delay_ms(s) == want_delay
        # reset: the same stream again gives the same tokens (the callback sees them twice)
        lib.voxtral_rt_session_reset(s)
        assert lib.voxtral_rt_session_n_tokens(s) == 0 and lib.voxtral_rt_session_text(s) == b""
        _stream(lib, s, pcm, len(pcm))
        assert _tokens(lib, s)[0] == ids and rec.ids == ids + ids
        lib.voxtral_rt_session_free(s)


def test_transcribe_model_info_and_model_freed_first(lib, tiny, tiny_model):
    t = tiny_model
    ref = _cli(t["pte"], t["tok"], t["a"])
    pcm, keep = _pcm(load_audio(t["a"]))
    rec = Recorder(lib, tag=99)
    p = rec.params(lib)
    s = lib.voxtral_rt_transcribe(t["model"], pcm, len(keep), C.byref(p), None, 0)
    assert s and _tokens(lib, s)[0] == ref["token_ids"] == rec.ids and rec.user_data == {99}
    assert lib.voxtral_rt_session_text(s).decode() == ref["text"]
    lib.voxtral_rt_session_free(s)
    s = lib.voxtral_rt_transcribe(t["model"], pcm, len(keep), None, None, 0)  # NULL params = defaults
    assert s and _tokens(lib, s)[0] == ref["token_ids"]
    lib.voxtral_rt_session_free(s)

    v = C.c_int64()
    tokz = tiny["tok"]
    for key, want in [("vocab_size", tokz.vocab_size), ("eos_id", tokz.eos_id), ("sample_rate", 16000),
                      ("ms_per_token", 80), ("num_special_tokens", tokz.num_special_tokens)]:
        assert lib.voxtral_rt_model_info(t["model"], key.encode(), C.byref(v)) and v.value == want, key
    assert not lib.voxtral_rt_model_info(t["model"], b"no_such_key", C.byref(v))
    assert not lib.voxtral_rt_model_info(t["model"], None, C.byref(v))
    assert not lib.voxtral_rt_model_info(t["model"], b"dim", None)

    # A session outlives its model.
    m2, err = _load(lib, t["pte"], t["tok"])
    assert m2, err
    s, err = _session(lib, m2)
    lib.voxtral_rt_model_free(m2)
    _stream(lib, s, keep, 4000)
    assert _tokens(lib, s)[0] == ref["token_ids"]
    lib.voxtral_rt_session_free(s)


def test_stop_from_callback_and_concurrent_sessions(lib, tiny_model):
    t = tiny_model
    pcm = load_audio(t["a"])
    full = _cli(t["pte"], t["tok"], t["a"])["token_ids"]
    # stop() from inside the token callback: feed returns early, with fewer tokens; reset() clears the stop.
    rec = Recorder(lib, tag=1, stop_after=3)
    s, err = _session(lib, t["model"], rec.params(lib))
    assert s, err
    rec.session = s
    ptr, keep = _pcm(pcm)
    assert lib.voxtral_rt_session_feed(s, ptr, len(keep)) >= 0
    assert len(rec.ids) == 3 and lib.voxtral_rt_session_n_tokens(s) == 3
    rec.stop_after = 0
    lib.voxtral_rt_session_reset(s)
    _stream(lib, s, pcm, len(pcm))
    assert _tokens(lib, s)[0] == full
    lib.voxtral_rt_session_free(s)

    # Two sessions of one model on two threads (ctypes drops the GIL during the calls): each gets its sequential
    # tokens, and each callback its own user_data.
    other = np.ascontiguousarray(pcm[::-1] * 0.7)
    s_other, _ = _session(lib, t["model"])
    _stream(lib, s_other, other, len(other))
    full_other = _tokens(lib, s_other)[0]
    lib.voxtral_rt_session_free(s_other)
    results, recs = {}, {name: Recorder(lib, tag=tag) for name, tag in [("a", 11), ("b", 22)]}

    def run(name, audio):
        s, err = _session(lib, t["model"], recs[name].params(lib))
        assert s, err
        _stream(lib, s, audio, 1280)
        results[name] = _tokens(lib, s)[0]
        lib.voxtral_rt_session_free(s)

    threads = [threading.Thread(target=run, args=("a", pcm)), threading.Thread(target=run, args=("b", other))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {"a": full, "b": full_other}
    assert recs["a"].user_data == {11} and recs["b"].user_data == {22} and recs["a"].ids == full


def test_log_callback(lib, tiny_model):
    got = []
    cb = LOG_CB(lambda level, msg, ud: got.append((level, msg.decode(), ud)))
    lib.voxtral_rt_log_set(cb, 5)
    try:
        m, err = _load(lib, tiny_model["pte"], tiny_model["tok"])
        assert m, err
        lib.voxtral_rt_model_free(m)
    finally:
        lib.voxtral_rt_log_set(LOG_CB(), None)  # back to stderr
    assert any(level == 1 and msg.startswith("loaded ") and ud == 5 for level, msg, ud in got), got


def test_bad_inputs_give_clear_errors(lib, tiny_model, tmp_path):
    t = tiny_model
    tok = str(t["tok"]).encode()
    # model load
    for pte, tk, want in [
        (tmp_path / "missing.pte", t["tok"], "cannot open model: No such file or directory"),
        (tmp_path, t["tok"], "is a directory"),
        (t["pte"], tmp_path / "missing.json", "cannot open tokenizer file"),
        (t["a"], t["tok"], "cannot load program"),
    ]:
        m, err = _load(lib, pte, tk)
        assert not m and want in err, (pte, err)
    p = lib.voxtral_rt_model_default_params()
    err = C.create_string_buffer(512)
    assert not lib.voxtral_rt_model_load(C.byref(p), err, len(err)) and err.value == b"no model path given"
    assert not lib.voxtral_rt_model_load(None, err, len(err)) and b"null params" in err.value
    p.model_path, p.tokenizer_path, p.threads = str(t["pte"]).encode(), tok, -2
    assert not lib.voxtral_rt_model_load(C.byref(p), err, len(err)) and b"threads must be >= 0" in err.value
    zeroed = ModelParams()
    zeroed.model_path, zeroed.tokenizer_path = p.model_path, tok
    assert not lib.voxtral_rt_model_load(C.byref(zeroed), err, len(err))
    assert b"struct_size is 0" in err.value and b"voxtral_rt_model_default_params()" in err.value
    # the message is cut to the buffer, NUL-terminated, and nothing past it is written; NULL buffers are fine
    small = (C.c_char * 16)(*([b"#"] * 16))
    assert not lib.voxtral_rt_model_load(None, small, 8)
    assert bytes(small) == b"null pa\0" + b"#" * 8
    assert not lib.voxtral_rt_model_load(None, None, 100) and not lib.voxtral_rt_model_load(None, small, 0)
    assert bytes(small)[:8] == b"null pa\0"

    # session create
    for kw, want in [({"delay_ms": 100}, "delay 100 ms is not supported: use a multiple of 80 ms"),
                     ({"max_enc_tokens": -1}, "max_enc_tokens must be >= 0"),
                     ({"draft_tokens": -2}, "draft_tokens must be >= -1"),
                     ({"max_history": -1}, "max_history must be >= 0"),
                     ({"segment_pause_ms": -1}, "segment_pause_ms must be >= 0"),
                     ({"struct_size": 12}, "struct_size is 12")]:
        sp = lib.voxtral_rt_session_default_params()
        for k, v in kw.items():
            setattr(sp, k, v)
        s, err = _session(lib, t["model"], sp)
        assert not s and want in err, (kw, err)
    s, err = _session(lib, None)
    assert not s and err == "null model"
    assert not lib.voxtral_rt_transcribe(None, None, 0, None, err := C.create_string_buffer(64), 64)
    assert err.value == b"null model"

    # feed / flush
    s, err = _session(lib, t["model"])
    assert lib.voxtral_rt_session_error(s) == b""
    assert lib.voxtral_rt_session_feed(s, None, 0) == 0  # nothing to feed is fine
    assert lib.voxtral_rt_session_feed(s, None, 100) == -1
    assert b"null samples pointer" in lib.voxtral_rt_session_error(s)
    bad, keep = _pcm(np.array([0.1, 0.2, np.nan, 0.0], np.float32))
    assert lib.voxtral_rt_session_feed(s, bad, len(keep)) == -1
    assert lib.voxtral_rt_session_error(s) == b"audio sample 2 is NaN or Inf"
    lib.voxtral_rt_session_reset(s)
    assert lib.voxtral_rt_session_error(s) == b""
    assert lib.voxtral_rt_session_flush(s) >= 0
    one, keep = _pcm(np.zeros(10, np.float32))
    assert lib.voxtral_rt_session_feed(s, one, len(keep)) == -1
    assert b"feed() after flush(): call reset()" in lib.voxtral_rt_session_error(s)
    pcm, keep = _pcm(load_audio(t["a"]))
    assert not lib.voxtral_rt_transcribe(t["model"], None, 5, None, err := C.create_string_buffer(128), 128)
    assert b"null samples pointer" in err.value
    lib.voxtral_rt_session_free(s)

    # max_sessions
    m, err = _load(lib, t["pte"], t["tok"], max_sessions=1)
    s1, err = _session(lib, m)
    s2, err = _session(lib, m)
    assert s1 and not s2 and "max_sessions" in err
    lib.voxtral_rt_session_free(s1)
    s2, err = _session(lib, m)
    assert s2, err
    lib.voxtral_rt_session_free(s2)
    lib.voxtral_rt_model_free(m)

    # NULL handles: errors, never a crash
    assert lib.voxtral_rt_session_feed(None, pcm, len(keep)) == -1 and lib.voxtral_rt_session_flush(None) == -1
    assert lib.voxtral_rt_session_error(None) == b"null session" and lib.voxtral_rt_session_text(None) == b""
    assert lib.voxtral_rt_session_take_text(None) == b"" and lib.voxtral_rt_session_n_tokens(None) == 0
    assert not lib.voxtral_rt_session_token_ids(None) and not lib.voxtral_rt_session_token_times_ms(None)
    assert not lib.voxtral_rt_session_finished(None) and lib.voxtral_rt_session_delay_ms(None) == -1
    lib.voxtral_rt_session_reset(None), lib.voxtral_rt_session_stop(None), lib.voxtral_rt_session_free(None)
    lib.voxtral_rt_model_free(None), lib.voxtral_rt_audio_free(None)
    assert lib.voxtral_rt_model_sample_rate(None) == -1 and lib.voxtral_rt_model_default_delay_ms(None) == -1
    assert lib.voxtral_rt_audio_n_samples(None) == 0 and not lib.voxtral_rt_audio_samples(None)

    # audio files
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    for path, rate, want in [(tmp_path / "none.wav", 16000, "cannot read audio"), (junk, 16000, "cannot read audio"),
                             (t["a"], 500, "500 Hz is outside the supported range")]:
        err = C.create_string_buffer(512)
        assert not lib.voxtral_rt_audio_load(str(path).encode(), rate, err, len(err))
        assert want in err.value.decode(), err.value
    assert not lib.voxtral_rt_audio_load(None, 16000, err, len(err)) and err.value == b"null path"


def test_words_and_segments_match_the_python_twin(lib, demo_pte, tiny_model):
    """Words and segments (getters and the segment callback) equal the Python twin's on the same tokens, for the
    demo samples and a tiny model, at three pause lengths, and the CLI's with its --segment_pause_ms;
    segment_pause_ms reaches the session."""
    demo_model, err = _load(lib, demo_pte, DEMO / "tekken.json")
    assert demo_model, err
    cases = [(demo_model, Tekken.from_file(DEMO / "tekken.json"), w) for w in SAMPLES]
    cases.append((tiny_model["model"], Tekken.from_file(tiny_model["tok"]), tiny_model["a"]))
    n_segments = {}
    for pause_ms in (640, 160, 0):
        n_segments[pause_ms] = 0
        for model, tok, wav in cases:
            pcm = load_audio(wav)
            rec = SegmentRecorder(tag=0x5E6)
            p = lib.voxtral_rt_session_default_params()
            p.segment_pause_ms, p.segment_callback, p.segment_callback_user_data = pause_ms, rec.cb, rec.tag
            s, err = _session(lib, model, p)
            assert s, err
            _stream(lib, s, pcm, 1280)
            ids, times = _tokens(lib, s)
            want_words, want_segments = _twin(tok, ids, times, pause_ms)
            words, segments = _words_and_segments(lib, s)
            assert len(words) > 0 and (words, segments) == (want_words, want_segments), pause_ms
            assert rec.segments == want_segments and rec.user_data == {0x5E6}  # each finished segment once, in order
            if model == demo_model and wav == SAMPLES[1]:
                cli = _cli(demo_pte, DEMO / "tekken.json", wav, "--segment_pause_ms", str(pause_ms))
                assert cli["token_ids"] == ids and _cli_segments(cli) == segments
            n_segments[pause_ms] += len(segments)
            # Pointers stay put until the next feed: reading other words and segments does not move word 0.
            w0 = C.addressof(lib.voxtral_rt_session_word(s, 0).contents)
            lib.voxtral_rt_session_segment(s, len(segments) - 1), lib.voxtral_rt_session_n_words(s)
            assert C.addressof(lib.voxtral_rt_session_word(s, 0).contents) == w0
            assert not lib.voxtral_rt_session_word(s, len(words))
            assert not lib.voxtral_rt_session_segment(s, len(segments))
            lib.voxtral_rt_session_reset(s)
            assert lib.voxtral_rt_session_n_words(s) == 0 and lib.voxtral_rt_session_n_segments(s) == 0
            lib.voxtral_rt_session_free(s)
    lib.voxtral_rt_model_free(demo_model)
    assert lib.voxtral_rt_session_n_words(None) == 0 and not lib.voxtral_rt_session_segment(None, 0)
    # The demo samples are command strings with gaps of a few hundred ms: 160 ms pauses split them, 640 ms do not.
    assert n_segments[0] <= n_segments[640] < n_segments[160], n_segments


def test_stop_at_eos_and_max_history_reach_the_session(lib, eos_model):
    """stop_at_eos: the CLI's tokens either way on a model that emits EOS mid-stream; max_history bounds the kept
    records while the callback still sees every token."""
    m = eos_model
    model, err = _load(lib, m["pte"], m["dir"] / "tekken.json")
    assert model, err
    eos = m["tok"].eos_id
    for stop in (True, False):
        ref = _cli(m["pte"], m["dir"] / "tekken.json", m["wav"], "--streaming", f"--stop_at_eos={str(stop).lower()}")
        s, err = _session(lib, model, Recorder(lib, tag=0).params(lib, stop_at_eos=stop))
        _stream(lib, s, m["audio"], 1280)
        ids, _ = _tokens(lib, s)
        assert ids == ref["token_ids"] and eos in ids
        assert (ids[-1] == eos) == stop  # stopped at the first EOS, or went on past it
        lib.voxtral_rt_session_free(s)
    rec = Recorder(lib, tag=0)
    s, err = _session(lib, model, rec.params(lib, stop_at_eos=False, max_history=8))
    _stream(lib, s, m["audio"], 1280)
    n = lib.voxtral_rt_session_n_tokens(s)
    assert rec.ids == ref["token_ids"] and 8 <= n <= 16 and _tokens(lib, s)[0] == rec.ids[-n:]
    lib.voxtral_rt_session_free(s)
    lib.voxtral_rt_model_free(model)
