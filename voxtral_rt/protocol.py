"""The streaming transcription protocol (mistral-common / vLLM), one code path for offline and live audio.

stream = zeros(L tokens) ++ audio ++ (at flush) zeros(alignment + D + 1 + 10 tokens)
prompt = [BOS] + [STREAMING_PAD] * (L + D); decoder input at position p = tok_emb(token_p) + audio_emb[p];
every generated token is fed back. Offline transcription is `feed(all); flush()`.

The session talks to the model only through an `Engine` (eager PyTorch here, the .pte in `engine.py`), and
its state fields are named like the C++ runner's so the two can be compared step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import time

import numpy as np
import torch

from .config import AudioArgs, ConfigError
from .tokenizer import Tekken
from .transcript import DEFAULT_PAUSE_MS, Segment, TokenFeeder, TranscriptBuilder


class Engine(Protocol):
    """The four model methods (the same as the .pte's), plus chunk limits."""

    max_mel_frames: int
    max_enc_tokens: int
    max_dec_tokens: int
    default_delay_ms: float | None  # the model's own default (a .pte's export-time --delay-ms); None: tekken.json's

    def preprocess(self, window: np.ndarray) -> torch.Tensor: ...  # stream samples -> mel [1, n_mels, n]

    def encode(self, mel: torch.Tensor, enc_pos: int) -> torch.Tensor: ...  # -> [k, dim]

    def embed(self, ids: list[int]) -> torch.Tensor: ...  # -> [S, dim]

    def decode(self, h: torch.Tensor, pos: int, n_delay: int) -> torch.Tensor: ...  # [S, dim] -> logits [S, vocab]


class EagerEngine:
    """Engine over the eager PyTorch model."""

    def __init__(self, model, max_enc_tokens: int = 64, max_dec_tokens: int = 64,
                 cache_dtype: torch.dtype | None = None) -> None:
        """cache_dtype: of the K/V caches (default: the model's; the export's --kv-dtype fp16 is torch.float16)."""
        from .mel import LogMel

        self.model = model
        self.default_delay_ms = None  # tekken.json's transcription_delay_ms
        self.max_enc_tokens = max_enc_tokens
        self.max_dec_tokens = max_dec_tokens
        self.max_mel_frames = max_enc_tokens * model.args.encoder.mel_frames_per_token
        self.logmel = LogMel(model.args.encoder)
        model.setup_caches(max_enc_tokens, max_dec_tokens, cache_dtype=cache_dtype)

    @torch.no_grad()
    def preprocess(self, window: np.ndarray) -> torch.Tensor:
        return self.logmel(torch.from_numpy(window))

    @torch.no_grad()
    def encode(self, mel: torch.Tensor, enc_pos: int) -> torch.Tensor:
        return self.model.encode(mel, torch.tensor([enc_pos]))[0]

    @torch.no_grad()
    def embed(self, ids: list[int]) -> torch.Tensor:
        return self.model.embed(torch.tensor([ids]))[0]

    @torch.no_grad()
    def decode(self, h: torch.Tensor, pos: int, n_delay: int) -> torch.Tensor:
        return self.model.decode(h[None], torch.tensor([pos]), torch.tensor([n_delay]), all_logits=True)[0]


@dataclass
class StreamParams:
    """Protocol numbers, from tekken.json (`audio` section + special ids) and the model's mel settings."""

    samples_per_token: int
    hop_length: int
    window_size: int
    left_pad_tokens: int
    n_delay: int
    bos_id: int
    eos_id: int
    streaming_pad_id: int
    ms_per_token: float
    buffer_tokens: int = 10  # mistral-common OFFLINE_STREAMING_BUFFER_TOKENS

    @property
    def mel_frames_per_token(self) -> int:
        return self.samples_per_token // self.hop_length

    @property
    def prompt(self) -> list[int]:
        return [self.bos_id] + [self.streaming_pad_id] * (self.left_pad_tokens + self.n_delay)

    @property
    def right_pad_tokens(self) -> int:
        return self.n_delay + 1 + self.buffer_tokens

    @property
    def lookahead_samples(self) -> int:
        """Samples past a token's end its last mel frame needs (40 for 16 kHz: frame centre + n_fft/2 - hop)."""
        return self.window_size // 2 - self.hop_length

    @classmethod
    def from_tokenizer(cls, tok: Tekken, delay_ms: float | None = None, engine: Engine | None = None) -> "StreamParams":
        """delay_ms None: the engine's default (a .pte carries the one it was exported with), else tekken.json's."""
        a: AudioArgs = tok.audio
        if delay_ms is None and engine is not None:
            delay_ms = engine.default_delay_ms
        n_delay = a.delay_tokens(a.transcription_delay_ms if delay_ms is None else delay_ms)
        return cls(
            samples_per_token=a.samples_per_token, hop_length=a.hop_length, window_size=a.window_size,
            left_pad_tokens=a.streaming_n_left_pad_tokens, n_delay=n_delay, bos_id=tok.bos_id, eos_id=tok.eos_id,
            streaming_pad_id=tok.streaming_pad_id, ms_per_token=a.ms_per_token,
        )


def offline_padded_audio(audio: np.ndarray, p: StreamParams) -> np.ndarray:
    """The whole stream for a finished clip: left pad ++ audio ++ alignment + right pad (mistral-common OFFLINE)."""
    spt = p.samples_per_token
    align = (-len(audio)) % spt
    return np.concatenate(
        [np.zeros(p.left_pad_tokens * spt, np.float32), audio.astype(np.float32),
         np.zeros(align + p.right_pad_tokens * spt, np.float32)]
    )


DRAFT_TOKENS_HELP = ("most guessed [STREAMING_PAD] positions per decoder call, verified exactly (the tokens are the same "
                     "for every value): 0 = one position per call; N = up to N guesses; -1 (default) = adapt to this "
                     "machine and the audio (measures call costs and the PAD share)")


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
        self._append(pcm)
        self.samples_consumed += len(pcm)
        return self._advance()

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
            mel = e.preprocess(self._window(s0, n * hop + win - hop))
            emb = e.encode(mel, self.enc_tokens * mpt // 2)
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
            for c0 in range(0, len(prompt), e.max_dec_tokens):
                ids = prompt[c0 : c0 + e.max_dec_tokens]
                h = e.embed(ids) + torch.stack([self._emb(c0 + i) for i in range(len(ids))])
                logits = e.decode(h, c0, p.n_delay)[-1]
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
            ms = (time.perf_counter() - t0) * 1000
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
    params = StreamParams.from_tokenizer(tok, delay_ms, engine)
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
