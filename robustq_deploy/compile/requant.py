"""Fuse the ``integer`` export's fixed-point requantization chains into one op before import.

The ``integer`` / ``packed`` exports write requantization as eight standard ONNX ops (Cast int64,
Mul m0, Add 2^(n-1), Mod / Sub / Div for the exact floor shift, Clip, Cast; see
:mod:`robustq_deploy.export.requant`, whose :func:`match_requantize` finds them). Compiled op by
op, that is an int64 modulo and division per element; fused, it is a multiply, an add and an
arithmetic shift (:func:`.arith.requantize_fixed`), bit for bit the same
(:func:`robustq_deploy.fixed_point.requantize`).
"""
from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from ..export.requant import match_requantize
from .qdq import FUSED_DOMAIN


def fuse_requant_chains(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with every requantization chain replaced by ``Requantize``; and their count."""
    matches = [m for m in match_requantize(model.graph) if all(m.nodes)]
    if not matches:
        return model, 0
    first = {m.nodes[0]: m for m in matches}
    drop = {name for m in matches for name in m.nodes}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for node in model.graph.node:
        m = first.get(node.name)
        if m is not None:
            out.graph.node.append(helper.make_node(
                "Requantize", [m.input], [m.output], name=f"{node.name}_fused", domain=FUSED_DOMAIN,
                m0=numpy_helper.from_array(m.m0, "m0"), n=numpy_helper.from_array(m.n, "n"),
                qmin=m.qmin, qmax=m.qmax, to=m.out_type))
        elif node.name not in drop:
            out.graph.node.append(node)
    if all(o.domain != FUSED_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(FUSED_DOMAIN, 1))
    return out, len(matches)


__all__ = ["fuse_requant_chains"]
