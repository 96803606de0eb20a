"""Partitioning: layers an accelerator cannot run stay on the host with the reason, outputs stay
bit-identical; the two-sided sign threshold; what the partition hands to the codegen."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from robustq_deploy.accel.desc import PRESET_DIR
from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig
from robustq_deploy.manifest import Manifest
from robustq_deploy.runtime import load

from .test_stage import reference


def accel_file(tmp_path, name, **values) -> str:
    """A copy of the small preset with some top-level values replaced."""
    lines = []
    for line in (PRESET_DIR / "edge-small.toml").read_text().splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {values.pop(key)}" if key in values else line)
    f = tmp_path / f"{name}.toml"
    f.write_text("\n".join(lines) + "\n")
    return str(f)


def compile_to(src, target, out):
    art = compile_stage(src, CompileConfig(target=target), out)
    return art.file, art.meta["accel"]


def test_layers_that_do_not_fit_stay_on_the_host(tiny_onnx, tmp_path, mnist_x):
    accel = accel_file(tmp_path, "tiny", weight_buffer_kib=2, act_buffer_kib=1)
    lib, meta = compile_to(tiny_onnx["int8"], f"fpga-sim:{accel}", tmp_path / "out")
    assert meta["offloaded"] == ["conv1", "fc2"]
    host = {h["name"]: h["reasons"] for h in meta["host_layers"]}
    # one array row (8 channels) of K int8 weights, 9 B per padded channel of bias + m0 + shift;
    # one output row tile: 2 rows (pool 2) of 8 channels plus the input rows (3x3 kernel: 4 rows)
    weights = "one weight tile of 8 channels ({} B, plus {} B of channel parameters) exceeds the weight buffer (2048 B)"
    acts = "one output row tile ({} B of activations) exceeds the activation buffer (1024 B)"
    assert host == {"conv2": [weights.format(8 * 288, 9 * 64), acts.format(32 * 4 * 16 + 8 * 2 * 14)],
                    "fc1": [weights.format(8 * 3136, 9 * 128), acts.format(3136 + 8)]}
    rows = {c["name"]: c for c in meta["cost"]["layers"]}
    assert rows["conv2"]["placement"] == "host" and rows["conv2"]["macs"] == 14 * 14 * 64 * 288
    conv1 = rows["conv1"]["tiles"]  # 32 channels x 28 rows do not fit 1 KiB: tiled both ways
    assert conv1["weight_tiles"] > 1 and conv1["row_tiles"] > 1
    assert load(lib)(mnist_x).tobytes() == reference(tiny_onnx["int8"], mnist_x).tobytes()


def test_formats_the_accelerator_lacks_stay_on_the_host(tiny_onnx, tmp_path, mnist_x):
    accel = accel_file(tmp_path, "binary-only", weight_bits='["binary"]', act_bits='["binary"]')
    lib, meta = compile_to(tiny_onnx["bnn"], f"fpga-sim:{accel}", tmp_path / "out")
    assert meta["offloaded"] == ["conv2", "fc1", "fc2"]
    (h,) = meta["host_layers"]
    assert h["name"] == "conv1" and h["reasons"] == [
        "weights need 8; the accelerator takes binary", "uint8 activations need 8 bits; the accelerator takes binary"]
    assert load(lib)(mnist_x).tobytes() == reference(tiny_onnx["bnn"], mnist_x).tobytes()


def two_sided(src: onnx.ModelProto) -> onnx.ModelProto:
    """``src`` with conv2's sign threshold made two-sided: +1 only where lo <= acc <= hi."""
    m = onnx.ModelProto()
    m.CopyFrom(src)
    g = m.graph
    ge = next(n for n in g.node if n.op_type == "GreaterOrEqual" and n.input[0] == "conv2_out")
    lo = numpy_helper.to_array(next(t for t in g.initializer if t.name == ge.input[1]))
    g.initializer.append(numpy_helper.from_array((lo + 40).astype(np.int32), "conv2_th_hi_test"))
    le = helper.make_node("LessOrEqual", ["conv2_out", "conv2_th_hi_test"], ["conv2_le_test"], name="conv2_le_test")
    both = helper.make_node("And", [ge.output[0], "conv2_le_test"], ["conv2_and_test"], name="conv2_and_test")
    where = next(n for n in g.node if n.op_type == "Where" and n.input[0] == ge.output[0])
    where.input[0] = "conv2_and_test"
    at = list(g.node).index(where)
    g.node.insert(at, both)
    g.node.insert(at, le)
    onnx.checker.check_model(m)
    return m


def test_two_sided_thresholds(tiny_onnx, tmp_path, mnist_x):
    src = tmp_path / "model.two-sided.onnx"
    onnx.save(two_sided(onnx.load(str(tiny_onnx["bnn"]))), str(src))
    lib, meta = compile_to(src, "fpga-sim", tmp_path / "out")
    rows = {c["name"]: c for c in meta["cost"]["layers"]}
    assert rows["conv2"]["pattern"] == "fpga_sim.conv_sign2_pool" and rows["conv2"]["engine"] == "xnor"
    want = reference(src, mnist_x)
    assert load(lib)(mnist_x).tobytes() == want.tobytes()
    assert not np.array_equal(want, reference(tiny_onnx["bnn"], mnist_x))  # the upper bound matters


@pytest.mark.parametrize("kind", ["int8", "bnn"])
def test_the_host_module_calls_the_accelerator_by_layer(kind, fpga_libs):
    art = Manifest.load(fpga_libs[kind].parent).find(fpga_libs[kind])
    assert art.meta["integer_only"] and art.meta["kind"] == "accel" and art.meta["target_desc"]["kind"] == "accel"
    impls = art.meta["implementations"]
    assert all(k.split(":")[1] in ("accel-canonical", "generic", "unpacked") for k in impls)
    glue = (fpga_libs[kind].parent / "model.fpga-sim.accel" / "src" / "fpga_tvm.c").read_text()
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert f"int __tvm_ffi_fpga_{name}(" in glue
