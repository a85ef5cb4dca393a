"""The plain-Python scorer with the real champions of ``trained_home`` (no server)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from safetyml.scoring.schemas import MerchantScoreRequest, TripScoreRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scoring_env(trained_home: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A copy of trained_home with the online store materialized at the end of the data, and a Scorer."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.scorer import Scorer
    from safetyml.tables import load_tables
    from tests.fixtures_training import safetyml_env

    home = tmp_path_factory.mktemp("scoring") / "home"
    shutil.copytree(trained_home.home, home)
    tables = load_tables(trained_home.data_dir)
    with safetyml_env(home):
        materialize(tables, load_feature_set(), store=OnlineStore.open())
        audit = AuditLog()
        scorer = Scorer.from_registry(audit=audit)
        yield {"home": home, "tables": tables, "scorer": scorer, "audit": audit}
        audit.close()


def _requests(tables: Any, n: int, seed: int) -> list[TripScoreRequest]:
    trips = tables.trips.sample(n, random_state=seed).reset_index(drop=True)
    out = []
    for i, trip in trips.iterrows():

        def num(value: Any, drop: bool = False) -> float | None:
            return None if drop or pd.isna(value) else float(value)

        out.append(
            TripScoreRequest(
                rider_id=trip.rider_id if i % 5 else "R_UNSEEN",
                merchant_id=trip.merchant_id if i % 7 else "M_UNSEEN",
                requested_at=trip.requested_at.to_pydatetime(),
                pickup_lat=num(trip.pickup_lat, drop=i % 11 == 0),
                pickup_lng=num(trip.pickup_lng, drop=i % 11 == 0),
                dropoff_lat=num(trip.dropoff_lat),
                dropoff_lng=num(trip.dropoff_lng),
                distance_km=float(trip.distance_km),
                order_value=float(trip.order_value),
                payment_method=trip.payment_method,
                rain=None if pd.isna(trip.rain) else bool(trip.rain),
                city=trip.city if i % 3 == 0 else None,
            )
        )
    return out


def test_fast_trip_rows_equal_the_offline_assembly(scoring_env: dict) -> None:
    """The real-time path gives exactly assemble_trip_features' values, known ids or not, coords or not."""
    from safetyml.scoring.model_inputs import fast_matrix, predict_matrix

    scorer = scoring_env["scorer"]
    requests = _requests(scoring_env["tables"], 250, seed=3)
    assembled = scorer.trip_features(requests)
    rows, cold, _ = scorer.trip_rows(requests)
    model = scorer.bundle.models["incident_risk"]
    fast = pd.DataFrame(rows, columns=model.features)
    for name in model.features:
        left = assembled[name].astype("object").to_numpy()
        right = fast[name].astype("object").to_numpy()
        same = [(pd.isna(a) and pd.isna(b)) or a == b for a, b in zip(left, right, strict=True)]
        assert all(same), f"{name}: {int(np.sum(~np.array(same)))} rows differ"
    assert cold == assembled["cold_start"].tolist() and 0 < sum(cold) < len(cold)
    np.testing.assert_array_equal(
        predict_matrix(model, fast_matrix(model, rows)), model.predict_proba(assembled)
    )
    np.testing.assert_array_equal(
        model.booster.predict(fast_matrix(model, rows), pred_contrib=True), model.contributions(assembled)
    )


def test_score_trip_matches_score_features_and_policy(scoring_env: dict) -> None:
    from safetyml.scoring.policies import load_policies

    scorer = scoring_env["scorer"]
    requests = _requests(scoring_env["tables"], 40, seed=5)
    responses = scorer.score_trips(requests)
    X = scorer.trip_features(requests)
    cities = [r.city or scorer._merchant_city(r.merchant_id) for r in requests]
    X["city"] = cities
    offline = scorer.score_features("incident_risk", X, explain=True)
    policies = load_policies()
    for i, response in enumerate(responses):
        assert response.probability == offline["probability"].iloc[i]
        assert (
            response.policy_version == offline["policy_version"].iloc[i] == policies.for_city(cities[i]).label
        )
        assert response.action == offline["action"].iloc[i]
        assert [r.feature for r in response.reasons] == [r["feature"] for r in offline["reasons"].iloc[i]]
        assert response.cold_start == bool(X["cold_start"].iloc[i])


def test_score_features_is_predict_proba_with_credit_and_actions(scoring_env: dict) -> None:
    from safetyml.credit_score import credit_grade, credit_points, credit_scale
    from safetyml.features.frames import build_frame

    scorer = scoring_env["scorer"]
    frame = build_frame("merchant_credit", scoring_env["tables"]).tail(300)
    out = scorer.score_features("merchant_credit", frame, explain=True, k=2)
    model = scorer.bundle.models["merchant_credit"]
    np.testing.assert_array_equal(out["probability"].to_numpy(), model.predict_proba(frame))
    np.testing.assert_allclose(
        out["credit_score"], credit_points(out["probability"].to_numpy(), credit_scale())
    )
    assert (out["grade"].to_numpy() == credit_grade(out["credit_score"].to_numpy(), credit_scale())).all()
    assert set(out["policy_version"]) <= {p.label for p in scorer.policies.policies.values()}
    assert out.index.equals(frame.index)
    assert all(len(r) <= 2 for r in out["reasons"]) and isinstance(out["reasons"].iloc[0][0], dict)
    assert (out["model_version"] == scorer.model_versions["merchant_credit"]).all()


def test_unknown_merchant_is_cold_start_with_default_policy(scoring_env: dict) -> None:
    scorer = scoring_env["scorer"]
    known = str(scoring_env["tables"].merchants["merchant_id"].iloc[0])
    responses = scorer.score_merchants(
        [MerchantScoreRequest(merchant_id=known), MerchantScoreRequest(merchant_id="M_X")]
    )
    assert [r.cold_start for r in responses] == [False, True]
    assert responses[1].market == "default"
    assert responses[0].market in {"BR", "MX", "default"} and responses[0].market != "default"


def test_reload_swaps_the_bundle_atomically(scoring_env: dict) -> None:
    from tests.fixtures_training import safetyml_env

    scorer = scoring_env["scorer"]
    before = scorer.bundle
    request = _requests(scoring_env["tables"], 1, seed=9)[0]
    errors: list[BaseException] = []

    def score_many() -> None:
        try:
            for _ in range(30):
                scorer.score_trip(request)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    thread = threading.Thread(target=score_many)
    thread.start()
    with safetyml_env(scoring_env["home"]):
        versions = scorer.reload("champion")
    thread.join()
    assert not errors
    assert scorer.bundle is not before and versions == before.versions
    assert before.models["incident_risk"] is not scorer.bundle.models["incident_risk"]
    with safetyml_env(scoring_env["home"]), pytest.raises(LookupError):
        scorer.reload("no_such_alias")
    assert scorer.bundle.versions == versions  # a failed reload keeps the models in use


def test_decisions_reach_the_audit_log(scoring_env: dict) -> None:
    from safetyml.scoring.audit import get_decision

    scorer = scoring_env["scorer"]
    response = scorer.score_trip(_requests(scoring_env["tables"], 1, seed=11)[0])
    scoring_env["audit"].flush()
    record = get_decision(response.decision_id, Path(scoring_env["home"]) / "audit.sqlite")
    assert record is not None and record["probability"] == response.probability
    assert set(record["features"]) == set(scorer.bundle.models["incident_risk"].features)


def test_example_curl_names_a_real_rider_and_merchant(scoring_env: dict) -> None:
    import json
    import shlex

    from safetyml.features.online import OnlineStore
    from safetyml.scoring.examples import example_curl

    store_path = Path(scoring_env["home"]) / "online_store.sqlite"
    command = example_curl(port=3123, store_path=store_path)
    assert "http://127.0.0.1:3123/score_trip" in command and "$SAFETYML_API_TOKEN" in command
    payload = json.loads(shlex.split(command.replace("\\\n", " "))[-1])
    request = TripScoreRequest.model_validate(payload)
    with OnlineStore.open(store_path) as store:
        assert store.get_one("rider", request.rider_id) is not None
        assert store.get_one("merchant", request.merchant_id) is not None


def test_readiness_needs_both_models_and_a_materialized_store(scoring_env: dict, tmp_path: Path) -> None:
    from safetyml.features.online import OnlineStore
    from safetyml.scoring.scorer import Scorer

    scorer = scoring_env["scorer"]
    assert scorer.ready() == (True, "ready")
    with OnlineStore.open(tmp_path / "empty.sqlite") as empty:
        ok, why = Scorer(scorer.bundle.models, store=empty, policies=scorer.policies).ready()
        assert not ok and "materialize" in why
    ok, why = Scorer({"incident_risk": scorer.bundle.models["incident_risk"]}, store=scorer.store).ready()
    assert not ok and "merchant_credit" in why


def test_any_valid_request_gets_a_decision_never_an_exception(scoring_env: dict) -> None:
    """Property: every request the schema accepts (any ids, places, times, cities) is scored."""
    from datetime import UTC, datetime

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from safetyml import cities

    scorer = scoring_env["scorer"]
    known_riders = list(scoring_env["tables"].riders["rider_id"].astype(str).head(20))
    coordinate = st.one_of(st.none(), st.floats(-90, 90))
    longitude = st.one_of(st.none(), st.floats(-180, 180))
    payloads = st.fixed_dictionaries(
        {
            "rider_id": st.one_of(
                st.sampled_from(known_riders), st.from_regex(r"[A-Za-z0-9_]{1,20}", fullmatch=True)
            ),
            "merchant_id": st.from_regex(r"M[0-9]{6}", fullmatch=True),
            "requested_at": st.datetimes(
                datetime(2000, 1, 1), datetime(2099, 12, 31), timezones=st.just(UTC)
            ),
            "pickup_lat": coordinate,
            "pickup_lng": longitude,
            "dropoff_lat": coordinate,
            "dropoff_lng": longitude,
            "distance_km": st.floats(0, 200),
            "order_value": st.floats(0, 1_000_000),
            "payment_method": st.sampled_from(["card", "cash", "wallet", "voucher"]),
            "rain": st.one_of(st.none(), st.booleans()),
            "city": st.one_of(st.none(), st.sampled_from(sorted(cities.registry()))),
        }
    )

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(payload=payloads)
    def check(payload: dict) -> None:
        response = scorer.score_trip(TripScoreRequest.model_validate(payload))
        assert 0.0 <= response.probability <= 1.0
        assert response.action in {"allow", "monitor", "step_up_verification", "manual_review", "block"}

    check()
