"""Connected speech with word timings from the synthesizers themselves: libespeak-ng and libflite through ctypes.

    sp = Espeak().say("turn left and open the door", "en-us+m3", speed=160, pitch=50)
    sp = Flite().say("turn left and open the door", "slt", stretch=1.1, f0_scale=0.9, seed=3)
    sp.audio     # float32, 16 kHz (soxr HQ, as `voxtral_rt.audio.to_mono_16k`), leading/trailing silence trimmed
    sp.words     # [(word, first sample, end sample)] in sp.audio

Word starts are the synthesizer's own. espeak-ng: its phoneme events (espeakEVENT_PHONEME: `sample` = output sample
where the phoneme starts, `text_position` = the word it belongs to); a word starts at its first non-pause phoneme.
Its espeakEVENT_WORD events are not used: before a vowel-initial word they sit at the previous word's last
consonant (a liaison: "turn on" has the "on" event at the start of turn's /n/), and a few function-word pairs are
spoken as one dictionary entry with one event ("on the", "in the", "of the"); such a pair is split at the onset of
"the" (its /D/ or /d/ phoneme). Any other merge (rare: "to to" in a random word string) raises NoWordTiming. flite: its Word relation (the end time of the segment before the word's first
segment). A word
ends where the next word starts, or at the end of the audio, minus the silence before that point (the last sample
above 2 % of the word's peak, + 5 ms): espeak-ng inserts pauses between some words (e.g. ~120 ms between "left"
and "and" at 160 wpm) and ends every utterance with silence, and neither belongs to the word. This is the same
trim (2 % of the peak, 5 ms margin) that the word-by-word data gets, so "end of a word" means the same in both.

Determinism: flite's clustergen voices draw their excitation noise from libc's rand(), so `Flite.say` seeds it
(srand) on every call and its output is a function of its arguments. libespeak-ng keeps wave-generator state
(pitch flutter, phase) from one call to the next, and espeak_Terminate + espeak_Initialize hangs, so `Espeak.say`
output depends on the calls made before it in the process: a fixed sequence of calls (a seeded training process,
`eval-data`) gives the same audio every run. Neither library is thread-safe: one instance per process, one thread.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

SR = 16000
TRIM_FRACTION = 0.02  # a sample is speech if |x| > 2 % of the word's (or utterance's) peak
TRIM_MARGIN = 80  # 5 ms kept after the last speech sample


class NoWordTiming(RuntimeError):
    """The synthesizer gave no timing for a word (espeak-ng spoke it as one entry with its neighbour, e.g. "to to")."""


@dataclass
class Speech:
    audio: np.ndarray  # float32, 16 kHz
    words: list[tuple[str, int, int]]  # (word, first sample, end sample), end exclusive


def _to_16k(pcm: np.ndarray, sr: int) -> np.ndarray:
    from voxtral_rt.audio import to_mono_16k

    return to_mono_16k(pcm.copy(), sr, SR).astype(np.float32)


def word_spans(x: np.ndarray, words: list[str], starts: list[int]) -> Speech:
    """Words with their start samples in x -> Speech with word ends (next start or end of audio, minus the silence
    before it), and x cut to [first word's first speech sample - 5 ms, last word's end)."""
    if len(words) != len(starts):
        raise AssertionError(f"{len(words)} words but {len(starts)} word events")
    spans = []
    bounds = [*starts[1:], len(x)]
    for w, a, b in zip(words, starts, bounds):
        seg = np.abs(x[a:b])
        if b <= a or seg.max() == 0:
            raise RuntimeError(f"word {w!r} has no audio ({a}..{b})")
        last = int(np.flatnonzero(seg > TRIM_FRACTION * seg.max())[-1])
        spans.append((w, a, min(b, a + last + 1 + TRIM_MARGIN)))
    env = np.abs(x[: spans[0][2]])
    first = int(np.flatnonzero(env > TRIM_FRACTION * np.abs(x).max())[0])
    lo = min(max(0, first - TRIM_MARGIN), spans[0][1])
    hi = spans[-1][2]
    return Speech(x[lo:hi].copy(), [(w, max(0, a - lo), e - lo) for w, a, e in spans])


# ----------------------------------------------------------------------------- espeak-ng


class _EspeakIdUnion(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):  # espeak_EVENT, speak_lib.h (API revision 12)
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EspeakIdUnion)]


_ESPEAK_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                    ctypes.POINTER(_EspeakEvent))
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_EVENT_PHONEME = 7
_INITIALIZE_PHONEME_EVENTS = 1
_RATE, _PITCH = 1, 3


class Espeak:
    """libespeak-ng (Debian libespeak-ng1), synchronous mode: audio and events come back through a callback."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libespeak-ng.so.1")
        self.sr = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS)
        if self.sr <= 0:
            raise RuntimeError("espeak_Initialize failed (is espeak-ng-data installed?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []  # (text_position, sample, name) of each phoneme event

        def on_audio(wav, n, events) -> int:
            i = 0
            while events[i].type != 0:  # the list ends with espeakEVENT_LIST_TERMINATED
                e = events[i]
                if e.type == _EVENT_PHONEME:
                    self._events.append((e.text_position, e.sample, e.id.string.decode(errors="replace")))
                i += 1
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
            return 0

        self._callback = _ESPEAK_CALLBACK(on_audio)  # keep a reference: the library calls it later
        self.lib.espeak_SetSynthCallback(self._callback)

    def say(self, text: str, voice: str, speed: int, pitch: int) -> Speech:
        """text: lower-case words separated by single spaces; voice: "accent+variant"; speed in words/min."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, int(speed), 0)
        self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        self._chunks.clear()
        self._events.clear()
        data = text.encode()
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        if err != 0 or not self._chunks:
            raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r} with {voice}")
        pcm = np.concatenate(self._chunks)
        words = text.split()
        # text_position is 1-based: the first character of the word the phoneme belongs to.
        first_char = [sum(len(w) + 1 for w in words[:i]) + 1 for i in range(len(words))]
        phonemes: dict[int, list[tuple[int, str]]] = {}
        for pos, sample, name in self._events:
            if not name.startswith("_"):  # "_", "_:", "_!": pauses
                phonemes.setdefault(pos, []).append((sample, name))
        starts: list[int | None] = [phonemes[c][0][0] if c in phonemes else None for c in first_char]
        for i, st in enumerate(starts):
            if st is None:  # spoken as one entry with the previous word: only "<word> the" is split
                group = phonemes.get(first_char[i - 1], []) if i else []
                onset = [s for s, name in group if name[:1] in ("D", "d")]
                if words[i] != "the" or not onset:
                    raise NoWordTiming(f"no phonemes for {words[i]!r} in {text!r} ({voice}): "
                                         f"{[name for _, name in group]}")
                starts[i] = onset[-1]
        if set(phonemes) - set(first_char):
            raise AssertionError(f"phonemes at characters {sorted(set(phonemes) - set(first_char))} of {text!r}")
        return word_spans(_to_16k(pcm, self.sr), words, [round(s * SR / self.sr) for s in starts])


# ----------------------------------------------------------------------------- flite


class _FliteWave(ctypes.Structure):  # cst_wave
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


class _FliteVoice(ctypes.Structure):  # cst_voice
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p), ("ffunctions", ctypes.c_void_p),
                ("utt_init", ctypes.c_void_p)]


FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]  # Debian flite 2.2: kal/kal16 diphone, awb/rms/slt clustergen


class Flite:
    """libflite (Debian flite / libflite1) with its US English voices."""

    # A word starts where the segment before its first segment ends (segments carry end times, in seconds).
    _WORD_START = b"R:SylStructure.daughter1.daughter1.R:Segment.p.end"

    def __init__(self) -> None:
        g = ctypes.RTLD_GLOBAL
        self.lib = lib = ctypes.CDLL("libflite.so.1", mode=g)
        for dep in ("libflite_usenglish.so.1", "libflite_cmulex.so.1"):
            ctypes.CDLL(dep, mode=g)
        self.libc = ctypes.CDLL("libc.so.6")
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        for name, res, args in [("flite_synth_text", vp, [cp, ctypes.POINTER(_FliteVoice)]),
                                ("utt_relation", vp, [vp, cp]), ("relation_head", vp, [vp]), ("item_next", vp, [vp]),
                                ("ffeature_string", cp, [vp, cp]), ("ffeature_float", ctypes.c_float, [vp, cp]),
                                ("utt_wave", ctypes.POINTER(_FliteWave), [vp]), ("delete_utterance", None, [vp]),
                                ("feat_set_float", None, [vp, cp, ctypes.c_float]),
                                ("get_param_float", ctypes.c_float, [vp, cp, ctypes.c_float])]:
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        lib.flite_init()
        self._voices: dict[str, tuple[ctypes.POINTER(_FliteVoice), float]] = {}

    def _voice(self, name: str):
        if name not in self._voices:
            if name not in FLITE_VOICES:
                raise ValueError(f"unknown flite voice {name!r} (have {FLITE_VOICES})")
            vl = ctypes.CDLL(f"libflite_cmu_us_{name}.so.1", mode=ctypes.RTLD_GLOBAL)
            reg = getattr(vl, f"register_cmu_us_{name}")
            reg.restype, reg.argtypes = ctypes.POINTER(_FliteVoice), [ctypes.c_char_p]
            v = reg(None)
            f0 = self.lib.get_param_float(v.contents.features, b"int_f0_target_mean", 100.0)
            self._voices[name] = (v, f0)
        return self._voices[name]

    def say(self, text: str, voice: str, stretch: float = 1.0, f0_scale: float = 1.0, seed: int = 0) -> Speech:
        """stretch: duration_stretch (> 1 slower); f0_scale: times the voice's int_f0_target_mean (rms ignores
        it); seed: libc srand() before synthesis (the clustergen voices' noise)."""
        v, f0 = self._voice(voice)
        # Feature names are stored by pointer, not copied: pass string literals (they live as long as the code).
        self.lib.feat_set_float(v.contents.features, b"duration_stretch", float(stretch))
        self.lib.feat_set_float(v.contents.features, b"int_f0_target_mean", float(f0 * f0_scale))
        self.libc.srand(int(seed) & 0x7FFFFFFF)
        u = self.lib.flite_synth_text(text.encode(), v)
        try:
            w = self.lib.utt_wave(u).contents
            pcm = np.ctypeslib.as_array(w.samples, (w.num_samples * w.num_channels,)).copy()
            sr = w.sample_rate
            words, starts = [], []
            it = self.lib.relation_head(self.lib.utt_relation(u, b"Word"))
            while it:
                words.append(self.lib.ffeature_string(it, b"name").decode().lstrip("_"))  # "a" is "_a"
                starts.append(self.lib.ffeature_float(it, self._WORD_START))
                it = self.lib.item_next(it)
        finally:
            self.lib.delete_utterance(u)
        if words != text.split():
            raise AssertionError(f"flite's words {words} differ from the text {text!r}")
        return word_spans(_to_16k(pcm, sr), words, [round(s * SR) for s in starts])
