"""Feature definitions: expansion, task order, version hash, and errors that name file, feature and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from safetyml import paths
from safetyml.features.definitions import FeatureDefinitionError, load_feature_set


@pytest.fixture()
def features_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "features"
    shutil.copytree(paths.features_dir(), folder)
    return folder


def test_windows_expand_and_tasks_pick_columns_in_a_fixed_order():
    fs = load_feature_set()
    incident = [d.name for d in fs.for_task("incident_risk")]
    assert incident == [d.name for d in load_feature_set().for_task("incident_risk")]
    assert {"rider_incidents_30d", "rider_incidents_90d"} <= set(incident)
    assert fs.get("rider_incidents_30d").group == fs.get("rider_incidents_90d").group == "rider_incidents"
    # zone columns appear once for the pickup and once for the drop-off, cell and ring
    for prefix in ("pickup_zone_", "pickup_ring_", "dropoff_zone_", "dropoff_ring_"):
        assert f"{prefix}incident_rate_30d" in incident
    entities = [d.entity for d in fs.for_task("incident_risk")]
    assert entities == sorted(entities, key=["trip", "rider", "merchant", "pair", "zone"].index)
    credit = fs.for_task("merchant_credit")
    assert credit and all(d.entity == "merchant" for d in credit)
    assert fs.get("merchant_chargeback_rate_90d").direction == 1
    assert fs.get("merchant_late_repayments_90d").direction == 1
    assert fs.get("rider_tenure_days").direction == -1
    vehicle = fs.get("rider_vehicle_type")
    assert vehicle.kind == "categorical" and vehicle.categories == ["motorcycle", "bicycle", "car", "on_foot"]


def test_describe_fills_the_template_for_reason_codes():
    fs = load_feature_set()
    assert (
        fs.get("merchant_incidents_30d").describe(4.0)
        == "4 incidents reported at this merchant in the last 30 days"
    )
    assert "the pickup zone" in fs.get("pickup_zone_incident_rate_30d").describe(3.21)
    assert "3.21" in fs.get("pickup_zone_incident_rate_30d").describe(3.21)
    assert fs.get("rider_night_share_30d").describe(0.25).startswith("25%")
    never = fs.get("rider_days_since_incident").describe(float("nan"))
    assert never == "no incident involving this rider has been reported"
    unknown = fs.get("merchant_refund_rate_30d").describe(None)
    assert unknown == "merchant refund rate 30d: not known yet (no history)"
    assert fs.get("rider_vehicle_type").describe("on_foot") == "the rider's vehicle is on foot"


def test_version_changes_when_any_yaml_changes(features_copy: Path):
    before = load_feature_set(features_copy).version
    assert before == load_feature_set(features_copy).version
    path = features_copy / "trip.yaml"
    path.write_text(path.read_text().replace("requested at {value} local time", "asked at {value}"))
    assert load_feature_set(features_copy).version != before


def test_a_feature_added_in_yaml_only_becomes_a_model_column(features_copy: Path):
    path = features_copy / "rider.yaml"
    path.write_text(
        path.read_text()
        + """
  - name: rider_robberies
    agg: count
    source: incidents
    where: {type: robbery}
    windows: [180d]
    direction: 1
    format: count
    tasks: [incident_risk]
    description: "{value} robberies involving this rider in the last {window}"
"""
    )
    fs = load_feature_set(features_copy)
    assert "rider_robberies_180d" in [d.name for d in fs.for_task("incident_risk")]
    assert (
        fs.get("rider_robberies_180d").describe(2) == "2 robberies involving this rider in the last 180 days"
    )


INCIDENTS_TASKS = (
    '    tasks: [incident_risk]\n    description: "{value} incidents involving this rider reported'
)


@pytest.mark.parametrize(
    ("old", "new", "feature", "field"),
    [
        ("    windows: [7d, 30d, 90d]\n", "    windows: [7d, 30x, 90d]\n", "rider_incidents", "windows"),
        ("    where: {night: true}\n", "    where: {nigth: true}\n", "rider_night_share", "where.nigth"),
        ("    agg: time_since_last\n", "    agg: time_since\n", "rider_days_since_incident", "agg"),
        ("    column: signup_at\n", "    column: signed_up\n", "rider_tenure_days", "column"),
        (
            INCIDENTS_TASKS,
            "    colour: red\n" + INCIDENTS_TASKS,
            "rider_incidents",
            "colour",
        ),
    ],
)
def test_a_bad_definition_names_the_file_the_feature_and_the_field(
    features_copy: Path, old, new, feature, field
):
    path = features_copy / "rider.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(FeatureDefinitionError) as info:
        load_feature_set(features_copy)
    message = str(info.value)
    assert str(path) in message
    assert f"feature {feature!r}" in message
    assert field in message
