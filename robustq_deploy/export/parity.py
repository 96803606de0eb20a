"""Parity of an exported model: onnxruntime vs the numpy reference vs the PyTorch twin.

:func:`measure_parity` answers, for one ONNX model and a batch of test images:

* does ``onnx.checker`` (full check, shape inference) accept it;
* do onnxruntime and the numpy reference (:mod:`.reference`) agree bit for bit on the first
  ``n_reference`` images, on the float logits *and* on the int32 accumulator that the final
  DequantizeLinear reads (logits are ``float32(acc) * scale``, a function of the accumulator);
* how often the deployed argmax equals the twin's, and the worst logit difference in output
  LSBs (the final dequantization scale of each class, ``|deployed - twin| / scale``);
* is every tensor between the input quantizer and the output dequantizer integer.

Used by ``bench/export_parity.py`` and the slow MNIST tests; the verify stage measures agreement
on its own attacked points.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from .analysis import float_tensors_inside
from .reference import ReferenceSession


def output_dequantizer(m: onnx.ModelProto) -> tuple[str, np.ndarray] | None:
    """(int32 accumulator name, per-class scale) of a DequantizeLinear writing the graph output."""
    outputs = {o.name for o in m.graph.output}
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0] in outputs and n.input[1] in inits:
            return n.input[0], np.asarray(inits[n.input[1]], np.float32)
    return None


def _with_outputs(m: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    for name in names:
        out.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return out


def _batched(fn, x: np.ndarray, batch: int) -> list[np.ndarray]:
    parts = [fn(x[i:i + batch]) for i in range(0, len(x), batch)]
    return [np.concatenate(p) for p in zip(*parts)]


@torch.no_grad()
def measure_parity(twin: torch.nn.Module, m: onnx.ModelProto, x: np.ndarray, labels: np.ndarray | None = None,
                   n_reference: int = 1000, batch: int = 500) -> dict[str, Any]:
    """The numbers listed in the module docstring, as a JSON-ready dict."""
    res: dict[str, Any] = {}
    try:
        onnx.checker.check_model(m, full_check=True)
        res["checker"] = True
    except onnx.checker.ValidationError as exc:
        res["checker"] = f"failed: {str(exc).splitlines()[0]}"
    deq = output_dequantizer(m)
    probe = _with_outputs(m, [deq[0]]) if deq else m
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    outs = _batched(lambda xb: sess.run(None, {in_name: xb}), x, batch)
    logits = outs[0]
    ref_sess = ReferenceSession(m)
    nref = min(n_reference, len(x))
    ref_names = [m.graph.output[0].name] + ([deq[0]] if deq else [])
    ref = _batched(lambda xb: [ref_sess.run_all({in_name: xb})[k] for k in ref_names], x[:nref], batch)
    res["reference_images"] = nref
    res["logits_bit_equal"] = bool(np.array_equal(logits[:nref].view(np.uint32), ref[0].view(np.uint32)))
    res["logits_mismatches"] = int((logits[:nref] != ref[0]).sum())
    if deq:
        res["accumulators_bit_equal"] = bool(np.array_equal(outs[1][:nref], ref[1]))
        res["accumulator_dtype"] = str(outs[1].dtype)
    twin_logits = torch.cat([twin(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()
    res["images"] = len(x)
    res["argmax_agreement"] = float((logits.argmax(1) == twin_logits.argmax(1)).mean())
    diff = np.abs(logits.astype(np.float64) - twin_logits.astype(np.float64))
    res["worst_logit_diff"] = float(diff.max())
    if deq:
        res["worst_logit_diff_lsb"] = float((diff / np.broadcast_to(deq[1].astype(np.float64), diff.shape[1:])).max())
    if labels is not None:
        res["deployed_accuracy"] = float((logits.argmax(1) == labels).mean())
        res["twin_accuracy"] = float((twin_logits.argmax(1) == labels).mean())
    res["integer_only"] = not float_tensors_inside(m)
    return res


__all__ = ["measure_parity", "output_dequantizer"]
