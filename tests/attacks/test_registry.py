"""The attack registry: every attack is registered, unknown names and options are refused."""
import pytest

from robustq_deploy.attacks import ThreatModel, attack_names, make_attack
from robustq_deploy.errors import ConfigError


def test_registered_attacks():
    assert attack_names() == ["apgd-ce", "apgd-dlr", "apgd-t", "cw-l2", "fgsm", "pgd", "rays", "square", "transfer"]


def test_defaults_fill_only_fields_the_attack_has():
    th = ThreatModel("linf", 0.1)
    assert make_attack("pgd", th, None, steps=40, restarts=2).params.steps == 40
    assert make_attack("pgd", th, {"steps": 7}, steps=40).params.steps == 7
    sq = make_attack("square", th, {"queries": 10}, steps=40, restarts=3)
    assert sq.describe() == {"name": "square", "access": "query", "source": None,
                             "params": {"queries": 10, "p_init": 0.8}}


def test_unknown_attack_option_and_source_are_config_errors():
    th = ThreatModel("linf", 0.1)
    with pytest.raises(ConfigError, match="unknown attack 'deepfool'; choose one of apgd-ce"):
        make_attack("deepfool", th)
    with pytest.raises(ConfigError, match=r"unknown key 'iters' in \[verify.attack_params.pgd\]"):
        make_attack("pgd", th, {"iters": 3})
    with pytest.raises(ConfigError, match="unknown source 'teacher'"):
        make_attack("transfer", th, {"source": "teacher"})
