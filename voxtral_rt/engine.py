"""Run an exported .pte through the ExecuTorch Python runtime, as an Engine for protocol.StreamingSession.
The file's layout is voxtral_rt.pte (the contract the exporter writes)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .model import ring_mask
from .pte import FORMAT_VERSION, METADATA_KEYS, METHODS
from .tokenizer import Tekken


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
        ms_per_token = 1000 * self.meta["samples_per_token"] / self.meta["sample_rate"]
        self.default_delay_ms = self.meta["default_delay_tokens"] * ms_per_token  # export's --delay-ms

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
