"""Validity checks on synthetic measurements: each pitfall turns into its flag, bounds apply."""
import pytest

from robustq_deploy.config import ValidityConfig, VerifyConfig
from robustq_deploy.verify.plan import build_plan
from robustq_deploy.verify.validity import flags, run_validity


def _stats(pgd: float = 0.3, square: float = 0.0, clean: float = 0.9) -> dict:
    return {"broken": {"pgd": pgd, "square": square}, "clean_acc": clean,
            "robust_acc": {"worst_case": clean - pgd - square}}


def _measure(**over):
    m = {
        "n": 100,
        "models": {"twin": _stats(), "onnxruntime": _stats()},
        "agreement": {"onnxruntime": {"clean": 1.0, "adversarial": 0.98}},
        "determinism": {"twin": 0.0, "onnxruntime": 0.0},
        "probabilities": {"twin": False, "onnxruntime": False},
        "eps1": {"n": 100, "acc": {"twin": 0.0, "onnxruntime": 0.01}},
        "zero_grad": 0.0,
    }
    m.update(over)
    return m


PLAN = build_plan(VerifyConfig(attacks=("pgd", "square")))


def test_clean_measurements_raise_no_flag():
    recs = run_validity(_measure(), PLAN, ValidityConfig())
    assert flags(recs) == [] and {r["status"] for r in recs} == {"pass"}


@pytest.mark.parametrize("over,flag", [
    ({"models": {"onnxruntime": _stats(0.1, 0.05)}}, "gradient_masking.onnxruntime"),
    ({"models": {"onnxruntime": _stats(-0.2, 0.0, clean=0.5)}}, "consistency.onnxruntime"),
    ({"eps1": {"n": 100, "acc": {"onnxruntime": 0.3}}}, "eps1.onnxruntime"),
    ({"zero_grad": 0.5}, "zero_gradients"),
    ({"agreement": {"onnxruntime": {"clean": 0.9, "adversarial": 1.0}}}, "agreement.clean.onnxruntime"),
    ({"agreement": {"onnxruntime": {"clean": 1.0, "adversarial": 0.9}}}, "agreement.adversarial.onnxruntime"),
    ({"determinism": {"onnxruntime": 0.25}}, "determinism.onnxruntime"),
    ({"probabilities": {"twin": True}}, "probability_outputs.twin"),
])
def test_each_pitfall_flags(over, flag):
    assert [f["name"] for f in flags(run_validity(_measure(**over), PLAN, ValidityConfig()))] == [flag]


def test_one_point_is_no_evidence_of_masking():
    over = {"models": {"onnxruntime": _stats(0.1, 0.02)}}
    assert flags(run_validity(_measure(n=50, **over), PLAN, ValidityConfig())) == []  # 1 of 50 points
    assert len(flags(run_validity(_measure(n=100, **over), PLAN, ValidityConfig()))) == 1  # 2 of 100


def test_bounds_are_configurable_and_masking_needs_a_query_attack():
    over = {"models": {"onnxruntime": _stats(0.1, 0.05)}}
    assert flags(run_validity(_measure(**over), PLAN, ValidityConfig(max_query_gain=0.1))) == []
    recs = run_validity(_measure(), build_plan(VerifyConfig(attacks=("pgd",))), ValidityConfig())
    assert recs[0]["name"] == "gradient_masking" and recs[0]["status"] == "skip"


def test_rounding_near_ties_are_not_counted_as_disagreement():
    ties = {"agreement": {"onnxruntime": {"clean": 0.9, "adversarial": 1.0, "clean_near_ties": 10}}}
    assert flags(run_validity(_measure(**ties), PLAN, ValidityConfig())) == []
    some = {"agreement": {"onnxruntime": {"clean": 0.9, "adversarial": 1.0, "clean_near_ties": 5}}}
    assert [f["name"] for f in flags(run_validity(_measure(**some), PLAN, ValidityConfig()))] == ["agreement.clean.onnxruntime"]


def test_masking_check_needs_a_gradient_attack_too():
    recs = run_validity(_measure(), build_plan(VerifyConfig(attacks=("square",))), ValidityConfig())
    assert recs[0]["status"] == "skip" and "NOT CHECKED" in recs[0]["message"] and "gradient attack" in recs[0]["message"]


def test_a_degenerate_model_is_flagged_and_its_eps1_failure_explained():
    m = _measure(one_class={"twin": 0.2, "onnxruntime": 0.97}, eps1={"n": 100, "acc": {"onnxruntime": 0.1}})
    recs = {r["name"]: r for r in run_validity(m, PLAN, ValidityConfig())}
    assert recs["one_class.onnxruntime"]["status"] == "fail" and recs["one_class.twin"]["status"] == "pass"
    assert "predicts one class" in recs["eps1.onnxruntime"]["message"]
    assert "the attack does not work" not in recs["eps1.onnxruntime"]["message"]


@pytest.mark.parametrize("stats,sweep,flag", [
    ({"clean_acc": 0.5, "robust_acc": {"worst_case": 0.6}}, [], "consistency.onnxruntime"),  # robust above clean
    ({"clean_acc": 0.9, "robust_acc": {"worst_case": 0.6}}, [{"eps": 0.05, "onnxruntime": 0.5},
                                                             {"eps": 0.2, "onnxruntime": 0.7}],
     "sweep_monotone.onnxruntime"),  # rises with eps
])
def test_accuracy_above_clean_or_rising_with_eps_is_flagged(stats, sweep, flag):
    m = _measure(models={"onnxruntime": {"broken": {"pgd": 0.1, "square": 0.0}, **stats}}, eps_sweep=sweep)
    assert [f["name"] for f in flags(run_validity(m, PLAN, ValidityConfig()))] == [flag]
