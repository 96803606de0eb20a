"""The emitted C: bit-exact with the numpy integer reference on synthetic layers of every kind
(MAC and XNOR arrays, requant / sign / raw accumulator, pooling, weight and row tiling), clean
under gcc -std=c99 -Wall -Werror, free of floating point, deterministic."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from robustq_deploy.accel import codegen
from robustq_deploy.accel.schedule import plan

from .helpers import build_layers, conv_spec, random_input, reference_layer, run_layer, small_desc

FLOAT = re.compile(r"\b(float|double|_Float\d*|__fp16|__bf16)\b")


def layer_zoo(rng):
    return [
        conv_spec(rng, name="conv_requant_pool"),  # 3x3 pad 1, row tiles, streamed weights
        conv_spec(rng, name="conv_s2", c=4, h=11, w=10, stride=2, pads=(0, 1, 1, 0), pool=1, m=6),
        conv_spec(rng, name="conv_sign_ternary", epilogue="sign", in_dtype="int8", pool=1, weights="ternary"),
        conv_spec(rng, name="conv_raw_nobias", epilogue="none", bias=False, pool=1, m=5),
        conv_spec(rng, name="gemm_raw", c=70, h=1, w=1, k=1, m=9, pads=(0, 0, 0, 0), pool=1, epilogue="none"),
        conv_spec(rng, name="gemm_requant_int8", c=33, h=1, w=1, k=1, m=20, pads=(0, 0, 0, 0), pool=1,
                  in_dtype="int8"),
        conv_spec(rng, name="xnor_conv_sign_pool", c=40, h=6, w=6, k=3, m=5, pads=(0, 0, 0, 0), pool=2,
                  epilogue="sign", in_dtype="binary", weights="binary"),
        conv_spec(rng, name="xnor_gemm_requant", c=300, h=1, w=1, k=1, m=7, pads=(0, 0, 0, 0), pool=1,
                  in_dtype="binary", weights="binary"),
        conv_spec(rng, name="binary_w_padded", c=3, h=7, w=7, m=4, pool=1, epilogue="none", in_dtype="binary",
                  weights="binary"),  # padding: the MAC array, not XNOR
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rng = np.random.default_rng(0)
    specs = layer_zoo(rng)
    lib, schedules, files = build_layers(specs, small_desc(), tmp_path_factory.mktemp("zoo"))
    return specs, schedules, files, lib


def test_every_layer_kind_is_bit_exact(built):
    specs, schedules, _, lib = built
    rng = np.random.default_rng(1)
    for spec, sched in zip(specs, schedules):
        x = random_input(rng, spec, 5)
        got, want = run_layer(lib, spec, x), reference_layer(spec, x)
        assert got.dtype == want.dtype and np.array_equal(got, want), spec.name


def test_the_zoo_exercises_engines_and_tiling(built):
    specs, schedules, _, _ = built
    by = {s.layer: s for s in schedules}
    assert by["xnor_conv_sign_pool"].engine == "xnor" and by["xnor_gemm_requant"].engine == "xnor"
    assert by["binary_w_padded"].engine == "mac" and by["binary_w_padded"].weight_format == "binary"
    assert by["conv_sign_ternary"].weight_format == "ternary"
    assert any(s.n_rtiles > 1 for s in schedules) and any(s.n_wtiles > 1 for s in schedules)
    assert any(not s.resident for s in schedules) and any(s.resident for s in schedules)


def test_sources_have_no_floating_point_and_no_heap(built):
    _, _, files, _ = built
    for name, text in files.items():
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        assert not FLOAT.search(code), name
        assert not re.search(r"\b(malloc|calloc|realloc|free|alloca)\b", code), name


def test_kernels_and_driver_compile_alone_with_warnings_as_errors(built, tmp_path):
    """The HLS sources and the host driver need nothing but <stdint.h> (the TVM glue is separate)."""
    cc = shutil.which("gcc") or pytest.skip("gcc not installed (apt-get install -y gcc)")
    _, _, files, _ = built
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for name in sorted(n for n in files if n.endswith(".c") and n != "fpga_tvm.c"):
        done = subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-c", name, "-o", "/dev/null"], cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    hls = files["fpga_conv_requant_pool.c"]
    for pragma in ("HLS PIPELINE II=1", "HLS UNROLL", "HLS ARRAY_PARTITION", "HLS INTERFACE mode=m_axi"):
        assert f"HLS_PRAGMA({pragma}" in hls
    assert "_Pragma(#x)" in files["fpga_hls.h"]


def test_loop_nest_follows_the_array_shape(built):
    specs, schedules, files, _ = built
    s = files["fpga_gemm_raw.c"]
    assert "#define ROWS 4" in s and "#define COLS 4" in s
    assert "for (kt = 0; kt < K_PAD; kt += COLS)" in s and "for (l = 0; l < COLS; ++l)" in s
    x = files["fpga_xnor_gemm_requant.c"]
    assert "#define COLW 2" in x and "popcount32(patch[kt + l] ^ WEIGHT(g + r, kt + l))" in x


def test_same_layer_same_bytes():
    a, b = (layer_zoo(np.random.default_rng(0)) for _ in range(2))
    desc = small_desc()
    for sa, sb, pa, pb in zip(a, b, plan(a, desc), plan(b, desc)):
        assert codegen.layer_sources(sa, pa) == codegen.layer_sources(sb, pb)


def test_pack_words_bit_order():
    w = np.array([[1, -1, 1] + [-1] * 30 + [1]], np.int8)  # bits 0, 2 and 33 set
    words = codegen.pack_words(w, 64)
    assert words.tolist() == [[0b101, 0b10]]
