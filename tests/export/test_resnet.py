"""Residual adds (QAdd) and global average pooling in the integer forms, on a tiny resnet20
(3x8x8 inputs) with observers calibrated on seeded random images."""
from __future__ import annotations

import onnx
import pytest
import torch

from robustq_deploy.config import QuantConfig
from robustq_deploy.export import export_model
from robustq_deploy.models import build_model

from .helpers import assert_bit_equal, run_ort, run_ref, run_twin

SHAPE = (3, 8, 8)


@pytest.fixture(scope="module")
def resnets():
    out = {}
    gen = torch.Generator().manual_seed(0)
    for key, quant in (("int8", QuantConfig(8, 8)), ("ternary", QuantConfig("ternary", 8))):
        torch.manual_seed(0)
        model = build_model("resnet20", quant, 10, SHAPE)
        model.train()
        with torch.no_grad():
            for _ in range(4):
                model(torch.rand(32, *SHAPE, generator=gen))
        out[key] = model.eval()
    x = (torch.randint(0, 256, (64, *SHAPE), generator=gen).float() / 255).numpy()
    return out, x


@pytest.mark.parametrize("fmt", ["integer", "qoperator", "packed"])
@pytest.mark.parametrize("key", ["int8", "ternary"])
def test_resnet_integer_forms(resnets, key, fmt):
    models, x = resnets
    m = export_model(models[key], fmt, 21)
    onnx.checker.check_model(m, full_check=True)
    ops = {n.op_type for n in m.graph.node}
    assert "ReduceSum" in ops and "Add" in ops
    out = run_ort(m, x)
    assert_bit_equal(out, run_ref(m, x))
    # an untrained network has near-tied logits; most still agree with the twin
    assert (out.argmax(1) == run_twin(models[key], x).argmax(1)).mean() >= 0.9
