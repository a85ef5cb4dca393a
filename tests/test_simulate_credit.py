"""The merchant ledger and credit events: amounts, stress before defaults, and the default truth."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from safetyml.simulate.presets import END, LEDGER_DAYS
from safetyml.tables import load_tables


@pytest.fixture(scope="module")
def data(small_data_dir):
    tables = load_tables(small_data_dir)
    truth = pd.read_parquet(small_data_dir / "truth" / "merchant_default.parquet")
    return tables, truth


def test_ledger_covers_about_eighteen_months_with_every_kind(data):
    tables, _ = data
    ledger = tables.merchant_ledger
    assert (ledger["amount"] >= 0).all()
    assert ledger["event_at"].min() >= END - pd.Timedelta(days=LEDGER_DAYS)
    assert ledger["event_at"].min() < END - pd.Timedelta(days=LEDGER_DAYS - 3)
    assert ledger["event_at"].max() < END
    counts = ledger["kind"].value_counts()
    assert set(counts.index) == {
        "sale",
        "refund",
        "chargeback",
        "payout",
        "advance",
        "repayment",
        "missed_repayment",
    }
    onboarded = tables.merchants.set_index("merchant_id")["onboarded_at"]
    assert (ledger["event_at"].to_numpy() >= onboarded.loc[ledger["merchant_id"]].to_numpy()).all()


def test_no_trading_after_a_credit_event(data):
    tables, _ = data
    events = tables.credit_events
    assert events["merchant_id"].is_unique
    last = tables.merchant_ledger.groupby("merchant_id")["event_at"].max()
    joined = events.set_index("merchant_id").join(last.rename("last"))
    assert (joined["last"].dropna() < joined.loc[joined["last"].notna(), "event_at"]).all()


def test_defaulting_merchants_show_stress_beforehand(data):
    tables, _ = data
    ledger, events = tables.merchant_ledger, tables.credit_events.set_index("merchant_id")["event_at"]
    first = ledger.groupby("merchant_id")["event_at"].min()
    ref = pd.Series(END, index=first.index).where(
        ~first.index.isin(events.index), events.reindex(first.index)
    )
    df = ledger.join(ref.rename("ref"), on="merchant_id").join(first.rename("first"), on="merchant_id")
    df = df[df["ref"] - df["first"] > pd.Timedelta(days=200)]
    days_before = (df["ref"] - df["event_at"]).dt.days
    recent, early = days_before < 60, days_before.between(120, 180)

    def per_merchant(kind: str, window: pd.Series) -> pd.Series:
        rows = df[window & (df["kind"] == kind)]
        return rows.groupby("merchant_id")["amount"].sum().reindex(df["merchant_id"].unique(), fill_value=0.0)

    sales_recent, sales_early = per_merchant("sale", recent), per_merchant("sale", early)
    sales_ratio = (sales_recent + 1) / (sales_early + 1)
    cb_share_recent = per_merchant("chargeback", recent) / (sales_recent + 1)
    cb_share_early = per_merchant("chargeback", early) / (sales_early + 1)
    missed = per_merchant("missed_repayment", recent) > 0
    defaulted = sales_ratio.index.isin(events.index)
    assert defaulted.sum() >= 20 and (~defaulted).sum() >= 100
    assert sales_ratio[defaulted].median() < 0.85 * sales_ratio[~defaulted].median()
    assert cb_share_recent[defaulted].mean() > 1.2 * cb_share_early[defaulted].mean()
    assert cb_share_recent[defaulted].mean() > 1.5 * cb_share_recent[~defaulted].mean()
    assert missed[defaulted].mean() > 2 * missed[~defaulted].mean()


def test_default_truth_is_calibrated_and_ranks_events(data):
    tables, truth = data
    assert (truth["as_of"].dt.day == 1).all() and (truth["as_of"].dt.hour == 0).all()
    assert truth.groupby("as_of")["merchant_id"].apply(lambda s: s.is_unique).all()
    assert (truth["p_default_monthly"] <= truth["p_default_90d"]).all()
    mature = truth[truth["as_of"] <= END - pd.Timedelta(days=90)]
    events = tables.credit_events.set_index("merchant_id")["event_at"]
    at = mature["merchant_id"].map(events)
    label = (at > mature["as_of"]) & (at <= mature["as_of"] + pd.Timedelta(days=90))
    p = mature["p_default_90d"].to_numpy()
    assert 0.02 < label.mean() < 0.08
    assert abs(label.mean() - p.mean()) < 0.3 * p.mean()
    assert roc_auc_score(label, p) > 0.7
    # no snapshot for a merchant already closed or not yet onboarded
    onboarded = mature["merchant_id"].map(tables.merchants.set_index("merchant_id")["onboarded_at"])
    assert (onboarded < mature["as_of"]).all()
    assert not ((at <= mature["as_of"]) & at.notna()).any()
