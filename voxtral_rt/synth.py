"""Synthetic checkpoints in the real on-disk formats (random weights, fixed seed).

Mistral: params.json + consolidated.safetensors (bf16, native names) + tekken.json.
HF:      config.json + generation_config.json + preprocessor_config.json + model.safetensors (legacy names,
         q/k rows permuted to rotate-half as transformers' converter does) + tekken.json.

Weights are generated tensor by tensor (row chunks for big ones) and streamed into the file by a small
safetensors writer, so the 4B preset (8.9 GB) needs well under 2 GB of RAM. Each tensor has its own
generator seeded from (seed, name), so both formats hold the same weights for the same seed.

The plain random model emits [STREAMING_PAD] at ~0 % of steps, where a real one emits it at ~75 % on speech
(and 100 % in silence). `--pad-share P` turns a few rows of the random weights into an energy gate (`PadGate`)
so the model emits PAD on the quietest share P of the tokens of speech-like audio (`voxtral_rt.speechlike`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import zlib
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
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
from .config import PRESETS, REAL_AUDIO, AudioArgs, EncoderArgs, ModelArgs

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


def synth_state_dict(args: ModelArgs, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                     pad_share: float | None = None) -> dict[str, torch.Tensor]:
    """Internal-name state dict with exactly the values synth() writes (tiny models only: all in RAM)."""
    chunks = _random_chunks(seed, dtype, False, args, PadGate.for_share(args, pad_share) if pad_share is not None else None)
    return {n: torch.cat(list(chunks(n, s))) for n, s in expected_shapes(args).items()}


# ----------------------------------------------------------------------------- --pad-share: a PAD gate on audio energy

# The reference signal --pad-share is calibrated on (voxtral_rt.speechlike; benchmarks use other seeds).
PAD_GATE_REF_SECONDS = 600.0
PAD_GATE_REF_SEED = 1000


def pad_gate_energy(audio: np.ndarray, enc: EncoderArgs) -> np.ndarray:
    """Per audio token of `audio` (16 kHz float PCM, one value per 80 ms token): the energy the PAD gate compares
    with its threshold, in normalised log-mel units (silence = global_log_mel_max - 8 mapped to -0.625).

    It mirrors the gate's path through the conv stem: conv1 output frame i averages the mel energy (mean over
    bins) of frames i-2..i; conv2 frame j reads conv1 frames 2j-1..2j+1, and token t owns conv2 frames
    4t..4t+3. A token is gated (PAD) when any of its conv1 frames is below the threshold, so its energy is the
    minimum over conv1 frames 8t-1..8t+7.
    """
    from .mel import log_mel

    spt = enc.hop_length * enc.mel_frames_per_token
    n_tok = len(audio) // spt
    if n_tok == 0:
        return np.zeros(0)
    e = log_mel(torch.from_numpy(np.asarray(audio, np.float32)), enc).mean(0).double().numpy()
    e = np.concatenate([[e[0], e[0]], e])  # conv1 frame i: mean over mel frames i-2..i
    e3 = (e[:-2] + e[1:-1] + e[2:]) / 3.0
    e3 = np.concatenate([[e3[0]], e3, np.full(8, e3[-1])])  # frame 8t-1 .. 8t+7 for every token
    return np.array([e3[8 * t : 8 * t + 9].min() for t in range(n_tok)])


@functools.lru_cache(maxsize=4)
def _reference_energies(enc: EncoderArgs) -> np.ndarray:
    from .speechlike import speech_with_pauses

    return np.sort(pad_gate_energy(speech_with_pauses(PAD_GATE_REF_SECONDS, enc.sampling_rate, PAD_GATE_REF_SEED), enc))


def pad_gate_threshold(share: float, enc: EncoderArgs) -> float:
    """The energy below which a share `share` of the reference signal's tokens lie (their P-quantile)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"--pad-share must be in (0, 1), got {share}")
    return float(np.quantile(_reference_energies(enc), share))


@dataclass(frozen=True)
class PadGate:
    """Weight edits that make a random checkpoint emit [STREAMING_PAD] on quiet audio.

    A voice-activity detector built from a handful of rows of the random weights; every other value is the plain
    random init. Channel indices are fixed (encoder channel `enc_ch`, projector hidden unit `proj_unit`, decoder
    channel `dec_ch`):

    1. conv1 row enc_ch averages the 3 x n_mels log-mel inputs with weight -G/(3 n_mels), bias G*tau: after
       GELU it is ~G*relu(tau - energy), zero on speech and huge (G = 32 * 3 n_mels) on quiet frames.
    2. conv2 row enc_ch averages conv1 channel enc_ch over its 3 taps and reads nothing else; no other conv2
       row reads that channel.
    3. Every encoder layer's wo and w2 row enc_ch (and bias) are zero, so the residual stream carries the
       gate value unchanged. On a quiet frame it dominates the final RMSNorm: the normalised frame is ~+-w*e_k
       (saturated); on speech the channel is ~0.
    4. Projector: hidden unit proj_unit sums channel enc_ch of the token's 4 frames (weight `proj_gain`,
       nothing else); its output column writes only decoder channel dec_ch (weight `out_gain`).
    5. The [STREAMING_PAD] row of the tied embedding / LM head gets `pad_weight` at dec_ch.
    6. The EOS row is zero: its logit is then 0 while the largest of the other random logits is always
       positive, so the model never stops a stream early. (The plain random model emits EOS with chance
       ~1/vocab per step; at the tiny preset's 3000 ids that ended test streams after a few tokens.)

    On a gated token the decoder's residual stream is dominated by channel dec_ch, so the final norm saturates
    to ~w*e_c and the logits to w*sqrt(dim)*E[:, c]: PAD wins because pad_weight (1.0) exceeds every other row's
    random value there (N(0, 0.1^2): max ~0.5 over 131072 rows). On speech the channel is ~0 and decoding is
    that of the plain random model (PAD ~never). Which tokens are gated is a function of the audio only, so the
    PAD runs follow pauses and syllable dips as on real speech, and the share on a given signal is the share of
    its tokens below tau (`pad_gate_energy`). `tau` is the P-quantile of that energy over the reference signal
    (speech_with_pauses, 600 s, seed 1000). No model is run to calibrate.

    Why it holds at 4b without running it: each stage is ~0 or saturated, and what the gate must beat is the
    random residual stream, whose per-channel RMS depends on depth but not on width (N(0, 4/fan_in) weights
    and pre-norm blocks: measured at 2 layers 10.4 / 9.5 (encoder / decoder) for widths 128 / 256 and 10.2 /
    9.4 for the real 1280 / 3072; at the real depths 32 / 26, width 128 / 256: <= 45 / 54). A token flips to
    PAD when dec_ch reaches ~0.5 x the rest of the decoder's final hidden state (sqrt(dim) x RMS), i.e. at 4b
    ~0.5 * 55 * 54 = 1.5e3 against 16384 * w * sqrt(1280) ~ 6e5 for one saturated frame, so a frame counts as
    soon as its encoder channel reaches 0.25 % of the encoder's rest (sqrt(1280) x 45): 4 units, which conv1's
    gain G reaches 0.001 below tau. The share then moves by < 0.5 point. Measured with the eager model on
    other-seed speech-like audio, the gate's PAD decisions equal the energy rule on 100 % of tokens at
    P = 0.5 / 0.75 / 0.9 for the tiny preset, the real depths and vocab at width 128 / 256, and the real
    widths and vocab at 2 layers; shares 0.49-0.50 / 0.74-0.76 / 0.89-0.90.
    """

    args: ModelArgs
    tau: float
    pad_id: int = 32  # [STREAMING_PAD] in the tekken.json synth writes (and in the real one)
    eos_id: int = 2
    enc_ch: int = 0
    proj_unit: int = 0
    dec_ch: int = 0
    proj_gain: float = 1.0
    out_gain: float = 16384.0
    pad_weight: float = 1.0

    @classmethod
    def for_share(cls, args: ModelArgs, share: float) -> "PadGate":
        return cls(args, pad_gate_threshold(share, args.encoder))

    @property
    def conv_gain(self) -> float:
        return 32.0 * 3 * self.args.encoder.num_mel_bins  # conv1 weights are then exactly -32 in bf16

    def touches(self, name: str) -> bool:
        return name.startswith(("whisper_encoder.conv_layers.", "audio_language_projection.", "tok_embeddings.")) or (
            name.startswith("whisper_encoder.transformer.layers.")
            and name.endswith(("attention.wo.weight", "attention.wo.bias", "feed_forward.w2.weight", "feed_forward.w2.bias")))

    def edit_chunks(self, name: str, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        r0 = 0
        for c in chunks:
            self.edit(name, r0, c)
            r0 += c.shape[0]
            yield c

    def edit(self, name: str, r0: int, c: torch.Tensor) -> None:
        """Edit in place the block of rows r0.. of internal tensor `name`."""
        e, k = self.args.encoder, self.enc_ch

        def row(i: int) -> int | None:
            return i - r0 if r0 <= i < r0 + c.shape[0] else None

        if name == "whisper_encoder.conv_layers.0.conv.weight":
            if (i := row(k)) is not None:
                c[i] = -self.conv_gain / (3 * e.num_mel_bins)
        elif name == "whisper_encoder.conv_layers.0.conv.bias":
            c[k] = self.conv_gain * self.tau
        elif name == "whisper_encoder.conv_layers.1.conv.weight":
            c[:, k, :] = 0.0
            if (i := row(k)) is not None:
                c[i] = 0.0
                c[i, k, :] = 1.0 / 3.0
        elif name == "whisper_encoder.conv_layers.1.conv.bias":
            c[k] = 0.0
        elif name.startswith("whisper_encoder.transformer.layers."):
            if (i := row(k)) is not None:
                c[i] = 0.0
        elif name == "audio_language_projection.0.weight":
            if (i := row(self.proj_unit)) is not None:
                c[i] = 0.0
                c[i, k :: e.dim] = self.proj_gain  # channel k of each of the token's downsample_factor frames
        elif name == "audio_language_projection.2.weight":
            c[:, self.proj_unit] = 0.0
            if (i := row(self.dec_ch)) is not None:
                c[i, self.proj_unit] = self.out_gain
        elif name == "tok_embeddings.weight":
            if (i := row(self.pad_id)) is not None:
                c[i, self.dec_ch] = self.pad_weight
            if (i := row(self.eos_id)) is not None:
                c[i] = 0.0


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


def _random_chunks(seed: int, dtype: torch.dtype, hf: bool, args: ModelArgs,
                   gate: "PadGate | None" = None) -> Callable[[str, tuple[int, ...]], Iterable[torch.Tensor]]:
    perm = rope_heads(args) if hf else {}

    def chunks(name: str, shape: tuple[int, ...]) -> Iterable[torch.Tensor]:
        if name in perm:  # q/k are at most 4096x3072: permute the whole tensor at once (never gated)
            return [rope_native_to_hf(init_tensor(name, shape, seed, dtype), perm[name]).contiguous()]
        it = tensor_chunks(name, shape, seed, dtype)
        return gate.edit_chunks(name, it) if gate is not None and gate.touches(name) else it

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
    pad_share: float | None = None,
) -> Path:
    """Write a complete random checkpoint directory in the real format `fmt` ("mistral" | "hf").

    pad_share None: the plain random model (it emits [STREAMING_PAD] at ~0 % of steps). A share P in (0, 1)
    edits a few rows of the random weights into an energy gate (`PadGate`) so that the model emits PAD on the
    quietest share P of the tokens of speech-like audio (`voxtral_rt.speechlike`): in pauses and syllable dips,
    in bursts as on real speech. Same files, names, shapes and dtypes; only those values differ.
    """
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
    gate = PadGate.for_share(args, pad_share) if pad_share is not None else None
    chunks = _random_chunks(seed, dtype, fmt == "hf", args, gate)
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


PAD_SHARE_HELP = (
    "make the random model emit [STREAMING_PAD] on about this share (0 < P < 1) of the generated steps on "
    "speech-like audio (voxtral_rt.speechlike: utterances and pauses), as a real model does on speech (~0.75; "
    "silence is all PAD). A few rows of the random weights become an energy gate: tokens quieter than the "
    "P-quantile of the reference signal's token energies get PAD, in pauses and between syllables, so PAD comes "
    "in bursts as on real speech; louder tokens decode as the plain random model (PAD ~never), and EOS is "
    "disabled. The decision is saturated at every stage, so it holds for any preset (tiny and 4b) without "
    "calibration. On other audio the share follows its loudness (louder: less PAD): measure and report it. "
    "Same files, names, shapes and dtypes. Default: the plain random model (PAD at ~0 %% of steps)")


def add_synth_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                    help="tiny: test shapes; 4b: the real shapes (8.9 GB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", dest="fmt", choices=["mistral", "hf"], default="mistral",
                    help="mistral: params.json + consolidated.safetensors; hf: config.json + model.safetensors")
    ap.add_argument("--pad-share", type=float, default=None, metavar="P", help=PAD_SHARE_HELP)
