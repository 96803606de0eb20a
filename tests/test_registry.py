"""The one registry type: duplicates refused, names listed, an unknown name is one line with the
choices, entries loaded lazily where a registry's modules import its package; and every registry
of the package is one."""
from __future__ import annotations

import pytest

from robustq_deploy.errors import ConfigError
from robustq_deploy.registry import Registry, registry_of


def test_registry_contract():
    loaded = []
    reg: Registry = Registry("widget", key="x.widget", load=lambda: loaded.append(1) or reg.add("b", 2))
    reg.register("a")(1)
    assert reg.names() == ["a", "b"] and loaded == [1] and reg["b"] == 2 and "a" in reg and len(reg) == 2
    with pytest.raises(ValueError, match="widget 'a' registered twice"):
        reg.add("a", 3)
    with pytest.raises(ConfigError, match=r"^x\.widget: unknown widget 'c'; choose one of a, b$"):
        reg.get("c")
    with pytest.raises(ConfigError, match=r"^y: unknown widget 'c'"):
        reg.get("c", key="y")
    copy = reg.copy()
    copy.add("c", 3)
    assert "c" not in reg and registry_of({"z": 0}, "thing").names() == ["z"]


def test_every_registry_is_a_registry():
    from robustq_deploy.attacks.base import ATTACKS
    from robustq_deploy.attacks.losses import LOSSES
    from robustq_deploy.compile.backend import BACKENDS
    from robustq_deploy.compile.cpu import KERNEL_LIBRARIES
    from robustq_deploy.compile.fused.from_onnx import HANDLERS as FUSED_PATTERNS
    from robustq_deploy.compile.implementations import IMPLEMENTATIONS
    from robustq_deploy.compile.registry import CONVERTERS
    from robustq_deploy.data.registry import DATASETS
    from robustq_deploy.export.packed import PACKERS
    from robustq_deploy.export.reference.session import REFERENCE_OPS
    from robustq_deploy.export.registry import HANDLERS
    from robustq_deploy.export.robustq_ops import OPS
    from robustq_deploy.kernels.registry import KERNELS
    from robustq_deploy.models import MODELS
    from robustq_deploy.train.adversary import ADVERSARIES
    from robustq_deploy.train.base import METHODS
    from robustq_deploy.twin.ops import TWIN_OPS
    from robustq_deploy.verify.plan import BUDGETS

    regs = [ATTACKS, LOSSES, BACKENDS, KERNEL_LIBRARIES, FUSED_PATTERNS, IMPLEMENTATIONS, CONVERTERS, DATASETS,
            PACKERS, REFERENCE_OPS, HANDLERS, OPS, KERNELS, MODELS, ADVERSARIES, METHODS, TWIN_OPS, BUDGETS]
    assert all(isinstance(r, Registry) and len(r) > 0 for r in regs)
    assert BACKENDS.names() == ["cpu", "accel"] or set(BACKENDS.names()) == {"cpu", "accel"}
