"""Target descriptions: shipped files (package data), named CPUs and accelerators (one naming
rule), refusals, features LLVM enables, and a new target of an existing kind added as one TOML
file: compiled, recorded and run without any code knowing its name."""
from __future__ import annotations

import pytest

from robustq_deploy.errors import ConfigError
from robustq_deploy.targets import get_target, shipped, target_names


def test_shipped_targets():
    assert {"x86", "aarch64"} <= set(target_names())
    x86, arm = get_target("x86"), get_target("aarch64")
    assert x86.kind == "cpu" and x86.isa == "x86_64" and not x86.emulated and not x86.cross
    assert x86.tvm == {"kind": "llvm", "mcpu": "host"} and x86.kernels == ("tiled",)
    assert arm.kind == "cpu" and arm.isa == "aarch64" and arm.emulated and arm.cross_compiler == "aarch64-linux-gnu-gcc"
    assert arm.tvm == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]}
    assert arm.emulator[0] == "qemu-aarch64" and arm.runtime_platform == "manylinux_2_28_aarch64"


def test_host_cpu_is_detected_and_cpus_can_be_named():
    import tvm

    assert get_target("x86").tvm_spec()["mcpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert "avx512vnni" in get_target("x86:cascadelake").cpu_features()
    assert "avx512vnni" not in get_target("x86:haswell").cpu_features()
    assert set(get_target("aarch64").cpu_features()) >= {"neon", "dotprod"}


def test_refusals(tmp_path):
    with pytest.raises(ConfigError, match="unknown target 'riscv'"):
        get_target("riscv")
    with pytest.raises(ConfigError, match="does not know the CPU"):
        get_target("x86:nocpu")
    bad = tmp_path / "t.toml"
    bad.write_text('name = "t"\nkind = "cpu"\nrunnr = "native"\n')
    with pytest.raises(ConfigError, match="unknown key 'runnr'"):
        get_target(str(bad))
    bad.write_text('name = "t"\n[tvm]\nkind = "llvm"\n')
    with pytest.raises(ConfigError, match="kind: missing"):
        get_target(str(bad))
    bad.write_text('name = "t"\nkind = "cpu"\nisa = "riscv"\n')
    with pytest.raises(ConfigError, match="isa: unknown value 'riscv'"):
        get_target(str(bad))
    bad.write_text('name = "t"\nkind = "cpu"\n')
    with pytest.raises(ConfigError, match="has no variants"):
        get_target(f"{bad}:znver4")
    bad.write_text('name = "t"\nkind = "cpu"\nisa = "aarch64"\n[tvm]\nkind = "llvm"\nmcpu = "znver4"\n')
    with pytest.raises(ConfigError, match="isa = 'aarch64', but its TVM target"):
        get_target(str(bad)).features()


def test_one_naming_rule_for_cpus_and_accelerators(tmp_path):
    from robustq_deploy.targets import split_target_name

    assert split_target_name("x86:znver4") == ("x86", "znver4")
    assert split_target_name("fpga-sim:/p/accel.toml") == ("fpga-sim", "/p/accel.toml")
    assert get_target("x86:znver4").tvm["mcpu"] == "znver4" and get_target("x86:znver4").name == "x86"
    assert get_target("fpga-sim:edge-large").accel == "edge-large"
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\nkind = "cpu"\nvariant = "mcpu"\n[tvm]\nkind = "llvm"\nmcpu = "skylake"\n')
    assert get_target(f"{f}:znver4").tvm["mcpu"] == "znver4"


def test_user_target_file(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\nkind = "cpu"\n[tvm]\nkind = "llvm"\nmcpu = "skylake"\n')
    assert get_target(str(f)).tvm_target().mcpu == "skylake"


def test_a_new_target_of_an_existing_kind_is_one_toml_file(tmp_path, capsys):
    """A second x86 description (another CPU, its own name) written as a file: ``robustq
    compile --target FILE`` builds for it, the manifest records the description, and ``robustq
    infer`` runs it through the backend of its kind, bit-exact with the numpy reference; the
    compile stage, the runtime and the backend never see its name."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from robustq_deploy.export.reference import ReferenceSession
    from robustq_deploy.manifest import Manifest
    from tests.helpers import run_cli

    text = (shipped() / "x86.toml").read_text().replace('name = "x86"', 'name = "x86-v2"')
    text = text.replace('mcpu = "host"', 'mcpu = "x86-64-v2"')  # SSE4.2: every x86-64 host runs it
    (tmp_path / "x86-v2.toml").write_text(text)
    w = np.random.default_rng(0).integers(-127, 128, (6, 3, 3, 3)).astype(np.int8)
    g = helper.make_graph([helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1])], "conv",
                          [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 6, 5, 5])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(2, np.uint8), "xz")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "m.onnx"))
    out = tmp_path / "out"
    code, _, err = run_cli(["compile", tmp_path / "m.onnx", "--target", tmp_path / "x86-v2.toml", "--out", out], capsys)
    assert code == 0, err
    lib = out / "model.x86-v2.so"
    art = Manifest.load(out).find(lib)
    assert art.meta["target"] == "x86-v2" and art.meta["tvm_target"]["mcpu"] == "x86-64-v2"
    assert art.meta["implementations"] == {"int_conv2d:tiled": 1} and "avx512vnni" not in art.meta["cpu_features"]
    x = np.random.default_rng(1).integers(0, 256, (4, 3, 5, 5)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    code, _, err = run_cli(["infer", lib, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"], capsys)
    assert code == 0, err
    sess = ReferenceSession(model)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), sess.run(None, {"x": x})[0])
