"""Workarounds in internals of the toolchain pyproject.toml pins, in one place. Each one patches for the duration of
one export step only, names the version it was written for, and says why; check_versions() warns when the
installed versions are not those (a patch may then fail, or be no longer needed)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
from typing import Callable

import torch

PINNED = {"torch": "2.13.0", "executorch": "1.5.1"}  # what the workarounds were written and measured for
WORKAROUNDS = {  # each workaround below: the package whose internals it patches
    "shallow_provenance": "torch",
    "preprocess_copies_share_weights": "executorch",
    "xnnpack_float_casts": "executorch",
}


def version_mismatches(version: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """One message per package whose installed version is not the one its workarounds target."""
    out = []
    for package, pinned in PINNED.items():
        try:
            found = version(package).split("+")[0]  # torch's local tag: 2.13.0+cpu
        except importlib.metadata.PackageNotFoundError:
            found = "none"
        if found != pinned:
            names = ", ".join(w for w, p in WORKAROUNDS.items() if p == package)
            out.append(f"{package} {found} is installed, but the export's workarounds ({names}) patch internals of "
                       f"{package} {pinned}: the export may fail or differ; install the versions pyproject.toml pins")
    return out


def check_versions() -> None:
    for msg in version_mismatches():
        print(f"warning: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def shallow_provenance():
    """torch 2.13.0: torch.fx gives every node a pass rewrites a NodeSource holding a deep copy of the node's whole
    provenance chain, which grows with every pass: quadratic in the number of passes, ~10 % of lowering time
    (profiled). Provenance only serves debug records (ETRecord), which this export does not write, so keep one
    level."""
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
    """executorch 1.5.1: before XNNPACK preprocesses them, ExecuTorch deep-copies every partition's program at
    once, "in case backends change graph": the copies include the weights, i.e. all of a method's weights a second
    time (measured: +3.8 GB for the 4b decoder). XNNPACK's passes rewrite graphs and replace state-dict entries;
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


_FLOATS = {torch.float32, torch.float16}


def _is_float_cast(node: torch.fx.Node) -> bool:
    """An fp32 <-> fp16 _to_copy in the default layout, and nothing else (XNNPACK's Convert)."""
    from executorch.backends.xnnpack.utils.utils import get_input_node

    src, dst = get_input_node(node, 0).meta["val"].dtype, node.meta["val"].dtype
    layout = node.kwargs.get("memory_format", torch.contiguous_format)
    return (src != dst and {src, dst} <= _FLOATS and layout in (None, torch.contiguous_format)
            and set(node.kwargs) <= {"dtype", "memory_format"})


def float_cast_layouts(gm: torch.fx.GraphModule):
    """Edge pass for xnnpack_float_casts, run before partitioning: XNNPACK's layout pass reads memory_format from
    every _to_copy it owns, and export drops the default, so the float casts get it back explicitly."""
    from torch.fx.passes.infra.pass_base import PassResult

    changed = False
    for node in gm.graph.nodes:
        if (node.op == "call_function" and getattr(node.target, "__name__", "").endswith("_to_copy.default")
                and "memory_format" not in node.kwargs and _is_float_cast(node)):
            node.kwargs = {**node.kwargs, "memory_format": torch.contiguous_format}
            changed = True
    return PassResult(gm, changed)


@contextlib.contextmanager
def xnnpack_float_casts():
    """Yield XNNPACK partitioner configs that also take fp32 <-> fp16 casts (executorch 1.5.1); the edge program
    must have gone through float_cast_layouts first.

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
    is_float_cast = _is_float_cast

    class FloatCastConfig(GenericNodePartitionerConfig):
        target_name = "_to_copy.default"

        def check_constraints(self, node: torch.fx.Node, ep) -> bool:  # type: ignore[no-untyped-def]
            return (self.check_common_constraints(node, ep) and is_float_cast(node)
                    and node.kwargs.get("memory_format") is not None)  # float_cast_layouts ran

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
