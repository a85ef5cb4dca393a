"""Feature selection on validation, the structure validation chooses (monotone, depth) and the latency cap."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from safetyml.training.config import load_training_config
from safetyml.training.selection import (
    feature_list_version,
    group_permutation_importance,
    metric_function,
    run_selection,
)
from tests.fixtures_training import FAST_OVERRIDES


def _planted(n: int = 12_000, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, list[SimpleNamespace]]:
    """A useful group (two windows of one signal), a weak one and a useless one (noise columns)."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal(n)
    weak = rng.standard_normal(n)
    X = pd.DataFrame(
        {
            "useful_7d": signal + 0.3 * rng.standard_normal(n),
            "useful_30d": signal + 0.3 * rng.standard_normal(n),
            "weak_30d": weak,
            "noise_7d": rng.standard_normal(n),
            "noise_30d": rng.standard_normal(n),
            "noise_90d": rng.standard_normal(n),
        }
    )
    p = 1 / (1 + np.exp(-(-2.5 + 1.6 * signal + 0.5 * weak)))
    y = (rng.random(n) < p).astype("int64")
    groups = {"useful": "useful", "weak": "weak", "noise": "noise"}
    features = [
        SimpleNamespace(name=c, group=groups[c.split("_")[0]], kind="numeric", direction=0) for c in X.columns
    ]
    return X, y, features


def _config(**selection):
    overrides = {**FAST_OVERRIDES, "selection": {"valid_rows": None, **selection}}
    return load_training_config("merchant_credit", overrides)


def test_selection_drops_a_planted_useless_group_and_keeps_the_useful_ones():
    X, y, features = _planted()
    train, valid = np.arange(0, 8000), np.arange(8000, len(X))
    result = run_selection(features, X, y, train, valid, _config(), seed=0)
    decisions = dict(zip(result.table["group"], result.table["decision"], strict=True))
    assert decisions == {"useful": "keep", "weak": "keep", "noise": "drop"}
    assert result.selected == ["useful_7d", "useful_30d", "weak_30d"]
    assert result.dropped == ["noise_7d", "noise_30d", "noise_90d"]
    row = result.table.set_index("group")
    assert (
        row.loc["useful", "importance"] > row.loc["weak", "importance"] > 0.002 * (result.metric_full - 0.5)
    )
    assert row.loc["useful", "metric_without"] < row.loc["useful", "metric_with"] == result.metric_full
    assert "≤ tolerance" in row.loc["noise", "reason"]
    assert result.fits == 2  # selection fit + confirmation refit
    assert result.metric_selected >= result.metric_full - 0.01 * (result.metric_full - 0.5)
    assert result.version == feature_list_version(list(reversed(result.selected)))  # order-free hash


def test_pinned_groups_and_disabled_selection_keep_everything():
    X, y, features = _planted()
    train, valid = np.arange(0, 8000), np.arange(8000, len(X))
    pinned = run_selection(features, X, y, train, valid, _config(keep_groups=["noise"]), seed=0)
    assert set(pinned.selected) == set(X.columns)
    assert pinned.table.set_index("group").loc["noise", "decision"] == "kept (pinned)"
    off = run_selection(features, X, y, train, valid, _config(enabled=False), seed=0)
    assert off.selected == list(X.columns) and off.outcome == "disabled" and off.fits == 0
    with pytest.raises(ValueError, match="keep_groups.*nope"):
        run_selection(features, X, y, train, valid, _config(keep_groups=["nope"]), seed=0)


def test_confirmation_refit_restores_groups_when_the_kept_set_loses():
    """Two copies of one signal each look useless while the other is present; the refit catches it."""
    rng = np.random.default_rng(5)
    n = 10_000
    signal = rng.standard_normal(n)
    X = pd.DataFrame({"a": signal, "b": signal.copy(), "c": rng.standard_normal(n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 2.0 * signal)))).astype("int64")
    features = [SimpleNamespace(name=c, group=c, kind="numeric", direction=0) for c in X.columns]
    # a tolerance so large that every group is dropped on its own
    result = run_selection(
        features, X, y, np.arange(7000), np.arange(7000, n), _config(tolerance=0.5), seed=0
    )
    assert set(result.selected) >= {"a"} or set(result.selected) >= {"b"}
    assert result.metric_selected >= result.metric_full - 0.01 * (result.metric_full - 0.5)


def test_grouped_permutation_matches_sklearn_for_one_column_groups():
    """Singleton groups: the same importances as sklearn.inspection.permutation_importance (many repeats)."""
    from sklearn.inspection import permutation_importance

    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 4))
    weights = np.array([2.0, 1.0, 0.3, 0.0])
    y = (rng.random(4000) < 1 / (1 + np.exp(-(X @ weights)))).astype("int64")
    score = metric_function("roc_auc")

    class Linear:  # the smallest "fitted estimator" sklearn accepts with a callable scorer
        def fit(self, X, y):
            return self

        def decision_function(self, X):
            return np.asarray(X) @ weights

    ours_base, ours = group_permutation_importance(
        lambda M: M @ weights, X.copy(), y, {str(j): [j] for j in range(4)}, score, repeats=40, seed=1
    )
    theirs = permutation_importance(
        Linear(),
        X,
        y,
        scoring=lambda est, X_, y_: score(y_, est.decision_function(X_)),
        n_repeats=40,
        random_state=1,
    )
    assert ours_base == pytest.approx(score(y, X @ weights))
    mean = np.array([ours[str(j)].mean() for j in range(4)])
    np.testing.assert_allclose(mean, theirs.importances_mean, atol=0.004)
    assert list(np.argsort(-mean)) == list(np.argsort(-theirs.importances_mean)) == [0, 1, 2, 3]
    assert ours["3"].max() == 0.0  # a column the score ignores costs exactly nothing
    calls = []

    def counted(M):
        calls.append(1)
        return M @ weights

    groups = {str(j): [j] for j in range(4)}
    _, skipped = group_permutation_importance(counted, X.copy(), y, groups, score, 40, seed=1, unused={3})
    assert len(calls) == 1 + 3 * 40  # the unused column is not predicted again ...
    assert all(np.array_equal(skipped[g], ours[g]) for g in groups)  # ... and nothing else changes


def test_latency_budget_refits_shallower_and_records_it(credit_frame):
    """A budget no model can meet walks the depth cap down to the smallest candidate, recording each step."""
    from safetyml.training.pipeline import fit_model

    frame, features, overrides = credit_frame
    space = {"max_depth": {"type": "categorical", "choices": [8]}}  # validation can only choose 8
    config = load_training_config(
        "merchant_credit",
        {
            **overrides,
            "explanation_budget_ms": 1e-6,
            "tuning": {**overrides["tuning"], "search_space": space},
        },
    )
    fitted = fit_model(frame, features, config, seed=3, trials=2, progress=False)
    s = fitted.structure
    assert fitted.tuning.best_params["max_depth"] == 8
    assert s["max_depth"] == 3 == fitted.model.metadata["params"]["max_depth"]
    assert s["within_budget"] is False and s["explain_p50_ms"] > 0
    assert [(a["from"], a["to"]) for a in s["depth_lowered_for_latency"]] == [(8, 6), (6, 4), (4, 3)]
    assert fitted.model.metadata["structure"] == s
    assert max(t["max_depth"] for t in _tree_depths(fitted.model.booster)) <= 3
    generous = load_training_config("merchant_credit", {**overrides, "explanation_budget_ms": 1e6})
    kept = fit_model(frame, features, generous, seed=3, trials=2, progress=False).structure
    assert kept["depth_lowered_for_latency"] == [] and kept["within_budget"] is True
    assert isinstance(s["monotone"], bool)
    assert fitted.model.metadata["feature_list_version"] == feature_list_version(fitted.model.features)


def _tree_depths(booster) -> list[dict[str, int]]:
    def depth(node: dict) -> int:
        if "leaf_index" in node:
            return 0
        return 1 + max(depth(node["left_child"]), depth(node["right_child"]))

    return [{"max_depth": depth(t["tree_structure"])} for t in booster.dump_model()["tree_info"]]


def test_monotone_choice_follows_the_search_or_the_config(credit_frame):
    from safetyml.training.pipeline import fit_model

    frame, features, overrides = credit_frame
    for setting in (True, False):
        config = load_training_config("merchant_credit", {**overrides, "monotone_constraints": setting})
        fitted = fit_model(frame, features, config, seed=3, trials=1, progress=False)
        assert fitted.structure["monotone"] is setting
        assert any(fitted.model.metadata["monotone_constraints"].values()) is setting
    searched = load_training_config("merchant_credit", overrides)
    fitted = fit_model(frame, features, searched, seed=3, trials=3, progress=False)
    trials = pd.DataFrame(fitted.tuning.trials)
    assert "monotone" in trials.columns and "max_depth" in trials.columns
    best = trials.loc[trials["number"] == fitted.tuning.best_trial].iloc[0]
    assert fitted.structure["monotone"] is bool(best["monotone"])


@pytest.mark.slow
def test_selected_list_round_trips_through_the_registry_and_the_scorer(trained_env):
    """The registered model's features are the selected list; the run says what was dropped and why."""
    from mlflow import MlflowClient

    from safetyml import tracking
    from safetyml.scoring.scorer import Scorer

    result = trained_env.results["merchant_credit"]
    selection = result.selection
    assert selection.dropped, "the small preset's credit model should drop at least one group"
    model, ref = tracking.load_model("merchant_credit", "champion")
    assert model.features == selection.selected == result.model.features
    assert not set(selection.dropped) & set(model.features)
    version = feature_list_version(model.features)
    assert model.metadata["feature_list_version"] == version
    assert tracking.version_tags(ref.name, ref.version)["feature_list_version"] == version
    info = tracking.run_info(result.run_id)
    assert info["params"]["feature_list_version"] == version
    assert info["params"]["selection.features_selected"] == str(len(model.features))
    assert info["params"]["structure.monotone"] == str(result.structure["monotone"])
    assert info["params"]["structure.max_depth"] == str(result.structure["max_depth"])
    client = MlflowClient(tracking_uri=tracking.configure())
    local = client.download_artifacts(result.run_id, "features/selection.csv", str(trained_env.home / "dl"))
    table = pd.read_csv(local)
    assert set(table.columns) >= {"group", "metric_with", "metric_without", "decision", "reason"}
    assert set(table.loc[table["decision"] == "drop", "features"].str.split(",").explode()) == set(
        selection.dropped
    )

    # the scorer loads the same list and needs none of the dropped columns
    scorer = Scorer.from_registry()
    assert scorer.bundle.models["merchant_credit"].features == model.features
    frame = result.test_frame.head(200)
    out = scorer.score_features("merchant_credit", frame.drop(columns=selection.dropped))
    np.testing.assert_array_equal(out["probability"].to_numpy(), model.predict_proba(frame))


@pytest.mark.slow
def test_online_store_materializes_what_the_registered_models_use(trained_env, tmp_path):
    """Only the champions' columns (and what request features use); the same scores as a full store."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import OnlineStore, materialize, store_columns
    from safetyml.scoring.scorer import Scorer
    from safetyml.tables import load_tables
    from safetyml.training.selection import registered_features
    from tests.test_scoring_scorer import _requests

    used = registered_features()
    champions = {t: r.model.features for t, r in trained_env.results.items()}
    assert used == sorted(set(champions["incident_risk"]) | set(champions["merchant_credit"]))
    fs, tables = load_feature_set(), load_tables(trained_env.data_dir)
    needed = store_columns(fs, used)
    for d in (fs.get(n) for n in used):
        if d.entity == "trip":
            assert all(ref in needed[fs.get(ref).entity] for ref in d.spec.references)
        else:
            assert d.base in needed[d.entity]
    stores = {}
    for label, features in (("full", None), ("used", used)):
        stores[label] = OnlineStore.open(tmp_path / f"{label}.sqlite")
        materialize(tables, fs, store=stores[label], features=features)
    sizes = {}
    for entity in ("rider", "merchant", "pair", "zone", "city"):
        full = set(stores["full"].get(entity, []).columns)
        kept = set(stores["used"].get(entity, []).columns)
        assert kept == set(needed[entity]) and kept <= full, entity
        sizes[entity] = (len(kept), len(full))
    assert sum(k for k, _ in sizes.values()) < sum(f for _, f in sizes.values()), sizes
    requests = _requests(tables, 30, seed=3)
    models = {t: r.model for t, r in trained_env.results.items()}
    scores = {
        label: [r.probability for r in Scorer(models, store=store, feature_set=fs).score_trips(requests)]
        for label, store in stores.items()
    }
    assert scores["used"] == scores["full"]
    merchants = [r.merchant_id for r in requests]
    credit = {
        label: Scorer(models, store=store, feature_set=fs).merchant_features(
            [type("R", (), {"merchant_id": m, "as_of": None})() for m in merchants]
        )[0]
        for label, store in stores.items()
    }
    model = models["merchant_credit"]
    np.testing.assert_array_equal(model.predict_proba(credit["used"]), model.predict_proba(credit["full"]))


@pytest.mark.slow
def test_materialize_cli_stores_the_registered_models_columns(trained_env, tmp_path):
    from typer.testing import CliRunner

    from safetyml.cli import app
    from safetyml.features.online import OnlineStore
    from safetyml.training.selection import registered_features

    used = registered_features()
    columns, outputs = {}, {}
    for label, extra in (("used", []), ("all", ["--all-features"])):
        store = tmp_path / f"{label}.sqlite"
        args = ["features", "materialize", "--data", str(trained_env.data_dir), "--store", str(store), *extra]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs[label] = result.output
        with OnlineStore.open(store) as opened:
            columns[label] = set(opened.get("merchant", []).columns)
    assert f"the {len(used)} model columns" in outputs["used"] and "every definition" in outputs["all"]
    assert columns["used"] < columns["all"]
    assert columns["used"] >= {f for f in trained_env.results["merchant_credit"].model.features}
