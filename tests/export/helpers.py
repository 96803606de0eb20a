"""Helpers of the export tests: run a ModelProto in onnxruntime and in the numpy reference."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from robustq_deploy.export.reference import ReferenceSession


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def run_ref(model: onnx.ModelProto, x: np.ndarray, fuse: bool = True) -> np.ndarray:
    sess = ReferenceSession(model, fuse_requant=fuse)
    return sess.run(None, {sess.input_names[0]: x})[0]


@torch.no_grad()
def run_twin(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return model(torch.from_numpy(x)).numpy()


def assert_bit_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{int((a != b).sum())} elements differ"
