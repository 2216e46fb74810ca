"""Checkpoint loading: Mistral-native (params.json + consolidated.safetensors) or Hugging Face
(config.json + model.safetensors[.index.json]) -> a state dict in the internal names of design.md.

Loading is strict (every expected tensor present with its shape, nothing unused) and memory-lean:
safetensors' `safe_open` memory-maps the file (private, copy-on-write), so a native bf16 checkpoint
becomes model parameters without any copy. Only tensors that must change (HF q/k RoPE permutation,
dtype casts) are copied, and the file pages they were copied from are handed back to the kernel.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .config import ModelArgs

NATIVE_PREFIX = "mm_streams_embeddings.embedding_module."
MISTRAL_CONFIG, MISTRAL_WEIGHTS = "params.json", "consolidated.safetensors"
HF_CONFIG, HF_WEIGHTS, HF_INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match its config (message names file and tensor)."""


# ----------------------------------------------------------------------------- expected tensors


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model, internal names -> shape, in the native file's logical order."""
    e = args.encoder
    s: dict[str, tuple[int, ...]] = {}
    enc_q = e.n_heads * e.head_dim  # encoder has no GQA: k/v are as wide as q (2048 for the 4B, not 1280)
    c = "whisper_encoder.conv_layers"
    s[f"{c}.0.conv.weight"] = (e.dim, e.num_mel_bins, 3)
    s[f"{c}.0.conv.bias"] = (e.dim,)
    s[f"{c}.1.conv.weight"] = (e.dim, e.dim, 3)
    s[f"{c}.1.conv.bias"] = (e.dim,)
    b = e.use_biases
    for i in range(e.n_layers):
        p = f"whisper_encoder.transformer.layers.{i}"
        s[f"{p}.attention_norm.weight"] = (e.dim,)
        s[f"{p}.attention.wq.weight"] = (enc_q, e.dim)
        if b:
            s[f"{p}.attention.wq.bias"] = (enc_q,)
        s[f"{p}.attention.wk.weight"] = (enc_q, e.dim)  # wk never has a bias
        s[f"{p}.attention.wv.weight"] = (enc_q, e.dim)
        if b:
            s[f"{p}.attention.wv.bias"] = (enc_q,)
        s[f"{p}.attention.wo.weight"] = (e.dim, enc_q)
        if b:
            s[f"{p}.attention.wo.bias"] = (e.dim,)
        s[f"{p}.ffn_norm.weight"] = (e.dim,)
        s[f"{p}.feed_forward.w1.weight"] = (e.hidden_dim, e.dim)
        s[f"{p}.feed_forward.w2.weight"] = (e.dim, e.hidden_dim)
        if b:
            s[f"{p}.feed_forward.w2.bias"] = (e.dim,)
        s[f"{p}.feed_forward.w3.weight"] = (e.hidden_dim, e.dim)
    s["whisper_encoder.transformer.norm.weight"] = (e.dim,)
    s["audio_language_projection.0.weight"] = (args.dim, e.dim * e.downsample_factor)
    s["audio_language_projection.2.weight"] = (args.dim, args.dim)
    s["tok_embeddings.weight"] = (args.vocab_size, args.dim)
    q, kv = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
    for i in range(args.n_layers):
        p = f"layers.{i}"
        s[f"{p}.attention_norm.weight"] = (args.dim,)
        s[f"{p}.attention.wq.weight"] = (q, args.dim)
        s[f"{p}.attention.wk.weight"] = (kv, args.dim)
        s[f"{p}.attention.wv.weight"] = (kv, args.dim)
        s[f"{p}.attention.wo.weight"] = (args.dim, q)
        s[f"{p}.ffn_norm.weight"] = (args.dim,)
        s[f"{p}.ada_rms_norm_t_cond.0.weight"] = (args.ada_t_cond_dim, args.dim)
        s[f"{p}.ada_rms_norm_t_cond.2.weight"] = (args.dim, args.ada_t_cond_dim)
        s[f"{p}.feed_forward.w1.weight"] = (args.hidden_dim, args.dim)
        s[f"{p}.feed_forward.w2.weight"] = (args.dim, args.hidden_dim)
        s[f"{p}.feed_forward.w3.weight"] = (args.hidden_dim, args.dim)
    s["norm.weight"] = (args.dim,)
    return s


def param_count(args: ModelArgs) -> int:
    n = 0
    for shape in expected_shapes(args).values():
        k = 1
        for d in shape:
            k *= d
        n += k
    return n


# ----------------------------------------------------------------------------- name mappings


def internal_to_native(name: str) -> str:
    if name.startswith(("whisper_encoder.", "audio_language_projection.", "tok_embeddings.")):
        return NATIVE_PREFIX + name
    return name


def _layer_rules(ours: str, hf: str, attention_norm: str, ffn_norm: str, params: str) -> list[tuple[str, str]]:
    """The rules of one kind of transformer layer (the encoder's and the decoder's have the same layout): `ours`
    matches the layer prefix, its group 1 the layer index; `params` the parameter names its linears have (a group)."""
    return [
        (ours + r"attention\.w([qkvo])\." + params, hf + r"self_attn.\2_proj.\3"),
        (ours + r"attention_norm\.weight", hf + attention_norm + ".weight"),
        (ours + r"ffn_norm\.weight", hf + ffn_norm + ".weight"),
    ] + [(ours + rf"feed_forward\.{w}\." + params, hf + rf"mlp.{proj}_proj.\2")
         for w, proj in (("w1", "gate"), ("w3", "up"), ("w2", "down"))]


# (internal regex, HF on-disk template) -- docs/model.md "Checkpoint formats" / transformers' converter, read in reverse.
_HF_RULES: list[tuple[str, str]] = [
    (r"whisper_encoder\.conv_layers\.0\.conv\.(weight|bias)", r"audio_tower.embedder.conv1.\1"),
    (r"whisper_encoder\.conv_layers\.1\.conv\.(weight|bias)", r"audio_tower.embedder.conv2.\1"),
    *_layer_rules(r"whisper_encoder\.transformer\.layers\.(\d+)\.", r"audio_tower.layers.\1.",
                  "self_attn_layer_norm", "final_layer_norm", r"(weight|bias)"),
    (r"whisper_encoder\.transformer\.norm\.weight", r"audio_tower.norm.weight"),
    (r"audio_language_projection\.0\.weight", r"multi_modal_projector.linear_1.weight"),
    (r"audio_language_projection\.2\.weight", r"multi_modal_projector.linear_2.weight"),
    (r"tok_embeddings\.weight", r"language_model.model.embed_tokens.weight"),
    *_layer_rules(r"layers\.(\d+)\.", r"language_model.model.layers.\1.",
                  "input_layernorm", "post_attention_layernorm", r"(weight)"),
    (r"layers\.(\d+)\.ada_rms_norm_t_cond\.0\.weight", r"language_model.model.layers.\1.ada_rms_norm.linear1.weight"),
    (r"layers\.(\d+)\.ada_rms_norm_t_cond\.2\.weight", r"language_model.model.layers.\1.ada_rms_norm.linear2.weight"),
    (r"norm\.weight", r"language_model.model.norm.weight"),
]
_HF_RULES_C = [(re.compile(a), b) for a, b in _HF_RULES]
HF_LM_HEAD = "language_model.lm_head.weight"


def internal_to_hf(name: str) -> str:
    """Internal name -> the legacy on-disk name transformers' save_pretrained writes."""
    for pat, rep in _HF_RULES_C:
        if pat.fullmatch(name):
            return pat.sub(rep, name)
    raise KeyError(f"no Hugging Face name for tensor '{name}'")


def normalize_hf_name(name: str) -> str:
    """Accept transformers' in-memory names too: `model.audio_tower.*`, `model.language_model.*`
    (no inner `.model.`), `lm_head.weight` -> the on-disk legacy names."""
    if name == "lm_head.weight":
        return HF_LM_HEAD
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model.") :]
    if name.startswith(("model.audio_tower.", "model.multi_modal_projector.")):
        return name[len("model.") :]
    return name


def rope_heads(args: ModelArgs) -> dict[str, int]:
    """Internal names of the tensors whose rows the HF converter permutes -> number of heads to permute by."""
    e = args.encoder
    out: dict[str, int] = {}
    for i in range(e.n_layers):
        p = f"whisper_encoder.transformer.layers.{i}.attention"
        out[f"{p}.wq.weight"] = e.n_heads
        if e.use_biases:
            out[f"{p}.wq.bias"] = e.n_heads
        out[f"{p}.wk.weight"] = e.n_heads
    for i in range(args.n_layers):
        out[f"layers.{i}.attention.wq.weight"] = args.n_heads
        out[f"layers.{i}.attention.wk.weight"] = args.n_kv_heads  # GQA: k has fewer heads
    return out


def rope_native_to_hf(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Native interleaved rows (2j, 2j+1 per head) -> HF rotate-half rows (j, j + head_dim/2).
    Same as the HF converter's permute_for_rope: [H, hd/2, 2, ...] -> swap the middle axes."""
    rest = t.shape[1:]
    return t.reshape(n_heads, -1, 2, *rest).transpose(1, 2).reshape(t.shape)


def rope_hf_to_native(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of rope_native_to_hf: HF row j -> native row 2j, HF row hd/2 + j -> native row 2j+1."""
    rest = t.shape[1:]
    return t.reshape(n_heads, 2, -1, *rest).transpose(1, 2).reshape(t.shape)


# ----------------------------------------------------------------------------- format detection / config


def detect_format(model_dir: str | Path) -> str:
    """'mistral' if params.json + consolidated.safetensors exist, else 'hf' if config.json + model.safetensors
    (or its sharded index) exist. Mistral's own repos ship both; the native one needs no permutation, so it wins."""
    d = Path(model_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: model directory not found")
    if (d / MISTRAL_CONFIG).is_file() and (d / MISTRAL_WEIGHTS).is_file():
        return "mistral"
    if (d / HF_CONFIG).is_file() and ((d / HF_WEIGHTS).is_file() or (d / HF_INDEX).is_file()):
        return "hf"
    raise CheckpointError(
        f"{d}: no checkpoint found: expected {MISTRAL_CONFIG} + {MISTRAL_WEIGHTS} (Mistral format) or "
        f"{HF_CONFIG} + {HF_WEIGHTS} / {HF_INDEX} (Hugging Face format)"
    )


def read_args(model_dir: str | Path, fmt: str | None = None) -> ModelArgs:
    d = Path(model_dir)
    fmt = fmt or detect_format(d)
    if fmt == "mistral":
        return ModelArgs.from_params_json(d / MISTRAL_CONFIG)
    if fmt == "hf":
        return ModelArgs.from_hf_config(d / HF_CONFIG)
    raise ValueError(f"unknown checkpoint format {fmt!r}")


# ----------------------------------------------------------------------------- safetensors access


def _open(path: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as e:  # SafetensorError: bad header, truncated data, ...
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from None


@dataclass
class _Source:
    """Where one on-disk tensor lives."""

    file: Path
    handle: object  # safe_open handle (keeps the mmap alive while reading)


def _sources_single(path: Path) -> dict[str, _Source]:
    h = _open(path)
    return {k: _Source(path, h) for k in h.keys()}


def _sources_sharded(index_path: Path) -> dict[str, _Source]:
    try:
        with open(index_path, "rb") as f:
            idx = json.load(f)
        weight_map = idx["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except FileNotFoundError:
        raise CheckpointError(f"{index_path}: file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: not a valid safetensors index (needs a 'weight_map' object): {e}") from None
    handles: dict[str, object] = {}
    out: dict[str, _Source] = {}
    for name, shard in weight_map.items():
        if shard not in handles:
            handles[shard] = _open(index_path.parent / shard)
        out[name] = _Source(index_path.parent / shard, handles[shard])
    # Every shard's contents must agree with the index (a stale index would silently drop tensors).
    for shard, h in handles.items():
        for k in h.keys():
            if weight_map.get(k) != shard:
                raise CheckpointError(f"{index_path.parent / shard}: tensor '{k}' is not listed for this shard in {index_path.name}")
    return out


def _get(src: _Source, name: str) -> torch.Tensor:
    try:
        return src.handle.get_tensor(name)
    except Exception as e:
        raise CheckpointError(f"{src.file}: cannot read tensor '{name}' ({e})") from None


_PAGE = mmap.PAGESIZE
try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _libc = None


def release_pages(t: torch.Tensor) -> None:
    """Drop the resident file pages under an mmap-backed tensor we no longer need (MADV_DONTNEED).
    Safe on the private, never-written mapping: pages would simply be re-read from the file.
    Keeps peak RSS ~ one copy of the weights when tensors are permuted or cast."""
    if _libc is None or t.numel() == 0 or not t.is_contiguous():
        return
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    a = (start + _PAGE - 1) // _PAGE * _PAGE  # only pages entirely inside this tensor
    b = end // _PAGE * _PAGE
    if b > a:
        _libc.madvise(ctypes.c_void_p(a), ctypes.c_size_t(b - a), 4)  # 4 = MADV_DONTNEED


# ----------------------------------------------------------------------------- loading


def _weights_of(model_dir: Path, fmt: str) -> tuple[dict[str, _Source], str]:
    if fmt == "mistral":
        p = model_dir / MISTRAL_WEIGHTS
        return _sources_single(p), str(p)
    if (model_dir / HF_WEIGHTS).is_file():
        p = model_dir / HF_WEIGHTS
        return _sources_single(p), str(p)
    p = model_dir / HF_INDEX
    return _sources_sharded(p), str(p)


def _check_shape(name: str, shape: tuple[int, ...], t: torch.Tensor, where: str) -> None:
    if tuple(t.shape) != shape:
        raise CheckpointError(f"{where}: tensor '{name}' has shape mismatch: expected {list(shape)}, got {list(t.shape)}")
    if not t.is_floating_point():
        raise CheckpointError(f"{where}: tensor '{name}' has non-float dtype {t.dtype}")


def iter_state_dict(
    model_dir: str | Path, args: ModelArgs, fmt: str | None = None, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (internal name, tensor) for every expected tensor after strict checks of the whole key set.
    Tensors are mmap views (no copy) unless permuted (HF q/k) or cast to `dtype`."""
    d = Path(model_dir)
    fmt = fmt or detect_format(d)
    shapes = expected_shapes(args)
    sources, where = _weights_of(d, fmt)

    # Map each on-disk name to an internal name; anything unmapped is unexpected.
    if fmt == "mistral":
        to_disk = {n: internal_to_native(n) for n in shapes}
        disk_names = {k: k for k in sources}
    else:
        to_disk = {n: internal_to_hf(n) for n in shapes}
        disk_names = {}
        for k in sources:
            nk = normalize_hf_name(k)
            if nk in disk_names:
                raise CheckpointError(f"{where}: tensor '{k}' appears twice (as '{disk_names[nk]}' and '{k}')")
            disk_names[nk] = k
    wanted = set(to_disk.values())
    lm_head = None
    for nk, k in disk_names.items():
        if nk in wanted:
            continue
        if fmt == "hf" and nk == HF_LM_HEAD:
            lm_head = k  # tied: allowed, but must equal the embedding (checked below)
            continue
        raise CheckpointError(f"{where}: unexpected tensor '{k}' (not part of this model's config)")
    for n, disk in to_disk.items():
        if disk not in disk_names:
            raise CheckpointError(f"{where}: missing tensor '{disk}' (internal '{n}')")

    perm = rope_heads(args) if fmt == "hf" else {}
    for n, shape in shapes.items():
        k = disk_names[to_disk[n]]
        t = _get(sources[k], k)
        _check_shape(k, shape, t, where)
        out = t
        if n in perm:
            out = rope_hf_to_native(t, perm[n]).contiguous()
        if dtype is not None and out.dtype != dtype:
            out = out.to(dtype)
        if n == "tok_embeddings.weight" and lm_head is not None:
            _check_lm_head(sources[lm_head], lm_head, t, shape, where)
        if out.untyped_storage().data_ptr() != t.untyped_storage().data_ptr():  # out is a copy: t is dead
            release_pages(t)
        yield n, out


def _check_lm_head(src: _Source, name: str, emb: torch.Tensor, shape: tuple[int, ...], where: str) -> None:
    head = _get(src, name)
    _check_shape(name, shape, head, where)
    if head.untyped_storage().data_ptr() == emb.untyped_storage().data_ptr() and head.data_ptr() == emb.data_ptr():
        return  # the very same bytes
    rows = max(1, (64 << 20) // max(1, shape[1] * head.element_size()))  # compare ~64 MB at a time
    for r in range(0, shape[0], rows):
        if not torch.equal(head[r : r + rows], emb[r : r + rows].to(head.dtype)):
            raise CheckpointError(f"{where}: tensor '{name}' differs from the token embedding, but the LM head is tied")
        release_pages(head[r : r + rows])
    release_pages(head)


def load_state_dict(
    model_dir: str | Path, args: ModelArgs, fmt: str | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Internal-name state dict, strict. bf16 stays bf16 (mmap views) unless `dtype` is given."""
    return dict(iter_state_dict(model_dir, args, fmt=fmt, dtype=dtype))


def load_model(
    model_dir: str | Path, dtype: torch.dtype = torch.float32, fmt: str | None = None
) -> tuple["torch.nn.Module", ModelArgs]:
    """Build VoxtralRealtime from a checkpoint directory (format auto-detected) without a second copy of
    the weights: the module is created on the meta device and the (mmap-backed) tensors are assigned."""
    from .model import VoxtralRealtime

    d = Path(model_dir)
    fmt = fmt or detect_format(d)
    args = read_args(d, fmt)
    sd = load_state_dict(d, args, fmt=fmt, dtype=dtype)
    with torch.device("meta"):
        model = VoxtralRealtime(args)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:  # the model and expected_shapes disagree: a bug, not a bad file
        raise CheckpointError(f"{d}: checkpoint does not fit VoxtralRealtime: {e}") from None
    if hasattr(model, "init_buffers"):
        model.init_buffers()  # non-persistent buffers were created on meta
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            raise CheckpointError(f"{d}: '{name}' was not initialised by the checkpoint or init_buffers()")
    model.requires_grad_(False)
    model.eval()
    return model, args


def file_bytes(model_dir: str | Path, fmt: str | None = None) -> int:
    """Total size of the weight files of a checkpoint."""
    d = Path(model_dir)
    fmt = fmt or detect_format(d)
    if fmt == "mistral":
        return (d / MISTRAL_WEIGHTS).stat().st_size
    if (d / HF_WEIGHTS).is_file():
        return (d / HF_WEIGHTS).stat().st_size
    with open(d / HF_INDEX, "rb") as f:
        shards = set(json.load(f)["weight_map"].values())
    return sum((d / s).stat().st_size for s in shards)
