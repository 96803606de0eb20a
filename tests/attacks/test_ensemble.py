"""The AutoAttack-style ensemble: attacks run only on points still robust, query attacks last and
against each target, the per-point worst case is kept, transfer attacks craft on their source."""
from dataclasses import dataclass

import pytest
import torch

from robustq_deploy.attacks import Attack, ThreatModel, order_attacks, run_ensemble
from robustq_deploy.errors import ConfigError

N = 12
CLEAN_WRONG_ID = 7


def _points() -> tuple[torch.Tensor, torch.Tensor]:
    """Point i carries its id in pixel (0, 0); pixel (0, 1) is what attacks change."""
    x = torch.zeros(N, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(N) / 255.0
    return x, torch.zeros(N, dtype=torch.long)


def _ids(x: torch.Tensor) -> list[int]:
    return torch.round(x[:, 0, 0, 0] * 255).long().tolist()


class Target:
    """Class 1 (wrong) when pixel (0, 1) moved (only for even ids if ``even_only``), or for id 7."""

    def __init__(self, even_only: bool):
        self.even_only = even_only

    def __call__(self, x):
        ids = torch.round(x[:, 0, 0, 0] * 255).long()
        moved = x[:, 0, 0, 1] > 0
        if self.even_only:
            moved &= ids % 2 == 0
        wrong = moved | (ids == CLEAN_WRONG_ID)
        return torch.stack([(~wrong).float(), wrong.float()], 1)


@dataclass(frozen=True)
class _P:
    pass


class Spy(Attack):
    """Moves pixel (0, 1) of the points whose id is in ``fools``; records what it was given."""

    def __init__(self, name, access, fools, source=None):
        super().__init__(ThreatModel("linf", 0.1), _P())
        self.name, self.access, self.fools, self._source = name, access, set(fools), source
        self.seen: list[tuple[object, list[int]]] = []

    @property
    def source(self):
        return self._source if self.access == "transfer" else super().source

    def perturb(self, model, x, y, generator=None):
        self.seen.append((model, _ids(x)))
        out = x.clone()
        for row, i in enumerate(_ids(x)):
            if i in self.fools:
                out[row, 0, 0, 1] = 0.1
        return out


def test_only_still_robust_points_are_attacked_and_worst_case_is_kept():
    x, y = _points()
    a1, a2 = Spy("a1", "gradient", {1, 2, 3}), Spy("a2", "gradient", {3, 4, 5, 6})
    q = Spy("q", "query", {8, 9})
    attacks = order_attacks([q, a1, a2])
    assert [a.name for a in attacks] == ["a1", "a2", "q"]
    surrogate = object()
    targets = {"a": Target(False), "b": Target(True)}
    res = run_ensemble(attacks, {"white-box": surrogate}, targets, x, y, ThreatModel("linf", 0.1),
                       lambda key: torch.Generator().manual_seed(0))
    assert a1.seen[0] == (surrogate, [i for i in range(N) if i != CLEAN_WRONG_ID])
    assert a2.seen[0][1] == [i for i in range(N) if i not in (2, CLEAN_WRONG_ID)]  # 1, 3 still robust on b
    by_target = {id(m.model): ids for m, ids in q.seen}
    assert by_target[id(targets["a"])] == [0, 8, 9, 10, 11]
    # id 8 fell on b to the example the query attack found against a (scored on every target)
    assert by_target[id(targets["b"])] == [0, 1, 3, 5, 9, 10, 11]
    code_a = res.code["a"].tolist()
    assert code_a == [-1, 1, 1, 1, 2, 2, 2, 0, 3, 3, -1, -1]
    assert res.code["b"].tolist() == [-1, -1, 1, -1, 2, -1, 2, 0, 3, -1, -1, -1]
    assert int(res.robust("b").sum()) == 7
    # the worst-case input of a broken point is the one that broke it, and it is on the grid
    assert float(res.x_worst["a"][4, 0, 0, 1]) == pytest.approx(25 / 255)
    assert res.adv_pred["a"][4] == 1 and res.adv_pred["a"][0] == 0
    assert res.queries["a1"] == {"a": 11, "b": 11}


def test_transfer_attacks_craft_on_their_source_and_missing_sources_are_refused():
    x, y = _points()
    flt = object()
    t = Spy("t", "transfer", {1}, source="float")
    res = run_ensemble([t], {"white-box": object(), "float": flt}, {"a": Target(False)}, x, y,
                       ThreatModel("linf", 0.1), lambda key: None)
    assert t.seen[0][0] is flt and res.code["a"][1] == 1
    with pytest.raises(ConfigError, match="need source models float"):
        run_ensemble([t], {"white-box": object()}, {"a": Target(False)}, x, y, ThreatModel("linf", 0.1), lambda key: None)


def test_query_targets_restrict_query_attacks():
    x, y = _points()
    q = Spy("q", "query", {8})
    targets = {"twin": Target(False), "dep": Target(False)}
    res = run_ensemble([q], {}, targets, x, y, ThreatModel("linf", 0.1), lambda key: None, query_targets=("dep",))
    assert [id(m.model) for m, _ in q.seen] == [id(targets["dep"])]
    assert res.code["twin"][8] == 1  # the example found on the deployed target is scored on the twin too


def test_score_based_query_attacks_skip_label_only_targets():
    """Square needs scores: it does not query a target that returns labels only (its examples for
    the other targets are still scored there, one call per point); a decision-based attack does."""
    from robustq_deploy.attacks import ThreatModel, make_attack, run_ensemble

    x, y = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.zeros(4, dtype=torch.long)

    def class_zero(xs):  # always right: every point stays robust
        return torch.nn.functional.one_hot(torch.zeros(len(xs), dtype=torch.long), 10).float()

    th = ThreatModel("linf", 0.1)
    res = run_ensemble([make_attack("square", th, {"queries": 5}), make_attack("rays", th, {"queries": 5})], {},
                       {"scores": class_zero, "labels": class_zero}, x, y, th,
                       lambda k: torch.Generator().manual_seed(0), label_only={"labels"})
    assert res.queries["square"]["scores"] == 4 * 5 + 4  # attacked (5 queries per point) and scored
    assert res.queries["square"]["labels"] == 4  # only scored
    assert res.queries["rays"]["labels"] > 4
