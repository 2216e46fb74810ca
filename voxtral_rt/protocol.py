"""The streaming transcription protocol (mistral-common / vLLM), one code path for offline and live audio.

stream = zeros(L tokens) ++ audio ++ (at flush) zeros(alignment + D + 1 + B tokens), B the right-pad buffer
prompt = [BOS] + [STREAMING_PAD] * (L + D); decoder input at position p = tok_emb(token_p) + audio_emb[p];
every generated token is fed back. Offline transcription is `feed(all); flush()`.

The session talks to the model only through an `Engine` (engine.py: eager PyTorch or a .pte), which also gives it
its protocol numbers (`StreamParams`). Its state fields are named like the C++ runner's so the two can be compared
step by step, and it times its own model calls (`SessionStats`, the C++ names).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .config import ConfigError
from .engine import Engine, StreamParams
from .tokenizer import Tekken
from .transcript import DEFAULT_PAUSE_MS, Segment, TokenFeeder, TranscriptBuilder


def offline_padded_audio(audio: np.ndarray, p: StreamParams) -> np.ndarray:
    """The whole stream for a finished clip: left pad ++ audio ++ alignment + right pad (mistral-common OFFLINE)."""
    spt = p.samples_per_token
    align = (-len(audio)) % spt
    return np.concatenate(
        [np.zeros(p.left_pad_tokens * spt, np.float32), audio.astype(np.float32),
         np.zeros(align + p.right_pad_tokens * spt, np.float32)]
    )


class DraftPolicy:
    """How many positions each decoder call runs: the known one plus guessed `[STREAMING_PAD]`s.

    A call over k positions whose audio embeddings exist feeds the known token at the first and PAD at the
    others; position i's guess was right iff the argmax at i - 1 is PAD, so the call yields 1 + (number of
    leading PADs among its first k - 1 argmaxes) tokens, exactly the greedy ones (docs/design.md, "Multi-position
    decoding"). Whether k > 1 pays depends on the machine (a call of k rows costs between 1x and kx one row) and on
    the PAD share, so with `adaptive` the policy measures: the wall time of calls of each candidate k (EMA), and
    the PAD share of the generated tokens (EMA); it picks the k with the most expected tokens per second,
    E[tokens | k] = (1 - p^k) / (1 - p) for PAD share p, and re-measures each candidate now and then. k = 1 is a
    candidate, so it never plans slower than one position per call. Without `adaptive` it always takes
    min(max_positions, available). C++ twin: runner/src/draft.h."""

    REMEASURE_EVERY = 64  # calls between re-measuring the stalest candidate
    ALPHA = 0.25  # EMA weight of a new observation

    def __init__(self, max_positions: int, adaptive: bool) -> None:
        self.max_positions = max(1, max_positions)
        self.adaptive = adaptive and self.max_positions > 1
        ks, k = [], 1
        while k < self.max_positions:
            ks.append(k)
            k *= 2
        self.candidates = ks + [self.max_positions]
        self.cost_ms: dict[int, float] = {}
        self.last_measured: dict[int, int] = {}
        self.pad_share = 0.5
        self.n_calls = 0

    def expected_tokens(self, k: int) -> float:
        p = min(self.pad_share, 0.999)
        return (1 - p**k) / (1 - p)

    def choose(self, available: int) -> int:
        if not self.adaptive:
            return min(self.max_positions, available)
        fits = [k for k in self.candidates if k <= available]
        if not fits:
            return available  # fewer positions than the smallest candidate above 1: take them all
        unmeasured = [k for k in fits if k not in self.cost_ms]
        if unmeasured:
            return unmeasured[0]
        stalest = min(fits, key=lambda k: self.last_measured[k])
        if self.n_calls - self.last_measured[stalest] > self.REMEASURE_EVERY:
            return stalest
        return max(fits, key=lambda k: self.expected_tokens(k) / self.cost_ms[k])

    def observe(self, k: int, ms: float, tokens: list[int], pad_id: int) -> None:
        self.n_calls += 1
        if k in self.candidates:
            old = self.cost_ms.get(k)
            self.cost_ms[k] = ms if old is None else old + self.ALPHA * (ms - old)
            self.last_measured[k] = self.n_calls
        for t in tokens:
            self.pad_share += 0.05 * ((t == pad_id) - self.pad_share)


@dataclass
class SessionStats:
    """Wall times of one stream's model calls, in ms (C++: SessionStats, the same names)."""

    preprocess_ms: float = 0.0  # mel
    encoder_ms: float = 0.0  # audio_encoder
    decoder_ms: float = 0.0  # token_embedding + text_decoder (prefill and steps)
    step_ms: list[float] = field(default_factory=list)  # each generation call after the prompt prefill (1..k positions)
    feed_ms: list[float] = field(default_factory=list)  # each feed() call (mel + encoder + decoder work it triggered)


@dataclass
class StreamingSession:
    """One audio stream: feed 16 kHz mono float PCM in any chunk sizes, then flush(). Greedy decoding.

    draft_tokens: most guessed positions per decoder call (0 = one position per call); -1 (default) adapts
    up to the model's max_dec_tokens - 1 (DraftPolicy). Every setting gives the same tokens.
    stop_at_eos: end at the first EOS (files; transformers' generate), or feed it back and go on (live streams,
    as the reference realtime server does). The EOS is kept in token_ids either way."""

    engine: Engine
    params: StreamParams
    draft_tokens: int = -1
    stop_at_eos: bool = True  # False: EOS is fed back like any token and decoding goes on (live streams)
    # --- state (same names as the C++ Session)
    samples_consumed: int = 0  # real audio samples fed so far
    stream_len: int = 0  # samples in the padded stream so far
    buf_start: int = 0  # stream index of buf[0]
    buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    enc_tokens: int = 0  # audio tokens encoded so far
    audio_emb: list = field(default_factory=list)  # embeddings of tokens dec_pos.. (consumed ones are dropped)
    audio_emb_start: int = 0  # position of audio_emb[0]
    dec_pos: int = 0  # next decoder position
    n_total_tokens: int = -1  # known after flush
    flushed: bool = False
    eos: bool = False
    token_ids: list = field(default_factory=list)
    n_decoder_calls: int = 0  # greedy-step calls (the prompt prefill not counted)
    n_decoder_positions: int = 0  # positions those calls ran (accepted + rejected guesses)
    stats: SessionStats = field(default_factory=SessionStats)

    def __post_init__(self) -> None:
        if self.draft_tokens < -1:
            raise ConfigError(f"draft_tokens must be >= -1 (-1 = adaptive), got {self.draft_tokens}")
        self.reset()

    def reset(self) -> None:
        p = self.params
        self.samples_consumed = 0
        self.buf = np.zeros(p.left_pad_tokens * p.samples_per_token, np.float32)
        self.stream_len = len(self.buf)
        self.buf_start = 0
        self.enc_tokens = 0
        self.audio_emb, self.audio_emb_start = [], 0
        self.dec_pos = 0
        self.n_total_tokens = -1
        self.flushed = False
        self.eos = False
        self.token_ids = []
        self.n_decoder_calls = self.n_decoder_positions = 0
        self.stats = SessionStats()
        max_positions = self.engine.max_dec_tokens if self.draft_tokens < 0 else self.draft_tokens + 1
        self.policy = DraftPolicy(min(max_positions, self.engine.max_dec_tokens), adaptive=self.draft_tokens < 0)

    # ---- public API

    def feed(self, pcm: np.ndarray) -> list[int]:
        """Append audio; returns the tokens this made available (possibly none)."""
        if self.flushed:
            raise RuntimeError("feed() after flush(): call reset() to start a new stream")
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if not np.isfinite(pcm).all():
            raise ValueError("audio contains NaN or Inf samples")
        t0 = time.perf_counter()
        self._append(pcm)
        self.samples_consumed += len(pcm)
        out = self._advance()
        self.stats.feed_ms.append(_ms_since(t0))
        return out

    def flush(self) -> list[int]:
        """End of audio: append the right pad and decode to the end. Idempotent."""
        if self.flushed:
            return []
        p = self.params
        align = (-self.samples_consumed) % p.samples_per_token
        self._append(np.zeros(align + p.right_pad_tokens * p.samples_per_token, np.float32))
        self.flushed = True
        self.n_total_tokens = self.stream_len // p.samples_per_token
        return self._advance()

    def token_time_ms(self, i: int) -> float:
        """Delay-corrected audio time of token_ids[i]: fed at position q = len(prompt) + i, it stands for
        audio token q - L - D of the real signal."""
        p = self.params
        return (len(p.prompt) + i - p.left_pad_tokens - p.n_delay) * p.ms_per_token

    # ---- internals

    def _append(self, x: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, x])
        self.stream_len += len(x)

    def _ready_tokens(self) -> int:
        """Tokens whose mel frames are computable from the stream so far."""
        p = self.params
        if self.flushed:
            return self.n_total_tokens
        return max(0, (self.stream_len - p.lookahead_samples) // p.samples_per_token)

    def _window(self, s0: int, n: int) -> np.ndarray:
        """Stream samples [s0, s0 + n), zero outside the stream (the stream starts and ends in silence)."""
        out = np.zeros(n, np.float32)
        lo, hi = max(s0, self.buf_start), min(s0 + n, self.buf_start + len(self.buf))
        if hi > lo:
            out[lo - s0 : hi - s0] = self.buf[lo - self.buf_start : hi - self.buf_start]
        return out

    def _encode_ready(self) -> None:
        p, e = self.params, self.engine
        hop, win, mpt = p.hop_length, p.window_size, p.mel_frames_per_token
        ready = self._ready_tokens()
        while self.enc_tokens < ready:
            k = min(ready - self.enc_tokens, e.max_enc_tokens, e.max_mel_frames // mpt)
            f0, n = self.enc_tokens * mpt, k * mpt
            s0 = f0 * hop - win // 2
            t0 = time.perf_counter()
            mel = e.preprocess(self._window(s0, n * hop + win - hop))
            t1 = time.perf_counter()
            emb = e.encode(mel, self.enc_tokens * mpt // 2)
            self.stats.preprocess_ms += 1000 * (t1 - t0)
            self.stats.encoder_ms += _ms_since(t1)
            self.audio_emb.extend(emb)
            self.enc_tokens += k
            # Samples before the next window's start are never needed again.
            drop = (self.enc_tokens * mpt * hop - win // 2) - self.buf_start
            if drop > 0:
                self.buf = self.buf[drop:]
                self.buf_start += drop

    def _emb(self, pos: int) -> torch.Tensor:
        return self.audio_emb[pos - self.audio_emb_start]

    def _consume_emb(self) -> None:
        drop = self.dec_pos - self.audio_emb_start
        if drop > 0:
            del self.audio_emb[:drop]
            self.audio_emb_start = self.dec_pos

    def _emit(self, logits: torch.Tensor, out: list[int]) -> int:
        if torch.isnan(logits).any():
            raise RuntimeError(f"text_decoder produced NaN logits at position {self.dec_pos - 1}")
        tok = int(torch.argmax(logits))
        self.token_ids.append(tok)
        out.append(tok)
        if tok == self.params.eos_id:
            self.eos = True
        return tok

    @property
    def finished(self) -> bool:
        """Decoding has ended: at a stopping EOS, or flushed and decoded to the generate length (C++:
        Session::finished)."""
        return self.stopped or (self.flushed and self.dec_pos >= self.n_total_tokens - 1)

    @property
    def stopped(self) -> bool:
        """Decoding has ended at an EOS (only with stop_at_eos)."""
        return self.eos and self.stop_at_eos

    def _advance(self) -> list[int]:
        out: list[int] = []
        if self.stopped:
            return out
        self._encode_ready()
        p, e = self.params, self.engine
        prompt = p.prompt
        if self.dec_pos == 0:
            if self.enc_tokens < len(prompt):
                return out
            logits = None
            t0 = time.perf_counter()
            for c0 in range(0, len(prompt), e.max_dec_tokens):
                ids = prompt[c0 : c0 + e.max_dec_tokens]
                h = e.embed(ids) + torch.stack([self._emb(c0 + i) for i in range(len(ids))])
                logits = e.decode(h, c0, p.n_delay)[-1]
            self.stats.decoder_ms += _ms_since(t0)
            self.dec_pos = len(prompt)
            self._consume_emb()
            self._emit(logits, out)
        # Decode while audio embeddings exist; after flush stop one short of the last embedding
        # (transformers' generate length: n_audio_tokens - len(prompt) generated tokens in total).
        limit = self.n_total_tokens - 1 if self.flushed else self.enc_tokens
        while not self.stopped and self.dec_pos < min(limit, self.enc_tokens):
            # k positions: the known token, then guessed PADs; keep the argmaxes up to the first guess that was wrong.
            k = self.policy.choose(min(limit, self.enc_tokens) - self.dec_pos)
            ids = [self.token_ids[-1]] + [p.streaming_pad_id] * (k - 1)
            t0 = time.perf_counter()
            h = e.embed(ids) + torch.stack([self._emb(self.dec_pos + i) for i in range(k)])
            logits = e.decode(h, self.dec_pos, p.n_delay)
            ms = _ms_since(t0)
            self.stats.decoder_ms += ms
            self.stats.step_ms.append(ms)
            self.n_decoder_calls += 1
            self.n_decoder_positions += k
            accepted = []
            for i in range(k):
                self.dec_pos += 1
                tok = self._emit(logits[i], out)
                accepted.append(tok)
                if self.stopped or tok != p.streaming_pad_id:
                    break  # the next position's input was a PAD guess: wrong unless this token is PAD
            self._consume_emb()
            self.policy.observe(k, ms, accepted, p.streaming_pad_id)
        return out


def _ms_since(t0: float) -> float:
    return 1000 * (time.perf_counter() - t0)


def transcribe(engine: Engine, tok: Tekken, audio: np.ndarray, delay_ms: float | None = None, chunk_samples: int = 0,
               draft_tokens: int = -1, stop_at_eos: bool = True, segment_pause_ms: float = DEFAULT_PAUSE_MS,
               on_delta: Callable[[str, float], None] | None = None,
               on_segment: Callable[[Segment], None] | None = None) -> dict:
    """Transcribe a whole clip (chunk_samples > 0 feeds it in chunks, as a live stream would).

    Words and segments are built as the tokens come (voxtral_rt/transcript.py), as in the C++ Session:
    `on_delta(text, time_ms)` gets each token's released text (when non-empty), `on_segment` each finished segment
    (before the delta of the token that finished it); `segments` in the result holds them as dicts."""
    if len(audio) == 0:
        raise ConfigError("audio is empty (0 samples)")
    params = engine.stream_params(tok, delay_ms)
    s = StreamingSession(engine, params, draft_tokens=draft_tokens, stop_at_eos=stop_at_eos)
    builder = TranscriptBuilder(segment_pause_ms, params.ms_per_token, on_segment=on_segment)
    feeder = TokenFeeder(tok, builder)

    def emit(new: list[int]) -> None:
        first = len(s.token_ids) - len(new)
        for k in range(len(new)):
            # The stream's last token also releases a dangling partial character (C++ Stream::emit).
            t_ms = s.token_time_ms(first + k)
            text = feeder.push(new[k], t_ms, last=s.finished and k == len(new) - 1)
            if text and on_delta is not None:
                on_delta(text, t_ms)

    step = chunk_samples if chunk_samples > 0 else len(audio)
    for i in range(0, len(audio), step):
        emit(s.feed(audio[i : i + step]))
    emit(s.flush())
    if s.finished:
        builder.finish()
    return {
        "text": tok.decode(s.token_ids),
        "token_ids": s.token_ids,
        "token_times_ms": [s.token_time_ms(i) for i in range(len(s.token_ids))],
        "segments": [seg.to_dict() for seg in builder.segments()],
        "delay_ms": params.n_delay * params.ms_per_token,
        "n_audio_tokens": s.n_total_tokens,
        "n_samples": s.samples_consumed,
        "eos": s.eos,
        "finished": s.finished,
    }
