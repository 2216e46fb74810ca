"""Output formats on the demo model (`--format text|json|srt|vtt|jsonl`, `--output_file`, `--help`):

* the C++ runner and `python -m voxtral_rt transcribe --pte` write the same bytes (jsonl: the same events, and
  the same `done` but for the timings);
* SRT and WebVTT parse back with real parsers (srt, webvtt-py): one cue per segment, times monotone and equal to
  the JSON segments', text equal to the transcript;
* jsonl under --stdin is live: deltas arrive while the audio is still coming, `done` closes the stream;
* bad flags, an unwritable --output_file: one clear error line and the documented exit code;
* --help lists every flag of ours, grouped, with defaults, examples and the exit codes."""

from __future__ import annotations

import html
import json
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt

from conftest import RUNNER_BIN
from voxtral_rt.evaluate import normalize

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
TOKENIZER = DEMO / "tekken.json"
SAMPLES = DEMO / "samples"


@pytest.fixture(scope="module")
def two_sentences(tmp_path_factory) -> tuple[Path, list[str]]:
    """Bundled held-out samples 01 and 03 with 1.5 s of silence between them (16-bit PCM, as the samples)."""
    a, sr = sf.read(SAMPLES / "01.wav", dtype="int16")
    b, _ = sf.read(SAMPLES / "03.wav", dtype="int16")
    path = tmp_path_factory.mktemp("fmt") / "two.wav"
    sf.write(path, np.concatenate([a, np.zeros(int(1.5 * sr), np.int16), b]), sr, subtype="PCM_16")
    refs = [normalize((SAMPLES / n).read_text()) for n in ("01.txt", "03.txt")]
    return path, refs


def runner(demo_pte: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    assert RUNNER_BIN.exists(), f"{RUNNER_BIN} missing: build it with `make runner`"
    return subprocess.run([str(RUNNER_BIN), "--model_path", str(demo_pte), "--tokenizer_path", str(TOKENIZER), *args],
                          input=stdin, capture_output=True, timeout=600)


def python_cli(demo_pte: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtral_rt", "transcribe", "--pte", str(demo_pte), "--tokenizer",
                           str(TOKENIZER), *args], capture_output=True, timeout=600, cwd=ROOT)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return r.stdout.decode()


def error_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode()
    assert "Traceback" not in err and "Abort" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


@pytest.mark.parametrize("fmt", ["text", "json", "srt", "vtt", "jsonl"])
def test_runner_and_python_write_the_same(demo_pte, two_sentences, fmt):
    wav, _ = two_sentences
    cpp = ok(runner(demo_pte, "--audio_path", str(wav), "--format", fmt))
    py = ok(python_cli(demo_pte, str(wav), "--format", fmt))
    if fmt != "jsonl":
        assert cpp == py
        return
    c, p = [json.loads(x) for x in cpp.splitlines()], [json.loads(x) for x in py.splitlines()]
    assert c[:-1] == p[:-1]  # every delta and segment
    cd, pd = c[-1], p[-1]
    assert {k: v for k, v in cd.items() if k != "stats"} == {k: v for k, v in pd.items() if k != "stats"}
    assert set(pd["stats"]) <= set(cd["stats"]) and pd["stats"]["n_generated"] == cd["stats"]["n_generated"]


def test_json_keys_words_and_segments(demo_pte, two_sentences):
    wav, refs = two_sentences
    out = ok(runner(demo_pte, "--audio_path", str(wav), "--json"))
    assert out == ok(runner(demo_pte, "--audio_path", str(wav), "--format", "json"))
    j = json.loads(out)
    assert set(j) == {"text", "token_ids", "token_times_ms", "segments", "delay_ms", "audio_ms", "finished"}
    segs = j["segments"]
    # The 1.5 s pause splits the two sentences; nothing else does.
    assert [normalize(s["text"]) for s in segs] == refs
    assert [" ".join(w["text"] for w in s["words"]) for s in segs] == refs
    assert "".join(s["text"] for s in segs) == j["text"]
    for s in segs:
        assert set(s) == {"text", "start_ms", "end_ms", "words"}
        assert (s["start_ms"], s["end_ms"]) == (s["words"][0]["start_ms"], s["words"][-1]["end_ms"])
        for w in s["words"]:
            assert set(w) == {"text", "start_ms", "end_ms"} and 0 <= w["start_ms"] < w["end_ms"]
    words = [w for s in segs for w in s["words"]]
    ends = [w["end_ms"] for w in words]
    assert ends == sorted(ends) and all(e % 80 == 0 for e in ends)
    # a word's end is the time of its first token: a token whose text starts with a space
    starts_word = {t for t, i in zip(j["token_times_ms"], j["token_ids"]) if i >= 1000}
    assert set(ends) <= starts_word
    assert segs[0]["end_ms"] <= segs[1]["start_ms"] < segs[1]["end_ms"] <= j["audio_ms"] + 80
    # --segment_pause_ms 0: one segment, the same words (Python: the same JSON)
    one = ok(runner(demo_pte, "--audio_path", str(wav), "--json", "--segment_pause_ms", "0"))
    assert [len(s["words"]) for s in json.loads(one)["segments"]] == [len(words)]
    assert one == ok(python_cli(demo_pte, str(wav), "--json", "--segment-pause-ms", "0"))


STRICT_SRT = re.compile(r"^\d+\n\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d\n[^\n]+\n$")
STRICT_VTT = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d\n[^\n]+\n$")


def test_srt_and_vtt_parse_back(demo_pte, two_sentences):
    wav, refs = two_sentences
    j = json.loads(ok(runner(demo_pte, "--audio_path", str(wav), "--json")))
    want = [(s["start_ms"], s["end_ms"]) for s in j["segments"]]
    text = " ".join(j["text"].split())

    out = ok(runner(demo_pte, "--audio_path", str(wav), "--format", "srt"))
    assert all(STRICT_SRT.match(block + "\n") for block in out.rstrip("\n").split("\n\n")), out
    subs = list(srt.parse(out))
    assert [s.index for s in subs] == list(range(1, len(want) + 1))
    got = [(round(s.start.total_seconds() * 1000, 3), round(s.end.total_seconds() * 1000, 3)) for s in subs]
    assert got == want  # times are whole ms
    assert " ".join(s.content for s in subs) == text

    out = ok(runner(demo_pte, "--audio_path", str(wav), "--format", "vtt"))
    assert out.startswith("WEBVTT\n\n")
    assert all(STRICT_VTT.match(block + "\n") for block in out[len("WEBVTT\n\n"):].rstrip("\n").split("\n\n")), out
    cues = webvtt.from_string(out).captions
    got = [(c.start_time.in_milliseconds(), c.end_time.in_milliseconds()) for c in cues]
    assert got == want
    assert " ".join(html.unescape(c.text) for c in cues) == text

    for a, b in zip(want, want[1:]):  # monotone, never overlapping
        assert a[0] < a[1] <= b[0] < b[1]
    assert len(want) == len(refs) == 2


def test_jsonl_events(demo_pte, two_sentences):
    wav, refs = two_sentences
    j = json.loads(ok(runner(demo_pte, "--audio_path", str(wav), "--json")))
    lines = ok(runner(demo_pte, "--audio_path", str(wav), "--format", "jsonl")).splitlines()
    ev = [json.loads(x) for x in lines]
    types = [e["type"] for e in ev]
    assert types[-1] == "transcript.text.done" and types.count("transcript.text.done") == 1
    assert set(types[:-1]) == {"transcript.text.delta", "transcript.text.segment"}
    deltas = [e for e in ev if e["type"] == "transcript.text.delta"]
    segments = [e for e in ev if e["type"] == "transcript.text.segment"]
    assert all(set(d) == {"type", "delta", "time_ms"} and d["delta"] for d in deltas)
    times = [d["time_ms"] for d in deltas]
    assert times == sorted(times)
    assert "".join(d["delta"] for d in deltas) == ev[-1]["text"] == j["text"]
    assert [s["id"] for s in segments] == ["seg_0", "seg_1"]
    assert [{k: v for k, v in s.items() if k not in ("type", "id")} for s in segments] == j["segments"]
    # a segment comes once its last word is complete: after that word's deltas, before the next segment's
    first_seg = types.index("transcript.text.segment")
    assert normalize("".join(d["delta"] for d in ev[:first_seg] if d["type"] == "transcript.text.delta")) == refs[0]
    done = ev[-1]
    assert done["finished"] is True and done["delay_ms"] == 480 and done["audio_ms"] == j["audio_ms"]
    assert done["stats"]["n_generated"] == len(j["token_ids"]) and "rtf" in done["stats"]


def _read_line(p: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, "no output line in time"
    return p.stdout.readline().decode()


def test_jsonl_live_on_stdin(demo_pte, two_sentences):
    """Deltas come while the audio is still arriving (stdin open); segments and `done` after; the transcript is
    the one of the file (the same samples: the WAV is 16-bit)."""
    wav, _ = two_sentences
    pcm, _ = sf.read(wav, dtype="int16")
    raw = pcm.astype("<i2").tobytes()
    p = subprocess.Popen([str(RUNNER_BIN), "--model_path", str(demo_pte), "--tokenizer_path", str(TOKENIZER), "--stdin",
                          "--format", "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        half = len(raw) // 2 // 2 * 2  # the first sentence and part of the pause
        p.stdin.write(raw[:half])
        p.stdin.flush()
        first = json.loads(_read_line(p, 60))  # stdin still open: the stream is live
        assert first["type"] == "transcript.text.delta"
        p.stdin.write(raw[half:])
        p.stdin.close()
        rest = p.stdout.read().decode()
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
    ev = [first] + [json.loads(x) for x in rest.splitlines()]
    assert ev[-1]["type"] == "transcript.text.done" and ev[-1]["finished"] is True
    assert "".join(e["delta"] for e in ev if e["type"] == "transcript.text.delta") == ev[-1]["text"]
    j = json.loads(ok(runner(demo_pte, "--audio_path", str(wav), "--json")))
    assert ev[-1]["text"] == j["text"]
    assert [e["text"] for e in ev if e["type"] == "transcript.text.segment"] == [s["text"] for s in j["segments"]]


def test_jsonl_interrupted_still_closes(demo_pte):
    """Ctrl+C mid-stream: the open segment and a `done` with finished=false are still written; exit 130."""
    pcm, _ = sf.read(SAMPLES / "01.wav", dtype="int16")
    raw = np.concatenate([pcm, np.zeros(8000, np.int16)] * 150).astype("<i2").tobytes()  # ~9 min of audio
    p = subprocess.Popen([str(RUNNER_BIN), "--model_path", str(demo_pte), "--tokenizer_path", str(TOKENIZER), "--stdin",
                          "--format", "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(raw[: len(raw) // 3])
    p.stdin.flush()
    _read_line(p, 60)  # running
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err.decode()[-2000:]
    ev = [json.loads(x) for x in out.decode().splitlines()]
    assert ev[-1]["type"] == "transcript.text.done" and ev[-1]["finished"] is False
    segs = [e for e in ev if e["type"] == "transcript.text.segment"]
    assert segs and normalize(segs[0]["text"]) == normalize((SAMPLES / "01.txt").read_text())
    assert "".join(s["text"] for s in segs) == ev[-1]["text"]  # every word is in a segment, the open one too


def test_output_file(demo_pte, two_sentences, tmp_path):
    wav, _ = two_sentences
    for fmt in ("text", "srt", "jsonl"):
        f = tmp_path / f"out.{fmt}"
        r = runner(demo_pte, "--audio_path", str(wav), "--format", fmt, "--output_file", str(f))
        assert ok(r) == "" and f.read_text()
        if fmt != "jsonl":  # (jsonl's done carries timings)
            assert f.read_text() == ok(runner(demo_pte, "--audio_path", str(wav), "--format", fmt))
    f = tmp_path / "py.vtt"
    assert ok(python_cli(demo_pte, str(wav), "--format", "vtt", "--output-file", str(f))) == ""
    assert f.read_text() == ok(runner(demo_pte, "--audio_path", str(wav), "--format", "vtt"))
    # unwritable: exit 5 (output error), one line naming the file, before the model is even loaded
    bad = tmp_path / "no" / "such" / "dir" / "out.srt"
    r = runner(demo_pte, "--audio_path", str(wav), "--format", "srt", "--output_file", str(bad))
    assert r.returncode == 5 and str(bad) in error_line(r) and "cannot open for writing" in error_line(r)
    r = python_cli(demo_pte, str(wav), "--format", "srt", "--output-file", str(bad))
    assert r.returncode == 5 and str(bad) in error_line(r)
    r = runner(demo_pte, "--audio_path", str(wav), "--output_file", str(tmp_path))  # a directory
    assert r.returncode == 5 and "Is a directory" in error_line(r)


def test_bad_format_flags(demo_pte, two_sentences):
    wav = str(two_sentences[0])
    for args, code, needle in [
        (("--format", "xml"), 1, "--format must be one of text, json, srt, vtt, jsonl; got 'xml'"),
        (("--format", "srt", "--json"), 1, "--json means --format json"),
        (("--segment_pause_ms", "-5"), 1, "--segment_pause_ms must be >= 0"),
    ]:
        r = runner(demo_pte, "--audio_path", wav, *args)
        assert r.returncode == code and needle in error_line(r), (args, r.stderr.decode())
    r = python_cli(demo_pte, wav, "--format", "srt", "--json")
    assert r.returncode == 2 and "--json means --format json" in error_line(r)
    r = python_cli(demo_pte, wav, "--format", "xml")
    assert r.returncode == 2 and "invalid choice: 'xml'" in r.stderr.decode()


def _our_flags() -> list[str]:
    """The flags main.cpp defines, from gflags' --helpfull (its "Flags from .../runner/main.cpp:" section)."""
    out = subprocess.run([str(RUNNER_BIN), "--helpfull"], capture_output=True, text=True, timeout=60).stdout
    section = out.split("runner/main.cpp:")[1].split("\n\n")[0]
    return re.findall(r"^    -(\w+) ", section, re.M)


def test_help_lists_our_flags_grouped_with_defaults_and_exit_codes():
    flags = _our_flags()
    assert {"format", "output_file", "segment_pause_ms", "json", "stdin", "audio_path"} <= set(flags) and len(flags) > 18
    for arg in ("--help", "-h", "-help"):
        r = subprocess.run([str(RUNNER_BIN), arg], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == ""
        h = r.stdout
        listed = re.findall(r"^  --(\w+)", h, re.M)
        assert sorted(listed) == sorted(flags), set(listed) ^ set(flags)  # each of ours, once; nothing of gflags'
        for title in ("Model:", "Audio input", "Output:", "Decoding:", "Examples:", "Exit codes:"):
            assert f"\n{title}" in h, title
        assert "--format=<str> (default text)" in h and "--segment_pause_ms=<int> (default 640)" in h
        assert "--chunk_ms=<int> (default 80)" in h and "--stop_at_eos (default true)" in h
        assert "arecord" in h and "ffmpeg" in h and "--format srt --output_file" in h
        for code in ("0 ok", "1 bad flags", "2 model", "3 audio", "4 inference", "5 output", "130 interrupted"):
            assert code in h, code
        assert max(len(line) for line in h.splitlines()) <= 120
