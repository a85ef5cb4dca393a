"""The scorer's fast paths give exactly the DataFrame paths' values (request features, predict, markets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from safetyml import cities
from safetyml.features.definitions import load_feature_set
from safetyml.features.request import trip_request_features, trip_request_features_one

PAYMENTS = ["card", "cash", "wallet", "voucher", "crypto", None]  # every method, an unknown one, none
# Hours around the time zones' DST changes (São Paulo until 2019, Mexico City until 2022) and since.
DST_DAYS = ["2018-11-03", "2018-11-04", "2019-02-16", "2019-02-17", "2021-04-04", "2021-10-31", "2026-03-29"]


@pytest.fixture(scope="module")
def fs() -> Any:
    return load_feature_set()


def _same(left: Any, right: Any) -> bool:
    """Equal values, or both missing (the DataFrame gives NaN for a missing category, the scalar None)."""
    if pd.isna(left) and pd.isna(right):
        return True
    return type(left) is type(right) and left == right if isinstance(right, str) else float(left) == right


def _trip_requests(small_data_dir: Any, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulated trips with missing/unknown values mixed in, plus DST-edge and non-UTC timestamps."""
    from safetyml.tables import load_tables

    rng = np.random.default_rng(seed)
    trips = load_tables(small_data_dir).trips.sample(n, random_state=seed).reset_index(drop=True)
    city_ids = [*cities.registry(), "atlantis", None]
    times: list[Any] = list(trips["requested_at"].dt.tz_convert("UTC"))
    hours = [
        pd.Timestamp(day, tz="UTC") + pd.Timedelta(minutes=36 * k) for day in DST_DAYS for k in range(40)
    ]
    for i, ts in enumerate(hours[: n // 2]):
        times[i] = ts
    for i in range(n // 2, n // 2 + 50):  # aware non-UTC datetimes and naive (UTC) ones
        base = times[i].to_pydatetime()
        times[i] = (
            base.astimezone(timezone(timedelta(hours=5, minutes=30))) if i % 2 else base.replace(tzinfo=None)
        )
    rain = trips["rain"].astype("object").where(trips["rain"].notna(), None).tolist()
    requests = pd.DataFrame(
        {
            "requested_at": pd.Series(times, dtype="object"),
            "city": pd.Series(
                [city_ids[i % len(city_ids)] if i % 4 else c for i, c in enumerate(trips["city"])],
                dtype="object",
            ),
            "distance_km": trips["distance_km"].to_numpy(),
            "order_value": np.where(rng.random(n) < 0.05, np.nan, trips["order_value"].to_numpy()),
            "payment_method": pd.Series(
                [
                    PAYMENTS[(i // 3) % len(PAYMENTS)] if i % 3 == 0 else p
                    for i, p in enumerate(trips["payment_method"])
                ],
                dtype="object",
            ),
            "rain": pd.array([None if i % 7 == 0 else r for i, r in enumerate(rain)], dtype="boolean"),
        }
    )
    usual_choices = np.array([0.0, -3.0, np.nan, 12.5, 40.0, 1e-9])
    # every rider/merchant feature a trip feature is computed from (relative_to and the deviations' refs)
    references = sorted({r for d in load_feature_set().entity_features("trip") for r in d.spec.references})
    usual = pd.DataFrame(
        {
            name: np.where(rng.random(n) < 0.3, rng.choice(usual_choices, n), rng.lognormal(3.4, 0.5, n))
            for name in references
        }
    )
    return requests, usual


def _assert_rows_equal(frame: pd.DataFrame, rows: list[dict[str, Any]]) -> None:
    for name in frame.columns:
        left = frame[name].astype("object").to_numpy()
        same = [_same(a, row[name]) for a, row in zip(left, rows, strict=True)]
        assert all(same), f"{name}: {len(same) - sum(same)} rows differ, e.g. row {same.index(False)}"


def test_one_request_features_equal_the_dataframe_version(fs: Any, small_data_dir: Any) -> None:
    """Same values on 600 simulated trips: all cities and methods, unknown ones, missing rain, DST edges."""
    requests, usual = _trip_requests(small_data_dir, 600, seed=11)
    frame_requests = requests.assign(requested_at=pd.to_datetime(requests["requested_at"], utc=True))
    offline = trip_request_features(frame_requests, usual, usual, fs)
    rows = []
    for i in range(len(requests)):
        request = requests.iloc[i].to_dict()
        request["rain"] = None if pd.isna(request["rain"]) else bool(request["rain"])
        rider = {k: v for k, v in usual.iloc[i].items() if k.startswith("rider_")}
        merchant = {k: v for k, v in usual.iloc[i].items() if k.startswith("merchant_")}
        rows.append(trip_request_features_one(request, rider, merchant, fs))
    assert list(rows[0]) == list(offline.columns)
    _assert_rows_equal(offline, rows)
    # the cases the data must have covered for the comparison to mean something
    assert offline["trip_local_hour"].isna().any() and offline["trip_local_hour"].notna().sum() > 400
    assert offline["trip_rain"].isna().any() and set(offline["trip_rain"].dropna()) == {0.0, 1.0}
    assert offline["trip_payment_method"].isna().any()
    assert set(offline["trip_payment_method"].dropna()) == {"card", "cash", "wallet", "voucher"}
    assert np.isinf(offline["trip_order_value_vs_rider"]).sum() == 0


def test_one_request_features_match_the_offline_frame_inputs(fs: Any, small_data_dir: Any) -> None:
    """The offline frames' rain is a float column and the city a str column; the values still agree."""
    requests, usual = _trip_requests(small_data_dir, 200, seed=12)
    frame = pd.DataFrame(
        {
            "requested_at": pd.to_datetime(requests["requested_at"], utc=True),
            "city": requests["city"].astype("str"),
            "distance_km": requests["distance_km"],
            "order_value": requests["order_value"],
            "payment_method": requests["payment_method"].astype("str"),
            "rain": requests["rain"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan),
        }
    )
    offline = trip_request_features(frame, usual, usual, fs)
    rows = [
        trip_request_features_one(
            {k: frame[k].iat[i] for k in frame.columns},
            {k: v for k, v in usual.iloc[i].items() if k.startswith("rider_")},
            {k: v for k, v in usual.iloc[i].items() if k.startswith("merchant_")},
            fs,
        )
        for i in range(len(frame))
    ]
    _assert_rows_equal(offline, rows)


def test_missing_request_fields_are_missing_values(fs: Any) -> None:
    usual = {r: None for d in fs.entity_features("trip") for r in d.spec.references}
    usual.update({"rider_order_value_mean_90d": None, "merchant_order_value_mean_90d": 20.0})
    row = trip_request_features_one({"requested_at": datetime(2026, 1, 5, 3, tzinfo=UTC)}, usual, usual, fs)
    assert np.isnan(row["trip_order_value_vs_rider"]) and np.isnan(row["trip_order_value_vs_merchant"])
    assert np.isnan(row["trip_local_hour"]) and np.isnan(row["trip_night"])  # no city: no local time
    assert row["trip_payment_method"] is None and np.isnan(row["trip_rain"])
    with pytest.raises(KeyError, match="rider_order_value_mean_90d"):
        trip_request_features_one({"order_value": 10.0}, {"x": 1}, {"merchant_order_value_mean_90d": 2.0}, fs)


# ------------------------------------------------------------------------------------------ batch predict
@pytest.fixture(scope="module")
def tiny_model() -> Any:
    """A small real LightGBM model with two categorical features (levels fixed as training fixes them)."""
    import lightgbm as lgb

    from safetyml.model import RiskModel

    rng = np.random.default_rng(3)
    n = 3000
    levels = {"colour": ["red", "green", "blue"], "size": ["s", "m", "l", "xl"]}
    X = pd.DataFrame(
        {
            "a": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "colour": pd.Categorical(rng.choice(levels["colour"], n), categories=levels["colour"]),
            "b": rng.integers(0, 50, n).astype("float64"),
            "size": pd.Categorical(rng.choice(levels["size"], n), categories=levels["size"]),
        }
    )
    y = ((X["a"].fillna(0) + (X["colour"] == "red") * 1.5 + X["b"] / 30 + rng.normal(size=n)) > 1.5).astype(
        int
    )
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 15, "seed": 1, "num_threads": 1},
        lgb.Dataset(X, y),
        num_boost_round=40,
    )
    return RiskModel(task="incident_risk", booster=booster, features=list(X.columns), categories=levels)


def _variants(rng: np.random.Generator, n: int) -> list[pd.DataFrame]:
    colour = rng.choice(["red", "green", "blue", "purple", None], n).astype(object)
    size = rng.choice(["s", "m", "l", "xl", "xxl", None], n).astype(object)
    a = np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))
    b = rng.integers(0, 60, n)
    base = pd.DataFrame({"a": a, "colour": colour, "b": b.astype("float64"), "size": size, "extra": "x"})
    return [
        base,  # object levels with unknown ones and None
        base.assign(colour=base["colour"].astype("str"), size=base["size"].astype("category")),
        base.assign(  # categorical with other categories, in another order
            colour=pd.Categorical(colour, categories=["purple", "blue", "red"]),
            size=pd.Categorical(size, categories=["xl", "l", "m", "s", "xxl"]),
        ),
        base.assign(b=b, a=pd.array(np.where(np.isnan(a), None, a), dtype="Float64")),  # int, nullable float
        base.assign(b=pd.Series(b.astype(str), dtype="object"), a=pd.Series(a > 0)),  # numeric text, booleans
    ]


def test_batch_predict_is_predict_proba_bit_for_bit(tiny_model: Any) -> None:
    from safetyml.scoring.model_inputs import category_codes, predict_frame

    assert category_codes(tiny_model) is not None  # the fast matrix path is the one under test
    for X in _variants(np.random.default_rng(5), 9000):  # several row blocks, one partial
        np.testing.assert_array_equal(predict_frame(tiny_model, X), tiny_model.predict_proba(X))


def test_score_features_probability_and_policies_unchanged(tiny_model: Any) -> None:
    """score_features: probability == predict_proba; each row's policy is its market's (or the default)."""
    from safetyml.scoring.policies import load_policies
    from safetyml.scoring.scorer import Scorer

    policies = load_policies()
    scorer = Scorer({"incident_risk": tiny_model}, policies=policies, feature_set=load_feature_set())
    X = _variants(np.random.default_rng(6), 3000)[0]
    city_ids = [*cities.registry(), "atlantis", None, np.nan]
    X["city"] = pd.Series([city_ids[i % len(city_ids)] for i in range(len(X))], dtype="object")
    out = scorer.score_features("incident_risk", X)
    np.testing.assert_array_equal(out["probability"].to_numpy(), tiny_model.predict_proba(X))
    for i in range(len(X)):
        city = X["city"].iat[i]
        policy = policies.for_city(None if pd.isna(city) else city)
        tier, action = policy.decide_one("incident_risk", float(out["probability"].iat[i]))
        assert (out["risk_tier"].iat[i], out["action"].iat[i]) == (tier, action)
        assert out["policy_version"].iat[i] == policy.label
    assert out["policy_version"].nunique() >= 2


def _markets_reference(X: pd.DataFrame) -> list[str | None]:
    """The per-row loop the vectorised version replaced (its specification)."""
    from safetyml.scoring.policies import market_of_city

    if "market" in X.columns:
        return [None if pd.isna(m) or not str(m) else str(m) for m in X["market"]]
    if "city" in X.columns:
        return [None if pd.isna(c) else market_of_city(str(c)) for c in X["city"]]
    return [None] * len(X)


def test_markets_of_unique_cities_equal_the_row_loop() -> None:
    from safetyml.scoring.model_inputs import market_codes

    def markets_of(X: pd.DataFrame) -> list[str | None]:
        codes, labels = market_codes(X, None)
        return [labels[c] for c in codes.tolist()]

    rng = np.random.default_rng(8)
    values = [*cities.registry(), "atlantis", None, np.nan, ""]
    city = pd.Series(rng.choice(np.array(values, dtype=object), 5000), dtype="object")
    frames = [
        pd.DataFrame({"city": city}),
        pd.DataFrame({"city": city.astype("str")}),
        pd.DataFrame({"city": city.astype("category")}),
        pd.DataFrame({"market": pd.Series(rng.choice(np.array(["BR", "MX", "", None], dtype=object), 500))}),
        pd.DataFrame({"x": np.arange(10)}),
    ]
    for X in frames:
        assert markets_of(X) == _markets_reference(X)
    markets = ["BR", None, "", "MX", "BR"]
    codes, labels = market_codes(pd.DataFrame(index=range(5)), markets)
    assert [labels[c] for c in codes] == ["BR", None, None, "MX", "BR"]


# ------------------------------------------------------------------------------------------ merchant assembly
def test_assemble_merchant_features_known_and_unknown(fs: Any) -> None:
    from safetyml.features.frames import assemble_merchant_features, cold_start_vector

    rng = np.random.default_rng(9)
    defs = fs.entity_features("merchant")
    ids = ["M1", "M2", "M3"]
    stored = pd.DataFrame(
        {
            d.name: (
                rng.choice(d.categories, len(ids)) if d.kind == "categorical" else rng.normal(size=len(ids))
            )
            for d in defs
        },
        index=pd.Index(ids),
    ).assign(city="sao_paulo")
    X = assemble_merchant_features(["M2", "M_NEW", "M1"], {"merchant": stored}, fs)
    model_columns = [d.name for d in fs.for_task("merchant_credit")]
    assert list(X.columns) == [*model_columns, "cold_start"]
    assert X["cold_start"].tolist() == [False, True, False]
    cold = cold_start_vector(fs, "merchant")
    for d in fs.for_task("merchant_credit"):
        assert _same(X[d.name].astype("object").iat[0], stored.loc["M2", d.base])
        assert _same(X[d.name].astype("object").iat[2], stored.loc["M1", d.base])
        assert _same(X[d.name].astype("object").iat[1], cold[d.base])


def test_one_timestamp_in_any_spelling_gives_the_frame_local_time() -> None:
    """None/NaT, ISO text, naive (UTC) and numpy timestamps: the same local hour and weekday as the frame."""
    from safetyml.features.request import local_hour_weekday, local_hour_weekday_one

    values = [
        None,
        pd.NaT,
        "2026-03-29T01:30:00Z",
        pd.Timestamp("2026-03-29 23:30"),
        np.datetime64("2019-02-17"),
    ]
    for city in [*cities.registry(), "atlantis"]:
        hour, weekday = local_hour_weekday(pd.Series(values, dtype="object"), pd.Series([city] * len(values)))
        for i, value in enumerate(values):
            one = local_hour_weekday_one(value, city)
            assert _same(hour[i], one[0]) and _same(weekday[i], one[1]), (value, city)
        assert np.isnan(hour[:2]).all() and (np.isnan(hour[2:]).all() == (city == "atlantis"))
