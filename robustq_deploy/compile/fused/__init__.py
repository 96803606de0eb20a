"""A whole integer graph as one network of fused kernels (the CPU backend's fast path).

:mod:`.network` (a :class:`~.network.Network`: kernel nodes over stored tensors, its Relax
module, build and runner), :mod:`.builder` (layers -> fused kernel nodes: epilogues, storage,
weight packing), and two front ends: :mod:`.from_onnx` (a prepared integer ONNX graph: what
``robustq compile`` builds, :func:`build_fused`) and :mod:`.from_twin` (a quantized PyTorch twin:
the kernel tests and ``bench/latency.py``). The kernels themselves are
:mod:`robustq_deploy.kernels`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import UnsupportedError

if TYPE_CHECKING:  # annotations only
    from .. import CompileOptions, Prepared


FUSED_PATH, PER_OP_PATH = "fused-network", "per-op"


def tile_records(desc):
    """The tile records of a target description (:class:`robustq_deploy.kernels.records.Records`)."""
    from ...kernels.records import Records

    return Records.load(*desc.tile_record_files())


def build_fused(prepared: "Prepared", options: "CompileOptions", lib_path: Path) -> tuple[dict[str, Any] | None, str]:
    """Build the prepared graph as one fused kernel network for ``options.target`` and write it
    to ``lib_path`` (static batch when ``options.batch`` is set; register tiles from the target's
    tile records). Returns ``(meta, "")``, or ``(None, reason)`` when the graph does not match
    the fused patterns (the caller keeps the per-op path)."""
    from ..build import write_library
    from .from_onnx import from_onnx
    from .network import compile_network, tiles_used

    desc = options.target
    target = desc.tvm_target()
    try:
        net = from_onnx(prepared.graph, target, prepared.original.graph.name or "onnx")
    except UnsupportedError as exc:
        return None, str(exc)
    records = tile_records(desc)
    write_library(compile_network(net, target, records, options.batch), lib_path, desc.cross_compiler,
                  desc.library_suffix)
    kernels = Counter(n.kernel for n in net.nodes)
    # the interior is integer; float appears only in the input quantizer and the logits'
    # dequantization, as in the per-op path's report
    return {"requant": prepared.requant, "rewrites": prepared.rewrites, "kernels": dict(sorted(kernels.items())),
            "tiles": tiles_used(net, target, records), "float_compute": [], "float_reductions": [], "integer_only": True,
            "compile_path": FUSED_PATH}, ""


__all__ = ["FUSED_PATH", "PER_OP_PATH", "build_fused", "tile_records"]
