"""bench/paired.py on hand-computed cases: the exact McNemar test, the paired bootstrap (which
keeps the pairing of points), margins of superiority / non-inferiority / inferiority, floors."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paired():
    spec = importlib.util.spec_from_file_location("bench_paired", REPO / "bench" / "paired.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_mcnemar_by_hand(paired):
    r = paired.mcnemar([1, 1, 1, 0, 0], [0, 0, 0, 0, 1])
    assert (r["only_a"], r["only_b"]) == (3, 1)
    assert r["p_value"] == pytest.approx(2 * (1 + 4) / 16)  # two-sided tail of Binomial(4, 1/2) at <= 1
    assert r["diff"] == pytest.approx(0.4)
    assert paired.mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0
    assert paired.mcnemar([1] * 10, [0] * 10)["p_value"] == pytest.approx(2 / 1024)
    with pytest.raises(ValueError):
        paired.mcnemar([1, 0], [1, 0, 1])


def test_paired_bootstrap_degenerate_cases(paired):
    same = np.array([[1, 0, 1, 1, 0]])
    p = paired.paired_bootstrap(same, same)
    assert (p.diff, p.low, p.high) == (0.0, 0.0, 0.0)
    p = paired.paired_bootstrap(np.ones((2, 50)), np.zeros((3, 50)))
    assert (p.diff, p.low, p.high, p.seeds_a, p.seeds_b, p.points) == (1.0, 1.0, 1.0, 2, 3, 50)


def test_pairing_resolves_a_small_consistent_gain(paired):
    """Arm a gets right every point b gets right, plus 10 of 1000: a one-point gain that two
    independent 1000-point samples could not tell from noise, but that every pairing shows."""
    b = np.zeros(1000, bool)
    b[:500] = True
    a = b.copy()
    a[500:510] = True
    p = paired.paired_bootstrap(a[None], b[None], draws=500)
    assert p.diff == pytest.approx(0.01) and 0.002 <= p.low <= p.high <= 0.02
    assert paired.verdict(p, "superior", 0.0) == "reproduced"
    assert paired.verdict(p, "superior", 0.02) == "refuted"  # not by the stated 2-point margin
    unpaired_se = np.sqrt(2 * 0.5 * 0.5 / 1000)  # the independent-samples view: 1 point is < 1 s.e.
    assert 0.01 < 1.96 * unpaired_se


@pytest.mark.parametrize("acc_a,acc_b,low,high,claim,margin,want", [
    (0.50, 0.40, 0.05, 0.15, "superior", 0.02, "reproduced"),
    (0.50, 0.40, 0.05, 0.15, "non-inferior", 0.02, "reproduced"),
    (0.40, 0.50, -0.15, -0.05, "superior", 0.02, "refuted"),
    (0.40, 0.50, -0.15, -0.05, "non-inferior", 0.02, "refuted"),
    (0.40, 0.50, -0.15, -0.05, "inferior", 0.02, "reproduced"),
    (0.50, 0.40, 0.05, 0.15, "inferior", 0.02, "refuted"),
    (0.45, 0.46, -0.03, 0.01, "superior", 0.0, "inconclusive"),
    (0.45, 0.46, -0.03, 0.01, "non-inferior", 0.02, "inconclusive"),
    (0.45, 0.46, -0.015, 0.005, "non-inferior", 0.02, "reproduced"),
    (0.30, 0.30, 0.0, 0.0, "superior", 0.0, "refuted"),  # equal on every point and seed: no improvement
    (0.30, 0.30, 0.0, 0.0, "inferior", 0.0, "refuted"),
    (0.50, 0.48, 0.0, 0.04, "superior", 0.0, "inconclusive"),  # touching the margin from above is not enough
    (0.01, 0.00, 0.0, 0.02, "superior", 0.0, "untestable in this regime (both at or below 2%)"),
    (0.99, 1.00, -0.02, 0.0, "non-inferior", 0.01, "untestable in this regime (both at or above 98%)"),
])
def test_verdicts_by_hand(paired, acc_a, acc_b, low, high, claim, margin, want):
    p = paired.Paired(acc_a, acc_b, acc_a - acc_b, low, high, 3, 3, 1000)
    assert paired.verdict(p, claim, margin) == want


def test_unknown_claim(paired):
    with pytest.raises(ValueError, match="unknown claim"):
        paired.verdict(paired.Paired(0.5, 0.5, 0, 0, 0, 1, 1, 10), "better", 0.0)
