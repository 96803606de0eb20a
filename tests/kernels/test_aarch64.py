"""AArch64 builds (NEON dot product, cnt) run under qemu-user with the compile stage's runner
and the aarch64 TVM runtime, bit-exact with the numpy reference."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from robustq_deploy.compile.fused.from_twin import from_twin
from robustq_deploy.compile.fused.network import compile_network, export_network
from robustq_deploy.models.examples import example_twin

from .conftest import odd_widths_twin

pytestmark = [pytest.mark.qemu, pytest.mark.slow]  # ~1 minute under emulation


@pytest.fixture(scope="module")
def toolchain():
    from robustq_deploy.targets import get_target
    from robustq_deploy.targets.toolchain import ensure_toolchain, missing_tools

    desc = get_target("aarch64")
    if missing_tools(desc) or shutil.which("qemu-aarch64") is None:
        pytest.skip(f"aarch64 tools missing: {missing_tools(desc)}")
    return desc, ensure_toolchain(desc)


@pytest.mark.parametrize("arch", ["mnist-cnn", "mnist-bnn", "odd-widths"])
def test_aarch64_network_is_bit_exact_under_qemu(toolchain, arch, tmp_path):
    desc, tc = toolchain
    twin = odd_widths_twin() if arch == "odd-widths" else example_twin(arch)  # odd: padded to sdot's 4 lanes
    target = desc.tvm_target()
    net = from_twin(twin, target)
    assert net.ctx.lowering.intrin.name == "robustq.sdot_s8s8_4x4"
    lib = tmp_path / "m.so"
    export_network(compile_network(net, target), lib, desc.cross_compiler)
    for n in (2, 20):
        x = np.random.default_rng(n).random((n, *twin.input_shape), dtype=np.float32)
        np.save(tmp_path / "x.npy", x)
        run = subprocess.run(tc.command + [str(lib), str(tmp_path), str(tmp_path / "x.npy")],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-1000:]
        np.testing.assert_array_equal(np.load(tmp_path / "out_0.npy"), net.reference(x))
