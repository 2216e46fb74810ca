"""The model behind a streaming session (protocol.py). An `Engine` runs the four methods of the .pte interface
(docs/design.md, ".pte interface") and gives the session its protocol numbers (`StreamParams`):

* `EagerEngine`: the PyTorch model; the mel front-end from the model config, the rest from tekken.json.
* `PteEngine`: an exported .pte through the ExecuTorch Python runtime; everything from the .pte's metadata, as the
  C++ runner reads it (runner/src/metadata.cpp). The file's layout is voxtral_rt.pte (the contract the exporter
  writes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .config import OFFLINE_STREAMING_BUFFER_TOKENS, AudioArgs, EncoderArgs, delay_tokens
from .mel import LogMel
from .model import ring_mask
from .pte import FORMAT_VERSION, METADATA_KEYS, METHODS
from .tokenizer import Tekken


@dataclass
class StreamParams:
    """The protocol numbers of one stream: its layout, the prompt's ids and the delay (C++: ModelInfo + the
    session's delay)."""

    samples_per_token: int
    hop_length: int
    window_size: int
    left_pad_tokens: int
    n_delay: int
    bos_id: int
    eos_id: int
    streaming_pad_id: int
    ms_per_token: float
    right_pad_buffer_tokens: int = OFFLINE_STREAMING_BUFFER_TOKENS

    @property
    def mel_frames_per_token(self) -> int:
        return self.samples_per_token // self.hop_length

    @property
    def prompt(self) -> list[int]:
        return [self.bos_id] + [self.streaming_pad_id] * (self.left_pad_tokens + self.n_delay)

    @property
    def right_pad_tokens(self) -> int:
        return self.n_delay + 1 + self.right_pad_buffer_tokens

    @property
    def lookahead_samples(self) -> int:
        """Samples past a token's end its last mel frame needs (40 for 16 kHz: frame centre + n_fft/2 - hop)."""
        return self.window_size // 2 - self.hop_length

    @classmethod
    def from_tokenizer(cls, tok: Tekken, delay_ms: float | None = None,
                       front_end: EncoderArgs | AudioArgs | None = None) -> "StreamParams":
        """tekken.json's protocol (left pad, special ids; delay_ms None: its transcription_delay_ms) over a mel
        front-end: the model's (EncoderArgs), by default tekken.json's own `audio` section."""
        a = tok.audio
        f = front_end or a
        ms_per_token = 1000.0 / f.frame_rate
        n_delay = delay_tokens(a.transcription_delay_ms if delay_ms is None else delay_ms, ms_per_token)
        return cls(
            samples_per_token=f.samples_per_token, hop_length=f.hop_length, window_size=f.window_size,
            left_pad_tokens=a.streaming_n_left_pad_tokens, n_delay=n_delay, bos_id=tok.bos_id, eos_id=tok.eos_id,
            streaming_pad_id=tok.streaming_pad_id, ms_per_token=ms_per_token,
        )


class Engine(Protocol):
    """The four model methods (the same as the .pte's), their chunk limits, and the stream parameters."""

    max_mel_frames: int
    max_enc_tokens: int
    max_dec_tokens: int

    def stream_params(self, tok: Tekken, delay_ms: float | None = None) -> StreamParams: ...  # None: the model's delay

    def preprocess(self, window: np.ndarray) -> torch.Tensor: ...  # stream samples -> mel [1, n_mels, n]

    def encode(self, mel: torch.Tensor, enc_pos: int) -> torch.Tensor: ...  # -> [k, dim]

    def embed(self, ids: list[int]) -> torch.Tensor: ...  # -> [S, dim]

    def decode(self, h: torch.Tensor, pos: int, n_delay: int) -> torch.Tensor: ...  # [S, dim] -> logits [S, vocab]


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_engine(model_dir: str | Path | None = None, pte: str | Path | None = None, dtype: str = "fp32") -> Engine:
    """The .pte if `pte` is given (PteEngine), else the checkpoint in model_dir (EagerEngine; dtype a DTYPES key)."""
    if pte:
        return PteEngine(pte)
    from .checkpoint import load_model

    model, _ = load_model(model_dir, dtype=DTYPES[dtype])
    return EagerEngine(model.eval())


# ----------------------------------------------------------------------------- eager


class EagerEngine:
    """Engine over the eager PyTorch model."""

    def __init__(self, model, max_enc_tokens: int = 64, max_dec_tokens: int = 64,
                 cache_dtype: torch.dtype | None = None) -> None:
        """cache_dtype: of the K/V caches (default: the model's; the export's --kv-dtype fp16 is torch.float16)."""
        self.model = model
        self.max_enc_tokens = max_enc_tokens
        self.max_dec_tokens = max_dec_tokens
        self.max_mel_frames = max_enc_tokens * model.args.encoder.mel_frames_per_token
        self.logmel = LogMel(model.args.encoder)
        model.setup_caches(max_enc_tokens, max_dec_tokens, cache_dtype=cache_dtype)

    def stream_params(self, tok: Tekken, delay_ms: float | None = None) -> StreamParams:
        """The model's mel front-end; left pad, special ids and the default delay from tekken.json."""
        return StreamParams.from_tokenizer(tok, delay_ms, self.model.args.encoder)

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


# ----------------------------------------------------------------------------- .pte


class PteError(ValueError):
    pass


@contextlib.contextmanager
def _without_cpuinfo_chatter():
    """The runtime's threadpool logs five lines of CPU probing ("[cpuinfo_utils.cpp:71] Reading file ...") to
    fd 2 when the first method loads; the Python runtime offers no log hook (the C++ runner routes them, see
    route_executorch_logs). Capture fd 2 for the block and pass on every other line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().splitlines(keepends=True) if not ln.startswith(b"[cpuinfo_utils.cpp:")]
            if kept:
                sys.stderr.flush()
                os.write(2, b"".join(kept))


class PteEngine:
    def __init__(self, path: str | Path, whole_ring: bool = True) -> None:
        """whole_ring: attend the whole KV ring once it is 3/4 valid, as the C++ runner does (model.attended_slots),
        so both make bit-identical calls; False attends only the valid prefix (the path before the runner's alias)."""
        from executorch.runtime import Runtime

        import executorch.kernels.quantized  # noqa: F401  registers quantized_decomposed kernels

        path = Path(path)
        if not path.is_file():
            raise PteError(f"{path}: no such .pte file")
        try:
            self.program = Runtime.get().load_program(str(path))
        except Exception as e:  # the runtime raises RuntimeError with a code
            raise PteError(f"{path}: not a loadable ExecuTorch program ({e})") from None
        names = set(self.program.method_names)
        if "format_version" not in names:
            raise PteError(f"{path}: no 'format_version' method; not a voxtral-rt .pte (re-export with export/export_voxtral_rt.py)")
        self.meta = {"format_version": self._const("format_version")}
        if self.meta["format_version"] != FORMAT_VERSION:
            raise PteError(f"{path}: format_version {self.meta['format_version']} is not supported "
                           f"(this build reads version {FORMAT_VERSION}); re-export the model")
        missing = [m for m in METHODS + METADATA_KEYS if m not in names]
        if missing:
            raise PteError(f"{path}: missing method(s) {', '.join(missing)}; re-export the model")
        self.meta = {k: self._const(k) for k in METADATA_KEYS}
        # Load every method up front: they share the cache buffers.
        with _without_cpuinfo_chatter():
            self.methods = {m: self.program.load_method(m) for m in METHODS}
        self.whole_ring = whole_ring
        self.max_mel_frames = self.meta["max_mel_frames"]
        self.max_enc_tokens = self.meta["max_enc_tokens"]
        self.max_dec_tokens = self.meta["max_dec_tokens"]

    def _const(self, name: str) -> int:
        try:
            out = self.program.load_method(name).execute([])
            return int(out[0]) if not isinstance(out[0], torch.Tensor) else int(out[0].item())
        except Exception as e:
            raise PteError(f"metadata method '{name}' is not an int constant ({e}); re-export the model") from None

    def check_tokenizer(self, tok: Tekken) -> None:
        """The tokenizer must be the one the model was exported with."""
        m = self.meta
        for name, ours in [("vocab_size", tok.vocab_size), ("bos_id", tok.bos_id), ("eos_id", tok.eos_id),
                           ("streaming_pad_id", tok.streaming_pad_id), ("num_special_tokens", tok.num_special_tokens),
                           ("sample_rate", tok.audio.sampling_rate), ("left_pad_tokens", tok.audio.streaming_n_left_pad_tokens)]:
            if m[name] != ours:
                raise PteError(f"tokenizer does not match the model: {name} is {ours} in tekken.json but {m[name]} in the .pte")

    def stream_params(self, tok: Tekken, delay_ms: float | None = None) -> StreamParams:
        """All from the metadata (the tokenizer only decodes text; check_tokenizer compares the two); delay_ms
        None: the export's --delay-ms (default_delay_tokens)."""
        m = self.meta
        ms_per_token = float(m["ms_per_token"])
        n_delay = m["default_delay_tokens"] if delay_ms is None else delay_tokens(delay_ms, ms_per_token)
        return StreamParams(
            samples_per_token=m["samples_per_token"], hop_length=m["hop_length"], window_size=m["window_size"],
            left_pad_tokens=m["left_pad_tokens"], n_delay=n_delay, bos_id=m["bos_id"], eos_id=m["eos_id"],
            streaming_pad_id=m["streaming_pad_id"], ms_per_token=ms_per_token,
            right_pad_buffer_tokens=m["right_pad_buffer_tokens"],
        )

    def preprocess(self, window: np.ndarray) -> torch.Tensor:
        return self.methods["preprocessor"].execute([torch.from_numpy(np.ascontiguousarray(window, np.float32))])[0].clone()

    def encode(self, mel: torch.Tensor, enc_pos: int) -> torch.Tensor:
        m = self.meta
        n_frames = mel.shape[2] // m["mel_frames_per_token"] * m["enc_frames_per_token"]
        mask = ring_mask(enc_pos, n_frames, m["enc_sliding_window"], m["enc_cache_slots"], self.whole_ring)
        return self.methods["audio_encoder"].execute([mel.contiguous(), torch.tensor([enc_pos]), mask])[0][0].clone()

    def embed(self, ids: list[int]) -> torch.Tensor:
        return self.methods["token_embedding"].execute([torch.tensor([ids])])[0][0].clone()

    def decode(self, h: torch.Tensor, pos: int, n_delay: int) -> torch.Tensor:
        """h [S, dim] at positions pos..pos+S-1 -> logits [S, vocab] of every position."""
        mask = ring_mask(pos, h.shape[0], self.meta["dec_sliding_window"], self.meta["dec_cache_slots"], self.whole_ring)
        out = self.methods["text_decoder"].execute([h[None].contiguous(), torch.tensor([pos]), torch.tensor([n_delay]),
                                                     mask])
        return out[0][0].clone()
