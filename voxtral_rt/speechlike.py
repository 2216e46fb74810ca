"""A deterministic speech-like test signal: utterances separated by pauses.

Real speech alternates voiced syllables, short dips between them and pauses between utterances; a streaming
model emits `[STREAMING_PAD]` through the pauses and the dips and text tokens on the syllables. This signal has
the same structure so that a synthetic model built with `synth --pad-share` (which emits PAD on quiet audio)
gets a realistic, bursty PAD pattern, and so that benchmarks of the live path see realistic silences:

- utterances of 1.5-3.5 s: a harmonic tone (5 harmonics, pitch 100-220 Hz with a slow contour) under a
  syllable envelope of 3.5-4.5 Hz (squared sine: it dips to zero between syllables), peak level ~0.3, plus
  breath noise 26 dB down;
- pauses of 0.3-1.1 s: room noise at about -70 dBFS (+-10 dB, drifting).

About 20 % of the time is pause. The level is the same for every utterance (a speaker at a fixed distance):
with levels varying by +-2 dB between utterances, the share of tokens below a fixed energy varied by 5 points
(std over 60 s clips) instead of 1.6. Everything is drawn from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

import numpy as np


def speech_with_pauses(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """`seconds` of float32 mono audio at `sr` Hz (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    tt = np.arange(n) / sr
    room = 3e-4 * np.exp(1.2 * np.sin(2 * np.pi * 0.13 * tt + rng.uniform(0, 2 * np.pi)))  # drifting room noise
    out = (room * rng.standard_normal(n)).astype(np.float32)
    pos = int(rng.uniform(0.2, 1.0) * sr)  # start with a short pause
    while pos < n:
        m = min(int(rng.uniform(1.5, 3.5) * sr), n - pos)
        t = np.arange(m) / sr
        f0 = rng.uniform(100.0, 220.0)
        pitch = f0 * (1.0 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 2 * np.pi)))
        ph = 2 * np.pi * np.cumsum(pitch) / sr
        voiced = sum(np.sin(k * ph) / k for k in range(1, 6))
        env = np.sin(np.pi * rng.uniform(3.5, 4.5) * t + rng.uniform(0, np.pi)) ** 2  # syllables, dips to 0
        fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # no clicks at the utterance edges
        # Breath noise whose level drifts (+-8 dB): the quiet dips between syllables then differ in energy, as on
        # real speech, instead of all sitting at one noise floor.
        drift = np.exp(0.9 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 2 * np.pi)))
        x = 0.2 * (voiced * env + 0.05 * drift * rng.standard_normal(m)) * fade
        out[pos : pos + m] += x.astype(np.float32)
        pos += m + int(rng.uniform(0.3, 1.1) * sr)
    return out
