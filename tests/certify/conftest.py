"""Tiny quantized networks whose whole input box can be enumerated, exported as ``integer`` and
``qdq`` and run by the deployed engines (onnxruntime, and a TVM build for this machine).

* ``tiny``: 3x3 pixels -> conv2x2/p1 (4) - relu - maxpool2 -> fc(6) - relu -> fc(3), int8,
  trained 200 steps on a synthetic task (labels from a fixed random linear teacher);
* ``tiny_bnn``: 3x3 pixels -> conv2x2/p1 (4, 8-bit) - BatchNorm - maxpool2 - sign -> fc(3) with
  binary weights and inputs (the sign-threshold path of binary networks), ``integer`` only.

At eps = 1/255 every pixel has at most 3 levels: 3**9 = 19683 inputs per point.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustq_deploy.config import LayerQuantConfig, QuantConfig
from robustq_deploy.export import export_model
from robustq_deploy.models import first_layer_spec
from robustq_deploy.quant import QConv2d, QLinear, layer_spec
from tests.helpers import one_torch_thread  # noqa: F401  (autouse)

SHAPE = (1, 3, 3)
EPS = 1 / 255


class Tiny(nn.Module):
    def __init__(self, quant: QuantConfig):
        super().__init__()
        spec1, pixel = first_layer_spec(quant, "conv1")
        self.conv1 = QConv2d(1, 4, 2, spec1, padding=1, in_fixed_scale=pixel)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = QLinear(16, 6, layer_spec(quant, "fc1"))
        self.fc2 = QLinear(6, 3, layer_spec(quant, "fc2"))
        self.arch, self.num_classes, self.input_shape = "tiny", 3, SHAPE

    def forward(self, x):
        x = torch.flatten(self.pool(torch.relu(self.conv1(x))), 1)
        return self.fc2(torch.relu(self.fc1(x)))


class TinyBNN(nn.Module):
    def __init__(self, quant: QuantConfig):
        super().__init__()
        spec1, pixel = first_layer_spec(quant, "conv1")
        self.conv1 = QConv2d(1, 4, 2, spec1, padding=1, bias=False, in_fixed_scale=pixel)
        self.bn1 = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = QLinear(16, 3, layer_spec(quant, "fc1"), in_signed=True)
        self.arch, self.num_classes, self.input_shape = "tiny-bnn", 3, SHAPE

    def forward(self, x):
        return self.fc1(torch.flatten(self.pool(self.bn1(self.conv1(x))), 1))


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels on the uint8 grid (float32 in [0, 1]) and labels of a fixed random linear teacher."""
    g = np.random.default_rng(seed)
    x = (g.integers(0, 256, (n, *SHAPE)) / 255).astype(np.float32)
    teacher = np.random.default_rng(123).standard_normal((3, 9))
    y = (x.reshape(n, -1) @ teacher.T).argmax(1).astype(np.int64)
    return x, y


def train(model: nn.Module, steps: int = 200) -> nn.Module:
    torch.manual_seed(0)
    x, y = synthetic(2048, 0)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, nn.Module]:
    q8 = QuantConfig(weight_bits=8, act_bits=8)
    qb = QuantConfig(weight_bits="binary", act_bits="binary", layers={"conv1": LayerQuantConfig(weight_bits=8)})
    return {"tiny": train(Tiny(q8)), "tiny_bnn": train(TinyBNN(qb))}


@pytest.fixture(scope="session")
def tiny_onnx(tiny_models) -> dict[tuple[str, str], onnx.ModelProto]:
    return {("tiny", "integer"): export_model(tiny_models["tiny"], "integer", 21),
            ("tiny", "qdq"): export_model(tiny_models["tiny"], "qdq", 21),
            ("tiny_bnn", "integer"): export_model(tiny_models["tiny_bnn"], "integer", 21)}


@pytest.fixture(scope="session")
def tiny_points() -> tuple[np.ndarray, np.ndarray]:
    """Test points of the synthetic task (not seen in training)."""
    return synthetic(24, 1)


class OrtEngine:
    name = "onnxruntime"

    def __init__(self, model: onnx.ModelProto):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.sess.get_inputs()[0].name: x})[0]


class TvmEngine:
    name = "tvm"

    def __init__(self, model: onnx.ModelProto):
        from tests.compile.helpers import Compiled

        self.compiled = Compiled(model)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.compiled(x[i:i + 4096])[0] for i in range(0, len(x), 4096)])


@pytest.fixture(scope="session")
def engines(tiny_onnx) -> dict[tuple[str, str], list]:
    """Deployed engines of every tiny export: onnxruntime and a TVM build for this machine."""
    return {key: [OrtEngine(m), TvmEngine(m)] for key, m in tiny_onnx.items()}


def box_inputs(program, x: np.ndarray, eps: float) -> np.ndarray:
    """Every input level combination of the ball around one point ``x``, as float inputs of the
    ball that quantize to it (checked through the graph's own input quantizer)."""
    from robustq_deploy.certify.certifier import float_inputs
    from robustq_deploy.certify.interval import ball
    from robustq_deploy.certify.program import InputQuant

    q = next(s for s in program.steps if isinstance(s, InputQuant))
    a, b = ball(x[None], eps)
    lo, hi = q.quantize(a)[0].reshape(-1), q.quantize(b)[0].reshape(-1)
    levels = np.array(list(itertools.product(*[range(int(i), int(j) + 1) for i, j in zip(lo, hi)])), np.int64)
    levels = levels.reshape(-1, *x.shape)
    xs = float_inputs(program, levels, a, b)
    assert np.array_equal(q.quantize(xs), levels)
    assert np.all(np.abs(xs.astype(np.float64) - x) <= eps * (1 + 2.0**-20))
    return xs
