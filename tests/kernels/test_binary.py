"""Bit-packed XNOR-popcount convolution and dense layers vs their references, bit for bit."""
from __future__ import annotations

import numpy as np

from robustq_deploy.kernels import binary as B
from robustq_deploy.kernels import epilogue as E
from robustq_deploy.kernels import layout as L
from robustq_deploy.kernels import reference as R

from .conftest import bits, requant_params, rng, run_primfunc


def pm1(r, *shape):
    return np.where(r.random(shape) < 0.5, 1, -1).astype(np.int8)


def outputs(spec, lanes, prefix):
    epi = spec.epilogue
    cs = E.out_channels_stored(epi, spec.out_channels, lanes)
    if isinstance(epi, E.Requant):
        return [np.zeros(prefix + (cs,), q.storage.dtype) for q in epi.outputs]
    return [np.zeros(prefix + (cs,), "uint32" if isinstance(epi, E.Threshold) else "float32")]


def logical(epi, g, oc, spatial):
    if not spatial:
        g = g[:, None, None, :]
    if isinstance(epi, E.Requant):
        g = L.from_nhwc(g, epi.outputs[0].storage, oc)
    elif isinstance(epi, E.Threshold):
        g = L.unbits_nhwc(g, oc)
    else:
        g = np.moveaxis(g, -1, 1)
    return g if spatial else g[:, :, 0, 0]


def check_conv(target, spec, params, bias=False, batches=(1, 64)):
    bl = bits(target)
    r = rng(spec.in_channels + spec.out_channels)
    w = pm1(r, spec.out_channels, spec.in_channels, *spec.kernel)
    b = r.integers(-50, 50, spec.out_channels) if bias else None
    consts = B.pack_conv(spec, bl.lanes, w, b, params)
    func = B.build_conv(spec, bl)
    for n in batches:
        x = pm1(r, n, spec.in_channels, spec.height, spec.width)
        outs = outputs(spec, bl.lanes, (n, *spec.out_hw))
        got = run_primfunc(func, target, [L.bits_nhwc(x)] + consts + outs, len(outs))
        want = B.reference_conv(spec, x, w, b, params)
        np.testing.assert_array_equal(logical(spec.epilogue, got[0], spec.out_channels, True), want[0])


def check_dense(target, spec, params, bias=False, batches=(1, 64)):
    bl = bits(target)
    r = rng(spec.in_features + spec.out_channels)
    w = pm1(r, spec.out_channels, spec.in_features)
    b = r.integers(-50, 50, spec.out_channels) if bias else None
    consts = B.pack_dense(spec, bl.lanes, w, b, params)
    func = B.build_dense(spec, bl)
    for n in batches:
        x = pm1(r, n, spec.in_features)
        outs = outputs(spec, bl.lanes, (n,))
        got = run_primfunc(func, target, [R.pack_bits(x, -1)] + consts + outs, len(outs))
        want = B.reference_dense(spec, x, w, b, params)
        np.testing.assert_array_equal(logical(spec.epilogue, got[0], spec.out_channels, False), want[0])


def test_xnor_popcount_identity():
    r = rng(3)
    x, w = pm1(r, 5, 70), pm1(r, 7, 70)
    xb, wb = R.pack_bits(x, -1), R.pack_bits(w, -1)
    pop = np.array([[sum(bin(int(a ^ b)).count("1") for a, b in zip(xr, wr)) for wr in wb] for xr in xb])
    np.testing.assert_array_equal(70 - 2 * pop, R.dense_acc(x, w))


def test_bnn_conv2_threshold_pool(target):
    spec = B.BinaryConv2d(14, 14, 32, 64, (3, 3), 1, E.Threshold(), pool=2)
    check_conv(target, spec, {"thr": rng(1).integers(-40, 40, 64)})


def test_odd_channels_stride2_threshold(host):
    spec = B.BinaryConv2d(9, 8, 45, 19, (3, 3), 2, E.Threshold())
    check_conv(host, spec, {"thr": rng(2).integers(-40, 40, 19)}, batches=(1, 3))


def test_requant_output(host):
    st = L.Storage("uint8")
    spec = B.BinaryConv2d(7, 7, 70, 20, (2, 2), 1, E.Requant((E.QuantOut(0, 0, 255, st),)))
    p = requant_params(rng(4), 20)
    p["m0_0"], p["shift_0"] = p["m0_0"], p["shift_0"] - 6  # multipliers ~0.1..1 for +-280 dot products
    check_conv(host, spec, p, batches=(1, 3))


def test_bnn_fc1_threshold(target):
    spec = B.BinaryDense(2304, 256, E.Threshold())
    check_dense(target, spec, {"thr": rng(5).integers(-40, 40, 256)})


def test_logits_with_bias(host):
    spec = B.BinaryDense(256, 10, E.Dequant())
    check_dense(host, spec, {"scale": rng(6).uniform(0.01, 0.1, 10).astype(np.float32)}, bias=True)


def test_features_not_multiple_of_32(host):
    spec = B.BinaryDense(100, 33, E.Threshold())
    check_dense(host, spec, {"thr": rng(7).integers(-40, 40, 33)}, batches=(1, 5))
