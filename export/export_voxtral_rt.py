"""Export Voxtral Realtime to ONE ExecuTorch .pte for XNNPACK (CPU).

Methods (shapes for the real model; all sizes also in the constant methods below):
  preprocessor     f32 [hop*n + win - hop] stream samples   -> f32 [1, 128, n]     log-mel frames, 1 <= n <= max_mel_frames
  audio_encoder    f32 [1, 128, 8k] mel, int64 [1] enc_pos, f32 [4k, L] mask
                                                            -> f32 [1, k, 3072]    audio embeddings, 1 <= k <= max_enc_tokens
  token_embedding  int64 [1, S]                             -> f32 [1, S, 3072]    1 <= S <= max_dec_tokens
  text_decoder     f32 [1, S, 3072], int64 [1] pos, int64 [1] delay_tokens, f32 [S, L] mask
                                                            -> f32 [1, vocab] logits of the last position
The masks are additive (0 / -inf) over the first L = min(end, cache_slots) ring slots (voxtral_rt.model.ring_mask;
the runner computes them). Taking them as inputs makes every attention size an input size, so XNNPACK runs
the attention matmuls and softmax, and attention work follows the valid length, not the capacity.
Conv state and the encoder/decoder KV rings are mutable buffers shared by the methods; position 0 starts a
new stream. Only ops present in the executorch pip wheel's C++ runtime are used (no llama:: custom ops).

Usage:
  python export/export_voxtral_rt.py --model-path DIR --output model.pte \
      --qlinear 8da4w --qlinear-encoder 8da4w --qembedding 8w
See docs/design.md for the protocol the runner follows.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxtral_rt.checkpoint import load_model, release_pages  # noqa: E402
from voxtral_rt.checkpoint import CheckpointError  # noqa: E402
from voxtral_rt.config import ConfigError  # noqa: E402
from voxtral_rt.mel import export_log_mel  # noqa: E402
from voxtral_rt.model import VoxtralRealtime, cast  # noqa: E402
from voxtral_rt.tokenizer import Tekken  # noqa: E402

FORMAT_VERSION = 2  # 2: attention masks are method inputs; cache slot counts in the metadata
QLINEAR = ["8da4w", "8da8w", "4w", "8w", "none"]
QEMBEDDING = ["8w", "4w", "none"]

_T0 = time.time()


def log(msg: str) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"[{time.time() - _T0:7.1f}s peak {rss:5.1f} GB] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- one thin wrapper per method


class AudioEncoder(nn.Module):
    def __init__(self, model: VoxtralRealtime) -> None:
        super().__init__()
        self.model = model  # same submodule name in every wrapper -> same buffer names -> shared state

    def forward(self, mel: torch.Tensor, enc_pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return cast(self.model.encode(mel, enc_pos, mask), torch.float32)


class TokenEmbedding(nn.Module):
    def __init__(self, model: VoxtralRealtime) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return cast(self.model.embed(ids), torch.float32)


class TextDecoder(nn.Module):
    def __init__(self, model: VoxtralRealtime) -> None:
        super().__init__()
        self.model = model

    def forward(self, h: torch.Tensor, pos: torch.Tensor, n_delay: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.decode(h, pos, n_delay, mask=mask)


# ----------------------------------------------------------------------------- quantization


def _linear_config(kind: str, group_size: int):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    g = PerGroup(group_size) if group_size > 0 else PerAxis(0)
    return {
        "8da4w": lambda: Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=g),
        "8da8w": lambda: Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
        "4w": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=g),
        "8w": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
    }[kind]()


def quantize_linears(root: nn.Module, kind: str, group_size: int, what: str, skip: tuple[str, ...] = (),
                     quiet: bool = False) -> None:
    """Quantize every nn.Linear under `root` (one module at a time, so only one fp32 copy is alive)."""
    if kind == "none":
        return
    from torchao.quantization import quantize_

    gs = group_size if kind in ("8da4w", "4w") else 0
    cfg = _linear_config(kind, gs)
    n_done, skipped = 0, []
    for name, mod in list(root.named_modules()):
        if not isinstance(mod, nn.Linear) or any(s in name for s in skip):
            continue
        if gs and mod.in_features % gs:
            skipped.append(f"{name} (in_features {mod.in_features} % {gs})")
            continue
        quantize_(mod, cfg, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
        n_done += 1
    if not quiet:
        log(f"quantized {n_done} {what} linears to {kind}" + (f" (group {gs})" if gs else ""))
    if skipped and not quiet:
        log(f"  left in float (shape not divisible by the group size): {', '.join(skipped[:6])}"
            + (" ..." if len(skipped) > 6 else ""))


def quantize_embedding(model: VoxtralRealtime, kind: str, group_size: int) -> None:
    if kind == "none":
        return
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    if kind == "8w":
        cfg = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    else:
        if model.args.dim % group_size:
            raise ConfigError(f"--qembedding 4w needs dim ({model.args.dim}) divisible by the group size {group_size}")
        cfg = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))
    quantize_(model, cfg, filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    log(f"quantized the token embedding to {kind}")


def to_float32_module_by_module(model: nn.Module) -> None:
    """Cast parameters to fp32 leaf module by leaf module; with an mmapped bf16 checkpoint this keeps the peak
    at one extra layer rather than a second full model copy."""
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.dtype != torch.float32:
                setattr(mod, name, nn.Parameter(p.detach().float(), requires_grad=False))
                # The bf16 source pages (file-backed, counted in RSS) are not needed any more.
                release_pages(p.detach())


# ----------------------------------------------------------------------------- export


def metadata(model: VoxtralRealtime, tok: Tekken, max_enc_tokens: int, max_dec_tokens: int) -> dict[str, int]:
    a, e, au = model.args, model.args.encoder, tok.audio
    return {
        "format_version": FORMAT_VERSION,
        "sample_rate": e.sampling_rate,
        "hop_length": e.hop_length,
        "window_size": e.window_size,
        "num_mel_bins": e.num_mel_bins,
        "samples_per_token": e.samples_per_token,
        "mel_frames_per_token": e.mel_frames_per_token,
        "enc_frames_per_token": e.downsample_factor,
        "dim": a.dim,
        "vocab_size": a.vocab_size,
        "enc_sliding_window": e.sliding_window,
        "dec_sliding_window": a.sliding_window,
        "enc_cache_slots": model.enc_cache_slots,
        "dec_cache_slots": model.dec_cache_slots,
        "max_mel_frames": max_enc_tokens * e.mel_frames_per_token,
        "max_enc_tokens": max_enc_tokens,
        "max_dec_tokens": max_dec_tokens,
        "default_delay_tokens": au.default_delay_tokens,
        "left_pad_tokens": au.streaming_n_left_pad_tokens,
        "right_pad_buffer_tokens": 10,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "streaming_pad_id": tok.streaming_pad_id,
        "streaming_word_id": tok.streaming_word_id,
        "num_special_tokens": tok.num_special_tokens,
        "ms_per_token": int(round(au.ms_per_token)),
    }


def export_programs(model: VoxtralRealtime, max_enc_tokens: int, max_dec_tokens: int) -> dict:
    from torch.export import Dim, export

    e = model.args.encoder
    mpt = e.mel_frames_per_token
    k = Dim("k_tokens", min=1, max=max_enc_tokens)
    s = Dim("s_positions", min=1, max=max_dec_tokens)
    l_enc = Dim("l_enc_slots", min=1, max=model.enc_cache_slots)
    l_dec = Dim("l_dec_slots", min=1, max=model.dec_cache_slots)
    progs = {}
    with torch.no_grad():
        log("torch.export preprocessor")
        progs["preprocessor"] = export_log_mel(e, max_enc_tokens * mpt)  # handles the n = 1 edge case
        log("torch.export audio_encoder")
        k_ex = min(2, max_enc_tokens)
        fpt = e.downsample_factor  # encoder frames per token
        progs["audio_encoder"] = export(
            AudioEncoder(model), (torch.zeros(1, e.num_mel_bins, mpt * k_ex), torch.tensor([fpt]),
                                  model.enc_mask(fpt, fpt * k_ex)),
            dynamic_shapes=({2: mpt * k}, None, {0: fpt * k, 1: l_enc}), strict=True)
        log("torch.export token_embedding")
        s_ex = min(2, max_dec_tokens)
        progs["token_embedding"] = export(
            TokenEmbedding(model), (torch.zeros(1, s_ex, dtype=torch.long),), dynamic_shapes=({1: s},), strict=True)
        log("torch.export text_decoder")
        # Example at a later position (L = 5 > S = 2), so that no size is specialized to 0/1 or to S.
        progs["text_decoder"] = export(
            TextDecoder(model), (torch.zeros(1, s_ex, model.args.dim), torch.tensor([3]), torch.tensor([6]),
                                 model.dec_mask(3, s_ex)),
            dynamic_shapes=({1: s}, None, None, {0: s, 1: l_dec}), strict=True)
    return progs


def lower(progs: dict, meta: dict[str, int]):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    log("lowering to edge + XNNPACK")
    edge = to_edge_transform_and_lower(
        progs,
        # One partitioner for every precision: dynamically quantized linears and the float ops around them
        # share XNNPACK graphs (a quantized-only pass first would cut each layer into many small ones).
        partitioner={name: [XnnpackPartitioner()] for name in progs},
        compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
        constant_methods=meta,
    )
    del progs
    gc.collect()
    log("to_executorch (memory planning, serialization)")
    return edge.to_executorch(
        ExecutorchBackendConfig(
            extract_delegate_segments=True,
            do_quant_fusion_and_const_prop=True,  # fuses dequantize+embedding into quantized_decomposed ops
            run_reinplace_pass=True,  # index_put -> index_put_: no full-cache copies per step
            emit_mutable_buffer_names=True,
            # One copy of the caches, visible to every method that touches them.
            memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False, share_mutable_buffers=True),
        )
    )


def prepare_model(model_path: str, dtype: str, qlinear: str, qlinear_encoder: str, group_size: int,
                  qembedding: str, qembedding_group_size: int, max_enc_tokens: int, max_dec_tokens: int,
                  sliding_window: int = 0) -> VoxtralRealtime:
    """Load (mmapped bf16), then per block: cast to the export dtype and quantize, so at most one block
    exists in float32 at a time (the 4b model is 17.7 GB in fp32, 2.5-5 GB quantized)."""
    log(f"loading checkpoint {model_path}")
    model, _ = load_model(model_path, dtype=torch.bfloat16)  # mmapped, as stored
    model.eval().requires_grad_(False)
    log("loaded")
    if sliding_window:
        # Only the cache and mask use the window: replacing it in the args is the whole change.
        log(f"decoder sliding window {model.args.sliding_window} -> {sliding_window} (--sliding-window)")
        model.args = dataclasses.replace(model.args, sliding_window=sliding_window)
    if qlinear != "none" or qembedding != "none":
        model.untie_head()  # embedding and head get their own quantization
    for conv in model.whisper_encoder.conv_layers:
        conv.to_linear()
    cast = to_float32_module_by_module if dtype == "fp32" else (lambda m: None)
    # The vocab-sized matrices first: quantizing them makes several transient fp32 copies (1.6 GB each
    # at full size), which must happen while little else is resident.
    if model.output is not None:
        cast(model.output)
        quantize_linears(model.output, qlinear, group_size, "LM head")
    cast(model.tok_embeddings)
    quantize_embedding(model, qembedding, qembedding_group_size)
    gc.collect()
    enc_layers = model.whisper_encoder.transformer.layers
    for i, layer in enumerate(enc_layers):
        cast(layer)
        quantize_linears(layer, qlinear_encoder, group_size, f"encoder layer {i}/{len(enc_layers)}", quiet=i % 8 != 0)
    for i, layer in enumerate(model.layers):
        cast(layer)
        # The small delay-conditioning MLP stays in float: it is 0.1% of the weights.
        quantize_linears(layer, qlinear, group_size, f"decoder layer {i}/{len(model.layers)}",
                         skip=("ada_rms_norm_t_cond",), quiet=i % 8 != 0)
    cast(model.audio_language_projection)
    quantize_linears(model.audio_language_projection, qlinear_encoder, group_size, "adapter")
    cast(model)  # the rest: norms, conv stem
    gc.collect()
    model.setup_caches(max_enc_tokens, max_dec_tokens)
    log("model prepared")
    return model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="checkpoint dir (params.json + consolidated.safetensors, or HF config.json + model.safetensors)")
    p.add_argument("--tokenizer", help="tekken.json (default: MODEL_PATH/tekken.json)")
    p.add_argument("--output", required=True, help="output .pte path")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="activation / float weight dtype (default fp32)")
    p.add_argument("--qlinear", choices=QLINEAR, default="none", help="decoder linears + LM head (default none)")
    p.add_argument("--qlinear-encoder", choices=QLINEAR, default="none", help="encoder + adapter linears (default none)")
    p.add_argument("--qlinear-group-size", type=int, default=32, help="group size for 4-bit linears (default 32)")
    p.add_argument("--qembedding", choices=QEMBEDDING, default="none", help="token embedding (default none)")
    p.add_argument("--qembedding-group-size", type=int, default=32, help="group size for 4w embedding (default 32)")
    p.add_argument("--max-enc-tokens", type=int, default=16,
                   help="audio tokens (80 ms each) per audio_encoder call; bigger amortizes weight reads (default 16)")
    p.add_argument("--max-dec-tokens", type=int, default=64, help="positions per text_decoder call (prompt prefill; default 64)")
    p.add_argument("--sliding-window", type=int, default=0,
                   help="decoder attention window in positions (default: the trained one from params.json, 8192 = "
                        "11 min). Smaller bounds the KV cache and the attention work per step after that much "
                        "audio, at the cost of context the model was trained with")
    a = p.parse_args(argv)
    if a.qlinear_group_size <= 0 or a.qembedding_group_size <= 0:
        p.error("group sizes must be > 0")
    if not 1 <= a.max_enc_tokens <= 256:
        p.error("--max-enc-tokens must be in 1..256")
    if not 1 <= a.max_dec_tokens <= 1024:
        p.error("--max-dec-tokens must be in 1..1024")
    if a.sliding_window < 0:
        p.error("--sliding-window must be > 0 (or 0 for the model's own)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        tok = Tekken.from_file(a.tokenizer or Path(a.model_path) / "tekken.json")
        model = prepare_model(a.model_path, a.dtype, a.qlinear, a.qlinear_encoder, a.qlinear_group_size,
                              a.qembedding, a.qembedding_group_size, a.max_enc_tokens, a.max_dec_tokens,
                              a.sliding_window)
        if tok.vocab_size != model.args.vocab_size:
            raise ConfigError(f"tokenizer vocab size {tok.vocab_size} != model vocab size {model.args.vocab_size}")
        tok.audio.check_matches(model.args.encoder, "tokenizer")
        meta = metadata(model, tok, a.max_enc_tokens, a.max_dec_tokens)
        progs = export_programs(model, a.max_enc_tokens, a.max_dec_tokens)
        del model
        gc.collect()
        et = lower(progs, meta)
        log(f"writing {a.output}")
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        with open(a.output, "wb") as f:
            et.write_to_file(f)
    except (ConfigError, CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = Path(a.output).stat().st_size
    log(f"done: {a.output} {size / 2**20:.1f} MiB, wall {time.time() - _T0:.0f} s, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
