"""``robustq compile --target fpga-sim`` end to end on the project's three MNIST model kinds:
what is offloaded, outputs bit-identical to the numpy integer reference and to the x86 module,
the cost report (with a hand-computed conv layer), manifest hashes, determinism, CLI."""
import json
import shutil

import numpy as np
import onnx
import pytest

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig
from robustq_deploy.errors import ArtifactError, ConfigError
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.manifest import Manifest, sha256_file
from robustq_deploy.runtime import load
from tests.helpers import run_cli


def reference(onnx_path, x):
    sess = ReferenceSession(onnx.load(str(onnx_path)))
    return sess.run(None, {sess.input_names[0]: x})[0]


def accel_meta(lib):
    return Manifest.load(lib.parent).find(lib).meta["accel"]


@pytest.mark.parametrize("kind", ["int8", "ternary", "bnn"])
def test_all_layers_offloaded_and_bit_identical_to_the_reference(kind, tiny_onnx, fpga_libs, mnist_x):
    meta = accel_meta(fpga_libs[kind])
    assert meta["offloaded"] == ["conv1", "conv2", "fc1", "fc2"] and meta["host_layers"] == []
    runner = load(fpga_libs[kind])
    assert runner.engine == "fpga-sim"
    got = runner(mnist_x)
    assert got.dtype == np.float32 and got.tobytes() == reference(tiny_onnx[kind], mnist_x).tobytes()


def test_threads_reach_the_simulator_host(tiny_onnx, fpga_libs, mnist_x):
    """``threads`` reaches the fpga-sim runner's host TVM module as it reaches the CPU runners;
    too many are refused in one line."""
    import os

    one = load(fpga_libs["int8"], threads=1)
    assert one.threads == 1 and load(fpga_libs["int8"]).threads >= 1
    assert one(mnist_x).tobytes() == reference(tiny_onnx["int8"], mnist_x).tobytes()
    with pytest.raises(ConfigError, match="TVM's thread pool in this process has at most"):
        load(fpga_libs["int8"], threads=int(os.environ["TVM_NUM_THREADS"]) + 1)


def test_binary_layers_use_the_xnor_array(fpga_libs):
    layers = {c["name"]: c for c in accel_meta(fpga_libs["bnn"])["cost"]["layers"]}
    assert layers["conv1"]["engine"] == "mac"  # 8-bit weights on uint8 pixels
    assert [layers[n]["engine"] for n in ("conv2", "fc1", "fc2")] == ["xnor"] * 3
    assert layers["conv2"]["pattern"] == "fpga_sim.conv_sign_pool"
    ternary = {c["name"]: c for c in accel_meta(fpga_libs["ternary"])["cost"]["layers"]}
    assert {c["weight_format"] for c in ternary.values()} == {"ternary"}


def test_int8_equals_the_x86_module(tiny_onnx, fpga_libs, mnist_x):
    x86 = compile_stage(tiny_onnx["int8"], CompileConfig(target="x86"), tiny_onnx["int8"].parent).file
    assert load(fpga_libs["int8"])(mnist_x).tobytes() == load(x86)(mnist_x).tobytes()
    # the artifact folder now holds both; each target picks its own
    assert load(x86.parent, target="fpga-sim").engine == "fpga-sim"
    assert load(x86.parent, target="x86").engine.startswith("tvm-")


def test_cost_report_of_the_int8_model_on_the_small_preset(fpga_libs):
    meta = accel_meta(fpga_libs["int8"])
    assert meta["preset"] == "edge-small"
    report = json.loads((fpga_libs["int8"].parent / meta["cost_file"]).read_text())
    assert report == meta["cost"]
    rows = {c["name"]: c for c in report["layers"]}
    assert list(rows) == ["conv1", "conv2", "fc1", "fc2"]
    for c in rows.values():
        assert c["placement"] == "accelerator" and c["cycles"] > 0 and c["latency_us"] > 0
        assert all(v >= 0 for v in c["onchip_bytes"].values()) and c["onchip_bytes"]["weights"] > 0
    # conv2 by hand: 3x3, 32 -> 64 channels on the 14x14 map (pad 1), then 2x2 max pool.
    macs = 14 * 14 * 64 * (32 * 3 * 3)
    lanes = 8 * 8  # edge-small MAC array; 64 channels and K = 288 fill it exactly
    setup, fill = 200, 12  # layer_setup_cycles, pipeline_depth (one tile pass)
    dma = -(-(32 * 14 * 14 + 64 * 7 * 7) // 10)  # input + pooled output bytes at 10 B/cycle (1 GB/s, 100 MHz)
    assert rows["conv2"]["macs"] == macs and rows["conv2"]["dma_cycles"] == dma < macs // lanes
    assert rows["conv2"]["cycles"] == macs // lanes + setup + fill == 56_660
    # fc1's 3136 x 128 int8 weights (392 KiB) do not fit the 128 KiB weight buffer: streamed in tiles
    fc1 = rows["fc1"]
    assert not fc1["weights_resident"] and fc1["tiles"]["weight_tiles"] > 1
    assert fc1["traffic_bytes"]["weights"] == 3136 * 128 and fc1["bound"] == "memory"
    t = report["totals"]
    assert t["cycles"] == sum(c["cycles"] for c in rows.values()) and t["layers_on_host"] == 0
    assert t["onchip_bytes"]["weights_resident"] + t["onchip_bytes"]["weights_stream_tile"] <= 128 * 1024
    assert "<table" in (fpga_libs["int8"].parent / "model.fpga-sim.accel" / "cost.html").read_text()


def test_manifest_hashes_guard_every_accelerator_file(fpga_libs, tmp_path):
    lib = fpga_libs["bnn"]
    meta = accel_meta(lib)
    names = {f["path"].split("/", 1)[1] for f in meta["files"]}
    assert {"libfpga_sim.so", "cost.json", "src/fpga_driver.c", "src/fpga_tvm.c", "src/fpga_conv2.c"} <= names
    for f in meta["files"]:
        assert sha256_file(lib.parent / f["path"]) == f["sha256"]
    copy = shutil.copytree(lib.parent, tmp_path / "copy")
    sim = copy / meta["sim_library"]
    sim.write_bytes(sim.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="libfpga_sim.so: sha256 .* refusing a modified artifact"):
        load(copy / lib.name)
    (copy / "model.fpga-sim.accel" / "cost.json").unlink()
    with pytest.raises(ArtifactError, match="cost.json: listed by model.fpga-sim.so but missing"):
        load(copy / lib.name)


def test_cli_compile_with_a_preset_is_deterministic_and_infer_runs_it(tiny_onnx, tmp_path, mnist_x, capsys):
    src = tiny_onnx["bnn"]
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = run_cli(["compile", src, "--target", "fpga-sim:edge-large", "--out", a], capsys)
    assert code == 0, err
    assert "compiled" in out and "fpga-sim: 4 of 4 layers on the accelerator" in out
    compile_stage(src, CompileConfig(target="fpga-sim:edge-large"), b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "manifest.json")
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert accel_meta(a / "model.fpga-sim.so")["accelerator"]["name"] == "edge-large"
    np.save(tmp_path / "x.npy", mnist_x[:5])
    code, out, err = run_cli(["infer", a, "--target", "fpga-sim", "--input", tmp_path / "x.npy",
                              "--output", tmp_path / "y.npy"], capsys)
    assert code == 0, err
    assert "(fpga-sim)" in out
    assert np.load(tmp_path / "y.npy").tobytes() == reference(src, mnist_x[:5]).tobytes()


def test_bad_target_options_are_one_line_errors(tiny_onnx, tmp_path, capsys):
    code, _, err = run_cli(["compile", tiny_onnx["bnn"], "--target", "fpga-sim:nope", "--out", tmp_path], capsys)
    assert code == 2 and err.startswith("error: unknown accelerator preset 'nope'") and err.count("\n") == 1
    with pytest.raises(ConfigError, match="tuning is not available for the fpga-sim target"):
        compile_stage(tiny_onnx["bnn"], CompileConfig(target="fpga-sim", tune_trials=4, batch=1), tmp_path)
