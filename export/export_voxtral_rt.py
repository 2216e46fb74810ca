"""Export Voxtral Realtime to ONE ExecuTorch .pte for XNNPACK (CPU).

Methods (shapes for the real model; all sizes also in the constant methods below):
  preprocessor     f32 [hop*n + win - hop] stream samples   -> f32 [1, 128, n]     log-mel frames, 1 <= n <= max_mel_frames
  audio_encoder    f32 [1, 128, 8k] mel, int64 [1] enc_pos, f32 [4k, L] mask
                                                            -> f32 [1, k, 3072]    audio embeddings, 1 <= k <= max_enc_tokens
  token_embedding  int64 [1, S]                             -> f32 [1, S, 3072]    1 <= S <= max_dec_tokens
  text_decoder     f32 [1, S, 3072], int64 [1] pos, int64 [1] delay_tokens, f32 [S, L] mask
                                                            -> f32 [1, S, vocab] logits of every position (the
                                                               runner verifies guessed positions with them)
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
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import resource
import sys
import time
import warnings
from pathlib import Path


def _quiet_known_noise() -> None:
    """Keep the progress lines readable: these messages are known and harmless here (40 of 65 lines before)."""
    from voxtral_rt import quiet_known_noise

    quiet_known_noise()
    # By design: the caches' initial values are never read (stale ring slots are masked, and the runtime zero-fills
    # its planned memory), so they are not stored in the .pte.
    warnings.filterwarnings("ignore", message=r"Mutation on a buffer in the model is detected")

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxtral_rt.checkpoint import load_model, release_pages  # noqa: E402
from voxtral_rt.checkpoint import CheckpointError  # noqa: E402
from voxtral_rt.config import ConfigError  # noqa: E402
from voxtral_rt.mel import export_log_mel  # noqa: E402
from voxtral_rt.model import VoxtralRealtime, cast  # noqa: E402
from voxtral_rt.pte import metadata  # noqa: E402
from voxtral_rt.tokenizer import Tekken  # noqa: E402

QLINEAR = ["8da4w", "8da8w", "4w", "8w", "none"]
WEIGHT_ONLY_LINEAR_NOTE = (
    "XNNPACK (ExecuTorch 1.5.1) has no weight-only quantized linear: {what} {kind} rounds the weights to the {bits}-bit "
    "grid and stores them in float, so the .pte is as large and as fast as without it. For {bits}-bit weights on CPU "
    "use 8da{bits}w (int8 dynamic activations).")
QEMBEDDING = ["8w", "4w", "none"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
KV_DTYPES = {"fp16": torch.float16, **DTYPES}
KV_DTYPE_DEFAULT = {"fp32": "fp16", "bf16": "bf16"}

_T0 = time.time()


def _rss_gb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**30
    except OSError:  # not Linux
        return float("nan")


def log(msg: str) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"[{time.time() - _T0:7.1f}s rss {_rss_gb():5.1f} GB, peak {peak:5.1f} GB] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- memory and speed of the toolchain

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)


def return_freed_memory_to_os() -> None:
    """Large tensors come and go by the gigabyte during quantization and export. glibc keeps freed chunks below
    its (adaptive, up to 32 MB) mmap threshold in the heap, where fragmentation pins them: measured, torch.export
    of the decoder left ~190 MB per layer resident that no live object held. A fixed 1 MiB threshold makes every
    big allocation its own mapping, unmapped on free; malloc_trim releases what is already pinned."""
    if hasattr(_LIBC, "mallopt"):  # glibc only; elsewhere this is a no-op
        _LIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops the adaptive raise)
        _LIBC.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    trim()


def trim() -> None:
    gc.collect()
    if hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


@contextlib.contextmanager
def shallow_provenance():
    """torch.fx gives every node a pass rewrites a NodeSource holding a deep copy of the node's whole provenance
    chain, which grows with every pass: quadratic in the number of passes, ~10 % of lowering time (profiled).
    Provenance only serves debug records (ETRecord), which this export does not write, so keep one level."""
    from torch.fx import traceback as fx_traceback

    cls = getattr(fx_traceback, "NodeSource", None)
    init = getattr(cls, "__init__", None)
    if init is None:
        yield
        return

    def one_level_init(self, node, *args, **kwargs):  # type: ignore[no-untyped-def]
        chain = node.meta.pop("from_node", None) if node is not None else None
        try:
            init(self, node, *args, **kwargs)
        finally:
            if chain is not None:
                node.meta["from_node"] = chain

    cls.__init__ = one_level_init
    try:
        yield
    finally:
        cls.__init__ = init


@contextlib.contextmanager
def preprocess_copies_share_weights():
    """Before XNNPACK preprocesses them, ExecuTorch deep-copies every partition's program at once, "in case
    backends change graph": the copies include the weights, i.e. all of a method's weights a second time
    (measured: +3.8 GB for the 4b decoder). XNNPACK's passes rewrite graphs and replace state-dict entries;
    none writes into a weight. So copy the programs but share their tensors."""
    import copy

    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend

    own = XnnpackBackend.__dict__.get("copy_exported_program_for_preprocess")  # None: inherited

    def copy_sharing_tensors(cls, edge_program, compile_specs):  # type: ignore[no-untyped-def]
        tables = (edge_program.state_dict, edge_program.constants)
        shared = {id(t): t for table in tables for t in table.values() if isinstance(t, torch.Tensor)}
        return copy.deepcopy(edge_program, shared)

    XnnpackBackend.copy_exported_program_for_preprocess = classmethod(copy_sharing_tensors)
    try:
        yield
    finally:
        if own is None:
            del XnnpackBackend.copy_exported_program_for_preprocess
        else:
            XnnpackBackend.copy_exported_program_for_preprocess = own


@contextlib.contextmanager
def xnnpack_float_casts():
    """Yield XNNPACK partitioner configs that also take fp32 <-> fp16 casts (executorch 1.5.1).

    fp16 K/V caches need the query cast to fp16 and the attention output cast back inside the attention. The
    1.5.1 partitioner leaves every dtype-changing copy outside XNNPACK, which would cut each layer's graph in
    three, although XNNPACK's runtime converts fp32 <-> fp16 itself (a Convert node, as the dynamic quantization
    uses). So, for the duration of the export: a config that claims these casts, a visitor that serializes them
    as Convert nodes, and XNNPACK's redundant-copy pass told to keep them (it takes every _to_copy whose input
    has the same layout for a no-op and deletes it)."""
    from executorch.backends.xnnpack._passes.remove_redundant_copy_pass import RemoveRedundantCopyPass
    from executorch.backends.xnnpack.operators import node_visitor
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import GenericNodePartitionerConfig
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.serialization.xnnpack_graph_schema import XNNConvert, XNode
    from executorch.backends.xnnpack.utils.utils import get_input_node

    target = "aten._to_copy.default"
    layout_copy = node_visitor._node_visitor_dict[target]  # 1.5.1's: memory-format changes only
    floats = {torch.float32, torch.float16}

    def is_float_cast(node: torch.fx.Node) -> bool:
        src, dst = get_input_node(node, 0).meta["val"].dtype, node.meta["val"].dtype
        layout = node.kwargs.get("memory_format", torch.contiguous_format)
        return (src != dst and {src, dst} <= floats and layout in (None, torch.contiguous_format)
                and set(node.kwargs) <= {"dtype", "memory_format"})

    class FloatCastConfig(GenericNodePartitionerConfig):
        target_name = "_to_copy.default"

        def check_constraints(self, node: torch.fx.Node, ep) -> bool:  # type: ignore[no-untyped-def]
            if not (self.check_common_constraints(node, ep) and is_float_cast(node)):
                return False
            # XNNPACK's layout pass reads memory_format from every _to_copy; export drops the default.
            node.kwargs = {**node.kwargs, "memory_format": torch.contiguous_format}
            return True

        def supported_precision_types(self) -> list:
            return [ConfigPrecisionType.FP32]

    class CastOrLayoutCopy(layout_copy):  # type: ignore[misc, valid-type]
        def define_node(self, node, xnn_graph, vals_to_ids, debug_handle) -> None:  # type: ignore[no-untyped-def]
            if not is_float_cast(node):
                return super().define_node(node, xnn_graph, vals_to_ids, debug_handle)
            src = get_input_node(node, 0)
            self.define_tensor(src, xnn_graph, vals_to_ids)
            self.define_tensor(node, xnn_graph, vals_to_ids)
            xnn_graph.xnodes.append(XNode(xnode_union=XNNConvert(input_id=vals_to_ids[src], output_id=vals_to_ids[node],
                                                                 flags=0), debug_handle=debug_handle))

    remove_copy = RemoveRedundantCopyPass._try_remove_regular_redundant_to_copy

    def keep_casts(self, node, graph):  # type: ignore[no-untyped-def]
        return False if is_float_cast(node) else remove_copy(self, node, graph)

    node_visitor._node_visitor_dict[target] = CastOrLayoutCopy
    RemoveRedundantCopyPass._try_remove_regular_redundant_to_copy = keep_casts
    try:
        yield [*ALL_PARTITIONER_CONFIGS, FloatCastConfig]
    finally:
        node_visitor._node_visitor_dict[target] = layout_copy
        RemoveRedundantCopyPass._try_remove_regular_redundant_to_copy = remove_copy


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
        return self.model.decode(h, pos, n_delay, all_logits=True, mask=mask)


# ----------------------------------------------------------------------------- quantization


class QuantizedLinear(nn.Module):
    """An nn.Linear quantized by torchao, its weight held as plain tensors: int8 values, scales, zero points.

    It computes what torchao's IntxUnpackedToInt8Tensor computes in F.linear (optional int8 per-token
    activation quant-dequant, dequantize_affine of the weight, linear) with the same torchao ops, so the export
    graph is the same and XNNPACK's partitioner matches it into one dynamically quantized linear. What differs
    is the cost of export: torch.export copies tensor-subclass weights. The ops are called directly, not
    through torchao's Python wrappers: those are decorated @torch.no_grad(), and non-strict export splits the
    graph at every grad-mode switch, then inlines the pieces back one by one, recompiling the whole module
    each time (minutes for the 32-layer encoder).
    """

    def __init__(self, w: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        from torchao.quantization.quant_primitives import _DTYPE_TO_QVALUE_BOUNDS

        self.quantize_activations = w.activation_quantization is not None
        # XNNPACK's dynamically quantized GEMM takes fp32 activations: in a bf16 model these linears compute in
        # fp32 (cast in and out), which keeps them in XNNPACK. fp32 models are unchanged (no-op casts).
        self.compute_dtype = torch.float32 if self.quantize_activations else w.dtype
        self.qdata = nn.Parameter(w.qdata, requires_grad=False)
        self.scale = nn.Parameter(w.scale, requires_grad=False)
        self.zero_point = nn.Parameter(w.zero_point, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(cast(bias.detach(), self.compute_dtype), requires_grad=False)
        self.block_size = tuple(w.block_size)
        self.qmin, self.qmax = _DTYPE_TO_QVALUE_BOUNDS[w.target_dtype]

    def dequantized_weight(self) -> torch.Tensor:
        return torch.ops.torchao.dequantize_affine(self.qdata, self.block_size, self.scale, self.zero_point,
                                                   torch.int8, self.qmin, self.qmax, output_dtype=self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = cast(x, self.compute_dtype)
        if self.quantize_activations:  # int8, asymmetric, one scale per token: the "8da" of 8da4w
            ops, block = torch.ops.torchao, [1] * (y.dim() - 1) + [y.shape[-1]]
            scale, zero = ops.choose_qparams_affine(y, "ASYMMETRIC", block, torch.int8, -128, 127,
                                                    zero_point_dtype=torch.int8)
            q = ops.quantize_affine(y, block, scale, zero, torch.int8, -128, 127)
            y = ops.dequantize_affine(q, block, scale, zero, torch.int8, -128, 127, output_dtype=y.dtype)
        return cast(F.linear(y, self.dequantized_weight(), self.bias), x.dtype)


class QuantizedEmbedding(QuantizedLinear):
    """An nn.Embedding quantized by torchao (weight only), held as plain tensors (see QuantizedLinear). The
    export's quant fusion turns dequantize + embedding into quantized_decomposed::embedding_byte/4bit."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.embedding(ids, self.dequantized_weight())


def as_plain_quantized(mod: nn.Module) -> nn.Module:
    """mod itself, or, if torchao quantized its weight, the QuantizedLinear/QuantizedEmbedding sharing its tensors.
    A weight-only quantized linear (4w, 8w) becomes an nn.Linear with the dequantized weight: XNNPACK in
    ExecuTorch 1.5.1 has no weight-only quantized linear (see WEIGHT_ONLY_LINEAR_NOTE)."""
    w = getattr(mod, "weight", None)
    if not hasattr(w, "qdata"):
        return mod
    if isinstance(mod, nn.Embedding):
        return QuantizedEmbedding(w, None)
    if w.activation_quantization is None:
        with torch.device("meta"):
            lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
        lin.weight = nn.Parameter(QuantizedLinear(w, None).dequantized_weight(), requires_grad=False)
        lin.bias = mod.bias
        return lin
    return QuantizedLinear(w, mod.bias)


def replace_quantized(root: nn.Module) -> None:
    """Swap every torchao-quantized Linear/Embedding under root for its plain-tensor form."""
    for name, child in list(root.named_children()):
        new = as_plain_quantized(child)
        if new is not child:
            setattr(root, name, new)
        else:
            replace_quantized(child)


def group_size_for(kind: str, group_size: int) -> int:
    """The group size a linear quantization uses: 4-bit kinds are grouped, 8-bit ones per channel (0)."""
    return group_size if kind in ("8da4w", "4w") else 0


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


def _embedding_config(kind: str, group_size: int, dim: int):
    from torchao.quantization import IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    if kind == "8w":
        return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    if dim % group_size:
        return None  # the caller leaves it in float and says so, as for linears
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))


def quantize_linears(root: nn.Module, kind: str, group_size: int, what: str, skip: tuple[str, ...] = (),
                     quiet: bool = False) -> None:
    """Quantize every nn.Linear under `root` (one module at a time, so only one fp32 copy is alive)."""
    if kind == "none":
        return
    from torchao.quantization import quantize_

    gs = group_size_for(kind, group_size)
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


def quantize_rows(mod: nn.Linear | nn.Embedding, cfg, fp32: bool, rows: int = 8192) -> None:
    """Cast (to fp32 if asked) and quantize mod.weight one block of rows at a time. Done whole, a vocab-sized
    matrix (131072 x 3072) holds several transient fp32 copies of 1.6 GB at once (a 5.7 GB peak, measured).
    Scales are per row group or per row, so each block quantizes exactly as it does inside the whole matrix."""
    from torchao.quantization import quantize_

    w = mod.weight.detach()
    parts = []
    for r in range(0, w.shape[0], rows):
        block = w[r : r + rows]
        with torch.device("meta"):  # no random init: the weight is assigned next
            holder = nn.Linear(w.shape[1], len(block), bias=False) if isinstance(mod, nn.Linear) else nn.Embedding(*block.shape)
        holder.weight = nn.Parameter(block.float() if fp32 else block, requires_grad=False)
        quantize_(holder, cfg, filter_fn=lambda m, fqn: True)
        parts.append(holder.weight.detach())
    kind = type(parts[0])
    names, ctx = parts[0].__tensor_flatten__()
    inner = {n: torch.cat([getattr(q, n) for q in parts]) for n in names}
    del parts
    mod.weight = nn.Parameter(kind.__tensor_unflatten__(inner, ctx, w.shape, w.stride()), requires_grad=False)
    release_pages(w)  # the bf16 source pages (file-backed, counted in RSS)


def to_float32_module_by_module(model: nn.Module) -> None:
    """Cast parameters to fp32 leaf module by leaf module; with an mmapped bf16 checkpoint this keeps the peak
    at one extra layer rather than a second full model copy."""
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.is_floating_point() and p.dtype != torch.float32:  # never the int8 values of quantized weights
                setattr(mod, name, nn.Parameter(p.detach().float(), requires_grad=False))
                # The bf16 source pages (file-backed, counted in RSS) are not needed any more.
                release_pages(p.detach())


# ----------------------------------------------------------------------------- export


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
    no resident pages (big allocations are fresh mappings, see return_freed_memory_to_os)."""
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
            edge = to_edge_transform_and_lower({name: prog}, partitioner={name: [XnnpackPartitioner(configs)]},
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
            quantize_rows(model.output, _linear_config(qlinear, gs), dtype == "fp32")
            log(f"quantized the LM head to {qlinear}" + (f" (group {gs})" if gs else ""))
    emb_cfg = None if qembedding == "none" else _embedding_config(qembedding, qembedding_group_size, model.args.dim)
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


def default_delay_tokens(tok: Tekken, delay_ms: float | None, delay_tokens: int | None) -> int:
    """The delay the .pte carries as its default, checked against the delays the model was trained for."""
    au = tok.audio
    if delay_tokens is not None:
        delay_ms = delay_tokens * au.ms_per_token
    n = au.default_delay_tokens if delay_ms is None else au.delay_tokens(delay_ms)
    log(f"default transcription delay {n} tokens = {n * au.ms_per_token:g} ms")
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="checkpoint dir (params.json + consolidated.safetensors, or HF config.json + model.safetensors)")
    p.add_argument("--tokenizer", help="tekken.json (default: MODEL_PATH/tekken.json)")
    p.add_argument("--output", required=True, help="output .pte path")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="activation / float weight dtype (default fp32)")
    p.add_argument("--qlinear", choices=QLINEAR, default="none", help="decoder linears + LM head (default none)")
    p.add_argument("--qlinear-encoder", choices=QLINEAR, default="none", help="encoder + adapter linears (default none)")
    p.add_argument("--qlinear-group-size", type=int, default=32, help="group size for 4-bit linears (default 32)")
    p.add_argument("--qlinear-encoder-group-size", type=int, default=None,
                   help="group size for 4-bit encoder + adapter linears (default: --qlinear-group-size)")
    p.add_argument("--qembedding", choices=QEMBEDDING, default="none", help="token embedding (default none)")
    p.add_argument("--qembedding-group-size", type=int, default=32, help="group size for 4w embedding (default 32)")
    p.add_argument("--kv-dtype", choices=list(KV_DTYPES), default=None,
                   help="K/V cache dtype (default: fp16 with --dtype fp32, else the model dtype). fp16 halves the "
                        "cache memory and the bytes attention reads per step; the matmuls run in fp16, the "
                        "softmax in fp32 (docs/design.md, \"fp16 K/V caches\")")
    p.add_argument("--max-enc-tokens", type=int, default=16,
                   help="audio tokens (80 ms each) per audio_encoder call; bigger amortizes weight reads (default 16)")
    p.add_argument("--max-dec-tokens", type=int, default=64, help="positions per text_decoder call (prompt prefill; default 64)")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--delay-ms", type=float, default=None,
                   help="default transcription delay the .pte carries: a multiple of 80 ms in 80..1200, or 2400 "
                        "(default: tekken.json's transcription_delay_ms, 480 for the real model). The delay is a "
                        "text_decoder input, so runners can still pick another per session")
    d.add_argument("--delay-tokens", type=int, default=None, help="the same in tokens (80 ms each), as upstream's flag")
    p.add_argument("--sliding-window", type=int, default=0,
                   help="decoder attention window in positions (default: the trained one from params.json, 8192 = "
                        "11 min). Smaller bounds the KV cache and the attention work per step after that much "
                        "audio, at the cost of context the model was trained with")
    a = p.parse_args(argv)
    if a.qlinear_encoder_group_size is None:
        a.qlinear_encoder_group_size = a.qlinear_group_size
    if min(a.qlinear_group_size, a.qlinear_encoder_group_size, a.qembedding_group_size) <= 0:
        p.error("group sizes must be > 0")
    for flag, kind, gs in (("--qlinear-group-size", a.qlinear, a.qlinear_group_size),
                           ("--qlinear-encoder-group-size", a.qlinear_encoder, a.qlinear_encoder_group_size)):
        if kind == "8da4w" and gs % 32:  # XNNPACK's 4-bit kernels (ExecuTorch 1.5.1 asserts this while lowering)
            p.error(f"{flag} {gs}: 8da4w on XNNPACK needs a multiple of 32")
    if not 1 <= a.max_enc_tokens <= 256:
        p.error("--max-enc-tokens must be in 1..256")
    if not 1 <= a.max_dec_tokens <= 1024:
        p.error("--max-dec-tokens must be in 1..1024")
    if a.sliding_window < 0:
        p.error("--sliding-window must be > 0 (or 0 for the model's own)")
    for what, kind in (("--qlinear", a.qlinear), ("--qlinear-encoder", a.qlinear_encoder)):
        if kind in ("4w", "8w"):
            print("warning: " + WEIGHT_ONLY_LINEAR_NOTE.format(what=what, kind=kind, bits=kind[0]), file=sys.stderr)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    return_freed_memory_to_os()
    _quiet_known_noise()
    try:
        tok = Tekken.from_file(a.tokenizer or Path(a.model_path) / "tekken.json")
        delay_tokens = default_delay_tokens(tok, a.delay_ms, a.delay_tokens)  # before minutes of loading
        model = prepare_model(a.model_path, a.dtype, a.qlinear, a.qlinear_encoder, a.qlinear_group_size,
                              a.qembedding, a.qembedding_group_size, a.max_enc_tokens, a.max_dec_tokens,
                              a.sliding_window, a.qlinear_encoder_group_size, a.kv_dtype)
        if tok.vocab_size != model.args.vocab_size:
            raise ConfigError(f"tokenizer vocab size {tok.vocab_size} != model vocab size {model.args.vocab_size}")
        tok.audio.check_matches(model.args.encoder, "tokenizer")
        meta = metadata(model, tok, a.max_enc_tokens, a.max_dec_tokens, delay_tokens)
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
