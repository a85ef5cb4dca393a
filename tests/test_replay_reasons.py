"""Replayed reasons: the same reasons with contributions equal to the last bits a batched matrix product
may change (identical, not bitwise), and any real difference refused."""

from __future__ import annotations

import math

import pytest

from safetyml.scoring.replay import ReplayResult, Verdict

REASON = {
    "feature": "merchant_loss_rate_30d",
    "group": "merchant_loss_rate",
    "value": 0.0149,
    "contribution_logodds": 1.23928461442475,
    "contribution_probability": 0.029825541004529905,
    "direction": "up",
    "text": "refunds and chargebacks were 1% of sales in the last 30 days",
}


def _result(replayed: list[dict], explain: bool = True) -> ReplayResult:
    decision = {"probability": 0.1, "action": "allow", "reasons": [REASON], "request": {"explain": explain}}
    verdict = Verdict("m", "1", 0.1, "low", "allow", "BR@1", replayed)
    return ReplayResult(decision, verdict, None)


def test_last_bit_differences_are_the_same_reasons_but_not_bitwise() -> None:
    one_ulp = REASON | {"contribution_logodds": math.nextafter(REASON["contribution_logodds"], 2.0)}
    same = _result([dict(REASON)])
    assert same.reasons_identical and same.reasons_bitwise
    close = _result([one_ulp])
    assert close.reasons_identical and not close.reasons_bitwise


@pytest.mark.parametrize(
    "change",
    [
        {"contribution_logodds": 1.2392846144 * (1 + 1e-7)},  # a real difference in the contribution
        {"feature": "merchant_loss_rate_90d"},
        {"text": "another sentence"},
        {"direction": "down"},
    ],
)
def test_other_differences_are_not_identical(change: dict) -> None:
    assert not _result([REASON | change]).reasons_identical
    assert not _result([REASON, REASON]).reasons_identical  # one reason more
