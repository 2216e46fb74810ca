"""Quantization for the export, with torchao: configs by name, quantization one module or one block of rows at a
time (only one fp32 copy alive), and the plain-tensor modules that replace torchao's quantized-weight tensors
before torch.export (the same ops, without the cost of exporting tensor subclasses).

torchao is imported inside the functions: the command line silences its start-up messages first."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from voxtral_rt.checkpoint import release_pages
from voxtral_rt.model import cast

from .memory import log

QLINEAR = ["8da4w", "8da8w", "4w", "8w", "none"]
WEIGHT_ONLY_LINEAR_NOTE = (
    "XNNPACK (ExecuTorch 1.5.1) has no weight-only quantized linear: {what} {kind} rounds the weights to the {bits}-bit "
    "grid and stores them in float, so the .pte is as large and as fast as without it. For {bits}-bit weights on CPU "
    "use 8da{bits}w (int8 dynamic activations).")
QEMBEDDING = ["8w", "4w", "none"]


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


def linear_config(kind: str, group_size: int):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    g = PerGroup(group_size) if group_size > 0 else PerAxis(0)
    return {
        "8da4w": lambda: Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=g),
        "8da8w": lambda: Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
        "4w": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=g),
        "8w": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
    }[kind]()


def embedding_config(kind: str, group_size: int, dim: int):
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
    cfg = linear_config(kind, gs)
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
