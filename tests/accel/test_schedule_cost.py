"""Schedules and the cost model on synthetic layers: hand-computed cycles, tiling showing in
cycles and traffic, residency, refusal of layers that cannot run, the HTML table."""
from dataclasses import replace

import numpy as np
import pytest

from robustq_deploy.accel import cost_table_html
from robustq_deploy.accel.cost import cost_report, layer_cost
from robustq_deploy.accel.layer import datapath, problems, weight_format
from robustq_deploy.accel.schedule import fit_problems, plan

from .helpers import conv_spec, small_desc

BIG = dict(weight_buffer_kib=64.0, act_buffer_kib=64.0)


def one(spec, desc):
    (sched,) = plan([spec], desc)
    return sched, layer_cost(spec, sched, desc)


def test_cycles_of_an_untiled_conv_match_a_hand_calculation():
    spec = conv_spec(np.random.default_rng(0), c=16, h=8, w=8, m=8, pool=1)
    desc = small_desc(**BIG)  # 4x4 MAC array, 10 setup cycles, pipeline depth 3, 10 B/cycle
    sched, c = one(spec, desc)
    macs = 8 * 8 * 8 * (16 * 3 * 3)  # output pixels x channels x K
    assert c["macs"] == macs and c["compute_cycles"] == macs // 16  # channels and K fill the array
    moved = 16 * 8 * 8 + 8 * 8 * 8  # input + output bytes; weights resident
    assert c["traffic_bytes"] == {"input": 1024, "output": 512, "weights": 0, "total": moved}
    assert c["dma_cycles"] == -(-moved // 10)
    assert c["cycles"] == 10 + 3 + macs // 16  # setup + one pipeline fill + compute (DMA overlapped)
    assert c["lane_utilisation"] == 1.0 and c["bound"] == "compute"
    no_overlap = layer_cost(spec, sched, replace(desc, dma_overlap=False))
    assert no_overlap["cycles"] == c["cycles"] + c["dma_cycles"]


def test_padding_lanes_lower_utilisation():
    spec = conv_spec(np.random.default_rng(0), c=1, h=8, w=8, m=6, pool=1)  # K = 9 -> 12, M = 6 -> 8
    sched, c = one(spec, small_desc(**BIG))
    assert (sched.k_pad, sched.m_pad) == (12, 8)
    assert c["compute_cycles"] == 64 * 2 * 3
    assert c["lane_utilisation"] == pytest.approx((64 * 6 * 9) / (64 * 2 * 3 * 16))


def test_row_tiling_shows_in_traffic_and_cycles():
    spec = conv_spec(np.random.default_rng(0), c=8, h=16, w=16, m=8, pool=2)
    whole_s, whole = one(spec, small_desc(**BIG))
    tiled_s, tiled = one(spec, small_desc(weight_buffer_kib=64.0, act_buffer_kib=1.0))
    assert whole_s.n_rtiles == 1 and tiled_s.n_rtiles > 1 and tiled_s.rows_tile % 2 == 0
    assert tiled["traffic_bytes"]["input"] > whole["traffic_bytes"]["input"]  # halo rows read twice
    assert tiled["overhead_cycles"] - whole["overhead_cycles"] == (tiled_s.n_rtiles - 1) * 3
    assert tiled["compute_cycles"] == whole["compute_cycles"]
    assert tiled["onchip_bytes"]["act_in"] + tiled["onchip_bytes"]["act_out"] <= 1024


def test_streamed_weights_are_traffic_every_image():
    spec = conv_spec(np.random.default_rng(0), c=64, h=1, w=1, k=1, m=64, pads=(0, 0, 0, 0), pool=1)
    sched, c = one(spec, small_desc(weight_buffer_kib=1.0, act_buffer_kib=64.0))
    assert not sched.resident and sched.n_wtiles > 1
    assert c["traffic_bytes"]["weights"] == 64 * 64
    assert c["onchip_bytes"]["weights"] <= 1024


def test_residency_prefers_small_layers_and_keeps_room_to_stream():
    rng = np.random.default_rng(0)
    small = conv_spec(rng, name="small", c=8, h=1, w=1, k=1, m=8, pads=(0, 0, 0, 0), pool=1)
    big = conv_spec(rng, name="big", c=256, h=1, w=1, k=1, m=64, pads=(0, 0, 0, 0), pool=1)
    s_small, s_big = plan([small, big], small_desc(weight_buffer_kib=2.0))
    assert s_small.resident and not s_big.resident
    assert s_small.weight_bytes + s_big.tile_weight_bytes() + s_small.param_bytes + s_big.param_bytes <= 2048


def test_layers_that_cannot_run_say_why():
    rng = np.random.default_rng(0)
    wide = conv_spec(rng, c=512, h=1, w=1, k=1, m=8, pads=(0, 0, 0, 0), pool=1)
    (why,) = fit_problems(wide, small_desc(weight_buffer_kib=1.0))
    assert why == ("one weight tile of 4 channels (2048 B, plus 72 B of channel parameters) exceeds the weight "
                   "buffer (1024 B)")
    big_map = conv_spec(rng, c=64, h=40, w=40, m=8, pool=1)
    assert fit_problems(big_map, small_desc(weight_buffer_kib=64.0)) == [
        f"one output row tile ({64 * 3 * 42 + 4 * 40} B of activations) exceeds the activation buffer (1024 B)"]
    eight = conv_spec(rng, pool=1)
    assert problems(eight, small_desc(weight_bits=("binary", "ternary"))) == [
        "weights need 8; the accelerator takes binary, ternary"]
    assert "activations need 8 bits" in problems(eight, small_desc(act_bits=("binary",)))[0]
    assert problems(conv_spec(rng, pool=2), small_desc(max_pool=False)) == ["the accelerator has no fused max pooling"]


def test_weight_formats_narrowest_that_holds_the_values():
    assert weight_format(np.array([1, -1, 1]), ("8", "ternary", "binary")) == "binary"
    assert weight_format(np.array([1, 0, -1]), ("8", "binary")) == "8"
    assert weight_format(np.array([7, -7]), ("4", "8")) == "4"
    assert weight_format(np.array([9]), ("4",)) is None
    binary = conv_spec(np.random.default_rng(0), in_dtype="binary", weights="binary", pads=(0, 0, 0, 0), pool=1)
    assert datapath(binary, small_desc())[0].engine == "xnor"
    assert datapath(binary, small_desc(xnor_array=None, weight_bits=("8",)))[0].engine == "mac"


def test_report_totals_and_html_table():
    rng = np.random.default_rng(0)
    specs = [conv_spec(rng, name="a", pool=1), conv_spec(rng, name="b", c=10, h=1, w=1, k=1, pads=(0, 0, 0, 0),
                                                         pool=1, epilogue="none")]
    desc = small_desc(**BIG)
    host = [{"name": "c", "placement": "host", "op": "conv <odd>", "reasons": ["grouped convolution (groups=2)"],
             "macs": 10}]
    r = cost_report(specs, plan(specs, desc), host, desc, ["a", "c", "b"])
    assert [row["name"] for row in r["layers"]] == ["a", "c", "b"]
    t = r["totals"]
    assert t["cycles"] == r["layers"][0]["cycles"] + r["layers"][2]["cycles"]
    assert t["latency_us"] == pytest.approx(t["cycles"] / 100.0) and t["layers_on_host"] == 1
    html = cost_table_html(r)
    assert html.startswith('<table class="accel-cost">') and html.rstrip().endswith("</table>")
    assert "grouped convolution (groups=2)" in html and "conv &lt;odd&gt;" in html and "host CPU" in html
    assert f"{t['cycles']:,}" in html
