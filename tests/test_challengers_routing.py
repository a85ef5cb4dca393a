"""Challenger declarations, sticky canary routing and the paired bootstrap gate (no models needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

from safetyml import paths
from safetyml.scoring.challenger_report import paired_bootstrap
from safetyml.scoring.challengers import route, sticky_bucket
from safetyml.scoring.policies import Challenger, PolicyError, load_policies

SHIPPED = paths.project_dir() / "serving" / "policies"


def _with_challengers(tmp_path: Path, market: str, challengers: list[dict]) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(SHIPPED, folder, dirs_exist_ok=True)
    raw = yaml.safe_load((folder / f"{market}.yaml").read_text())
    raw["challengers"] = challengers
    (folder / f"{market}.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    return folder


def test_shipped_policies_declare_valid_challengers() -> None:
    policies = load_policies(SHIPPED)
    declared = [(m, c) for m, p in policies.policies.items() for c in p.challengers]
    assert declared, "the shipped policies should show a challenger declaration"
    for _, challenger in declared:
        assert challenger.registered_name.startswith("safetyml-") and challenger.mode in ("shadow", "canary")


@pytest.mark.parametrize(
    ("challengers", "message"),
    [
        (
            [{"model": "no-such-model@challenger", "mode": "shadow"}],
            r"challengers\[0\].model: 'no-such-model'",
        ),
        ([{"model": "safetyml-incident-risk", "mode": "shadow"}], "challengers.0.model"),
        ([{"model": "safetyml-incident-risk@challenger", "mode": "mirror"}], "challengers.0.mode"),
        (
            [{"model": "safetyml-incident-risk@challenger", "mode": "canary", "share": 0}],
            "challengers.0.share",
        ),
        (
            [{"model": "safetyml-merchant-credit@challenger", "mode": "shadow", "sticky_key": "rider_id"}],
            r"challengers\[0\].sticky_key: merchant_credit requests carry merchant_id only",
        ),
        (
            [
                {"model": "safetyml-incident-risk@challenger", "mode": "canary", "share": 0.6},
                {"model": "safetyml-incident-risk@3", "mode": "canary", "share": 0.5},
            ],
            r"challengers\[1\].share: canary shares of incident_risk add up to 1.1",
        ),
        (
            [{"model": "safetyml-incident-risk@challenger", "mode": m} for m in ("shadow", "canary")],
            "listed twice",
        ),
    ],
)
def test_invalid_challengers_are_refused_naming_file_and_field(
    tmp_path: Path, challengers: list[dict], message: str
) -> None:
    folder = _with_challengers(tmp_path, "MX", challengers)
    with pytest.raises(PolicyError, match=rf"(?s)MX.yaml.*{message}"):
        load_policies(folder)


def test_sticky_bucket_is_stable_across_processes_and_uniform() -> None:
    code = (
        "from safetyml.scoring.challengers import sticky_bucket; "
        "print(repr(sticky_bucket('incident_risk', 'R000851')))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(other.stdout) == sticky_bucket("incident_risk", "R000851")  # not Python's salted hash()
    buckets = np.array([sticky_bucket("incident_risk", f"R{i:06d}") for i in range(20_000)])
    assert buckets.min() >= 0 and buckets.max() < 1
    counts, _ = np.histogram(buckets, bins=10, range=(0, 1))
    assert counts.min() > 1800 and counts.max() < 2200  # 2,000 expected per decile


class _Loaded:
    def __init__(self, spec: str):
        self.spec = spec


def test_canary_routes_a_sticky_share_and_shadow_mirrors() -> None:
    canary_a = Challenger(model="safetyml-incident-risk@a", mode="canary", share=0.05)
    canary_b = Challenger(
        model="safetyml-incident-risk@b", mode="canary", share=0.10, sticky_key="merchant_id"
    )
    shadow = Challenger(model="safetyml-incident-risk@c", mode="shadow")
    half = Challenger(model="safetyml-incident-risk@d", mode="shadow", share=0.5)
    loaded = {c.model: _Loaded(c.model) for c in (canary_a, canary_b, shadow, half)}
    entries = tuple((c, loaded[c.model]) for c in (canary_a, shadow, half))
    served = {}
    mirrored = 0
    for i in range(20_000):
        rider = f"R{i:06d}"
        canary, shadows = route(entries, "incident_risk", {"rider_id": rider, "merchant_id": "M1"})
        served[rider] = None if canary is None else canary.spec
        assert loaded[shadow.model] in shadows  # a share-1 shadow sees every request
        mirrored += loaded[half.model] in shadows
        again, _ = route(entries, "incident_risk", {"rider_id": rider, "merchant_id": "M2"})
        assert again is canary  # sticky: the rider decides, not the merchant or the moment
    share = sum(v is not None for v in served.values()) / len(served)
    assert 0.045 < share < 0.055 and 0.48 < mirrored / 20_000 < 0.52
    # two canaries take disjoint slices: a rider is never served by both, shares add up
    two = tuple((c, loaded[c.model]) for c in (canary_a, canary_b))
    picks = [
        route(two, "incident_risk", {"rider_id": "R1", "merchant_id": f"M{i}"})[0] for i in range(20_000)
    ]
    by_b = sum(p is not None and p.spec == canary_b.model for p in picks) / len(picks)
    assert 0.095 < by_b < 0.105  # canary_b keys on merchant_id: 10% of merchants


def _scores(rng: np.random.Generator, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    signal = rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(signal * 1.5 - 3.5)))).astype(int)
    return y, 1 / (1 + np.exp(-(signal * 1.5 - 3.5)))


def test_paired_bootstrap_matches_sklearn_and_gates_worse_and_better() -> None:
    rng = np.random.default_rng(0)
    y, good = _scores(rng)
    worse = 1 / (1 + np.exp(-(np.log(good / (1 - good)) + rng.normal(scale=2.5, size=len(y)))))
    same = paired_bootstrap(y, good, good, "pr_auc", n_boot=200, seed=1)
    assert same.champion == same.challenger == average_precision_score(y, good)
    assert same.ci_low == same.ci_high == 0.0 and same.passes(0.005)  # paired: identical models never differ
    bad = paired_bootstrap(y, good, worse, "roc_auc", n_boot=300, seed=1)
    assert bad.champion == roc_auc_score(y, good) and bad.challenger == roc_auc_score(y, worse)
    assert bad.ci_high < -0.005 and not bad.passes(0.005)
    better = paired_bootstrap(y, worse, good, "roc_auc", n_boot=300, seed=1)
    assert better.ci_low > 0 and better.passes(0.005)
    assert paired_bootstrap(y, good, worse, "roc_auc", n_boot=300, seed=1) == bad  # seeded: reproducible
    with pytest.raises(ValueError, match="one class only"):
        paired_bootstrap(np.zeros(50), good[:50], good[:50])
    with pytest.raises(ValueError, match="expected one of pr_auc, roc_auc"):
        paired_bootstrap(y, good, good, "accuracy")


def test_resampled_metrics_equal_sklearn_on_the_resampled_rows_ties_included() -> None:
    from safetyml.scoring.challenger_report import _SortedScores

    rng = np.random.default_rng(3)
    y, p = _scores(rng, 3000)
    for scores in (p, np.round(p, 2)):  # rounded: many ties
        sorted_scores = _SortedScores(y, scores)
        for _ in range(5):
            idx = rng.integers(0, len(y), len(y))
            counts = np.bincount(idx, minlength=len(y)).astype("float64")
            ap = sorted_scores.metric("pr_auc", counts)
            auc = sorted_scores.metric("roc_auc", counts)
            assert ap == pytest.approx(average_precision_score(y[idx], scores[idx]), abs=1e-12)
            assert auc == pytest.approx(roc_auc_score(y[idx], scores[idx]), abs=1e-12)
