"""Helpers of the compiler tests: compile in memory and run on this machine, or compile to an
artifact for a target and run it through ``robustq_deploy.load`` (qemu for aarch64)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from robustq_deploy.compile import CompileOptions, compile_model, compile_stage, prepare
from robustq_deploy.compile.build import build
from robustq_deploy.compile.dtypes import from_storage, to_storage
from robustq_deploy.config import CompileConfig
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.runtime import load
from robustq_deploy.targets import get_target
from robustq_deploy.targets.toolchain import missing_tools

X86 = get_target("x86")


class Compiled:
    """A model compiled for this machine, run by the Relax VM in-process."""

    def __init__(self, model: onnx.ModelProto, requant: str = "auto", source: str = "model"):
        import tvm
        from tvm import relax

        # TVM's generic lowering (no kernel library): what the converters themselves emit
        options = CompileOptions.of(X86, requant=requant, source=source, kernels=())
        self.mod, self.lowered, self.meta = compile_model(prepare(model, requant), options)
        self.vm = relax.VirtualMachine(build(self.lowered, X86), tvm.cpu())
        self._tensor = tvm.runtime.tensor
        init = {t.name for t in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in init]
        self.out_types = [onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).name for o in model.graph.output]

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        res = self.vm["main"](*[self._tensor(np.require(to_storage(a), requirements="C")) for a in arrays])
        res = [res] if hasattr(res, "numpy") else list(res)
        return [from_storage(r.numpy(), t) for r, t in zip(res, self.out_types)]


def run_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ReferenceSession(model)
    return sess.run(None, {sess.input_names[0]: x})[0]


def compile_artifact(model_path: Path, target: str, out_dir: Path, requant: str = "auto") -> Path:
    """``robustq compile`` as a library call; returns the library path."""
    return compile_stage(model_path, CompileConfig(target=target, requant=requant), out_dir).file


def run_artifact(lib: Path, x: np.ndarray) -> np.ndarray:
    return load(lib)(x)


def require_qemu() -> None:
    """Skip (with the install command) when the aarch64 cross toolchain or qemu is missing."""
    missing = missing_tools(get_target("aarch64"))
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install -y gcc-aarch64-linux-gnu "
                    "g++-aarch64-linux-gnu qemu-user)")


def assert_bit_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, same shape, same bytes (so -0.0 != 0.0 and NaN payloads count)."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.tobytes() != want.tobytes():
        differ = np.count_nonzero(got.astype(np.float64) != want.astype(np.float64))
        raise AssertionError(f"{differ} of {got.size} elements differ")


def copy_model(path: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(path, dest_dir / path.name))


def uint8_conv_model(path: Path) -> Path:
    """One ConvInteger on uint8 input: the fused path declines it (no float input), per op compiles it."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    g = helper.make_graph([helper.make_node("ConvInteger", ["x", "w"], ["y"])], "conv",
                          [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 2, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 4, 3, 3])],
                          [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path
