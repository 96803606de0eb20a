"""Evaluation validity checks: pitfalls that make a robustness number meaningless become flags.

Each check reads the aggregated measurements of a run and returns records
``{name, status ("pass" | "fail" | "skip"), value, bound, message}``; failed records become the
report's ``flags``, and ``robustq check`` fails on any flag.

* ``gradient_masking.<model>``: a query-based attack (Square), run after every gradient attack,
  still broke more than ``max_query_gain`` of the points (and more than one point): the gradients
  the white-box attacks followed are masked or wrong (Athalye et al. 2018; AutoAttack's check).
  Skipped (and said so in the summary and by ``check``) unless both a query attack and a gradient
  or transfer attack ran.
* ``one_class.<model>``: the model predicts one class for more than ``max_one_class`` of the
  clean points: a degenerate model, whose "robust accuracy" is the share of that class (such a
  model also fails ``eps1``; the message there says why, rather than blaming the attack).
* ``sweep_monotone.<model>``: accuracy rising with eps in the sweep: the attacks do not converge.
* ``consistency.<model>``: robust accuracy above clean accuracy (impossible for a sound evaluation).
* ``eps1.<model>``: accuracy under an L-inf attack of radius 1 (any image reachable) must be near
  zero; if not, the attack pipeline is broken.
* ``zero_gradients``: points whose input gradient on the twin is exactly zero.
* ``agreement.clean.<engine>`` / ``agreement.adversarial.<engine>``: twin and deployed module
  disagree (argmax) on more points than the bound; robust accuracy of the twin then says little
  about the deployed module. Disagreements that rounding near-ties explain (both within the
  rounding-deviation bound of the QDQ graph, :mod:`robustq_deploy.export.reference.deviation`)
  are lawful and not counted.
* ``determinism.<model>``: the same input twice gave different outputs (randomised defences make
  attacks look weaker than they are).
* ``probability_outputs.<model>``: the model returns softmax probabilities, which flatten the
  cross-entropy gradient.
* ``consistency.<model>``: robust accuracy above clean accuracy (impossible for a sound evaluation).

To add a check: write ``fn(measure, plan, bounds) -> list[record]`` and append it to :data:`CHECKS`.
"""
from __future__ import annotations

from typing import Any, Callable

from ..config import ValidityConfig
from .plan import Plan

Record = dict[str, Any]


def record(name: str, ok: bool | None, value: Any, bound: Any, message: str) -> Record:
    status = "skip" if ok is None else ("pass" if ok else "fail")
    return {"name": name, "status": status, "value": value, "bound": bound, "message": message}


def gradient_masking(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    query = [a.name for a in plan.attacks if a.access == "query"]
    grad = [a.name for a in plan.attacks if a.access != "query"]
    if not query or not grad:
        missing = "no query-based attack ran (add square)" if not query else "no gradient attack ran (add apgd-ce)"
        return [record("gradient_masking", None, None, b.max_query_gain,
                       f"NOT CHECKED: gradient masking needs a query and a gradient attack; {missing}")]
    out = []
    for model, stats in m["models"].items():
        if model == "float":
            continue
        gain = sum(stats["broken"][a] for a in query)
        ok = gain <= b.max_query_gain or round(gain * m["n"]) <= 1  # one point is no evidence
        out.append(record(f"gradient_masking.{model}", ok, gain, b.max_query_gain,
                          f"{model}: {'+'.join(query)} broke {gain:.2%} of the points after all gradient attacks "
                          f"({'<=' if ok else '>'} {b.max_query_gain:.2%})"
                          + ("" if ok else "; gradients look masked, white-box numbers overstate robustness")))
    return out


def eps1(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    out = []
    for model, acc in m["eps1"]["acc"].items():
        ok = acc <= b.max_eps1_acc
        share = m.get("one_class", {}).get(model, 0.0)
        why = ("; the model predicts one class for nearly everything, so any image is 'robust' when it shows "
               "that class" if share > b.max_one_class else "; the attack does not work")
        out.append(record(f"eps1.{model}", ok, acc, b.max_eps1_acc,
                          f"{model}: accuracy {acc:.2%} at L-inf eps=1 on {m['eps1']['n']} points "
                          f"({'<=' if ok else '>'} {b.max_eps1_acc:.2%})" + ("" if ok else why)))
    return out


def one_class(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    out = []
    for model, share in m.get("one_class", {}).items():
        ok = share <= b.max_one_class
        out.append(record(f"one_class.{model}", ok, share, b.max_one_class,
                          f"{model}: its most frequent clean prediction covers {share:.2%} of the points "
                          f"({'<=' if ok else '>'} {b.max_one_class:.2%})"
                          + ("" if ok else "; a degenerate model: its robust accuracy means nothing")))
    return out


def sweep_monotone(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    """Accuracy rising with eps in the sweep (the sweep runs the same attacks at every radius):
    the attacks are not converging. Models without sweep rows are not checked."""
    out = []
    for model, stats in m["models"].items():
        curve = sorted([(0.0, stats["clean_acc"])] + [(r["eps"], r[model]) for r in m.get("eps_sweep", [])
                                                      if model in r])
        if len(curve) < 2:
            continue
        rise = max(hi_acc - lo_acc for (_, lo_acc), (_, hi_acc) in zip(curve, curve[1:]))
        ok = rise <= 2.0 / max(m["n"], 1) + 0.01  # a point or two may flip between independent runs
        out.append(record(f"sweep_monotone.{model}", ok, max(rise, 0.0), 0.01,
                          f"{model}: accuracy {'never rises' if ok else 'rises'} with eps in the sweep"
                          + ("" if ok else f" (by {rise:.2%}); the attacks do not converge")))
    return out


def zero_gradients(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    frac = m["zero_grad"]
    ok = frac <= b.max_zero_grad
    return [record("zero_gradients", ok, frac, b.max_zero_grad,
                   f"{m.get('primary', 'twin')}: {frac:.2%} of the points have an exactly zero input gradient "
                   f"({'<=' if ok else '>'} {b.max_zero_grad:.2%})")]


def agreement(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    out = []
    for eng, ag in m["agreement"].items():
        for kind, bound in (("clean", b.max_disagree_clean), ("adversarial", b.max_disagree_adv)):
            ties = ag.get(f"{kind}_near_ties", 0)
            dis = max(1.0 - ag[kind] - ties / max(m["n"], 1), 0.0)
            ok = dis <= bound
            out.append(record(f"agreement.{kind}.{eng}", ok, dis, bound,
                              f"{eng}: disagrees with the twin on {dis:.2%} of the {kind} inputs "
                              f"({'<=' if ok else '>'} {bound:.2%})"
                              + (f", not counting {ties} rounding near-tie(s)" if ties else "")))
    return out


def determinism(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    return [record(f"determinism.{model}", diff == 0, diff, 0.0,
                   f"{model}: the same input twice gave logits differing by up to {diff:g}"
                   + ("" if diff == 0 else "; a randomised model makes attacks look weaker"))
            for model, diff in m["determinism"].items()]


def probability_outputs(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    return [record(f"probability_outputs.{model}", not probs, probs, False,
                   f"{model}: outputs {'look like softmax probabilities (attack losses saturate; verify the model without its Softmax head, whose argmax is the same)' if probs else 'are logits'}")
            for model, probs in m["probabilities"].items()]


def consistency(m: dict[str, Any], plan: Plan, b: ValidityConfig) -> list[Record]:
    """Robust accuracy above clean accuracy cannot happen (every attack starts at the clean point):
    such a number comes from a broken evaluation or an edited state."""
    out = []
    for model, stats in m["models"].items():
        worst, clean = stats["robust_acc"]["worst_case"], stats["clean_acc"]
        ok = worst <= clean
        out.append(record(f"consistency.{model}", ok, worst, clean,
                          f"{model}: robust accuracy {worst:.2%} {'<=' if ok else '>'} clean accuracy {clean:.2%}"
                          + ("" if ok else "; the evaluation is broken")))
    return out


CHECKS: list[Callable[[dict[str, Any], Plan, ValidityConfig], list[Record]]] = [
    gradient_masking, eps1, zero_gradients, agreement, determinism, probability_outputs, consistency,
    one_class, sweep_monotone,
]


def run_validity(measure: dict[str, Any], plan: Plan, bounds: ValidityConfig) -> list[Record]:
    return [r for check in CHECKS for r in check(measure, plan, bounds)]


def flags(records: list[Record]) -> list[dict[str, str]]:
    return [{"name": r["name"], "message": r["message"]} for r in records if r["status"] == "fail"]
