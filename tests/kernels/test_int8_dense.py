"""Fused int8 dense layer vs its numpy reference, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from robustq_deploy.kernels import epilogue as E
from robustq_deploy.kernels import int8_dense as D
from robustq_deploy.kernels import layout as L
from robustq_deploy.kernels.schedule import Tile

from .conftest import lowering, requant_params, rng, run_primfunc


def check(target, spec_fn, k, oc, x_range, params, zp=0, bias=True, batches=(1, 64), tile=None):
    low = lowering(target)
    spec = spec_fn(low)
    r = rng(k + oc)
    w = r.integers(-127, 128, (oc, k)).astype(np.int8)
    b = r.integers(-9999, 9999, oc) if bias else None
    params = params(r)
    consts = D.pack(spec, low, w, b, params, zp)
    func = D.build(spec, low, tile)
    epi = spec.epilogue
    cs = E.out_channels_stored(epi, oc, low.lanes)
    for n in batches:
        x = r.integers(*x_range, (n, k))
        xs = np.full((n, spec.in_features), zp + spec.input.offset, np.int64)
        xs[:, :k] = x + spec.input.offset
        if isinstance(epi, E.Requant):
            outs = [np.zeros((n, cs), q.storage.dtype) for q in epi.outputs]
        else:
            outs = [np.zeros((n, cs), "uint32" if isinstance(epi, E.Threshold) else "float32")]
        got = run_primfunc(func, target, [xs.astype(spec.input.dtype)] + consts + outs, len(outs))
        want = D.reference(spec, x, w, b, params, zp)
        for i, (g, ref) in enumerate(zip(got, want)):
            if isinstance(epi, E.Requant):
                g = g[:, :oc].astype(np.int64) - epi.outputs[i].storage.offset
            elif isinstance(epi, E.Threshold):
                g = L.unbits_nhwc(g[:, None, None, :], oc)[:, :, 0, 0]
            np.testing.assert_array_equal(g, ref)


def test_mnist_fc1_relu(target):
    check(target, lambda low: D.Dense(3136, 128, L.storage_for(False, low.act_dtype),
                                      E.Requant((E.QuantOut(0, 0, 255, L.storage_for(False, low.act_dtype)),))),
          3136, 128, (0, 256), lambda r: requant_params(r, 128))


def test_signed_input_odd_features_logits(host):
    check(host, lambda low: D.Dense(20, 10, L.storage_for(True, low.act_dtype), E.Dequant()),
          17, 10, (-127, 128), lambda r: {"scale": r.uniform(0.01, 0.1, 10).astype(np.float32)}, batches=(1, 5))


def test_threshold_70_channels(host):
    check(host, lambda low: D.Dense(64, 70, L.storage_for(False, low.act_dtype), E.Threshold()),
          61, 70, (0, 256), lambda r: {"thr": r.integers(-3000, 3000, 70)}, bias=False, batches=(1, 5))


def test_two_outputs_zero_point_and_tiles(host):
    for ob in (1, 3):
        check(host, lambda low: D.Dense(36, 33, L.storage_for(False, low.act_dtype),
                                        E.Requant((E.QuantOut(0, 0, 255, L.storage_for(False, low.act_dtype)),
                                                   E.QuantOut(0, -127, 127, L.storage_for(True, low.act_dtype))))),
              36, 33, (0, 256), lambda r: requant_params(r, 33, 2), zp=3, batches=(1, 4), tile=Tile(1, ob))


def test_row_tiles_are_refused(host):
    spec = D.Dense(8, 16, L.Storage("uint8"), E.Dequant())
    with pytest.raises(ValueError, match="rows"):
        D.build(spec, lowering(host), Tile(4, 1))
