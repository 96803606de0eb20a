"""The cost report of the project's MNIST int8 architecture (mnist-cnn, w8/a8, integer form) on
the shipped presets, checked against hand calculations. Cycle counts depend on the layers'
shapes, not on the weights' values (the weights only pick the weight format, and seeded random
int8 weights need all 8 bits, as trained ones do), so the model carries seeded random weights
with observers calibrated on seeded random pixels, and the report comes from the partition of
its export (:func:`robustq_deploy.accel.estimate_cost`): nothing is built, the test stays fast.
The full compile of a trained model is checked in test_stage.py."""
import pytest
import torch

from robustq_deploy.accel import estimate_cost, load_accel
from robustq_deploy.config import QuantConfig
from robustq_deploy.errors import ConfigError
from robustq_deploy.export import export_model
from robustq_deploy.models import build_model


@pytest.fixture(scope="module")
def mnist_int8_onnx():
    torch.manual_seed(0)
    model = build_model("mnist-cnn", QuantConfig(weight_bits=8, act_bits=8), 10, (1, 28, 28))
    g = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):  # observers: EMA of the batch maxima
            model(torch.randint(0, 256, (16, 1, 28, 28), generator=g).float() / 255)
    return export_model(model.eval(), "integer", 21)


@pytest.fixture(scope="module")
def small_report(mnist_int8_onnx):
    return estimate_cost(mnist_int8_onnx, "fpga-sim:edge-small")


def ceil(a, b):
    return -(-a // b)


def test_the_preset_states_what_the_hand_calculation_assumes():
    p = load_accel("edge-small")
    assert (p.mac_array.rows, p.mac_array.cols) == (8, 8)
    assert (p.layer_setup_cycles, p.pipeline_depth, p.dma_overlap) == (200, 12, True)
    assert (p.clock_mhz, p.dram_gb_per_s) == (100.0, 1.0)  # 1e9 B/s / 100e6 cycles/s = 10 B per cycle
    assert (p.weight_buffer_kib, p.act_buffer_kib) == (128, 32)


def test_every_layer_is_listed_with_cycles_and_memory(small_report):
    rows = small_report["layers"]
    assert [c["name"] for c in rows] == ["conv1", "conv2", "fc1", "fc2"]
    for c in rows:
        assert c["placement"] == "accelerator" and c["engine"] == "mac" and c["weight_format"] == "8"
        assert c["cycles"] == c["overhead_cycles"] + max(c["compute_cycles"], c["dma_cycles"]) > 0
        assert c["latency_us"] == pytest.approx(c["cycles"] / 100.0)
        mem = c["onchip_bytes"]
        assert set(mem) == {"weights", "params", "act_in", "act_out"} and min(mem.values()) > 0
        assert mem["act_in"] + mem["act_out"] <= 32 * 1024
    t = small_report["totals"]
    assert t["cycles"] == sum(c["cycles"] for c in rows) and t["layers_on_host"] == 0
    assert t["macs_accelerator"] == sum(c["macs"] for c in rows)
    assert t["onchip_bytes"]["weights_resident"] + t["onchip_bytes"]["weights_stream_tile"] \
        + t["onchip_bytes"]["params"] <= 128 * 1024


def test_conv2_cycles_match_the_hand_calculation(small_report):
    c = {r["name"]: r for r in small_report["layers"]}["conv2"]
    # conv2: 3x3, 32 -> 64 channels, pad 1, on the 14x14 map, then a fused 2x2 max pool.
    macs = 14 * 14 * 64 * (32 * 3 * 3)
    lanes = 8 * 8  # 64 output channels and K = 288 fill the 8x8 MAC array exactly: no padding lanes
    assert c["macs"] == macs == 3_612_672 and c["compute_cycles"] == macs // lanes == 56_448
    # Fits on chip in one pass: 18 KiB of resident weights; input 32x16x16 (zero-padded) + output
    # 64x14x14 bytes (before pooling) = 20,736 B <= 32 KiB.
    assert c["weights_resident"] and c["tiles"]["weight_tiles"] == c["tiles"]["row_tiles"] == 1
    assert c["onchip_bytes"] == {"weights": 64 * 288, "params": 64 * (4 + 5), "act_in": 32 * 16 * 16,
                                 "act_out": 64 * 14 * 14}
    # DMA: input 32x14x14 + pooled output 64x7x7 bytes at 10 B/cycle, overlapped with compute.
    assert c["dma_cycles"] == ceil(32 * 14 * 14 + 64 * 7 * 7, 10) == 941 and c["bound"] == "compute"
    setup, fill = 200, 12  # layer_setup_cycles + pipeline_depth x one tile pass
    assert c["overhead_cycles"] == setup + fill
    assert c["cycles"] == macs // lanes + setup + fill == 56_660
    assert c["utilisation"] == pytest.approx(macs / (56_660 * lanes))


def test_conv1_and_fc_cycles_match_the_hand_calculation(small_report):
    c = {r["name"]: r for r in small_report["layers"]}
    # conv1: 1 -> 32 channels, 3x3 pad 1 on 28x28, pool 2: K = 9 pads to 16 (two array steps of
    # 8 lanes), so 7/16 of the lanes multiply zeros.
    conv1 = c["conv1"]
    assert conv1["macs"] == 28 * 28 * 32 * 9
    assert conv1["compute_cycles"] == 28 * 28 * (32 // 8) * (16 // 8) == 6272
    assert conv1["lane_utilisation"] == pytest.approx(9 / 16)
    assert conv1["dma_cycles"] == ceil(28 * 28 + 32 * 14 * 14, 10)
    assert conv1["cycles"] == 200 + 12 + 6272
    # fc1: 3136 -> 128, 392 KiB of weights do not fit the 128 KiB buffer: streamed every image in
    # tiles of 32 channels (what the resident conv1, conv2, fc2 weights and all channel parameters
    # leave: 131072 - 2080 - (512 + 18432 + 2048) = 108000 B = 34 rows of 3136 B -> 32 channels).
    fc1 = c["fc1"]
    assert not fc1["weights_resident"] and fc1["tiles"]["weight_tiles"] == 128 // 32
    assert fc1["compute_cycles"] == (128 // 8) * (3136 // 8) == 6272
    assert fc1["dma_cycles"] == ceil(3136 + 128 + 3136 * 128, 10) == 40_468 and fc1["bound"] == "memory"
    assert fc1["cycles"] == 200 + 4 * 12 + 40_468
    # fc2: 128 -> 10 channels (padded to 16), int32 logits out.
    fc2 = c["fc2"]
    assert fc2["compute_cycles"] == (16 // 8) * (128 // 8) and fc2["cycles"] == 200 + 12 + 32
    assert small_report["totals"]["cycles"] == 6484 + 56_660 + 40_716 + 244


def test_conv2_on_the_large_preset(mnist_int8_onnx):
    p = load_accel("edge-large")
    assert (p.mac_array.rows, p.mac_array.cols, p.layer_setup_cycles, p.pipeline_depth) == (16, 16, 100, 16)
    assert (p.clock_mhz, p.dram_gb_per_s) == (250.0, 8.0)  # 32 B per cycle
    c = {r["name"]: r for r in estimate_cost(mnist_int8_onnx, "fpga-sim:edge-large")["layers"]}["conv2"]
    macs = 14 * 14 * 64 * 288
    assert c["compute_cycles"] == macs // (16 * 16) == 14_112  # K = 288 = 18 x 16, 64 = 4 x 16
    assert c["dma_cycles"] == ceil(32 * 14 * 14 + 64 * 7 * 7, 32)
    assert c["cycles"] == macs // 256 + 100 + 16 and c["latency_us"] == pytest.approx(c["cycles"] / 250.0)


def test_only_accelerator_targets_have_a_cost_report(mnist_int8_onnx):
    with pytest.raises(ConfigError, match="target 'x86' is not an accelerator target"):
        estimate_cost(mnist_int8_onnx, "x86")
