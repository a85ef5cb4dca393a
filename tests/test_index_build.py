"""Building the index on a small simulated platform: outputs, intervals, errors, stability, history, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml.index.build import build_index
from safetyml.index.config import IndexDataError, load_config
from safetyml.tables import load_tables

CONFIG_PATH = Path(__file__).resolve().parents[1] / "index" / "trust.yaml"
REPS = 40


@pytest.fixture(scope="module")
def tables(small_data_dir):
    return load_tables(small_data_dir)


@pytest.fixture(scope="module")
def built(small_data_dir, tables, tmp_path_factory):
    out = tmp_path_factory.mktemp("index_out")
    result = build_index(
        small_data_dir, out, CONFIG_PATH, tables=tables, replications=REPS, log_mlflow=False, progress=False
    )
    return result, out


def test_one_row_per_period_and_unit_with_intervals(built, tables):
    result, out = built
    index = pd.read_parquet(out / "index.parquet")
    cities = index[index["level"] == "city"]
    periods = cities["period"].nunique()
    assert periods >= 3 and len(cities) == periods * tables.trips["city"].nunique()
    assert not cities.duplicated(["period", "city"]).any()
    zones = index[index["level"] == "zone"]
    assert len(zones) > 20 and not zones.duplicated(["period", "city", "h3"]).any()
    assert (zones["trips"] >= result.config.zones.min_trips).all()
    for col in ("score", "score_low", "score_high", "rank", "rank_low", "rank_high", "pillar_harm"):
        assert index[col].notna().all(), col
    assert (index["score_low"] <= index["score_high"]).all()
    assert (index["rank_low"] <= index["rank_high"]).all()
    assert (index["rank_low"] >= 1).all() and (index["rank_high"] <= index["units_ranked"]).all()
    # rank 1 is the highest score of its period
    top = cities.loc[cities.groupby("period")["score"].idxmax()]
    assert (top["rank"] == 1).all()
    assert len(pd.read_parquet(out / "replications.parquet")) == 2 * REPS
    assert set(pd.read_parquet(out / "sensitivity.parquet")["choice"]) >= {"normalisation", "weights"}


def test_decomposition_adds_up_to_score_and_change(built):
    _, out = built
    index = pd.read_parquet(out / "index.parquet")
    ind = pd.read_parquet(out / "indicators.parquet")
    keys = ["level", "period", "city", "h3"]
    sums = ind.groupby(keys, dropna=False)[["contribution", "change_contribution"]].sum(min_count=1)
    merged = index.set_index(keys).join(sums)
    np.testing.assert_allclose(merged["contribution"], merged["score"], rtol=1e-9)
    has_change = merged["score_change"].notna()
    assert has_change.any()
    np.testing.assert_allclose(
        merged.loc[has_change, "change_contribution"], merged.loc[has_change, "score_change"]
    )


def test_empirical_bayes_pulls_small_zones_toward_their_city(built):
    result, _ = built
    zone = result.levels["zone"]
    j = zone.panel.indicators.index("incident_rate")
    raw, shrunk = zone.panel.raw[:, j], zone.values.values[:, j]
    city_rate = pd.Series(shrunk).groupby(zone.panel.group_codes()[0]).transform("mean").to_numpy()
    spread_raw = np.abs(raw - city_rate).mean()
    spread_shrunk = np.abs(shrunk - city_rate).mean()
    assert spread_shrunk < spread_raw


def test_same_seed_same_intervals(small_data_dir, tables, built):
    result, _ = built
    again = build_index(
        small_data_dir, None, CONFIG_PATH, tables=tables, replications=REPS, zones=False, progress=False
    )
    a = result.index[result.index["level"] == "city"].reset_index(drop=True)
    b = again.index.reset_index(drop=True)
    pd.testing.assert_frame_equal(
        a[["score_low", "rank_low", "rank_high"]], b[["score_low", "rank_low", "rank_high"]]
    )


def test_indicator_without_data_in_a_city_is_an_error_then_imputed_and_reported(tables):
    config = load_config(CONFIG_PATH)
    bh = set(tables.merchants.loc[tables.merchants["city"] == "belo_horizonte", "merchant_id"])
    ledger = tables.merchant_ledger[~tables.merchant_ledger["merchant_id"].isin(bh)]
    holed = type(tables)(**{**tables.__dict__, "merchant_ledger": ledger})
    with pytest.raises(IndexDataError) as err:
        build_index(None, None, config, tables=holed, replications=0, zones=False, progress=False)
    message = str(err.value)
    assert (
        str(CONFIG_PATH) in message
        and "indicators.chargeback_rate" in message
        and "belo_horizonte" in message
    )
    lenient = config.model_copy(update={"impute_cities": "group_rate"})
    result = build_index(None, None, lenient, tables=holed, replications=0, zones=False, progress=False)
    report = result.imputation.set_index("indicator")
    assert report.loc["chargeback_rate", "imputed"] == result.index["period"].nunique()
    bh_rows = result.index[result.index["city"] == "belo_horizonte"]
    assert bh_rows["imputed"].str.contains("chargeback_rate").all()


def test_optional_inputs_are_reported_not_available_or_used(tables):
    base = build_index(None, None, CONFIG_PATH, tables=tables, replications=0, zones=False, progress=False)
    assert "hot_zone_share" in base.notes and "not available" in base.notes["hot_zone_share"]
    cells = base.levels["city"].panel.units  # any real zone will do: take the busiest cells of the data
    from safetyml.features.zones import cells_of

    pick = cells_of(tables.trips["pickup_lat"], tables.trips["pickup_lng"])
    busiest = pick.value_counts().index[:5]
    hot = pd.DataFrame({"city": tables.trips["city"].iloc[0], "h3": busiest, "flagged": True})
    used = build_index(
        None, None, CONFIG_PATH, tables=tables, replications=0, zones=False, progress=False, hot_zones=hot
    )
    assert "hot_zone_share" not in used.notes and "hot_zone_share" in used.levels["city"].panel.indicators
    assert len(cells) == len(used.levels["city"].panel.units)


def test_one_more_incident_in_one_city_moves_no_other_city_beyond_noise(tables):
    """Stability: the index is not brittle (the bar of the issue, at city level)."""
    from safetyml.index.stability import stability, with_one_more_incident

    more = with_one_more_incident(tables, "rio_de_janeiro")
    assert len(more.incidents) == len(tables.incidents) + 1
    result = stability(tables, load_config(CONFIG_PATH), "rio_de_janeiro", replications=100)
    assert result.moved_self > 0  # the city itself did move
    assert result.within_noise, result.worst_ratio


def test_history_recomputes_and_lists_revisions_after_a_method_change(small_data_dir, tables, tmp_path):
    from safetyml.index.history import recompute_history

    config = load_config(CONFIG_PATH)
    quick = {"replications": 0, "zones": False, "progress": False, "tables": tables, "log_mlflow": False}
    first = recompute_history(small_data_dir, tmp_path, config, report=False, **quick)
    assert first.revisions is None and first.path.exists()
    changed = config.model_copy(
        update={"method": config.method.model_copy(update={"aggregation": "geometric"})}
    )
    second = recompute_history(small_data_dir, tmp_path, changed, report=False, **quick)
    assert second.revisions is not None and (tmp_path / "revisions.parquet").exists()
    assert len(second.revisions) == len(first.history)
    assert (second.revisions["score_revision"].abs() > 0).any()
    assert set(pd.read_parquet(second.path)["method"]) == {changed.fingerprint()}


def test_report_is_self_contained_and_shows_cities_waterfalls_and_zones(built):
    result, out = built
    text = (out / "report.html").read_text()
    for city in result.index["city"].unique():
        assert city in text
    assert (
        text.count("<polygon")
        == (
            result.index.query("level == 'zone'")["period"]
            == result.index.query("level == 'zone'")["period"].max()
        ).sum()
    )
    assert "What moved each city" in text and "largest move" in text
    assert "not available" in text  # hot_zone_share without a zone map
    assert 'src="http' not in text and 'href="http' not in text


def test_cli_build_report_and_bad_config(small_data_dir, tmp_path, monkeypatch):
    from safetyml import tracking
    from safetyml.cli import app

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(
        app, ["index", "build", "--data", str(small_data_dir), "--out", str(out), "-n", "10", "--no-zones"]
    )
    assert res.exit_code == 0, res.output
    assert "MLflow run" in res.output and (out / "index.parquet").exists()
    run_id = res.output.split("MLflow run:")[1].split()[0]
    info = tracking.run_info(run_id)
    assert info["params"]["method"] == load_config(CONFIG_PATH).fingerprint()
    (out / "report.html").unlink()
    res = runner.invoke(app, ["index", "report", "--out", str(out)])
    assert res.exit_code == 0 and (out / "report.html").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        CONFIG_PATH.read_text().replace(
            "  harm:\n    description", "  harm:\n    weight: 0.3\n    x: 1\n    description", 1
        )
    )
    res = runner.invoke(
        app, ["index", "build", "--data", str(small_data_dir), "--config", str(bad), "--no-mlflow"]
    )
    assert res.exit_code == 2 and "bad.yaml" in res.output


def test_simulated_data_are_checked_against_both_truths(built):
    import json

    _, out = built
    truth = json.loads((out / "manifest.json").read_text())["truth"]
    for level in ("city", "zone"):
        assert {"spearman", "coverage", "true_index_spearman", "true_index_coverage"} <= set(truth[level])
        assert 0 <= truth[level]["true_index_coverage"] <= 1
    html = (out / "report.html").read_text()
    assert "true incident risk" in html and "with the true index" in html
