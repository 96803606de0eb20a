"""Fused int8 convolution vs its numpy reference, bit for bit, on every lowering."""
from __future__ import annotations

import numpy as np
import pytest

from robustq_deploy.kernels import epilogue as E
from robustq_deploy.kernels import int8_conv2d as K
from robustq_deploy.kernels import layout as L

from .conftest import lowering, requant_params, rng, run_primfunc


def stored_input(spec: K.Conv2d, x: np.ndarray, zp: int) -> np.ndarray:
    if spec.rows:
        return L.to_rows(x, spec.input, spec.pad, spec.row_len, zp)
    return L.to_nhwc(x, spec.input, spec.in_channels, zp)


def outputs_of(spec: K.Conv2d, lanes: int, batch: int) -> list[np.ndarray]:
    oh, ow = spec.out_hw
    cs = E.out_channels_stored(spec.epilogue, spec.out_channels, lanes)
    if isinstance(spec.epilogue, E.Requant):
        return [np.zeros((batch, oh, ow, cs), q.storage.dtype) for q in spec.epilogue.outputs]
    return [np.zeros((batch, oh, ow, cs), "uint32" if isinstance(spec.epilogue, E.Threshold) else "float32")]


def logical(spec: K.Conv2d, got: np.ndarray, i: int) -> np.ndarray:
    epi = spec.epilogue
    if isinstance(epi, E.Requant):
        return L.from_nhwc(got, epi.outputs[i].storage, spec.out_channels)
    if isinstance(epi, E.Threshold):
        return L.unbits_nhwc(got, spec.out_channels)
    return np.moveaxis(got, -1, 1)


def check(spec_fn, target, x_range, c, oc, kernel, zp=0, bias=True, params=None, residual=False, batches=(1, 64), hw=None):
    low = lowering(target)
    spec = spec_fn(low)
    r = rng(spec.out_channels + spec.height)
    w = r.integers(-127, 128, (oc, c, *kernel)).astype(np.int8)
    b = r.integers(-5000, 5000, oc).astype(np.int32) if bias else None
    params = params(r) if callable(params) else params
    consts = K.pack(spec, low, w, b, params, zp)
    func = K.build(spec, low)
    for batch in batches:
        x = r.integers(*x_range, (batch, c, spec.height, spec.width))
        args = [stored_input(spec, x, zp)]
        res = None
        if residual:
            res = r.integers(-127, 128, (batch, spec.out_channels, *spec.out_hw))
            args.append(L.to_nhwc(res, spec.epilogue.residual, E.out_channels_stored(spec.epilogue, oc, low.lanes)))
        outs = outputs_of(spec, low.lanes, batch)
        got = run_primfunc(func, target, args + consts + outs, len(outs))
        want = K.reference(spec, x, w, b, params, zp, res)
        for i, (g, ref) in enumerate(zip(got, want)):
            np.testing.assert_array_equal(logical(spec, g, i), ref)


def u8(low):
    return L.storage_for(False, low.act_dtype)


def s8(low):
    return L.storage_for(True, low.act_dtype)


def test_relu_pool_mnist_conv2(target):
    check(lambda low: K.Conv2d(14, 14, 32, 64, (3, 3), 1, 1, u8(low), u8(low).offset,
                               E.Requant((E.QuantOut(0, 0, 255, u8(low)),)), pool=2),
          target, (0, 256), 32, 64, (3, 3), params=lambda r: requant_params(r, 64))


def test_odd_channels_signed_stride2_two_outputs(host):
    check(lambda low: K.Conv2d(9, 11, L.round_up(5, low.lanes), 21, (3, 3), 2, 1, s8(low), s8(low).offset,
                               E.Requant((E.QuantOut(0, 0, 255, u8(low)), E.QuantOut(0, -127, 127, s8(low))))),
          host, (-127, 128), 5, 21, (3, 3), params=lambda r: requant_params(r, 21, 2), batches=(1, 3))


@pytest.mark.slow
def test_residual_add_every_lowering(target):
    _residual(target)


def test_residual_add(host):
    _residual(host)


def _residual(target):
    check(lambda low: K.Conv2d(8, 8, 16, 16, (3, 3), 1, 1, u8(low), u8(low).offset,
                               E.Requant((E.QuantOut(0, 0, 255, u8(low)), E.QuantOut(0, 0, 127, s8(low))), residual=s8(low))),
          target, (0, 256), 16, 16, (3, 3), params=lambda r: requant_params(r, 16, 2, residual=True), residual=True,
          batches=(1, 4))


@pytest.mark.slow
def test_threshold_every_lowering(target):
    _threshold(target)


def test_threshold_pool_40_channels(host):
    _threshold(host)


def _threshold(target):
    check(lambda low: K.Conv2d(6, 6, 12, 40, (1, 1), 1, 0, u8(low), u8(low).offset, E.Threshold(), pool=2),
          target, (0, 256), 9, 40, (1, 1), bias=False, params=lambda r: {"thr": r.integers(-3000, 3000, 40)},
          batches=(1, 5))


def test_dequant_logits(host):
    check(lambda low: K.Conv2d(1, 1, 64, 10, (1, 1), 1, 0, u8(low), u8(low).offset, E.Dequant()),
          host, (0, 256), 64, 10, (1, 1), params=lambda r: {"scale": r.uniform(1e-3, 1e-2, 10).astype(np.float32)},
          batches=(1, 64))


def test_zero_points_5x5(host):
    check(lambda low: K.Conv2d(7, 7, L.round_up(3, low.lanes), 16, (5, 5), 1, 2, u8(low), 7 + u8(low).offset,
                               E.Requant((E.QuantOut(3, 0, 255, u8(low)),))),
          host, (0, 256), 3, 16, (5, 5), zp=7, params=lambda r: requant_params(r, 16), batches=(1, 2))


def test_projection_shortcut_1x1_stride2(host):
    check(lambda low: K.Conv2d(16, 16, 16, 32, (1, 1), 2, 0, u8(low), u8(low).offset,
                               E.Requant((E.QuantOut(0, -127, 127, s8(low)),))),
          host, (0, 256), 16, 32, (1, 1), params=lambda r: requant_params(r, 32), batches=(1, 64))


@pytest.mark.parametrize("c,h,w,stride,pool", [(1, 28, 28, 1, 2), (3, 9, 7, 2, 1)])
def test_rows_layout_first_layer(host, c, h, w, stride, pool):
    check(lambda low: K.Conv2d(h, w, c, 32, (3, 3), stride, 1, u8(low), u8(low).offset,
                               E.Requant((E.QuantOut(0, 0, 255, u8(low)),)), pool=pool, rows=True),
          host, (0, 256), c, 32, (3, 3), params=lambda r: requant_params(r, 32), batches=(1, 3))


def test_spec_refuses_bad_shapes():
    st = L.Storage("uint8")
    with pytest.raises(ValueError, match="multiple of 4"):
        K.Conv2d(4, 4, 6, 8, (3, 3), 1, 1, st, 0, E.Dequant())
    with pytest.raises(ValueError, match="kernel larger"):
        K.Conv2d(2, 2, 4, 8, (5, 5), 1, 0, st, 0, E.Dequant())
    with pytest.raises(ValueError, match="residual"):
        K.Conv2d(4, 4, 4, 8, (3, 3), 1, 1, st, 0, E.Requant((E.QuantOut(0, 0, 255, st),), residual=st), pool=2)


@pytest.mark.parametrize("c", [20, 48])
def test_logical_nchw_input_staged_in_vectors(target, c):
    """A logical NCHW input (the compile hook's tensor) is staged into NHWC in gathers of a few
    lanes (channels 20: 4 lanes, 48: 16); the int32 accumulator is exact either way."""
    from robustq_deploy.kernels import reference as R

    low = lowering(target)
    r = rng(c)
    zp = 7
    storage = u8(low)
    spec = K.Conv2d(5, 6, c, 9, (3, 3), 1, 1, storage, zp + storage.offset, E.Raw(), source="uint8")
    w = r.integers(-127, 128, (9, c, 3, 3)).astype(np.int8)
    consts = K.pack(spec, low, w, None, {}, zp)
    x = r.integers(0, 256, (2, c, 5, 6)).astype(np.uint8)
    oh, ow = spec.out_hw
    (got,) = run_primfunc(K.build(spec, low), target, [x] + consts + [np.zeros((2, 9, oh, ow), np.int32)], 1)
    np.testing.assert_array_equal(got, R.conv2d_acc(x, w, None, 1, 1, zp))


def test_float_rescale_fused_into_the_accumulator_kernel(target):
    """``Raw(FloatRequant)``: the accumulator plus bias, rescaled by a float32 multiplier per
    channel, rounded half to even, zero point added and clamped (a ReLU6 range), stored as uint8
    NCHW; equal to the epilogue's reference, and that reference equals the plain accumulator
    put through the same formula in numpy (ties included: multipliers of 0.5 and 1.5; 3e4 takes
    products past the int32 range, which must saturate, not wrap)."""
    from robustq_deploy.kernels import reference as R

    low = lowering(target)
    r = rng(3)
    storage = u8(low)
    q = E.FloatRequant(zero_point=3, lo=3, hi=200, dtype="uint8")
    spec = K.Conv2d(5, 6, 20, 9, (3, 3), 2, 1, storage, 11 + storage.offset, E.Raw(q), source="uint8")
    w = r.integers(-127, 128, (9, 20, 3, 3)).astype(np.int8)
    b = r.integers(-3000, 3000, 9).astype(np.int32)
    mult = np.array([0.5, 1.5, 1e-3, 2e-3, 3e-3, 3e4, 5e-3, 6e-3, 7e-4], np.float32)
    consts = K.pack(spec, low, w, b, {"mult": mult}, 11)
    x = r.integers(0, 256, (2, 20, 5, 6)).astype(np.uint8)
    oh, ow = spec.out_hw
    (got,) = run_primfunc(K.build(spec, low), target, [x] + consts + [np.zeros((2, 9, oh, ow), np.uint8)], 1)
    acc = R.conv2d_acc(x, w, b, 2, 1, 11).astype(np.int64)
    want = np.clip(np.rint(acc.astype(np.float32) * mult.reshape(1, -1, 1, 1)).astype(np.int64) + 3, 3, 200)
    np.testing.assert_array_equal(got, want.astype(np.uint8))


def test_depthwise_with_float_rescale(host):
    from robustq_deploy.kernels import int8_depthwise as DW

    r = rng(4)
    q = E.FloatRequant(zero_point=-4, lo=-128, hi=127, dtype="int8")
    spec = DW.Depthwise(9, 10, 7, (3, 3), (2, 2), (1, 1, 1, 1), "int8", -3, q)
    w = r.integers(-128, 128, (7, 1, 3, 3)).astype(np.int8)
    b = r.integers(-500, 500, 7).astype(np.int32)
    mult = np.array([0.5, 1.5, 0.01, 0.02, 0.003, 5e5, 0.125], np.float32)  # 5e5: past int32
    x = r.integers(-128, 128, (3, 7, 9, 10)).astype(np.int8)
    oh, ow = spec.out_hw
    xs = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    (got,) = run_primfunc(DW.build(spec, 16), host, [xs] + DW.pack(w, b, mult, zero_point=-3)
                          + [np.zeros((3, oh, ow, 7), np.int8)], 1)
    got = got.transpose(0, 3, 1, 2)
    acc = DW.reference(DW.Depthwise(9, 10, 7, (3, 3), (2, 2), (1, 1, 1, 1), "int8", -3), x, w).astype(np.int64)
    f = np.rint((acc + b.reshape(1, -1, 1, 1)).astype(np.float32) * mult.reshape(1, -1, 1, 1))
    np.testing.assert_array_equal(got, np.clip(f.astype(np.int64) - 4, -128, 127).astype(np.int8))
    np.testing.assert_array_equal(got, DW.reference(spec, x, w, b, mult))


@pytest.mark.parametrize("c, oc, k, s, pad, signed, q", [
    (32, 24, 1, 1, 0, False, True),   # in place: NHWC uint8 already the stored form; 24 channels out (tail)
    (20, 48, 3, 2, 1, False, True),   # staged: padding, 20 channels (not whole lane tiles)
    (3, 16, 3, 1, 1, True, False),    # staged: int8 (storage offset), 3 channels, int32 out
    (16, 9, 1, 1, 0, True, True),     # in place on int8 hosts, staged on uint8 ones
])
def test_channels_last_input_and_output(target, c, oc, k, s, pad, signed, q):
    """A logical NHWC input (``channels_last``: what the compile hook passes between kernels) and an
    NHWC output: the same values as the NCHW reference, transposed; a 1x1 layer without padding on
    whole 4-byte groups reads its input in place."""
    from robustq_deploy.kernels import reference as R

    low = lowering(target)
    r = rng(c * oc + k)
    zp = -5 if signed else 7
    storage = L.storage_for(signed, low.act_dtype)
    src = "int8" if signed else "uint8"
    fq = E.FloatRequant(zero_point=2, lo=0, hi=255, dtype="uint8") if q else None
    spec = K.Conv2d(6, 7, c, oc, (k, k), s, pad, storage, zp + storage.offset, E.Raw(fq), source=src,
                    channels_last=True)
    assert spec.staged == (pad > 0 or c % 4 > 0 or storage.offset != 0 or storage.dtype != src)
    w = r.integers(-127, 128, (oc, c, k, k)).astype(np.int8)
    b = r.integers(-3000, 3000, oc).astype(np.int32)
    mult = r.uniform(1e-4, 4e-3, oc).astype(np.float32)
    consts = K.pack(spec, low, w, b, {"mult": mult} if q else {}, zp)
    lo, hi = (-128, 128) if signed else (0, 256)
    x = r.integers(lo, hi, (3, c, 6, 7)).astype(src)
    oh, ow = spec.out_hw
    out = np.zeros((3, oh, ow, oc), np.uint8 if q else np.int32)
    (got,) = run_primfunc(K.build(spec, low), target, [np.ascontiguousarray(x.transpose(0, 2, 3, 1))] + consts + [out], 1)
    acc = R.conv2d_acc(x, w, b, s, pad, zp)
    want = E.reference(E.Raw(fq), acc.astype(np.int64), {"mult": mult})[0] if q else acc
    np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("c, k, s, pad, signed, q", [
    (32, 3, 1, (1, 1, 1, 1), False, True),
    (48, 3, 2, (0, 0, 1, 1), False, True),   # onnxruntime's SAME_UPPER-style asymmetric padding
    (12, 3, 2, (1, 1, 1, 1), True, False),   # channels not a whole vector: 4-lane vectors; int32 out
    (7, 5, 1, (2, 2, 2, 2), True, True),     # odd channels: scalar lanes
])
def test_depthwise_channels_last(host, c, k, s, pad, signed, q):
    """The channels-last depthwise kernel (NHWC in and out, vectorized over channels) equals the
    NCHW reference, transposed."""
    from robustq_deploy.kernels import int8_depthwise as DW

    r = rng(c + k)
    src = "int8" if signed else "uint8"
    zp = -3 if signed else 9
    fq = E.FloatRequant(zero_point=1, lo=0, hi=127, dtype="int8") if q else None
    spec = DW.Depthwise(9, 10, c, (k, k), (s, s), pad, src, zp, fq)
    w = r.integers(-128, 128, (c, 1, k, k)).astype(np.int8)
    b = r.integers(-500, 500, c).astype(np.int32)
    mult = r.uniform(0.001, 0.05, c).astype(np.float32)
    lo, hi = (-128, 128) if signed else (0, 256)
    x = r.integers(lo, hi, (3, c, 9, 10)).astype(src)
    oh, ow = spec.out_hw
    consts = DW.pack(w, b, mult, zero_point=zp) if q else DW.pack(w, zero_point=zp)
    out = np.zeros((3, oh, ow, c), np.int8 if q else np.int32)
    (got,) = run_primfunc(DW.build(spec, 16), host, [np.ascontiguousarray(x.transpose(0, 2, 3, 1))] + consts + [out], 1)
    want = DW.reference(spec, x, w, b, mult) if q else DW.reference(spec, x, w)
    np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))


def test_nchw_input_nhwc_output(target):
    """A graph input (logical NCHW, gathered by the kernel's staging) into an NHWC output
    (``out_channels_last``): the first conv of the per-op path."""
    from robustq_deploy.kernels import reference as R

    low = lowering(target)
    r = rng(11)
    storage = u8(low)
    q = E.FloatRequant(zero_point=5, lo=5, hi=255, dtype="uint8")
    spec = K.Conv2d(9, 8, 3, 20, (3, 3), 2, 1, storage, 4 + storage.offset, E.Raw(q), source="uint8",
                    out_channels_last=True)
    w = r.integers(-127, 128, (20, 3, 3, 3)).astype(np.int8)
    b = r.integers(-3000, 3000, 20).astype(np.int32)
    mult = r.uniform(1e-4, 4e-3, 20).astype(np.float32)
    x = r.integers(0, 256, (2, 3, 9, 8)).astype(np.uint8)
    oh, ow = spec.out_hw
    consts = K.pack(spec, low, w, b, {"mult": mult}, 4)
    (got,) = run_primfunc(K.build(spec, low), target, [x] + consts + [np.zeros((2, oh, ow, 20), np.uint8)], 1)
    want = E.reference(E.Raw(q), R.conv2d_acc(x, w, b, 2, 1, 4).astype(np.int64), {"mult": mult})[0]
    np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))
