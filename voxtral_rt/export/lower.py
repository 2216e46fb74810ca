"""The prepared model to one ExecuTorch program: torch.export of each method (a thin wrapper each), lowering to
XNNPACK one method at a time, largest first, then memory planning and serialization of all of them together."""

from __future__ import annotations

import torch
import torch.nn as nn

from voxtral_rt.mel import export_log_mel
from voxtral_rt.model import VoxtralRealtime, cast

from .memory import log, trim
from .toolchain import float_cast_layouts, preprocess_copies_share_weights, shallow_provenance, xnnpack_float_casts


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
        return self.model.decode(h, pos, n_delay, all_logits=True, mask=mask)


def export_programs(model: VoxtralRealtime, max_enc_tokens: int, max_dec_tokens: int) -> dict:
    """torch.export each method. Non-strict: strict export (dynamo) clones every parameter and buffer it meets,
    twice ("real value cache"), which doubled a method's weights in memory while it traced. Every wrapper holds
    the whole model, so each program would reference every weight; unused ones are pruned, so that a method's
    weights can be freed once that method is lowered."""
    from executorch.exir.passes.remove_unused_parameters_pass import remove_unused_parameters_pass
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
            dynamic_shapes=({2: mpt * k}, None, {0: fpt * k, 1: l_enc}), strict=False)
        log("torch.export token_embedding")
        s_ex = min(2, max_dec_tokens)
        progs["token_embedding"] = export(
            TokenEmbedding(model), (torch.zeros(1, s_ex, dtype=torch.long),), dynamic_shapes=({1: s},), strict=False)
        log("torch.export text_decoder")
        # Example at a later position (L = 5 > S = 2), so that no size is specialized to 0/1 or to S.
        progs["text_decoder"] = export(
            TextDecoder(model), (torch.zeros(1, s_ex, model.args.dim), torch.tensor([3]), torch.tensor([6]),
                                 model.dec_mask(3, s_ex)),
            dynamic_shapes=({1: s}, None, None, {0: s, 1: l_dec}), strict=False)
    for name in ("audio_encoder", "token_embedding", "text_decoder"):
        ep = remove_unused_parameters_pass(progs[name])
        # torch.export keeps the whole module's state dict, referenced by the signature or not.
        used = {spec.target for spec in ep.graph_signature.input_specs if spec.target is not None}
        for key in [k for k in ep.state_dict if k not in used]:
            del ep.state_dict[key]
        progs[name] = ep
    trim()
    return progs


def _unwritten_like(t: torch.Tensor) -> torch.Tensor:
    """A tensor with t's type, shape, strides and dtype whose memory is allocated but never written, so it takes
    no resident pages (big allocations are fresh mappings, see memory.return_freed_memory_to_os)."""
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, nn.Parameter):  # e.g. torchao subclasses
        names, ctx = t.__tensor_flatten__()
        inner = {n: _unwritten_like(getattr(t, n)) for n in names}
        return type(t).__tensor_unflatten__(inner, ctx, t.size(), t.stride())
    e = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype)
    return nn.Parameter(e, requires_grad=False) if isinstance(t, nn.Parameter) else e


def release_delegated_weights(ep) -> None:
    """After lowering, each XNNPACK delegate holds its own packed copy of the weights it consumed. Its
    LoweredBackendModule also keeps the partition's original program with the unpacked (int8 + scales) tensors;
    to_executorch re-traces that program with fake tensors (shapes only) and never reads their values. Swap
    them for unwritten stand-ins, so the method's unpacked weights are freed now, not after serialization."""
    from executorch.exir.lowered_backend_module import LoweredBackendModule

    for mod in ep.graph_module.modules():
        if isinstance(mod, LoweredBackendModule):
            for table in (mod.original_module.state_dict, mod.original_module.constants):
                for key, t in table.items():
                    if isinstance(t, torch.Tensor):
                        table[key] = _unwritten_like(t)


def lower(progs: dict, meta: dict[str, int]):
    """Lower the methods one at a time (each program is popped from `progs` and freed once lowered), then
    plan memory and emit all of them as one program."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, EdgeProgramManager, ExecutorchBackendConfig
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    config = EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True)
    order, lowered = list(progs), {}
    # Largest first: later methods then lower while the big one's unpacked weights are already freed.
    for name in sorted(progs, key=lambda n: -sum(t.numel() for t in progs[n].state_dict.values())):
        log(f"lowering {name} to edge + XNNPACK")
        prog = progs.pop(name)
        with shallow_provenance(), preprocess_copies_share_weights(), xnnpack_float_casts() as configs:
            # One partitioner for every precision: dynamically quantized linears and the float ops around them
            # share XNNPACK graphs (a quantized-only pass first would cut each layer into many small ones).
            edge = to_edge_transform_and_lower({name: prog}, transform_passes=[float_cast_layouts],
                                               partitioner={name: [XnnpackPartitioner(configs)]},
                                               compile_config=config)
        del prog
        lowered[name] = edge.exported_program(name)
        del edge
        release_delegated_weights(lowered[name])
        trim()
    log("to_executorch (memory planning, serialization)")
    edge = EdgeProgramManager({n: lowered[n] for n in order}, constant_methods=meta, compile_config=config)
    del lowered
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
