"""The data contract: valid tables pass, and every rule rejects a bad input with a clear message."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from safetyml.contract import TABLES, contract_markdown
from safetyml.tables import ContractError, load_tables, tables_from_frames, write_tables


def valid_frames() -> dict[str, pd.DataFrame]:
    """A tiny data set that follows the contract, as a user might write it (strings for timestamps)."""
    return {
        "riders": pd.DataFrame(
            {
                "rider_id": ["R1", "R2"],
                "city": ["sao_paulo", "mexico_city"],
                "signup_at": ["2026-01-01T10:00:00Z", "2026-02-01T10:00:00Z"],
                "vehicle_type": ["motorcycle", "bicycle"],
            }
        ),
        "merchants": pd.DataFrame(
            {
                "merchant_id": ["M1", "M2"],
                "city": ["sao_paulo", "mexico_city"],
                "category": ["restaurant", "pharmacy"],
                "onboarded_at": ["2025-06-01T00:00:00Z", "2025-07-01T00:00:00Z"],
                "lat": [-23.55, 19.43],
                "lng": [-46.63, -99.13],
            }
        ),
        "trips": pd.DataFrame(
            {
                "trip_id": ["T1", "T2", "T3"],
                "rider_id": ["R1", "R1", "R2"],
                "merchant_id": ["M1", "M1", "M2"],
                "requested_at": ["2026-03-01T12:00:00Z", "2026-03-02T23:00:00Z", "2026-03-03T19:30:00Z"],
                "pickup_lat": [-23.55, -23.55, 19.43],
                "pickup_lng": [-46.63, -46.63, -99.13],
                "dropoff_lat": [-23.56, None, 19.44],
                "dropoff_lng": [-46.64, None, -99.12],
                "distance_km": [2.5, 4.0, 1.2],
                "order_value": [55.0, 80.0, 120.0],
                "payment_method": ["card", "cash", "wallet"],
                "promo_code": ["A", None, "B"],  # extra column: kept
            }
        ),
        "incidents": pd.DataFrame(
            {
                "incident_id": ["I1", "I2"],
                "trip_id": ["T2", None],
                "rider_id": ["R1", None],
                "merchant_id": ["M1", "M2"],
                "occurred_at": ["2026-03-02T23:20:00Z", "2026-03-05T01:00:00Z"],
                "reported_at": ["2026-03-04T09:00:00Z", "2026-03-05T02:00:00Z"],
                "type": ["robbery", "theft"],
                "severity": [4, 2],
                "lat": [-23.56, None],
                "lng": [-46.64, None],
            }
        ),
        "merchant_ledger": pd.DataFrame(
            {
                "merchant_id": ["M1", "M1", "M2"],
                "event_at": ["2026-03-01T23:59:00Z", "2026-03-02T23:59:00Z", "2026-03-01T23:59:00Z"],
                "kind": ["sale", "chargeback", "sale"],
                "amount": [1000.0, 30.0, 500.0],
            }
        ),
        "credit_events": pd.DataFrame(
            {"merchant_id": ["M2"], "event_at": ["2026-04-01T00:00:00Z"], "kind": ["chargeback_loss"]}
        ),
    }


def test_valid_tables_pass_with_types_and_extra_columns_kept():
    tables = tables_from_frames(valid_frames())
    assert tables.quarantined == {}
    assert str(tables.trips["requested_at"].dtype) == "datetime64[ns, UTC]"
    assert tables.incidents["severity"].dtype == "int64"
    assert "promo_code" in tables.trips.columns
    assert tables.trips["dropoff_lat"].isna().sum() == 1  # missing coordinates are allowed


def _set(table: str, column: str, row: int, value) -> Callable[[dict], None]:
    def mutate(frames: dict[str, pd.DataFrame]) -> None:
        frames[table][column] = frames[table][column].astype(object)
        frames[table].loc[row, column] = value

    return mutate


# (table, column, rule, mutation): one bad input for each rule of the contract.
RULE_CASES = [
    ("riders", "rider_id", "unique", _set("riders", "rider_id", 1, "R1")),
    ("riders", "rider_id", "not_null", _set("riders", "rider_id", 1, None)),
    ("riders", "city", "known_city_with_time_zone", _set("riders", "city", 0, "atlantis")),
    # a vertical bar would make the rider-merchant pair id "R|1|M1" ambiguous
    ("riders", "rider_id", "no_vertical_bar", _set("riders", "rider_id", 2, "R|x")),
    ("merchants", "merchant_id", "no_vertical_bar", _set("merchants", "merchant_id", 1, "M|x")),
    ("riders", "signup_at", "type_timestamp", _set("riders", "signup_at", 0, "yesterday-ish")),
    ("riders", "vehicle_type", "allowed_values", _set("riders", "vehicle_type", 0, "helicopter")),
    ("merchants", "category", "allowed_values", _set("merchants", "category", 1, "casino")),
    ("merchants", "lat", "max_90", _set("merchants", "lat", 0, 123.0)),
    ("merchants", "lng", "min_-180", _set("merchants", "lng", 0, -200.0)),
    ("merchants", "onboarded_at", "not_null", _set("merchants", "onboarded_at", 0, None)),
    ("trips", "trip_id", "unique", _set("trips", "trip_id", 2, "T1")),
    ("trips", "rider_id", "exists_in_riders", _set("trips", "rider_id", 0, "R404")),
    ("trips", "merchant_id", "exists_in_merchants", _set("trips", "merchant_id", 0, "M404")),
    ("trips", "distance_km", "min_0", _set("trips", "distance_km", 1, -1.0)),
    ("trips", "distance_km", "max_200", _set("trips", "distance_km", 1, 5000.0)),
    ("trips", "distance_km", "type_float", _set("trips", "distance_km", 1, "far")),
    ("trips", "order_value", "min_0", _set("trips", "order_value", 0, -5.0)),
    ("trips", "payment_method", "allowed_values", _set("trips", "payment_method", 0, "barter")),
    ("trips", "requested_at", "not_null", _set("trips", "requested_at", 0, None)),
    ("trips", "pickup_lat", "min_-90", _set("trips", "pickup_lat", 0, -95.0)),
    ("incidents", "trip_id", "exists_in_trips", _set("incidents", "trip_id", 0, "T999")),
    ("incidents", "severity", "max_5", _set("incidents", "severity", 0, 9)),
    ("incidents", "severity", "min_1", _set("incidents", "severity", 0, 0)),
    ("incidents", "severity", "type_int", _set("incidents", "severity", 0, 2.5)),
    ("incidents", "type", "allowed_values", _set("incidents", "type", 0, "spilled soup")),
    (
        "incidents",
        "*row*",
        "reported_after_occurred",
        _set("incidents", "reported_at", 0, "2026-03-01T00:00:00Z"),
    ),
    ("merchant_ledger", "kind", "allowed_values", _set("merchant_ledger", "kind", 0, "bonus")),
    ("merchant_ledger", "amount", "min_0", _set("merchant_ledger", "amount", 0, -10.0)),
    (
        "merchant_ledger",
        "merchant_id",
        "exists_in_merchants",
        _set("merchant_ledger", "merchant_id", 0, "M9"),
    ),
    ("credit_events", "kind", "allowed_values", _set("credit_events", "kind", 0, "bad_vibes")),
    ("credit_events", "event_at", "type_timestamp", _set("credit_events", "event_at", 0, "soon")),
]


@pytest.mark.parametrize(
    ("table", "column", "rule", "mutate"), RULE_CASES, ids=[f"{c[0]}.{c[1]}.{c[2]}" for c in RULE_CASES]
)
def test_each_rule_rejects_bad_input_with_a_clear_message(table, column, rule, mutate):
    frames = valid_frames()
    mutate(frames)
    with pytest.raises(ContractError) as excinfo:
        tables_from_frames(frames)
    message = str(excinfo.value)
    rows = 2 if rule == "unique" else 1  # both copies of a duplicated key are invalid: neither can be trusted
    assert f"table {table!r}, column {column!r}: rule {rule} failed for {rows} row(s)" in message
    failures = excinfo.value.failures
    assert ((failures["table"] == table) & (failures["column"] == column) & (failures["rule"] == rule)).any()


def test_missing_required_column_names_table_and_column():
    frames = valid_frames()
    frames["trips"] = frames["trips"].drop(columns=["order_value"])
    with pytest.raises(ContractError, match=r"table 'trips' has no column 'order_value'"):
        tables_from_frames(frames)


def test_quarantine_sets_aside_bad_rows_and_their_children_with_reasons(tmp_path):
    frames = valid_frames()
    frames["riders"].loc[0, "vehicle_type"] = "helicopter"  # R1 invalid → T1, T2 and I1 lose their parent
    tables = tables_from_frames(frames, on_invalid="quarantine", quarantine_dir=tmp_path / "q")
    assert tables.quarantined == {"riders": 1, "trips": 2, "incidents": 1}
    assert list(tables.riders["rider_id"]) == ["R2"]
    assert list(tables.trips["trip_id"]) == ["T3"]
    riders_q = pd.read_parquet(tmp_path / "q" / "riders.parquet")
    assert riders_q["_reasons"].tolist() == ["vehicle_type:allowed_values"]
    trips_q = pd.read_parquet(tmp_path / "q" / "trips.parquet")
    assert set(trips_q["trip_id"]) == {"T1", "T2"}
    assert trips_q["_reasons"].str.contains("rider_id:exists_in_riders").all()
    # Nothing is dropped silently: valid + quarantined = input, table by table.
    for name, raw in valid_frames().items():
        assert len(tables.get(name)) + tables.quarantined.get(name, 0) == len(raw)


def test_csv_and_parquet_folders_load_the_same(tmp_path):
    frames = valid_frames()
    csv_dir, parquet_dir = tmp_path / "csv", tmp_path / "parquet"
    csv_dir.mkdir()
    for name, df in frames.items():
        df.to_csv(csv_dir / f"{name}.csv", index=False)
    write_tables(tables_from_frames(valid_frames()), parquet_dir)
    from_csv, from_parquet = load_tables(csv_dir), load_tables(parquet_dir)
    for name, _ in from_csv.items():
        pd.testing.assert_frame_equal(
            from_csv.get(name)[TABLES[name].column_names[:3]],
            from_parquet.get(name)[TABLES[name].column_names[:3]],
        )


def test_optional_tables_may_be_absent(tmp_path):
    frames = valid_frames()
    for name in ("riders", "merchants", "trips", "incidents"):
        frames[name].to_csv(tmp_path / f"{name}.csv", index=False)
    tables = load_tables(tmp_path)
    assert tables.merchant_ledger.empty and tables.credit_events.empty
    assert list(tables.credit_events.columns) == TABLES["credit_events"].column_names


def test_missing_required_table_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"table 'riders' not found .*riders.parquet or riders.csv"):
        load_tables(tmp_path)


def test_contract_markdown_documents_every_column():
    text = contract_markdown()
    for spec in TABLES.values():
        assert f"#### `{spec.name}`" in text
        for column in spec.columns:
            assert f"| `{column.name}` |" in text
