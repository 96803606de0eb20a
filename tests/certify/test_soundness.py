"""Soundness, tested: every bound holds on the reference interpreter's values of inputs sampled
from the box, and every certified point is robust on every input of its box through the deployed
engines (onnxruntime and a TVM build), enumerated exhaustively."""
from __future__ import annotations

import numpy as np
import pytest

from robustq_deploy.certify import BROKEN, CERTIFIED, UNKNOWN, certify, read_program
from robustq_deploy.certify import interval as I
from robustq_deploy.certify import linear as L
from robustq_deploy.certify import program as P
from robustq_deploy.export.reference import ReferenceSession

from .conftest import EPS, box_inputs

FORMS = [("tiny", "integer"), ("tiny", "qdq"), ("tiny_bnn", "integer")]


def sample_box(lo: np.ndarray, hi: np.ndarray, k: int, rng) -> np.ndarray:
    """``k`` level vectors per point of the box ``[lo, hi]``: corners, and uniform interior levels."""
    out = []
    for _ in range(k):
        u = rng.random(lo.shape)
        out.append(np.where(u < 0.3, lo, np.where(u < 0.6, hi, rng.integers(lo, hi + 1))))
    return np.stack(out, 1)  # [N, k, ...]


def bound_violations(model, x, y, eps, k: int = 30, seed: int = 0) -> int:
    """How many reference values of inputs sampled from each point's box fall outside the bounds
    of the interval pass (every graph value the program maps to an integer step), or below the
    margin lower bounds of the interval and linear passes."""
    prog = read_program(model)
    q = next(s for s in prog.steps if isinstance(s, P.InputQuant))
    a, b = I.ball(x, eps)
    res = I.propagate(prog, q.quantize(a), q.quantize(b))
    margins = {"interval": res.margins(y), "linear": L.margin_bounds(res, y)}
    levels = sample_box(res.bounds[q.out].lo, res.bounds[q.out].hi, k, np.random.default_rng(seed))
    sess = ReferenceSession(model)
    bad = 0
    checked = {n: g for n, g in prog.graph_names.items() if g not in (prog.input_name,)}
    integer_steps = {s.out for s in prog.steps if prog.form == "integer" or isinstance(s, (P.InputQuant, P.Requant))}
    for t in range(k):
        from robustq_deploy.certify.certifier import float_inputs

        xs = float_inputs(prog, levels[:, t], a, b)
        vals = sess.run_all({"input": xs})
        for name, graph_name in checked.items():
            if name in integer_steps and name in res.bounds:
                v = vals[graph_name].astype(np.float64)
                bad += int(np.sum((v < res.bounds[name].lo) | (v > res.bounds[name].hi)))
        logits = vals[sess.output_names[0]].astype(np.float64)
        real = logits[np.arange(len(y)), y][:, None] - logits
        real[np.arange(len(y)), y] = np.inf
        for m in margins.values():
            bad += int(np.sum(real < m))
    return bad


@pytest.mark.parametrize("key", FORMS)
def test_bounds_hold_on_sampled_inputs(tiny_onnx, tiny_points, key):
    x, y = tiny_points
    assert bound_violations(tiny_onnx[key], x, y, 4 / 255) == 0


def test_bounds_hold_at_a_large_radius(tiny_models):
    """A radius of 30 levels: the same check, with unstable clamps and max pools everywhere."""
    from .conftest import synthetic
    from robustq_deploy.export import export_model

    x, y = synthetic(64, 3)
    for fmt in ("integer", "qdq"):
        assert bound_violations(export_model(tiny_models["tiny"], fmt, 21), x, y, 30 / 255, k=20) == 0


def robust_everywhere(engine, xs: np.ndarray, label: int) -> bool:
    return bool(np.all(engine(xs).argmax(1) == label))


@pytest.mark.parametrize("key", FORMS)
@pytest.mark.parametrize("method", ["interval", "linear"])
def test_certified_points_are_robust_on_every_input_of_their_box(tiny_onnx, tiny_points, engines, key, method):
    model = tiny_onnx[key]
    x, y = tiny_points
    res = certify(model, x, y, EPS, method)
    prog = read_program(model)
    assert (res.status == CERTIFIED).sum() >= len(y) // 2  # the test must have something to check
    for i in np.nonzero(res.status == CERTIFIED)[0]:
        xs = box_inputs(prog, x[i], EPS)
        for engine in engines[key]:
            assert robust_everywhere(engine, xs, y[i]), f"{engine.name}: certified point {i} broken in its box"


@pytest.mark.parametrize("key", [("tiny", "integer"), ("tiny", "qdq")])
def test_complete_check_matches_enumeration(tiny_onnx, tiny_points, engines, key):
    """On the tiny network the MILP decides every point, and its verdicts are the enumeration's:
    certified iff no input of the box is misclassified by the engines, broken with a
    counterexample that the engines misclassify."""
    model = tiny_onnx[key]
    x, y = tiny_points
    eps = 3 / 255  # 7 levels per pixel: enumeration only of the points the MILP breaks
    res = certify(model, x, y, eps, "complete", time_limit=30)
    assert not np.any(res.status == UNKNOWN), res.why
    assert np.any(res.status == BROKEN) and np.any(res.status == CERTIFIED)
    for i in np.nonzero(res.status == BROKEN)[0]:
        cx = res.counterexamples[int(i)][None]
        assert np.max(np.abs(cx.astype(np.float64) - x[i])) <= eps * (1 + 2.0**-20)
        for engine in engines[key]:
            assert engine(cx).argmax(1)[0] != y[i], f"{engine.name}: counterexample of point {i} not confirmed"
    lin = certify(model, x, y, eps, "linear")
    assert np.all(lin.status[lin.status == CERTIFIED] == res.status[lin.status == CERTIFIED])
    assert res.certified_acc >= lin.certified_acc


def test_complete_certificates_hold_exhaustively(tiny_onnx, tiny_points, engines):
    model = tiny_onnx[("tiny", "integer")]
    x, y = tiny_points
    res = certify(model, x, y, EPS, "complete", time_limit=30)
    prog = read_program(model)
    for i in np.nonzero(res.status == CERTIFIED)[0]:
        xs = box_inputs(prog, x[i], EPS)
        assert all(robust_everywhere(e, xs, y[i]) for e in engines[("tiny", "integer")])
    for i in np.nonzero(res.status != CERTIFIED)[0]:  # not certified: the enumeration finds the break
        xs = box_inputs(prog, x[i], EPS)
        assert not robust_everywhere(engines[("tiny", "integer")][0], xs, y[i])


def test_certified_accuracy_at_most_empirical(tiny_onnx, tiny_points, engines):
    model = tiny_onnx[("tiny", "integer")]
    x, y = tiny_points
    prog = read_program(model)
    robust = [robust_everywhere(engines[("tiny", "integer")][0], box_inputs(prog, x[i], EPS), y[i]) for i in range(len(y))]
    for method in ("interval", "linear"):
        assert certify(model, x, y, EPS, method).certified_acc <= np.mean(robust)


# ------------------------------------------------------------------ a wrong transformer is caught


def requant_without_rounding(step, b):
    """The mistake to catch: requantization bounds of ``acc * M`` truncated instead of rounded."""
    if not step.fixed:
        lo, hi = np.floor(b.lo * step.mult), np.floor(b.hi * step.mult)
    else:
        lo, hi = np.floor(b.lo * step.slope), np.floor(b.hi * step.slope)
    return I.Bounds(np.clip(lo, step.qmin, step.qmax).astype(np.int64), np.clip(hi, step.qmin, step.qmax).astype(np.int64))


@pytest.mark.parametrize("key", [("tiny", "integer"), ("tiny", "qdq")])
def test_wrong_requant_bounds_are_caught(tiny_onnx, tiny_points, engines, monkeypatch, key):
    model = tiny_onnx[key]
    x, y = tiny_points
    assert bound_violations(model, x, y, 4 / 255) == 0
    monkeypatch.setattr(I, "requant_bounds", requant_without_rounding)
    assert bound_violations(model, x, y, 4 / 255) > 0


def exact_min_margins(model, x, y, eps) -> np.ndarray:
    """The smallest margin ``logit_y - logit_j`` over every input of each point's box, by the
    reference interpreter ([N, classes], +inf at ``y``)."""
    prog = read_program(model)
    sess = ReferenceSession(model)
    out = np.full((len(y), prog.num_classes), np.inf)
    for i in range(len(y)):
        logits = sess.run(None, {"input": box_inputs(prog, x[i], eps)})[0].astype(np.float64)
        m = (logits[:, y[i]][:, None] - logits).min(0)
        m[y[i]] = np.inf
        out[i] = m
    return out


def margin_bounds_of(model, x, y, eps) -> np.ndarray:
    prog = read_program(model)
    q = next(s for s in prog.steps if isinstance(s, P.InputQuant))
    a, b = I.ball(x, eps)
    return L.margin_bounds(I.propagate(prog, q.quantize(a), q.quantize(b)), y)


@pytest.fixture(scope="module")
def exact(tiny_onnx, tiny_points) -> np.ndarray:
    return exact_min_margins(tiny_onnx[("tiny", "integer")], *tiny_points, EPS)


def test_margin_bounds_below_the_exact_minimum(tiny_onnx, tiny_points, exact):
    model = tiny_onnx[("tiny", "integer")]
    x, y = tiny_points
    assert np.all(margin_bounds_of(model, x, y, EPS) <= exact)


def test_wrong_rounding_relaxation_is_caught(tiny_onnx, tiny_points, exact, monkeypatch):
    """Linear bounds that forget the rounding error (the requantization's lines moved onto
    ``acc * M``, as if it did not round) overstate some margin beyond its exact minimum over
    the box, which the enumeration finds."""
    model = tiny_onnx[("tiny", "integer")]
    x, y = tiny_points
    orig = L.clamp_lines

    def no_rounding(step, res, pts):
        k_lo, b_lo, k_hi, b_hi = orig(step, res, pts)
        if isinstance(step, P.Requant):
            return k_lo, b_lo + 0.5, k_hi, b_hi - 0.5
        return k_lo, b_lo, k_hi, b_hi

    monkeypatch.setattr(L, "clamp_lines", no_rounding)
    monkeypatch.setattr(I.IntervalResult, "margins", lambda self, y: np.full((len(y), 3), -np.inf))
    assert np.any(margin_bounds_of(model, x, y, EPS) > exact)
