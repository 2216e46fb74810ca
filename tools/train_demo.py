#!/usr/bin/env python3
"""Train the tiny demo model: the Voxtral-Realtime architecture and code, trained from scratch on synthetic speech
(espeak-ng and flite).

    nice -n 19 python tools/train_demo.py train --out models/demo   # 16800 steps: 5 min CPU word bank + 42 min CPU training
    python tools/train_demo.py eval-data DIR [--n 240] [--kind words|espeak|flite] [--unseen-accents]
    python tools/train_demo.py samples --out models/demo              # only rewrite models/demo/samples (its model
                                                                      # picks the clips it gets right, see SAMPLE_KINDS)

Data
----
Sentences over a small vocabulary (digits, colors, directions, commands, objects, a few function words; a word
that needs more than 3 tokens of the reduced tekken vocabulary is dropped), from a small command grammar (75 %) or
as random word strings (25 %). One training example is a stream of 1-3 sentences spoken by one voice, of one of
three kinds (shares `--mix`, default 0.3 / 0.35 / 0.35):

* words: each word synthesized on its own by espeak-ng (an accent + a voice variant, a speed in words/min, a
  pitch; 400 training voices), trimmed of silence (2 % of its peak, 5 ms margin), and the words concatenated with
  random gaps (40-300 ms), so every word's end sample is exact. No coarticulation, no sentence prosody.
* espeak: each sentence synthesized whole by libespeak-ng (same 400 voices) -- connected speech;
* flite: each sentence synthesized whole by libflite, voices kal, kal16 (one diphone speaker at 8 / 16 kHz), awb,
  slt (clustergen), at 6 duration stretches x 5 F0 scales; voice rms is held out.

For connected speech the word timings come from the synthesizer itself (`tools/tts.py`: espeak-ng's phoneme
events, flite's Word relation): a word ends where the next word starts (or the audio ends) minus the silence before
that point, with the same 2 % / 5 ms trim as a word synthesized alone. All audio is resampled to 16 kHz (soxr HQ,
as `load_audio`); sentences are separated by 350-1200 ms; the stream is played exp(U(-0.15, 0.15)) times faster (a
tape-speed change: tempo, pitch and formants together), then gets a random gain (peak -26..-0.4 dBFS) and white or
low-passed noise (SNR 20-45 dB). Half of the streams also get a vocal-tract-length perturbation on the spectrum
(`vtlp_matrix`: frequencies scaled by exp(U(-0.1, 0.1)) up to 80 % of Nyquist, formants move, tempo does not), for
speakers the training voices do not cover (flite has only three distinct training speakers).
Held-out utterances (`eval-data`, `samples/`) are one sentence each. `--kind words` and `--kind espeak` use
espeak-ng voice variants, speeds and pitches never used in training (the espeak accents are the training ones;
`--unseen-accents` also uses accents never used in training: en-us-nyc, en-gb-x-gbcwmd, a harder set);
`--kind flite` uses the held-out speaker rms at duration stretches never used in training.

Targets (the streaming scheme; teacher forcing)
------------------------------------------------
Exactly the layout `voxtral_rt/protocol.py` decodes with. With L = left-pad tokens (tekken.json `audio`
section; 8 for this model, the real model uses 32), D = delay tokens (480 ms -> 6), 80 ms = 1280 samples per token:

* stream = zeros(L tokens) ++ audio ++ zeros(alignment + (D + 1 + B) tokens), B = OFFLINE_STREAMING_BUFFER_TOKENS
  (10) -> T audio tokens; its log-mel goes through `encode(mel, enc_pos=0)` in one chunk -> audio_emb[0..T-1].
* token sequence z[0..T-1]: z[0] = BOS, z[1..L+D] = [STREAMING_PAD] (the prompt), then [STREAMING_PAD] while
  waiting; a word whose last sample lies in audio token k (of the real audio) has its tokens (leading-space
  tokenization, " red") at z[L+D+k+1], z[L+D+k+2], ... one token per position. So the model outputs the word's
  first token at position L+D+k, having heard D tokens past the word's end, and the token's time
  (q - L - D) * 80 ms is the word's end rounded up to the 80 ms grid. If the previous word's tokens still occupy
  a position, the next word starts right after them. No [STREAMING_WORD], no EOS: [STREAMING_PAD] to the end.
* decoder input at position p = tok_emb(z[p]) + audio_emb[p] for p = 0..T-2 (the last embedding is never consumed,
  as in transformers' generate), `decode(h, pos=0, n_delay=D, all_logits=True)`; label at p = z[p+1];
  cross-entropy over the generated positions p >= L + D.

Training
--------
The whole model (encoder + adapter + decoder: `voxtral_rt.model.VoxtralRealtime` with its own small ModelArgs, see
`demo_args`) is trained from scratch with AdamW (lr 2e-3, 200 warm-up steps, cosine to 5 %), gradient clip 1.
Two training-only aids, both discarded afterwards (the checkpoint is the plain architecture):
* the two convs get a data-dependent init (per-channel zero mean / unit variance over real log-mels), because the
  log-mel's large constant component otherwise makes every frame look alike and training crawls;
* an auxiliary cross-entropy (weight 0.5) from a linear head on the audio embeddings: the identity of the word
  being spoken, on every audio token of the word and the 2 after it. It makes the encoder learn the words sooner.
Two fork()ed single-thread processes each take one stream per step and average gradients (gloo all-reduce); on two
shared cores this is far faster than two intra-op threads. Everything is seeded: the data of (step, process) comes
from numpy's Generator([seed, step, process]), espeak-ng is deterministic, and torch runs single-threaded, so a
rerun gives bit-identical weights on the same machine (espeak-ng and flite are called in a fixed order in each
process; see `tools/tts.py` on their state).

Output (Mistral-native format): params.json (`ModelArgs.to_params_json()`), consolidated.safetensors (bf16, native
names), tekken.json (`write_tekken_json`: the first vocab_size - 1000 BPE ranks of mistral-common's tekken file),
samples/NN.wav + NN.txt (held-out voices; the first per kind that the trained model transcribes correctly).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from voxtral_rt.audio import to_mono_16k  # noqa: E402
from voxtral_rt.config import OFFLINE_STREAMING_BUFFER_TOKENS, REAL_AUDIO, AudioArgs, EncoderArgs, ModelArgs  # noqa: E402

SR = 16000
SPT = 1280  # samples per audio token (80 ms)

# ----------------------------------------------------------------------------- vocabulary and grammar

DIGITS = "zero one two three four five six seven eight nine ten".split()
COLORS = "red green blue yellow black white orange purple pink brown gray".split()
DIRECTIONS = "left right up down north south east west forward back".split()
MOTION_VERBS = "go turn move look run jump walk".split()
OBJECT_VERBS = "open close find take bring show pick stop start play call".split()
OBJECTS = "door window light box car room table ball key book cup house phone music radio".split()
FUNCTION = "the a to at on in of and now please then fast again all off next slowly".split()
CANDIDATE_WORDS = sorted(set(DIGITS + COLORS + DIRECTIONS + MOTION_VERBS + OBJECT_VERBS + OBJECTS + FUNCTION
                             + "put set wait".split()))
MAX_WORD_TOKENS = 3

# espeak-ng voices: accent + variant. Held-out variants, speeds, pitches (and TEST_ACCENTS) never occur in training.
TRAIN_ACCENTS = ["en", "en-us", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan"]
TEST_ACCENTS = ["en-us-nyc", "en-gb-x-gbcwmd"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "m7", "m8", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt4", "Alex",
                  "Annie", "adam", "david", "ed", "john", "linda", "max", "michel", "norbert", "rob", "steph", "travis",
                  "Alicia", "Andrea", "Denis", "Diogo", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael",
                  "Mike", "anika", "antonio", "aunty", "belinda", "benjamin", "boris", "edward", "grandpa", "gustave",
                  "iven2", "marcelo", "miguel", "pablo", "pedro", "robert", "sandro", "steph2", "zac"]
TEST_VARIANTS = ["m5", "m6", "f5", "klatt3", "klatt5", "Andy", "paul", "shelby", "quincy", "victor"]
TRAIN_SPEEDS = [115, 140, 165, 190, 215, 240]  # words per minute
TEST_SPEEDS = [128, 152, 178, 203, 228]
TRAIN_PITCHES = [20, 40, 60, 80]
TEST_PITCHES = [30, 50, 70]
N_TRAIN_VOICES = 400  # (accent, variant, speed, pitch) combinations drawn for training
N_TEST_VOICES = 48
# flite voices (Debian flite 2.2): speaker, duration stretch, F0 scale. rms is held out (a US male clustergen voice;
# training has kal/kal16 = one diphone male at 8 and 16 kHz, awb = Scottish male and slt = US female, clustergen).
FLITE_TRAIN_NAMES = ["kal", "kal16", "awb", "slt"]
FLITE_TEST_NAMES = ["rms"]
FLITE_TRAIN_STRETCHES = [0.8, 0.9, 1.0, 1.1, 1.2, 1.3]  # duration_stretch: > 1 is slower
FLITE_TEST_STRETCHES = [0.85, 0.95, 1.05, 1.15, 1.25]
FLITE_TRAIN_F0 = [0.8, 0.9, 1.0, 1.12, 1.25]  # times the voice's own mean F0 (rms ignores it)
FLITE_TEST_F0 = [1.0]
KINDS = ("words", "espeak", "flite")  # word-by-word espeak-ng, connected espeak-ng, connected flite
KIND_LABEL = {"words": "espeak-ng {}, words synthesized one by one", "espeak": "espeak-ng {}, one utterance",
              "flite": "{}, one utterance"}


@dataclass(frozen=True)
class Voice:
    accent: str
    variant: str
    speed: int
    pitch: int

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant} s{self.speed} p{self.pitch}"


@dataclass(frozen=True)
class FliteVoice:
    voice: str
    stretch: float
    f0_scale: float

    @property
    def name(self) -> str:
        return f"flite {self.voice} x{self.stretch} f0x{self.f0_scale}"


def flite_voices(held_out: bool) -> list[FliteVoice]:
    names, st, f0 = ((FLITE_TEST_NAMES, FLITE_TEST_STRETCHES, FLITE_TEST_F0) if held_out
                     else (FLITE_TRAIN_NAMES, FLITE_TRAIN_STRETCHES, FLITE_TRAIN_F0))
    return [FliteVoice(v, s, f) for v in names for s in st for f in f0]


def draw_voices(held_out: bool, n: int, seed: int, unseen_accents: bool = False) -> list[Voice]:
    """Training voices, or held-out ones: voice variants, speeds and pitches never used in training, with the
    training accents or (unseen_accents, harder) with accents never used in training either."""
    acc, var, spd, pit = ((TEST_ACCENTS if unseen_accents else TRAIN_ACCENTS, TEST_VARIANTS, TEST_SPEEDS, TEST_PITCHES)
                          if held_out else (TRAIN_ACCENTS, TRAIN_VARIANTS, TRAIN_SPEEDS, TRAIN_PITCHES))
    allv = [Voice(a, v, s, p) for a in acc for v in var for s in spd for p in pit]
    rng = np.random.default_rng([seed, 7, int(held_out)])
    return [allv[i] for i in rng.choice(len(allv), size=min(n, len(allv)), replace=False)]


class Sentences:
    """A small command grammar plus random word strings, over the words that survived the token check."""

    def __init__(self, words: list[str]) -> None:
        ok = set(words)
        self.words = sorted(ok)

        def keep(xs: list[str]) -> list[str]:
            return [x for x in xs if x in ok]

        self.d, self.c, self.dirs = keep(DIGITS), keep(COLORS), keep(DIRECTIONS)
        self.mv, self.ov, self.o = keep(MOTION_VERBS), keep(OBJECT_VERBS), keep(OBJECTS)
        self.preps = keep(["at", "to", "on", "in", "of"])
        self.adv = keep(["now", "again", "fast", "slowly", "please"])

    def sentence(self, rng: np.random.Generator) -> list[str]:
        if rng.random() < 0.25:  # random word string: no grammar to lean on
            return [self.words[i] for i in rng.integers(0, len(self.words), int(rng.integers(2, 8)))]
        P = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
        the = lambda: ["the"] if "the" in self.words and rng.random() < 0.8 else []  # noqa: E731
        col = lambda: [P(self.c)] if rng.random() < 0.7 else []  # noqa: E731
        t = int(rng.integers(9))
        if t == 0:
            s = [P(self.mv), P(self.dirs)]
        elif t == 1:
            s = [P(self.ov), *the(), *col(), P(self.o)]
        elif t == 2:
            s = [P(self.mv), P(self.dirs), P(self.preps), *the(), *col(), P(self.o)]
        elif t == 3:
            s = ["call", *[P(self.d) for _ in range(int(rng.integers(3, 7)))]]
        elif t == 4:
            s = ["set", *the(), P(self.o), "to", P(self.d), *([P(self.d)] if rng.random() < 0.5 else [])]
        elif t == 5:
            s = ["put", *the(), *col(), P(self.o), P(self.preps), *the(), *col(), P(self.o)]
        elif t == 6:
            s = [P(self.mv), P(self.dirs), "and", "then", P(self.mv), P(self.dirs)]
        elif t == 7:
            s = [P(self.d), P(self.c), P(self.o), *([P(self.adv)] if rng.random() < 0.5 else [])]
        else:
            s = ["turn", P(["on", "off"]), *the(), *col(), P(self.o)]
        if rng.random() < 0.2:
            s = ["please", *s] if rng.random() < 0.5 else [*s, P(self.adv)]
        return [w for w in s if w in self.words]


# ----------------------------------------------------------------------------- tokenizer


def audio_args(left_pad: int) -> AudioArgs:
    """The real model's protocol numbers (480 ms delay, ...) with our own left pad."""
    return dataclasses.replace(REAL_AUDIO, streaming_n_left_pad_tokens=left_pad)


def make_tokenizer(out_dir: Path, vocab_size: int, left_pad: int = 32):
    """tekken.json with the first vocab_size - 1000 BPE ranks; returns (path, Tekkenizer, {word: token ids})."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    from voxtral_rt.tokenizer import write_tekken_json

    path = write_tekken_json(out_dir / "tekken.json", vocab_size, audio_args(left_pad))
    tk = Tekkenizer.from_file(str(path))
    spell: dict[str, list[int]] = {}
    for w in CANDIDATE_WORDS:
        ids = tk.encode(" " + w, bos=False, eos=False)
        if len(ids) <= MAX_WORD_TOKENS and all(tk.num_special_tokens <= i < vocab_size for i in ids) \
                and tk.decode(ids) == " " + w:
            spell[w] = ids
    return path, tk, spell


# ----------------------------------------------------------------------------- speech synthesis


def espeak(voice: Voice, word: str) -> np.ndarray:
    """One word from espeak-ng -> float32 16 kHz, leading/trailing silence trimmed."""
    out = subprocess.run(["espeak-ng", "-v", f"{voice.accent}+{voice.variant}", "-s", str(voice.speed),
                          "-p", str(voice.pitch), "--stdout", word], capture_output=True, check=True).stdout
    sr = int.from_bytes(out[24:28], "little")  # canonical 44-byte header (streamed: sizes are placeholders)
    pcm = np.frombuffer(out[44:44 + (len(out) - 44) // 2 * 2], dtype="<i2")
    x = to_mono_16k(pcm.copy(), sr, SR)
    env = np.abs(x)
    thr = 0.02 * env.max()
    idx = np.flatnonzero(env > thr)
    if len(idx) == 0:
        raise RuntimeError(f"espeak-ng produced silence for {word!r} with {voice.name}")
    a, b = max(0, idx[0] - 80), min(len(x), idx[-1] + 80)  # 5 ms margin
    return x[a:b].astype(np.float32)


class WordBank:
    """Every (voice, word) waveform, synthesized once (espeak-ng is deterministic)."""

    def __init__(self, voices: list[Voice], words: list[str], workers: int = 2, cache: str | None = None) -> None:
        import pickle

        keys = [(v, w) for v in voices for w in words]
        if cache and Path(cache).is_file():
            with open(cache, "rb") as f:
                self.wav = {(Voice(*k[:4]), k[4]): x for k, x in pickle.load(f).items()}
            if all(k in self.wav for k in keys):
                return
        with ThreadPoolExecutor(workers) as ex:
            wavs = list(ex.map(lambda k: espeak(*k), keys))
        self.wav = dict(zip(keys, wavs))
        if cache:
            with open(cache, "wb") as f:
                pickle.dump({(v.accent, v.variant, v.speed, v.pitch, w): x for (v, w), x in self.wav.items()}, f)


def render(rng: np.random.Generator, bank: WordBank, voice: Voice, sentences: list[list[str]],
           warp: float = 1.0) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Concatenate words with random gaps -> (audio, [(word, start, end sample)]), then gain and light noise.
    warp != 1 plays every word `warp` times faster (tempo, pitch and formants together, as a tape speed change)."""
    import soxr

    parts: list[np.ndarray] = []
    ends: list[tuple[str, int, int]] = []  # (word, first sample, end sample)
    n = 0

    def sil(seconds: float) -> None:
        nonlocal n
        k = int(seconds * SR)
        parts.append(np.zeros(k, np.float32))
        n += k

    sil(rng.uniform(0.05, 0.6))
    for si, sent in enumerate(sentences):
        if si:
            sil(rng.uniform(0.35, 1.2))
        for wi, w in enumerate(sent):
            if wi:
                sil(rng.uniform(0.04, 0.3))
            x = bank.wav[(voice, w)]
            if warp != 1.0:
                x = soxr.resample(x, SR * warp, SR).astype(np.float32)
            parts.append(x)
            n += len(x)
            ends.append((w, n - len(x), n))
    sil(rng.uniform(0.05, 0.4))
    return gain_and_noise(rng, np.concatenate(parts)), ends


def gain_and_noise(rng: np.random.Generator, audio: np.ndarray) -> np.ndarray:
    """The stream-level augmentation: a random peak gain, then white or low-passed noise at a random SNR."""
    audio = audio / (np.abs(audio).max() + 1e-9) * 10 ** rng.uniform(-1.3, -0.05)  # peak -26..-0.4 dBFS
    noise = rng.standard_normal(len(audio)).astype(np.float32)
    if rng.random() < 0.5:  # low-passed ("brown-ish") noise half of the time
        noise = np.convolve(noise, np.ones(8, np.float32) / 8, mode="same")
        noise /= noise.std() + 1e-9
    rms = math.sqrt(float(np.mean(audio**2)) + 1e-12)
    audio = audio + noise * rms * 10 ** (-rng.uniform(20, 45) / 20)  # SNR 20..45 dB
    return np.clip(audio, -1, 1).astype(np.float32)


def utterance(rng: np.random.Generator, gram: Sentences, bank: WordBank, voices: list[Voice], n_sent: int,
              max_warp: float = 0.0):
    voice = voices[int(rng.integers(len(voices)))]
    sents = [gram.sentence(rng) for _ in range(n_sent)]
    warp = float(np.exp(rng.uniform(-max_warp, max_warp))) if max_warp > 0 else 1.0
    audio, ends = render(rng, bank, voice, sents, warp)
    return audio, ends, voice, sents


from tts import NoWordTiming  # noqa: E402


class Synths:
    """One espeak-ng and one flite library instance per process, created on first use (after fork())."""

    def __init__(self) -> None:
        self._es = self._fl = None

    def say(self, rng: np.random.Generator, voice: Voice | FliteVoice, words: list[str]):
        from tts import Espeak, Flite

        if isinstance(voice, FliteVoice):
            self._fl = self._fl or Flite()
            return self._fl.say(" ".join(words), voice.voice, voice.stretch, voice.f0_scale,
                                seed=int(rng.integers(2**31)))
        self._es = self._es or Espeak()
        return self._es.say(" ".join(words), f"{voice.accent}+{voice.variant}", voice.speed, voice.pitch)


def connected_utterance(rng: np.random.Generator, gram: Sentences, synths: Synths, voices: list, n_sent: int,
                        max_warp: float = 0.0):
    """1..n sentences, each synthesized whole (connected speech) by one voice (espeak-ng Voice or FliteVoice), with
    the synthesizer's word timings; sentence gaps, tape-speed warp, gain and noise as `render`."""
    import soxr

    voice = voices[int(rng.integers(len(voices)))]
    sents = [gram.sentence(rng) for _ in range(n_sent)]
    warp = float(np.exp(rng.uniform(-max_warp, max_warp))) if max_warp > 0 else 1.0
    parts: list[np.ndarray] = []
    ends: list[tuple[str, int, int]] = []
    n = 0
    for si, sent in enumerate(sents):
        gap = int(rng.uniform(0.35, 1.2) * SR) if si else int(rng.uniform(0.05, 0.6) * SR)
        parts.append(np.zeros(gap, np.float32))
        n += gap
        for _ in range(100):
            try:
                sp = synths.say(rng, voice, sent)
                break
            except NoWordTiming:  # rare (random word strings): another sentence
                sent = sents[si] = gram.sentence(rng)
        else:
            raise RuntimeError(f"no sentence with word timings for {voice.name}")
        x, words = sp.audio, sp.words
        if warp != 1.0:
            x = soxr.resample(x, SR * warp, SR).astype(np.float32)
            words = [(w, min(len(x), round(a / warp)), min(len(x), round(e / warp))) for w, a, e in words]
        parts.append(x)
        ends.extend((w, n + a, n + e) for w, a, e in words)
        n += len(x)
    parts.append(np.zeros(int(rng.uniform(0.05, 0.4) * SR), np.float32))
    return gain_and_noise(rng, np.concatenate(parts)), ends, voice, sents


# ----------------------------------------------------------------------------- targets


def stream_tokens(ends: list[tuple[str, int, int]], n_samples: int, spell: dict[str, list[int]], L: int, D: int,
                  bos: int, pad: int) -> list[int]:
    """z[0..T-1] of the scheme above (T = number of audio tokens of the padded stream)."""
    n_tok = -(-n_samples // SPT)
    T = L + n_tok + D + 1 + OFFLINE_STREAMING_BUFFER_TOKENS
    z = [bos] + [pad] * (T - 1)
    nxt = L + D + 1
    for w, _, end in ends:
        q = max(L + D + (end - 1) // SPT + 1, nxt)
        for t in spell[w]:
            z[q] = t
            q += 1
        nxt = q
    if nxt > T - 1:
        raise AssertionError("a word's tokens run past the stream end")
    return z


def vtlp_matrix(n_freq: int, alpha: float, cut: float = 0.8) -> torch.Tensor:
    """Vocal-tract-length perturbation as a linear map of the power spectrum (n_freq bins, 0..Nyquist): the output
    bin k takes the input at frequency k / alpha (linear interpolation) up to cut * Nyquist, then a straight line to
    Nyquist -> Nyquist. alpha > 1 moves formants up (a shorter vocal tract), without changing tempo or F0 contour
    timing -- unlike the tape-speed warp, which moves tempo, pitch and formants together."""
    top = n_freq - 1
    b = cut * top
    k = np.arange(n_freq, dtype=np.float64)
    src = np.where(k <= b, k / alpha, b / alpha + (k - b) * (top - b / alpha) / (top - b))
    lo = np.clip(np.floor(src).astype(int), 0, top)
    hi = np.clip(lo + 1, 0, top)
    fr = src - np.floor(src)
    m = np.zeros((n_freq, n_freq), np.float32)
    np.add.at(m, (np.arange(n_freq), lo), 1 - fr)
    np.add.at(m, (np.arange(n_freq), hi), fr)
    return torch.from_numpy(m)


def train_log_mel(pcm: torch.Tensor, enc, alpha: float = 1.0) -> torch.Tensor:
    """`voxtral_rt.mel.log_mel` (the same ops), with the power spectrum warped by `vtlp_matrix(alpha)` if alpha != 1."""
    from voxtral_rt.mel import MelSpec, _finish, log_mel, mel_filters

    if alpha == 1.0:
        return log_mel(pcm, enc)
    spec = MelSpec.from_encoder(enc)
    window = torch.hann_window(spec.n_fft, periodic=True, dtype=torch.float32)
    stft = torch.stft(pcm.to(torch.float32), spec.n_fft, spec.hop, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    power = stft[..., :-1].abs() ** 2
    filters = mel_filters(spec.n_mels, spec.n_fft, spec.sampling_rate)  # [n_freq, n_mels]
    return _finish((vtlp_matrix(power.shape[0], alpha).T @ filters).T @ power, spec.floor)


def word_labels(ends: list[tuple[str, int, int]], T: int, word_index: dict[str, int], L: int, dense: bool,
                span: int = 3) -> torch.Tensor:
    """Auxiliary per-audio-token labels (audio embedding index = L + real token index): class 1 + word index on the
    tokens from the word's first (dense) or last (not dense) token through `span` - 1 tokens past its last, else 0."""
    y = torch.zeros(T, dtype=torch.long)
    for w, start, end in ends:
        k0, k1 = L + start // SPT, L + (end - 1) // SPT
        y[(k0 if dense else k1) : k1 + span] = 1 + word_index[w]
    return y


# ----------------------------------------------------------------------------- model


def demo_args(vocab_size: int, enc_dim: int = 128, enc_layers: int = 3, enc_hidden: int = 384, enc_theta: float = 1e3,
              dec_dim: int = 192, dec_layers: int = 2, dec_hidden: int = 512, dec_theta: float = 1e3) -> ModelArgs:
    """Small shapes; everything else as the real model (mel front-end, 12.5 Hz tokens, downsample 4, GQA, delay
    conditioning width 32). Head width 32/56; every linear's input width is a multiple of 32 (4-bit groups)."""
    enc = EncoderArgs(
        dim=enc_dim, n_layers=enc_layers, n_heads=enc_dim // 32, head_dim=32, hidden_dim=enc_hidden,
        rope_theta=enc_theta, norm_eps=1e-5, sliding_window=750, use_biases=True, num_mel_bins=128, sampling_rate=SR,
        hop_length=160, window_size=400, frame_rate=12.5, global_log_mel_max=1.5, downsample_factor=4,
    )
    return ModelArgs(
        dim=dec_dim, n_layers=dec_layers, n_heads=4, n_kv_heads=2, head_dim=dec_dim // 4, hidden_dim=dec_hidden,
        vocab_size=vocab_size, rope_theta=dec_theta, norm_eps=1e-5, sliding_window=256, ada_t_cond_dim=32, encoder=enc,
    )


@torch.no_grad()
def init_conv_stem(model, mels: list[torch.Tensor]) -> None:
    """Data-dependent init of the two convs: per-channel zero mean, unit variance of the pre-activations over
    real log-mels. The log-mel has a large constant component; with the default init every frame starts out as
    nearly the same vector and training crawls (an overfit test on 8 utterances took 10x more steps)."""
    x = torch.cat([m[0].transpose(0, 1) for m in mels])  # [frames, n_mels]
    x = x[: x.shape[0] // 2 * 2]
    zero = torch.zeros(1)
    for conv in model.whisper_encoder.conv_layers:
        y = conv(x, zero)  # keep_state 0: zero left context, as at a stream start
        mu, sd = y.mean(0), y.std(0) + 1e-6
        conv.conv.weight.div_(sd[:, None, None])
        conv.conv.bias.sub_(mu).div_(sd)
        x = F.gelu(conv(x, zero))


def init_weights(model: torch.nn.Module, args: ModelArgs) -> None:
    """Small-init the embedding (it is also the LM head) and the residual output projections."""
    torch.nn.init.normal_(model.tok_embeddings.weight, std=0.05)
    for name, p in model.named_parameters():
        if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
            n_layers = args.encoder.n_layers if name.startswith("whisper_encoder") else args.n_layers
            p.data.mul_(1 / math.sqrt(2 * n_layers))


def write_checkpoint(model: torch.nn.Module, args: ModelArgs, out: Path) -> None:
    from safetensors.torch import save_file

    from voxtral_rt.checkpoint import expected_shapes, internal_to_native

    sd = model.state_dict()
    if set(sd) != set(expected_shapes(args)):
        raise AssertionError(f"state dict names differ from the checkpoint layout: {set(sd) ^ set(expected_shapes(args))}")
    save_file({internal_to_native(k): v.detach().to(torch.bfloat16).contiguous() for k, v in sorted(sd.items())},
              str(out / "consolidated.safetensors"))
    os.chmod(out / "consolidated.safetensors", 0o644)  # save_file creates it owner-only
    with open(out / "params.json", "w") as f:
        json.dump(args.to_params_json(), f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------- commands


MAX_SKIPPED = 50  # write_heldout: an untrained model gets nothing right; take the next candidate after this many


def write_heldout(out_dir: Path, n: int, seed: int, spell: dict[str, list[int]], first_index: int = 1,
                  max_seconds: float = 0.0, unseen_accents: bool = False, kind: str = "words",
                  accept=None) -> list[Path]:
    """n held-out utterances (one sentence each, held-out voices) as NN.wav (16-bit PCM) + NN.txt, and a line
    `NN<TAB>kind<TAB>description` per utterance in voices.tsv. kind: words (espeak-ng word by word, as in training),
    espeak (connected espeak-ng), flite (connected flite, held-out speaker). accept(wav_path, text) -> bool, if
    given, skips the candidates it rejects; the description then says how many were skipped before this one."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    gram = Sentences(list(spell))
    if kind == "words":
        voices = draw_voices(True, N_TEST_VOICES, seed, unseen_accents)
        bank = WordBank(voices, gram.words)
    else:
        voices = draw_voices(True, N_TEST_VOICES, seed, unseen_accents) if kind == "espeak" else flite_voices(True)
        synths = Synths()
    listing = []
    paths = []
    i = 0
    k = 0
    skipped = 0
    width = max(2, len(str(first_index + n - 1)))
    while len(paths) < n:
        rng = np.random.default_rng([seed, 1_000_003, k])
        k += 1
        if kind == "words":
            audio, _, voice, sents = utterance(rng, gram, bank, voices, 1)
        else:
            audio, _, voice, sents = connected_utterance(rng, gram, synths, voices, 1)
        if max_seconds and len(audio) > max_seconds * SR:
            continue
        stem = f"{first_index + i:0{width}d}"
        sf.write(out_dir / f"{stem}.wav", audio, SR, subtype="PCM_16")
        ok = accept is None or accept(out_dir / f"{stem}.wav", " ".join(sents[0]))
        if not ok and skipped < MAX_SKIPPED:
            (out_dir / f"{stem}.wav").unlink()
            skipped += 1
            continue
        (out_dir / f"{stem}.txt").write_text(" ".join(sents[0]) + "\n")
        note = ("" if accept is None else f" (selected: {skipped} earlier candidate(s) of this kind mis-transcribed)"
                if ok else f" (NOT transcribed correctly, nor were the {skipped} candidates before it)")
        skipped = 0
        listing.append(f"{stem}\t{kind}\t{KIND_LABEL[kind].format(voice.name)}{note}\n")
        paths.append(out_dir / f"{stem}.wav")
        i += 1
    with open(out_dir / "voices.tsv", "a" if first_index > 1 else "w") as f:
        f.writelines(listing)
    return paths


# The bundled samples (models/demo/samples): the first held-out utterances of at most 4 s of each kind (a seed
# per kind, so that the kinds say different sentences) that the model (eager fp32) transcribes correctly. They are
# a demo and a regression test of the layers (export, quantization, runner), not a measurement: the model's error
# rate is in README's WER table, and voices.tsv says how many candidates were skipped before each sample.
SAMPLE_KINDS = [("words", 2), ("espeak", 2), ("flite", 2)]


def transcribes_correctly(model_dir: Path):
    """accept(wav, text) for write_heldout: the eager fp32 model's transcript of the WAV equals text."""
    from voxtral_rt.audio import load_audio
    from voxtral_rt.checkpoint import load_model
    from voxtral_rt.evaluate import normalize
    from voxtral_rt.engine import EagerEngine
    from voxtral_rt.protocol import transcribe
    from voxtral_rt.tokenizer import Tekken

    model, _ = load_model(model_dir, dtype=torch.float32)
    engine, tok = EagerEngine(model.eval()), Tekken.from_file(model_dir / "tekken.json")
    return lambda wav, text: normalize(transcribe(engine, tok, load_audio(wav))["text"]) == normalize(text)


def write_samples(out_dir: Path, seed: int, spell: dict[str, list[int]], model_dir: Path | None = None) -> list[Path]:
    accept = transcribes_correctly(model_dir) if model_dir is not None else None
    for old in [*out_dir.glob("*.wav"), *out_dir.glob("*.txt")]:
        old.unlink()
    paths: list[Path] = []
    for k, (kind, n) in enumerate(SAMPLE_KINDS):
        paths += write_heldout(out_dir, n, seed + k, spell, first_index=len(paths) + 1, max_seconds=4.0, kind=kind,
                               accept=accept)
    return paths


def cmd_eval_data(a: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        _, _, spell = make_tokenizer(Path(td), a.vocab_size)
    t0 = time.time()
    write_heldout(Path(a.out_dir), a.n, a.seed, spell, unseen_accents=a.unseen_accents, kind=a.kind)
    print(f"wrote {a.n} held-out utterances ({a.kind}) to {a.out_dir} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


def cmd_samples(a: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        _, _, spell = make_tokenizer(Path(td), a.vocab_size)
    paths = write_samples(Path(a.out) / "samples", a.seed + 1, spell, None if a.any else Path(a.out))
    print(f"wrote {len(paths)} samples to {Path(a.out) / 'samples'}", file=sys.stderr)
    return 0


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its waited-for children (training processes, espeak-ng)."""
    import resource

    r = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(x.ru_utime + x.ru_stime for x in r)


def cmd_train(a: argparse.Namespace) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    _, tk, spell = make_tokenizer(out, a.vocab_size, a.left_pad)
    words = sorted(spell)
    dropped = sorted(set(CANDIDATE_WORDS) - set(words))
    print(f"[data] {len(words)} words (dropped, > {MAX_WORD_TOKENS} tokens: {' '.join(dropped) or '-'})", flush=True)
    voices = draw_voices(False, N_TRAIN_VOICES, a.seed)
    bank = WordBank(voices, words, cache=a.bank_cache)
    t_data = time.time() - t_start
    print(f"[data] {len(voices)} training voices x {len(words)} words synthesized in {t_data:.0f} s "
          f"(CPU {_cpu_seconds():.0f} s)", flush=True)
    ids = {"bos": tk.get_special_token("<s>"), "pad": tk.get_special_token("[STREAMING_PAD]")}
    if a.procs == 1:
        _train_worker(0, a, spell, voices, bank, ids, t_data, None)
    else:
        # Data parallel over fork()ed single-threaded processes (they share the word bank copy-on-write); gradients
        # are averaged with one all-reduce per step. On 2 shared cores this is much faster than 2 intra-op threads,
        # which stall on every op when another process holds a core.
        import multiprocessing as mp
        import tempfile

        ctx = mp.get_context("fork")
        rendezvous = tempfile.mktemp(prefix="train_demo_gloo_")
        procs = [ctx.Process(target=_train_worker, args=(r, a, spell, voices, bank, ids, t_data, rendezvous))
                 for r in range(a.procs)]
        for pr in procs:
            pr.start()
        for pr in procs:
            pr.join()
        Path(rendezvous).unlink(missing_ok=True)
        if any(pr.exitcode != 0 for pr in procs):
            print(f"error: a training process failed (exit codes {[pr.exitcode for pr in procs]})", file=sys.stderr)
            return 1
    t_total, cpu_total = time.time() - t_start, _cpu_seconds()
    print(f"[done] data + training: wall {t_total:.0f} s, CPU {cpu_total:.0f} s (all processes)", flush=True)
    samples = write_samples(out / "samples", a.seed + 1, spell, out)
    print(f"[done] checkpoint in {out}; {len(samples)} held-out samples in {out / 'samples'}", flush=True)
    return 0


def _train_worker(rank: int, a: argparse.Namespace, spell: dict[str, list[int]], voices: list[Voice], bank: WordBank,
                  ids: dict[str, int], t_data: float, rendezvous: str | None) -> None:
    from voxtral_rt.mel import log_mel
    from voxtral_rt.model import VoxtralRealtime

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)  # same initial weights in every process
    world = a.procs
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    log = print if rank == 0 else (lambda *x, **k: None)
    words = sorted(spell)
    gram = Sentences(words)
    L, D = a.left_pad, REAL_AUDIO.default_delay_tokens
    bos, pad = ids["bos"], ids["pad"]
    args = demo_args(a.vocab_size, a.enc_dim, a.enc_layers, a.enc_hidden, a.enc_theta, a.dec_dim, a.dec_layers,
                     a.dec_hidden, a.dec_theta)
    model = VoxtralRealtime(args)
    init_weights(model, args)
    model.setup_caches(1, 1)
    init_mels = []
    for j in range(16):  # statistics for the conv-stem init (a data stream of its own)
        audio, *_ = utterance(np.random.default_rng([a.seed, 999_999, j]), gram, bank, voices, 1)
        init_mels.append(log_mel(torch.from_numpy(audio), args.encoder)[None])
    init_conv_stem(model, init_mels)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[model] {n_params / 1e6:.2f} M parameters; {world} process(es) x {a.threads} thread(s)", flush=True)
    # Training-only head (not part of the checkpoint): word identity from the audio embeddings.
    aux = torch.nn.Linear(args.dim, len(words) + 1)
    word_index = {w: i for i, w in enumerate(words)}
    params = list(model.named_parameters()) + [("aux." + n, p) for n, p in aux.named_parameters()]
    plist = [p for _, p in params]
    decay = [p for n, p in params if p.dim() >= 2]
    no_decay = [p for n, p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-8)
    model.train()
    t_train = time.time()
    ema = None
    mix = np.array([float(x) for x in a.mix.split(",")])
    mix /= mix.sum()
    synths = Synths()
    fvoices = flite_voices(False)
    ema_kind = {k: None for k in KINDS}
    for step in range(a.steps):
        rng = np.random.default_rng([a.seed, step, rank])  # each process its own stream
        kind = KINDS[int(rng.choice(len(KINDS), p=mix))]
        n_sent = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
        if kind == "words":
            audio, ends, _, _ = utterance(rng, gram, bank, voices, n_sent, a.max_warp)
        else:
            audio, ends, _, _ = connected_utterance(rng, gram, synths, voices if kind == "espeak" else fvoices,
                                                    n_sent, a.max_warp)
        alpha = float(np.exp(rng.uniform(-a.vtlp, a.vtlp))) if a.vtlp > 0 and rng.random() < a.vtlp_p else 1.0
        z = stream_tokens(ends, len(audio), spell, L, D, bos, pad)
        T = len(z)
        stream = np.concatenate([np.zeros(L * SPT, np.float32), audio,
                                 np.zeros((-len(audio)) % SPT + (D + 1 + OFFLINE_STREAMING_BUFFER_TOKENS) * SPT,
                                          np.float32)])
        assert len(stream) == T * SPT
        mel = train_log_mel(torch.from_numpy(stream), args.encoder, alpha)[None]  # [1, 128, 8T]
        tok = torch.tensor(z)
        warm = min(1.0, (step + 1) / a.warmup)
        lr = a.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / a.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        model.setup_caches(T, T)  # fresh caches: a new graph each step
        emb = model.encode(mel, torch.tensor([0]))  # [1, T, dim]
        h = model.embed(tok[None, : T - 1]) + emb[:, : T - 1]
        logits = model.decode(h, torch.tensor([0]), torch.tensor([D]), all_logits=True)[0]  # [T-1, V]
        lab = tok[1:]
        sel = slice(L + D, T - 1)
        loss = F.cross_entropy(logits[sel], lab[sel])
        loss_aux = F.cross_entropy(aux(emb[0]), word_labels(ends, T, word_index, L, a.aux_dense))
        total = loss + a.aux_weight * loss_aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        if world > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in plist]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= world
            o = 0
            for p, g in zip(plist, grads):
                p.grad = flat[o : o + g.numel()].view_as(g)
                o += g.numel()
        gn = torch.nn.utils.clip_grad_norm_(plist, a.clip)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        e = ema_kind[kind]
        ema_kind[kind] = loss.item() if e is None else 0.95 * e + 0.05 * loss.item()
        if step % 50 == 0 or step == a.steps - 1:
            with torch.no_grad():
                pred = logits[sel].argmax(-1)
                word = lab[sel] != pad
                acc_w = (pred[word] == lab[sel][word]).float().mean().item() if word.any() else float("nan")
            per_kind = " ".join(f"{k} {v:.3f}" for k, v in ema_kind.items() if v is not None)
            log(f"[train] step {step:5d}  loss {loss.item():.4f}  ema {ema:.4f} ({per_kind})  word-tok acc {acc_w:.3f}  "
                f"aux {loss_aux.item():.3f}  gnorm {gn:.2f}  lr {lr:.2e}  T {T}  {time.time() - t_train:.0f} s", flush=True)
    t_train = time.time() - t_train
    if rank == 0:
        model.eval()
        write_checkpoint(model, args, Path(a.out))
        info = {"steps": a.steps, "procs": world, "seed": a.seed, "lr": a.lr, "threads": a.threads,
                "train_s": round(t_train), "data_s": round(t_data), "params": n_params, "words": len(words),
                "vocab_size": a.vocab_size}
        print(f"[done] {json.dumps(info)}", flush=True)
    if world > 1:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="synthesize data, train, write the checkpoint + held-out samples")
    t.add_argument("--out", default=str(ROOT / "models" / "demo"))
    t.add_argument("--steps", type=int, default=16800)
    t.add_argument("--max-warp", type=float, default=0.15,
                   help="augmentation: play each stream exp(U(-w, w)) times faster (0 = off)")
    t.add_argument("--vtlp", type=float, default=0.1,
                   help="augmentation: warp the spectrum's frequency axis by exp(U(-v, v)) (formants; 0 = off) ...")
    t.add_argument("--vtlp-p", type=float, default=0.5, help="... on this share of the streams")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--vocab-size", type=int, default=2000)
    t.add_argument("--aux-weight", type=float, default=0.5, help="weight of the training-only word-identity loss")
    t.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    t.add_argument("--threads", type=int, default=1, help="torch threads per process")
    t.add_argument("--procs", type=int, default=2, help="data-parallel processes (one stream each per step)")
    t.add_argument("--left-pad", type=int, default=8, help="left-pad tokens (tekken.json audio section)")
    t.add_argument("--aux-dense", type=int, default=1, help="1: word labels on every token of the word (+2 after)")
    for k, v in dict(enc_dim=128, enc_layers=3, enc_hidden=384, enc_theta=1e3, dec_dim=192, dec_layers=2,
                     dec_hidden=512, dec_theta=1e3).items():
        t.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    t.add_argument("--bank-cache", help="pickle file caching the synthesized words between runs (development)")
    t.add_argument("--mix", default="0.3,0.35,0.35",
                   help="share of training streams per kind: words (espeak-ng word by word), espeak, flite (connected)")
    t.set_defaults(fn=cmd_train)
    sm = sub.add_parser("samples", help="(re)write only the bundled held-out samples OUT/samples")
    sm.add_argument("--out", default=str(ROOT / "models" / "demo"))
    sm.add_argument("--seed", type=int, default=0, help="the training seed (samples use seed + 1)")
    sm.add_argument("--vocab-size", type=int, default=2000)
    sm.add_argument("--any", action="store_true",
                    help="the first candidates, whether or not OUT's model transcribes them correctly")
    sm.set_defaults(fn=cmd_samples)
    e = sub.add_parser("eval-data", help="write held-out utterances (DIR/NNN.wav + NNN.txt)")
    e.add_argument("out_dir")
    e.add_argument("--n", type=int, default=240)
    e.add_argument("--seed", type=int, default=1000)
    e.add_argument("--vocab-size", type=int, default=2000)
    e.add_argument("--kind", choices=KINDS, default="words",
                   help="words: espeak-ng word by word (as the original set); espeak: connected espeak-ng sentences; "
                        "flite: connected flite sentences (held-out speaker rms)")
    e.add_argument("--unseen-accents", action="store_true",
                   help="held-out espeak accents too (en-us-nyc, en-gb-x-gbcwmd), not only held-out variants/speeds/pitches")
    e.set_defaults(fn=cmd_eval_data)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
