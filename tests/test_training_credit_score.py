"""Credit score: PDO scaling (doubling the odds adds exactly PDO points) and grades from cut-offs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from safetyml.credit_score import credit_grade, credit_points
from safetyml.training.config import CreditScoreConfig


def _p_for_odds(odds: float) -> float:
    return 1.0 / (1.0 + odds)  # good:bad odds = (1 - p) / p


def test_base_points_at_base_odds():
    assert credit_points(_p_for_odds(50), CreditScoreConfig()) == pytest.approx(600)
    cfg = CreditScoreConfig(base_points=500, base_odds=10, pdo=40)
    assert credit_points(_p_for_odds(10), cfg) == pytest.approx(500)


@given(odds=st.floats(0.05, 5000), pdo=st.floats(5, 100))
def test_doubling_the_odds_adds_pdo_points(odds, pdo):
    cfg = CreditScoreConfig(pdo=pdo)
    gained = credit_points(_p_for_odds(2 * odds), cfg) - credit_points(_p_for_odds(odds), cfg)
    assert gained == pytest.approx(pdo, rel=1e-6)


def test_points_fall_as_default_probability_rises():
    p = np.linspace(0.001, 0.9, 50)
    assert np.all(np.diff(credit_points(p, CreditScoreConfig())) < 0)


def test_grades_follow_the_cut_offs():
    cfg = CreditScoreConfig(grades={"A": 660, "B": 620, "C": 580, "D": 540})
    assert list(credit_grade(np.array([700, 660, 659.9, 620, 600, 540, 539.9]), cfg)) == [
        "A",
        "A",
        "B",
        "B",
        "C",
        "D",
        "E",
    ]
    assert credit_grade(600.0, cfg) == "C"
    # the riskier merchant never gets the better grade
    grades = credit_grade(credit_points(np.linspace(0.001, 0.5, 200), cfg), cfg)
    order = {g: i for i, g in enumerate("ABCDE")}
    assert all(order[a] <= order[b] for a, b in zip(grades, grades[1:], strict=False))
