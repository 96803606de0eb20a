"""A compile is told things once and every setting takes effect or is refused: the target is
parsed once (the runtime reads the description the manifest recorded), the graph is prepared
once even when the fused path declines it, ``batch`` reaches the fused network, the target's
tile records choose the register tiles, and descriptions with an unknown kind, removed fields
or kernel libraries an accelerator cannot use are refused in one line."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import robustq_deploy.compile as C
from robustq_deploy import targets
from robustq_deploy.compile import CompileOptions, compile_stage
from robustq_deploy.compile.fused import FUSED_PATH, PER_OP_PATH
from robustq_deploy.config import CompileConfig
from robustq_deploy.errors import ConfigError, InputError
from robustq_deploy.export import export_model
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.runtime import load
from tests.compile.helpers import uint8_conv_model
from tests.kernels.conftest import calibrated_twin


@pytest.fixture(scope="module")
def mnist_integer(tmp_path_factory):
    """The project's integer export of a calibrated mnist-cnn twin (the fused path builds it)."""
    path = tmp_path_factory.mktemp("options") / "mnist.integer.onnx"
    onnx.save(export_model(calibrated_twin("mnist-cnn", (1, 28, 28)), "integer", 21), str(path))
    return path


def reference(path, x):
    sess = ReferenceSession(onnx.load(str(path)))
    return sess.run(None, {sess.input_names[0]: x})[0]


def counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_the_target_is_parsed_once_and_the_graph_prepared_once(tmp_path, monkeypatch):
    parsed = counting(monkeypatch, C, "get_target")
    prepared = counting(monkeypatch, C, "prepare")
    art = compile_stage(uint8_conv_model(tmp_path / "conv.onnx"), CompileConfig(target="x86:znver4"), tmp_path / "out")
    assert art.meta["compile_path"] == PER_OP_PATH and "float [N, C, H, W]" in art.meta["fused_refused"]
    assert len(parsed) == 1 and len(prepared) == 1  # the fused path declined it: prepared once all the same
    assert art.config["target"] == "x86:znver4" and art.meta["target_desc"]["tvm"]["mcpu"] == "znver4"
    everywhere = counting(monkeypatch, targets, "get_target")
    load(art.file)  # the runner comes from the recorded description: nothing is parsed again
    assert everywhere == [] and len(parsed) == 1


def test_batch_reaches_the_fused_network(mnist_integer, tmp_path):
    art = compile_stage(mnist_integer, CompileConfig(target="x86", batch=4), tmp_path)
    assert art.meta["compile_path"] == FUSED_PATH and art.meta["inputs"][0]["shape"] == [4, 1, 28, 28]
    run = load(art.file)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(run(x), reference(mnist_integer, x))
    with pytest.raises(InputError, match=r"shape \[5, 1, 28, 28\] but the model expects \[4, 1, 28, 28\]"):
        run(np.zeros((5, 1, 28, 28), np.float32))


def test_the_targets_tile_records_choose_the_tiles(mnist_integer, tmp_path):
    """A description naming a folder of tile records for its CPU builds those tiles (recorded
    in the manifest) and computes the same integers; the shipped x86 records (tuned on a
    cascadelake) apply when building for that CPU."""
    from robustq_deploy.compile.fused.from_onnx import from_onnx
    from robustq_deploy.kernels.records import Records
    from robustq_deploy.kernels.registry import KERNELS, KernelContext

    desc = targets.get_target("x86")
    target = desc.tvm_target()
    net = from_onnx(C.prepare(onnx.load(str(mnist_integer))).graph, target)
    conv = next(n for n in net.nodes if n.kernel == "conv2d")
    cands = KERNELS["conv2d"].candidates(conv.spec, KernelContext.for_target(target))
    records = Records()
    records.add("conv2d", conv.spec, target, cands[-1])
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "host.json").write_text(records.to_json())
    text = (targets.shipped() / "x86.toml").read_text().replace('tile_records = "records"',
                                                                 f'tile_records = "{tmp_path / "records"}"')
    (tmp_path / "mine.toml").write_text(text.replace('name = "x86"', 'name = "tiled-x86"'))
    art = compile_stage(mnist_integer, CompileConfig(target=str(tmp_path / "mine.toml")), tmp_path / "out")
    tile = cands[-1]
    assert art.meta["tiles"] == {conv.name: [tile.pixels, tile.oc_blocks, tile.rows]}
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(load(art.file)(x), reference(mnist_integer, x))
    shipped = compile_stage(mnist_integer, CompileConfig(target="x86:cascadelake"), tmp_path / "cascadelake")
    assert shipped.meta["tiles"]  # the example model's shapes are in the shipped records


def test_descriptions_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('name = "t"\nkind = "gpu"\n[tvm]\nkind = "llvm"\n')
    with pytest.raises(ConfigError, match="kind: unknown target kind 'gpu'; choose one of accel, cpu"):
        CompileOptions.from_config(CompileConfig(target=str(bad)))
    bad.write_text('name = "t"\nkind = "cpu"\nweight_bits = [8]\n[tvm]\nkind = "llvm"\n')
    with pytest.raises(ConfigError, match="unknown key 'weight_bits'"):  # a field nothing read is gone
        CompileOptions.from_config(CompileConfig(target=str(bad)))
    bad.write_text('name = "t"\nkind = "cpu"\nkernels = ["fast"]\n[tvm]\nkind = "llvm"\n')
    with pytest.raises(ConfigError, match="kernels: unknown kernel library 'fast'; choose one of tiled"):
        CompileOptions.from_config(CompileConfig(target=str(bad)))
    with pytest.raises(ConfigError, match="an accelerator target lists no kernel libraries"):
        CompileOptions.of("fpga-sim", kernels=("tiled",))
    with pytest.raises(ConfigError, match="tuning is not available"):
        CompileOptions.from_config(CompileConfig(target="fpga-sim", tune_trials=3, batch=1))
    with pytest.raises(ConfigError, match="tuning needs static shapes"):
        CompileOptions.from_config(CompileConfig(target="x86", tune_trials=3))
