"""Verify options are checked when the run config is validated, before any training."""
import pytest

from robustq_deploy.config import RunConfig, from_dict
from robustq_deploy.validation import validate
from robustq_deploy.errors import ConfigError
from robustq_deploy.verify.plan import build_plan


def _validate(verify: dict):
    return validate(from_dict(RunConfig, {"verify": verify}))


def test_plan_orders_attacks_and_builds_the_sweep():
    cfg = _validate({"attacks": ["square", "pgd", "transfer"], "eps_sweep": [0.05, 0.3], "steps": 7,
                     "attack_params": {"square": {"queries": 50}}}).verify
    plan = build_plan(cfg)
    assert [a.name for a in plan.attacks] == ["pgd", "transfer", "square"]
    assert [a.name for a in plan.float_attacks] == ["pgd", "transfer"]
    assert plan.attacks[0].params.steps == 7 and plan.attacks[2].params.queries == 50
    assert [t.eps for t, _ in plan.sweep] == [0.05, 0.3] and plan.eps1[0].eps == 1.0


@pytest.mark.parametrize("verify,msg", [
    ({"attacks": ["pgd", "pgd"]}, "verify.attacks: pgd listed twice"),
    ({"budget": "huge"}, "verify.budget: unknown attack budget 'huge'; choose one of fast, standard, thorough"),
    ({"twin": "both"}, "verify.twin: unknown twin 'both'"),
    ({"attacks": ["pgd"], "attack_params": {"square": {"queries": 5}}}, "parameters for square, which no attack list runs"),
    ({"attack_params": {"pgd": {"stepz": 5}}}, "unknown key 'stepz' in [verify.attack_params.pgd]"),
    ({"norm": "l1"}, "threat norm 'l1' is not supported"),
    ({"validity": {"max_query_gain": 2.0}}, "verify.validity.max_query_gain: must be a fraction"),
    ({"device": "10.0.0.2"}, "expected HOST:PORT"),
    ({"threads": 0}, "verify.threads: must be positive"),
    ({"eps_sweep": [0.1], "sweep_attacks": []}, "an eps sweep needs at least one attack"),
])
def test_bad_verify_config(verify, msg):
    with pytest.raises(ConfigError) as exc:
        _validate(verify)
    assert msg in str(exc.value)
