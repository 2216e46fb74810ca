"""The Voxtral checkpoint made ready to export: loaded mmapped, cast and quantized block by block (at most one
block in float32 at a time), torchao's quantized weights swapped for plain tensors, the caches set up."""

from __future__ import annotations

import dataclasses
import gc

import torch
import torch.nn as nn

from voxtral_rt.checkpoint import load_model, release_pages
from voxtral_rt.config import ConfigError
from voxtral_rt.model import VoxtralRealtime

from .memory import log, trim
from .quantize import (embedding_config, group_size_for, linear_config, quantize_linears, quantize_rows,
                       replace_quantized)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
KV_DTYPES = {"fp16": torch.float16, **DTYPES}
KV_DTYPE_DEFAULT = {"fp32": "fp16", "bf16": "bf16"}


def to_float32_module_by_module(model: nn.Module) -> None:
    """Cast parameters to fp32 leaf module by leaf module; with an mmapped bf16 checkpoint this keeps the peak
    at one extra layer rather than a second full model copy."""
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.is_floating_point() and p.dtype != torch.float32:  # never the int8 values of quantized weights
                setattr(mod, name, nn.Parameter(p.detach().float(), requires_grad=False))
                # The bf16 source pages (file-backed, counted in RSS) are not needed any more.
                release_pages(p.detach())


def prepare_model(model_path: str, dtype: str, qlinear: str, qlinear_encoder: str, group_size: int,
                  qembedding: str, qembedding_group_size: int, max_enc_tokens: int, max_dec_tokens: int,
                  sliding_window: int = 0, encoder_group_size: int | None = None,
                  kv_dtype: str | None = None) -> VoxtralRealtime:
    """Load (mmapped bf16), then per block: cast to the export dtype and quantize, so at most one block
    exists in float32 at a time (the 4b model is 17.7 GB in fp32, 2.5-5 GB quantized).
    encoder_group_size: for the encoder and adapter linears (default: group_size). kv_dtype: of the K/V caches
    (KV_DTYPES; default: KV_DTYPE_DEFAULT[dtype])."""
    kv = KV_DTYPES[kv_dtype or KV_DTYPE_DEFAULT[dtype]]
    if kv != DTYPES[dtype] and not (kv == torch.float16 and dtype == "fp32"):
        raise ConfigError(f"--kv-dtype {kv_dtype} needs --dtype fp32 (caches are fp16 or the model dtype)")
    enc_gs = group_size if encoder_group_size is None else encoder_group_size
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
    # The vocab-sized matrices first, block of rows by block (quantize_rows).
    gs = group_size_for(qlinear, group_size)
    if model.output is not None:
        if qlinear == "none" or (gs and model.args.dim % gs):
            cast(model.output)
            if qlinear != "none":
                log(f"  left the LM head in float (dim {model.args.dim} % group size {gs})")
        else:
            quantize_rows(model.output, linear_config(qlinear, gs), dtype == "fp32")
            log(f"quantized the LM head to {qlinear}" + (f" (group {gs})" if gs else ""))
    emb_cfg = None if qembedding == "none" else embedding_config(qembedding, qembedding_group_size, model.args.dim)
    if emb_cfg is None:
        cast(model.tok_embeddings)
        if qembedding != "none":
            log(f"  left the token embedding in float (dim {model.args.dim} % group size {qembedding_group_size})")
    else:
        quantize_rows(model.tok_embeddings, emb_cfg, dtype == "fp32")
        log(f"quantized the token embedding to {qembedding}")
    trim()
    enc_layers = model.whisper_encoder.transformer.layers
    for i, layer in enumerate(enc_layers):
        cast(layer)
        quantize_linears(layer, qlinear_encoder, enc_gs, f"encoder layer {i}/{len(enc_layers)}", quiet=i % 8 != 0)
    for i, layer in enumerate(model.layers):
        cast(layer)
        # The small delay-conditioning MLP stays in float: it is 0.1% of the weights.
        quantize_linears(layer, qlinear, group_size, f"decoder layer {i}/{len(model.layers)}",
                         skip=("ada_rms_norm_t_cond",), quiet=i % 8 != 0)
    cast(model.audio_language_projection)
    quantize_linears(model.audio_language_projection, qlinear_encoder, enc_gs, "adapter")
    cast(model)  # the rest: norms, conv stem
    gc.collect()
    replace_quantized(model)  # plain tensors: no subclass copies in torch.export (QuantizedLinear)
    model.setup_caches(max_enc_tokens, max_dec_tokens, cache_dtype=kv, zeroed=False)  # export needs only shapes
    log("model prepared")
    return model
