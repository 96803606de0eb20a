"""Certify test points of a deployed graph: each ends *certified*, *broken* or *unknown*.

:func:`certify` reads the graph once (:func:`~.program.read_program`) and, per chunk of points:

1. runs the program on the clean inputs: a misclassified point is *broken* (its own input is
   the counterexample; for a ``qdq`` graph in its exact real semantics, which an engine may
   round the other way at a near-tie);
2. maps the L-inf ball onto the input levels and propagates intervals (:mod:`.interval`); the
   margins' interval bounds (last layer elided) certify what they can;
3. ``linear`` and ``complete``: back-substitutes the remaining margins (:mod:`.linear`);
4. ``complete``: solves the remaining points as mixed-integer programs (:mod:`.milp`) under a
   per-point time limit; a solution with a negative margin is replayed (on ``replay``, by
   default the numpy reference interpreter of the graph) and the point is *broken* only if the
   replay misclassifies it.

Everything left is *unknown*. A point is certified only if every margin's lower bound is
positive, so the engine's argmax (first index on ties) is the label on every input of the ball.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from ..errors import ConfigError, UnsupportedError
from ..progress import bar as progress_bar
from . import program as P
from .interval import ball, propagate
from .linear import ROW_BUDGET, margin_bounds

METHODS = ("interval", "linear", "complete")
CERTIFIED, UNKNOWN, BROKEN = 1, 0, -1
STATUS_NAMES = {CERTIFIED: "certified", UNKNOWN: "unknown", BROKEN: "broken"}

Replay = Callable[[np.ndarray], np.ndarray]  # float32 inputs [N, ...] -> logits [N, classes]


@dataclass
class CertifyResult:
    method: str
    eps: float
    form: str
    status: np.ndarray  # int8 [N]: CERTIFIED, UNKNOWN, BROKEN
    margin: np.ndarray  # float64 [N]: smallest lower bound of logit_y - logit_j (-inf when none)
    why: list[str]  # per point: "bound", "clean", "counterexample", "overflow", "timeout", "milp"
    counterexamples: dict[int, np.ndarray] = field(default_factory=dict)  # float inputs that broke a point
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.status)

    def fraction(self, code: int) -> float:
        return float(np.mean(self.status == code)) if self.n else 0.0

    @property
    def certified_acc(self) -> float:
        return self.fraction(CERTIFIED)

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "eps": self.eps, "form": self.form, "n": self.n,
                "certified_acc": self.certified_acc, "broken": self.fraction(BROKEN),
                "unknown": self.fraction(UNKNOWN), "seconds": self.seconds}


def _chunk_size(program: P.Program) -> int:
    widest = max(int(np.prod(s)) for s in program.shapes.values())
    return max(1, ROW_BUDGET // (max(program.num_classes - 1, 1) * widest))


def float_inputs(program: P.Program, levels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Float inputs of the ball whose quantization gives ``levels``: ``level * scale``, moved to the
    ball's end where a level's centre lies outside (the end quantizes to that level)."""
    q = next(s for s in program.steps if isinstance(s, P.InputQuant))
    scale = np.float32(np.asarray(q.consts[q.node.input[1]]).reshape(-1)[0])
    return np.clip(levels.astype(np.float32) * scale, a, b).astype(np.float32)


def certify(model: onnx.ModelProto | str | Path | P.Program, x: np.ndarray, y: np.ndarray, eps: float,
            method: str = "linear", time_limit: float = 10.0, replay: Replay | None = None,
            progress: bool = False) -> CertifyResult:
    """Certify float inputs ``x`` ([N, C, H, W] in [0, 1]) with labels ``y`` at L-inf radius ``eps``."""
    if method not in METHODS:
        raise ConfigError(f"certify: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not eps >= 0:
        raise ConfigError(f"certify: eps must be >= 0, got {eps!r}")
    program = model if isinstance(model, P.Program) else P.read_program(model)
    if method == "complete" and any(isinstance(s, P.Sign) for s in program.steps):
        raise UnsupportedError("certify complete: sign thresholds (binary layers) have no MILP encoding; "
                               "use interval or linear")
    if replay is None and method == "complete":
        from ..export.reference import ReferenceSession

        sess = ReferenceSession(model) if not isinstance(model, P.Program) else None
        replay = ((lambda xs: sess.run(None, {sess.input_names[0]: xs})[0]) if sess is not None
                  else (lambda xs: P.run(program, xs)[program.output]))
    t0 = time.perf_counter()
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    n = len(y)
    status = np.zeros(n, np.int8)
    margin = np.full(n, -np.inf)
    why = ["bound"] * n
    counterexamples: dict[int, np.ndarray] = {}
    step = _chunk_size(program)
    q = next(s for s in program.steps if isinstance(s, P.InputQuant))
    bar = progress_bar(range(0, n, step), f"certify {method} eps={eps:g}", progress, unit="chunk")
    for start in bar:
        sl = slice(start, min(start + step, n))
        xs, ys = x[sl], y[sl]
        pred = P.run(program, xs)[program.output].argmax(1)
        a, b = ball(xs, eps)
        res = propagate(program, q.quantize(a), q.quantize(b))
        m = margin_bounds(res, ys) if method != "interval" else res.margins(ys)
        low = m.min(1)
        idx = np.arange(sl.start, sl.stop)
        margin[sl] = low
        status[sl] = np.where(low > 0, CERTIFIED, UNKNOWN)
        for k in np.nonzero(pred != ys)[0]:
            status[idx[k]], why[idx[k]] = BROKEN, "clean"
            counterexamples[int(idx[k])] = xs[k]
        for k in np.nonzero(res.overflow & (status[sl] == UNKNOWN))[0]:
            why[idx[k]] = "overflow"
        if method == "complete":
            _complete(program, res, xs, ys, a, b, idx, status, margin, why, counterexamples, time_limit, replay)
    bar.close()
    return CertifyResult(method, float(eps), program.form, status, margin, why, counterexamples,
                         time.perf_counter() - t0)


def _complete(program, res, xs, ys, a, b, idx, status, margin, why, counterexamples, time_limit, replay) -> None:
    from .milp import solve_point

    for k in range(len(ys)):
        i = idx[k]
        if status[i] != UNKNOWN or res.overflow[k]:
            continue
        classes = np.array([j for j in range(program.num_classes) if j != ys[k]])
        try:
            v = solve_point(res, k, int(ys[k]), classes, time_limit)
        except UnsupportedError:  # an int32 wrap inside the box: the point stays unknown
            why[i] = "milp"
            continue
        if v.status == "certified":
            status[i], margin[i], why[i] = CERTIFIED, max(margin[i], v.bound), "milp"
        elif v.status == "candidate":
            xa = float_inputs(program, v.levels.reshape(xs[k].shape), a[k], b[k])[None]
            logits = np.asarray(replay(xa))
            if int(logits.argmax(1)[0]) != ys[k]:
                status[i], why[i] = BROKEN, "counterexample"
                counterexamples[int(i)] = xa[0]
            else:
                why[i] = "milp"
        else:
            why[i] = "timeout" if v.detail.get("timeout") else "milp"


__all__ = ["BROKEN", "CERTIFIED", "METHODS", "STATUS_NAMES", "UNKNOWN", "CertifyResult", "Replay", "certify",
           "float_inputs"]
