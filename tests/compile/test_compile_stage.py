"""The compile stage and the ``compile`` / ``infer`` commands: library + manifest entry,
deterministic bytes, hash-checked loading, one-line errors, named CPUs, tuning (slow)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig
from robustq_deploy.errors import ArtifactError, ConfigError
from robustq_deploy.manifest import Manifest, sha256_file
from robustq_deploy.runtime import load

from ..helpers import run_cli
from .helpers import assert_bit_equal
from .test_node_cases import CASES, bound_case


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """test_qlinearconv with its quantization parameters and weight bound: (path, x, expected y)."""
    model, (x, w), (y,) = bound_case(CASES["test_qlinearconv"])
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    keep = [i for i in model.graph.input if i.name != "w"]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, str(path))
    return path, x, y


@pytest.fixture(scope="module")
def compiled_tiny(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-out")
    return compile_stage(tiny[0], CompileConfig(target="x86"), out)


def test_stage_writes_library_and_manifest_entry(tiny, compiled_tiny):
    art = compiled_tiny
    assert art.file.name == "model.x86.so" and art.kind == "compiled"
    assert Manifest.load(art.root).find(art.file).sha256 == sha256_file(art.file)
    meta = art.meta
    assert meta["target"] == "x86" and meta["kind"] == "cpu" and meta["target_desc"]["name"] == "x86"
    assert meta["tvm_target"]["mcpu"] != "host"  # resolved to the detected CPU
    assert meta["float_compute"] == [] and meta["integer_only"] and meta["requant"] == "float"
    assert meta["source"]["sha256"] == sha256_file(tiny[0])
    assert meta["inputs"] == [{"name": "x", "shape": [1, 1, 7, 7], "dtype": "uint8"}]
    assert_bit_equal(load(art.file)(tiny[1]), tiny[2])


def test_library_bytes_are_deterministic(tiny, compiled_tiny, tmp_path):
    again = compile_stage(tiny[0], CompileConfig(target="x86"), tmp_path)
    assert again.sha256 == compiled_tiny.sha256


def test_a_modified_library_is_refused(compiled_tiny, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(compiled_tiny.root, root)
    lib = root / compiled_tiny.file.name
    lib.write_bytes(lib.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        load(lib)


def test_named_cpu_and_bad_names(tiny, tmp_path):
    art = compile_stage(tiny[0], CompileConfig(target="x86:znver4"), tmp_path)
    assert art.meta["tvm_target"]["mcpu"] == "znver4" and "avx512vnni" in art.meta["cpu_features"]
    with pytest.raises(ConfigError, match="does not know the CPU"):
        compile_stage(tiny[0], CompileConfig(target="x86:pentium9"), tmp_path)
    with pytest.raises(ConfigError, match="compile.requant"):
        compile_stage(tiny[0], CompileConfig(requant="banker"), tmp_path)
    with pytest.raises(ConfigError, match="tuning needs static shapes"):
        compile_stage(tiny[0], CompileConfig(tune_trials=4), tmp_path)


def test_cli_compile_and_infer(tiny, tmp_path, capsys):
    path, x, y = tiny
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["compile", path, "--target", "x86", "--out", out], capsys)
    assert code == 0 and "integer code: every conv / matmul" in stdout
    np.save(tmp_path / "x.npy", x)
    code, stdout, _ = run_cli(["infer", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
                               "--target", "x86"], capsys)
    assert code == 0 and "tvm-x86" in stdout
    assert_bit_equal(np.load(tmp_path / "y.npy"), y)
    code, _, err = run_cli(["infer", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "z.npy",
                            "--target", "aarch64"], capsys)
    assert code == 2 and err.count("\n") == 1 and "compiled targets: x86" in err


def test_cli_unsupported_model_is_one_line(tmp_path, capsys):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Gelu", ["x"], ["a"], domain="com.microsoft"),
             helper.make_node("FastGelu", ["a"], ["b"], domain="com.microsoft")]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    code, _, err = run_cli(["compile", tmp_path / "m.onnx", "--out", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "com.microsoft::Gelu (no converter)" in err and "com.microsoft::FastGelu (no converter)" in err
    assert not (tmp_path / "out" / "model.x86.so").exists()


@pytest.mark.slow
def test_tuning_stores_records_with_the_artifact(project_models, digits_x, tmp_path):
    from .helpers import run_reference

    art = compile_stage(project_models[("int8", "integer")], CompileConfig(tune_trials=8, batch=32), tmp_path)
    records = art.meta["tuning"]["records"]
    assert {r["path"].split("/")[-1] for r in records} == {"database_workload.json", "database_tuning_record.json"}
    for r in records:
        assert sha256_file(art.root / r["path"]) == r["sha256"]
        json.loads((art.root / r["path"]).read_text().splitlines()[0])
    x = digits_x[:32]
    assert_bit_equal(load(art.file)(x), run_reference(onnx.load(str(project_models[("int8", "integer")])), x))
