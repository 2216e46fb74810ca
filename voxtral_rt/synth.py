"""Synthetic checkpoints in the real on-disk formats (random weights, fixed seed).

Mistral: params.json + consolidated.safetensors (bf16, native names) + tekken.json.
HF:      config.json + generation_config.json + preprocessor_config.json + model.safetensors (legacy names,
         q/k rows permuted to rotate-half as transformers' converter does) + tekken.json.

Weights are generated tensor by tensor (row chunks for big ones) and streamed into the file by a small
safetensors writer, so the 4B preset (8.9 GB) needs well under 2 GB of RAM. Each tensor has its own
generator seeded from (seed, name), so both formats hold the same weights for the same seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from .checkpoint import (
    HF_CONFIG,
    HF_WEIGHTS,
    MISTRAL_CONFIG,
    MISTRAL_WEIGHTS,
    release_pages,
    expected_shapes,
    internal_to_hf,
    internal_to_native,
    iter_state_dict,
    read_args,
    rope_heads,
    rope_native_to_hf,
)
from .config import PRESETS, REAL_AUDIO, AudioArgs, ModelArgs

_ST_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
_CHUNK_ELEMS = 1 << 24  # rows are generated ~16M values (32 MB of bf16) at a time


# ----------------------------------------------------------------------------- streaming safetensors writer


class SafetensorsWriter:
    """Write a safetensors file whose tensors arrive one after another, possibly in pieces.

    Layout: u64 little-endian header size N, N bytes of JSON ({name: {dtype, shape, data_offsets}},
    optional "__metadata__"), space-padded so the data starts 8-byte aligned, then the raw bytes in
    header order. Written to `path + ".tmp"` and renamed on close, so an interrupted run leaves no
    plausible-looking file behind.
    """

    def __init__(
        self, path: str | Path, entries: list[tuple[str, tuple[int, ...], torch.dtype]], metadata: dict[str, str] | None = None
    ) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = metadata
        self._plan: list[tuple[str, int, torch.dtype]] = []  # (name, nbytes, dtype) in file order
        off = 0
        for name, shape, dtype in entries:
            n = torch.Size(shape).numel() * torch.empty(0, dtype=dtype).element_size()
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [off, off + n]}
            self._plan.append((name, n, dtype))
            off += n
        self.data_bytes = off
        hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
        hb += b" " * (-len(hb) % 8)
        self._f = open(self.tmp, "wb")
        self._f.write(len(hb).to_bytes(8, "little"))
        self._f.write(hb)
        self._i = 0  # index into _plan of the tensor being written
        self._left = self._plan[0][1] if self._plan else 0
        self.written = 0

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append the next piece (whole rows, in order) of tensor `name`."""
        want, _, dtype = self._plan[self._i]
        if name != want:
            raise ValueError(f"safetensors writer: expected tensor '{want}', got '{name}'")
        if chunk.dtype != dtype:
            raise ValueError(f"safetensors writer: tensor '{name}' must be {dtype}, got {chunk.dtype}")
        buf = chunk.detach().contiguous().view(torch.uint8).reshape(-1).numpy()
        if buf.nbytes > self._left:
            raise ValueError(f"safetensors writer: tensor '{name}' gets more data than its shape allows")
        self._f.write(memoryview(buf))
        self._left -= buf.nbytes
        self.written += buf.nbytes
        if self._left == 0:
            self._i += 1
            self._left = self._plan[self._i][1] if self._i < len(self._plan) else 0

    def close(self) -> None:
        if self._i != len(self._plan):
            self.abort()
            raise ValueError(f"safetensors writer: tensor '{self._plan[self._i][0]}' was not fully written")
        self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- random weights


def _generator(seed: int, name: str) -> torch.Generator:
    # Per-tensor stream: independent of write order, file format and the other tensors.
    return torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (1 << 63))


def _std(name: str, shape: tuple[int, ...]) -> float:
    if name == "tok_embeddings.weight":
        # Small next to the ~unit-variance audio embedding: with a tied head, a unit-variance embedding makes
        # "repeat the fed-back token" win every step (greedy output collapses to [STREAMING_PAD]).
        return 0.1
    fan_in = 1
    for d in shape[1:]:
        fan_in *= d  # linear [out, in]; conv [out, in, k]
    if "ada_rms_norm_t_cond" in name:
        return fan_in**-0.5
    # Gain 2 puts the random network in its chaotic regime: with unit gain, random features of a log-mel
    # (large DC component) make every audio embedding nearly the same vector and greedy output repeats one
    # token; gain 2 amplifies the frame-to-frame differences. Pre-norm blocks keep activations finite.
    return 2.0 * fan_in**-0.5


def tensor_chunks(name: str, shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.bfloat16) -> Iterator[torch.Tensor]:
    """The synthetic values of internal tensor `name`, as consecutive row blocks.

    Norm weights are 1 + 0.1*N and biases 0.1*N (not 1/0 as at init) so that a mapping or permutation
    bug shows up in parity tests; matrices are N(0, 1/fan_in).
    """
    g = _generator(seed, name)
    if len(shape) == 1:
        x = torch.randn(shape, generator=g)
        if name.endswith("norm.weight"):
            x = 1.0 + 0.1 * x
        else:  # bias
            x = 0.1 * x
        yield x.to(dtype)
        return
    row = torch.Size(shape[1:]).numel()
    rows = max(1, _CHUNK_ELEMS // row)
    std = _std(name, shape)
    for r in range(0, shape[0], rows):
        n = min(rows, shape[0] - r)
        # normal_ straight into the target dtype: ~5x faster than fp32 + cast, which matters for 4.4 B values.
        yield torch.empty((n, *shape[1:]), dtype=dtype).normal_(0.0, std, generator=g)


def init_tensor(name: str, shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    parts = list(tensor_chunks(name, shape, seed, dtype))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def synth_state_dict(args: ModelArgs, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Internal-name state dict with exactly the values synth() writes (tiny models only: all in RAM)."""
    return {n: init_tensor(n, s, seed, dtype) for n, s in expected_shapes(args).items()}


# ----------------------------------------------------------------------------- writing checkpoints


class _Progress:
    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.t0 = time.monotonic()
        self.next = 0.0

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        frac = done / max(1, self.total)
        if frac >= self.next or done == self.total:
            dt = time.monotonic() - self.t0
            print(f"[synth] {self.label}: {100 * frac:5.1f}%  {done / 1e9:.2f}/{self.total / 1e9:.2f} GB  {dt:.0f} s",
                  file=sys.stderr, flush=True)
            self.next = frac + 0.05


def _write_tensors(
    path: Path,
    items: list[tuple[str, str, tuple[int, ...]]],  # (disk name, internal name, shape), in file order
    chunks: Callable[[str, tuple[int, ...]], Iterable[torch.Tensor]],
    dtype: torch.dtype,
    metadata: dict[str, str] | None,
    progress: bool,
) -> None:
    w = SafetensorsWriter(path, [(d, s, dtype) for d, _, s in items], metadata)
    prog = _Progress(w.data_bytes, path.name, progress)
    try:
        for disk, internal, shape in items:
            for c in chunks(internal, shape):
                w.write(disk, c.to(dtype))
                prog(w.written)
        w.close()
    except BaseException:
        w.abort()
        raise


def _random_chunks(seed: int, dtype: torch.dtype, hf: bool, args: ModelArgs) -> Callable[[str, tuple[int, ...]], Iterable[torch.Tensor]]:
    perm = rope_heads(args) if hf else {}

    def chunks(name: str, shape: tuple[int, ...]) -> Iterable[torch.Tensor]:
        if name in perm:  # q/k are at most 4096x3072: permute the whole tensor at once
            return [rope_native_to_hf(init_tensor(name, shape, seed, dtype), perm[name]).contiguous()]
        return tensor_chunks(name, shape, seed, dtype)

    return chunks


def write_mistral(out_dir: Path, args: ModelArgs, chunks: Callable, dtype: torch.dtype, progress: bool) -> None:
    with open(out_dir / MISTRAL_CONFIG, "w") as f:
        json.dump(args.to_params_json(), f, indent=2)
    back = ModelArgs.from_params_json(out_dir / MISTRAL_CONFIG)
    if back != args:  # to_params_json must describe the model exactly
        raise AssertionError(f"params.json round trip changed the config: {back} != {args}")
    items = sorted((internal_to_native(n), n, s) for n, s in expected_shapes(args).items())
    _write_tensors(out_dir / MISTRAL_WEIGHTS, items, chunks, dtype, None, progress)


def hf_config(args: ModelArgs, audio: AudioArgs, dtype: torch.dtype = torch.bfloat16):
    """transformers' VoxtralRealtimeConfig for `args`, as the HF converter would build it."""
    from transformers import VoxtralRealtimeConfig

    e = args.encoder
    if not e.use_biases:
        raise ValueError("the Hugging Face format cannot hold an encoder without biases (transformers always has them)")
    if args.ada_t_cond_dim != 32:
        raise ValueError("the Hugging Face format hard-codes the delay-conditioning width 32")
    # A text_config dict is merged over the 4B defaults, so pass every field; the encoder's rope_theta
    # default is 1e4, so pass 1e6 explicitly.
    text = dict(
        vocab_size=args.vocab_size, hidden_size=args.dim, intermediate_size=args.hidden_dim,
        num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads, num_key_value_heads=args.n_kv_heads,
        head_dim=args.head_dim, max_position_embeddings=131072, rms_norm_eps=args.norm_eps, use_cache=True,
        rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta}, tie_word_embeddings=True,
        sliding_window=args.sliding_window,
    )
    audio_cfg = dict(
        vocab_size=args.vocab_size, hidden_size=e.dim, intermediate_size=e.hidden_dim, num_hidden_layers=e.n_layers,
        num_attention_heads=e.n_heads, head_dim=e.head_dim, num_mel_bins=e.num_mel_bins, rms_norm_eps=e.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": e.rope_theta}, sliding_window=e.sliding_window,
    )
    cfg = VoxtralRealtimeConfig(
        audio_config=audio_cfg, text_config=text, projector_hidden_act="gelu",
        audio_length_per_tok=e.mel_frames_per_token, default_num_delay_tokens=audio.default_delay_tokens,
        downsample_factor=e.downsample_factor,
    )
    cfg.architectures = ["VoxtralRealtimeForConditionalGeneration"]
    cfg.dtype = dtype  # save_pretrained of a model records its dtype; so do we
    return cfg


def write_hf(out_dir: Path, args: ModelArgs, audio: AudioArgs, chunks: Callable, dtype: torch.dtype, progress: bool) -> None:
    """config.json / generation_config.json / preprocessor_config.json + model.safetensors. `chunks` yields the
    HF-layout (already permuted) values of each internal tensor."""
    from transformers import GenerationConfig, VoxtralRealtimeFeatureExtractor

    e = args.encoder
    cfg = hf_config(args, audio, dtype)
    cfg.save_pretrained(out_dir)
    gen = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=11)  # as the HF converter sets it
    gen.save_pretrained(out_dir)
    fe = VoxtralRealtimeFeatureExtractor(
        feature_size=e.num_mel_bins, sampling_rate=e.sampling_rate, hop_length=e.hop_length, n_fft=e.window_size,
        win_length=e.window_size, global_log_mel_max=e.global_log_mel_max,
    )
    fe.save_pretrained(out_dir)
    back = ModelArgs.from_hf_config(out_dir / HF_CONFIG)
    if back != args:
        raise AssertionError(f"config.json round trip changed the config: {back} != {args}")
    items = sorted((internal_to_hf(n), n, s) for n, s in expected_shapes(args).items())
    _write_tensors(out_dir / HF_WEIGHTS, items, chunks, dtype, {"format": "pt"}, progress)


def synth(
    out_dir: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    fmt: str = "mistral",
    dtype: torch.dtype = torch.bfloat16,
    *,
    args: ModelArgs | None = None,
    audio: AudioArgs | None = None,
    progress: bool | None = None,
) -> Path:
    """Write a complete random checkpoint directory in the real format `fmt` ("mistral" | "hf")."""
    from .tokenizer import write_tekken_json

    if args is None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        args = PRESETS[preset]
    audio = audio or REAL_AUDIO
    audio.check_matches(args.encoder, "synth")
    if fmt not in ("mistral", "hf"):
        raise ValueError(f"unknown format {fmt!r}; choose 'mistral' or 'hf'")
    if progress is None:
        progress = args.dim >= 1024  # only the big preset takes long enough to report
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chunks = _random_chunks(seed, dtype, fmt == "hf", args)
    if fmt == "mistral":
        write_mistral(out, args, chunks, dtype, progress)
    else:
        write_hf(out, args, audio, chunks, dtype, progress)
    write_tekken_json(out / "tekken.json", args.vocab_size, audio)
    return out


def convert_to_hf(src_dir: str | Path, out_dir: str | Path, progress: bool = False) -> Path:
    """Mistral-native checkpoint -> HF format (what transformers' converter does), streaming from the mmap."""
    src, out = Path(src_dir), Path(out_dir)
    args = read_args(src, "mistral")
    tekken = src / "tekken.json"
    audio = AudioArgs.from_tekken_json(tekken) if tekken.is_file() else REAL_AUDIO
    out.mkdir(parents=True, exist_ok=True)
    perm = rope_heads(args)
    sd = dict(iter_state_dict(src, args, fmt="mistral"))  # mmap views, no copy
    dtypes = {t.dtype for t in sd.values()}
    if len(dtypes) != 1:
        raise ValueError(f"{src}: mixed dtypes {dtypes} are not supported by convert_to_hf")

    def chunks(name: str, shape: tuple[int, ...]) -> Iterable[torch.Tensor]:
        t = sd[name]
        yield rope_native_to_hf(t, perm[name]).contiguous() if name in perm else t
        release_pages(t)  # written: hand its file pages back

    write_hf(out, args, audio, chunks, dtypes.pop(), progress)
    if tekken.is_file():
        (out / "tekken.json").write_bytes(tekken.read_bytes())
    return out


def main_synth(argv: list[str] | None = None) -> int:
    """`python -m voxtral_rt synth OUT_DIR --preset tiny|4b [--seed N] [--format mistral|hf]`."""
    ap = argparse.ArgumentParser(prog="voxtral_rt synth", description="Write a random checkpoint in a real on-disk format.")
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", dest="fmt", choices=["mistral", "hf"], default="mistral")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    out = synth(a.out_dir, preset=a.preset, seed=a.seed, fmt=a.fmt, progress=True if a.preset == "4b" else None)
    print(f"[synth] wrote {a.preset} ({a.fmt}) to {out} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main_synth())
