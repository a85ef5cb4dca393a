"""Stability: PSI by hand, the p-value under the null, BH, profiles, the stability table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from safetyml.monitoring.stability import (
    ReferenceProfile,
    StabilityError,
    bh_adjust,
    build_profile,
    compare_counts,
    profile_column,
    psi,
    stability_table,
)


def test_psi_matches_a_hand_computed_value():
    expected = np.array([0.25, 0.25, 0.5])
    actual = np.array([0.2, 0.3, 0.5])
    by_hand = (0.2 - 0.25) * math.log(0.2 / 0.25) + (0.3 - 0.25) * math.log(0.3 / 0.25) + 0.0
    assert psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.020273, abs=1e-6)
    assert psi(expected, expected) == 0.0
    # bins empty on both sides add nothing
    assert psi(np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.6, 0.0])) == pytest.approx(
        psi(np.array([0.5, 0.5]), np.array([0.4, 0.6]))
    )


@pytest.mark.parametrize("n", [100, 2000])
def test_psi_pvalue_is_calibrated_under_the_null(n):
    """Fresh reference and current samples from one distribution: P(p < α) ≈ α (unconditionally)."""
    rng = np.random.default_rng(11)
    p_values = []
    for _ in range(400):
        prof = profile_column("x", pd.Series(rng.gamma(2.0, size=5_000)), bins=10)
        counts = np.bincount(prof.codes(rng.gamma(2.0, size=n)), minlength=prof.n_bins)
        p_values.append(compare_counts(np.asarray(prof.counts), counts[None, :])[1][0])
    p_values = np.asarray(p_values)
    assert 0.025 <= (p_values < 0.05).mean() <= 0.085  # 400 draws: ±0.022 is ~2 s.e.
    assert (p_values < 0.01).mean() <= 0.03
    assert 0.35 <= np.median(p_values) <= 0.65


def test_psi_pvalue_sees_a_real_shift_only_with_enough_rows():
    rng = np.random.default_rng(3)
    prof = profile_column("x", pd.Series(rng.normal(size=50_000)), bins=10)
    small = np.bincount(prof.codes(rng.normal(0.1, size=100)), minlength=prof.n_bins)
    large = np.bincount(prof.codes(rng.normal(0.1, size=200_000)), minlength=prof.n_bins)
    psi_small, p_small, _ = compare_counts(np.asarray(prof.counts), small[None])
    psi_large, p_large, _ = compare_counts(np.asarray(prof.counts), large[None])
    assert p_small[0] > 0.05  # 100 rows: a 0.1 sd shift is noise
    assert p_large[0] < 1e-10 and psi_large[0] < 0.1  # huge slice: tiny but real, below the 0.1 band
    assert psi_small[0] > psi_large[0]  # small-sample noise inflates raw PSI


def test_bh_matches_statsmodels_and_a_hand_computation():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan, 0.001])
    q = bh_adjust(p)
    finite = ~np.isnan(p)
    assert np.isnan(q[4])
    np.testing.assert_allclose(q[finite], multipletests(p[finite], method="fdr_bh")[1])
    # by hand: sorted p 0.001,0.01,0.03,0.04,0.2 (m=5) → 0.005, 0.025, 0.05, 0.05, 0.2 (monotone from the top)
    np.testing.assert_allclose(q[finite], [0.025, 0.05, 0.05, 0.2, 0.005])


def test_profiles_bin_numeric_missing_and_unseen_levels_and_round_trip(tmp_path):
    frame = pd.DataFrame(
        {
            "num": [1.0, 2.0, 3.0, 4.0, np.nan, 6.0, 7.0, 8.0],
            "cat": pd.Categorical(["a", "b", "a", None, "b", "a", "a", "b"], categories=["a", "b"]),
        }
    )
    prof = build_profile(frame, ["num", "cat"], score=np.linspace(0, 1, 8), bins=4, task="incident_risk")
    assert sum(prof.features["num"].counts) == 8 and prof.features["num"].counts[-1] == 1  # missing bin
    assert prof.features["cat"].counts == [4, 3, 0, 1]  # a, b, other, missing
    cat = prof.features["cat"]
    np.testing.assert_array_equal(cat.codes(pd.Series(["a", "zz", None, "b"])), [0, 2, 3, 1])
    # a categorical column with different categories maps through the profile's levels
    other = pd.Series(pd.Categorical(["b", "c", None], categories=["c", "b"]))
    np.testing.assert_array_equal(cat.codes(other), [1, 2, 3])
    back = ReferenceProfile.load(prof.save(tmp_path / "p.json"))
    assert back.features["num"].edges == prof.features["num"].edges
    assert back.features["cat"].levels == ["a", "b"]
    with pytest.raises(StabilityError, match="lacks feature"):
        build_profile(frame, ["nope"])


def test_stability_table_flags_the_shifted_slice_and_names_the_mover():
    rng = np.random.default_rng(5)
    n = 20_000
    ref = pd.DataFrame({"a": rng.normal(size=n), "b": rng.exponential(size=n)})
    prof = build_profile(ref, ["a", "b"], bins=10)
    cur = pd.DataFrame(
        {
            "city": np.repeat(["calm", "moved", "tiny"], [n, n, 40]),
            "a": np.concatenate([rng.normal(size=n), rng.normal(0.5, size=n), rng.normal(3, size=40)]),
            "b": rng.exponential(size=2 * n + 40),
        }
    )
    table = stability_table(cur, prof, ["city"], fdr=0.01, min_psi=0.02, min_rows=50)
    flagged = table[table["drifted"]]
    assert set(zip(flagged["city"], flagged["feature"], strict=True)) == {("moved", "a")}
    moved = table[(table["city"] == "moved") & (table["feature"] == "a")].iloc[0]
    assert moved["psi"] > 0.1 and moved["band"] in ("moderate", "major")
    tiny = table[(table["city"] == "tiny") & (table["feature"] == "a")].iloc[0]
    assert tiny["psi"] > 1 and not tiny["drifted"]  # fewer rows than min_rows: reported, never flagged
    with pytest.raises(StabilityError, match="slice column"):
        stability_table(cur, prof, ["market"])
