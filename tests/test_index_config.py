"""The index configuration: the shipped YAML loads, and bad configurations name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from safetyml.index.config import IndexConfigError, load_config

SHIPPED = Path(__file__).resolve().parents[1] / "index" / "trust.yaml"


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    mutate(data)
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_config_loads_with_weights_summing_to_one():
    config = load_config(SHIPPED)
    assert abs(sum(p.weight for p in config.pillars.values()) - 1) < 1e-9
    assert {s.direction for s in config.indicators.values()} == {"risk", "safety"}
    assert config.fingerprint() == load_config(SHIPPED).fingerprint()
    assert all(s.unit and s.description for s in config.indicators.values())


def test_unknown_indicator_names_file_and_field(tmp_path):
    def add(data):
        data["indicators"]["moon_phase"] = {
            "pillar": "harm",
            "description": "x",
            "unit": "x",
            "direction": "risk",
        }
        data["indicators"]["incident_rate"]["weight"] = 0.4
        data["indicators"]["moon_phase"]["weight"] = 0.0

    path = _write(tmp_path, add)
    with pytest.raises(IndexConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "indicators.moon_phase" in message and "incident_rate" in message


def test_pillar_weights_not_summing_to_one(tmp_path):
    path = _write(tmp_path, lambda d: d["pillars"]["harm"].update(weight=0.4))
    with pytest.raises(IndexConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "pillars.*.weight" in str(err.value) and "0.9" in str(err.value)


def test_indicator_weights_within_a_pillar_must_sum_to_one(tmp_path):
    path = _write(tmp_path, lambda d: d["indicators"]["incident_rate"].update(weight=0.9))
    with pytest.raises(IndexConfigError) as err:
        load_config(path)
    assert "indicators.*.weight" in str(err.value) and "'harm'" in str(err.value)


def test_unknown_pillar_and_bad_direction(tmp_path):
    path = _write(tmp_path, lambda d: d["indicators"]["night_share"].update(pillar="weather"))
    with pytest.raises(IndexConfigError, match="indicators.night_share.pillar"):
        load_config(path)
    path = _write(tmp_path, lambda d: d["indicators"]["night_share"].update(direction="up"))
    with pytest.raises(IndexConfigError, match=r"indicators\.night_share\.direction"):
        load_config(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(IndexConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
