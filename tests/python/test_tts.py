"""tools/tts.py: connected speech with the synthesizers' own word timings (the demo model's training data).

Listening-free checks that a word's span is where its sound is: the energy before and after the boundaries the
synthesizers report, on sentences where espeak-ng and flite put a pause between two words."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from tts import SR, Espeak, Flite, NoWordTiming  # noqa: E402


def _db(x: np.ndarray, a: int, b: int, ref: float) -> float:
    """RMS level of x[a:b] in dB relative to ref."""
    seg = x[max(0, a) : max(0, b)]
    return 20 * np.log10(np.sqrt(np.mean(seg**2)) / ref + 1e-9) if len(seg) else -180.0


@pytest.fixture(scope="module")
def espeak():
    return Espeak()


@pytest.fixture(scope="module")
def flite():
    return Flite()


def _check_spans(sp, text: str) -> None:
    words = text.split()
    assert [w for w, _, _ in sp.words] == words
    prev_end = 0
    for _, a, e in sp.words:
        assert prev_end <= a < e <= len(sp.audio)
        prev_end = e
    assert sp.words[-1][2] == len(sp.audio)  # the trailing silence is cut
    assert sp.audio.dtype == np.float32 and np.abs(sp.audio).max() > 0.05


def test_espeak_word_spans_and_the_pause_before_a_vowel(espeak):
    # en-us at 160 wpm puts a ~120 ms pause between "left" and "and": "left" must end before it, "and" start after.
    text = "turn left and open the door"
    sp = espeak.say(text, "en-us+m3", 160, 50)
    _check_spans(sp, text)
    x, ref = sp.audio, float(np.sqrt(np.mean(sp.audio**2)))
    (_, _, left_end), (_, and_start, _) = sp.words[1], sp.words[2]
    assert and_start - left_end > 0.08 * SR
    assert _db(x, left_end, and_start, ref) < -60  # the pause is silent
    assert _db(x, left_end - 480, left_end, ref) > -30  # the last 30 ms of "left" are not
    assert _db(x, and_start, and_start + 480, ref) > -30


def test_espeak_merged_entry_is_split_at_the(espeak):
    # en-029 speaks "on the" as one dictionary entry (one word event): split at the onset of "the".
    text = "turn on the light"
    sp = espeak.say(text, "en-029+f2", 175, 50)
    _check_spans(sp, text)
    on, the = sp.words[1], sp.words[2]
    assert the[1] == on[2] or the[1] - on[2] < 0.01 * SR
    assert 0.03 * SR < the[2] - the[1] < 0.3 * SR
    with pytest.raises(NoWordTiming):
        espeak.say("find to to again", "en-gb-x-gbclan+john", 190, 80)


def test_flite_word_spans_and_determinism(flite):
    text = "stop the car now"
    sp = flite.say(text, "kal", 0.9, 1.2, seed=2)
    _check_spans(sp, text)
    # kal pauses after "stop": the span ends where its sound does.
    (_, _, stop_end), (_, the_start, _) = sp.words[0], sp.words[1]
    ref = float(np.sqrt(np.mean(sp.audio**2)))
    assert _db(sp.audio, stop_end, the_start, ref) < -30 < _db(sp.audio, stop_end - 480, stop_end, ref)
    # clustergen voices draw noise from rand(): seeded per call, the output does not depend on earlier calls.
    a = flite.say("call two three", "slt", 1.0, 1.0, seed=5)
    flite.say("go north now", "awb", 1.1, 0.9, seed=6)
    b = flite.say("call two three", "slt", 1.0, 1.0, seed=5)
    assert np.array_equal(a.audio, b.audio) and a.words == b.words
    slow = flite.say("call two three", "slt", 1.3, 1.0, seed=5)
    assert len(slow.audio) > 1.2 * len(a.audio)


def test_vtlp_moves_formants_not_time():
    """The training-only spectrum warp (tools/train_demo.py `vtlp_matrix`): identity at alpha 1, a 1 kHz tone's
    mel peak moves up for alpha > 1 and down for alpha < 1, the frame count is unchanged, and Nyquist maps to itself."""
    import torch

    import train_demo as td
    from voxtral_rt.mel import log_mel

    assert torch.equal(td.vtlp_matrix(201, 1.0), torch.eye(201))
    assert td.vtlp_matrix(201, 1.1)[200, 200] == 1.0 and td.vtlp_matrix(201, 0.9)[200, 200] == 1.0
    enc = td.demo_args(2000).encoder
    t = torch.arange(32000) / SR
    tone = 0.3 * torch.sin(2 * np.pi * 1000 * t)
    peak = {a: int(td.train_log_mel(tone, enc, a).mean(1).argmax()) for a in (0.9, 1.0, 1.1)}
    assert peak[0.9] < peak[1.0] < peak[1.1]
    assert torch.equal(td.train_log_mel(tone, enc, 1.0), log_mel(tone, enc))
    assert td.train_log_mel(tone, enc, 1.1).shape == log_mel(tone, enc).shape
