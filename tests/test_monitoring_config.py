"""Monitoring YAML: the project's files load; market files read over default.yaml; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from safetyml.monitoring.config import ConfigError, for_market, load_configs

REPO = Path(__file__).resolve().parents[1]


def test_project_monitoring_files_load_and_markets_extend_the_default():
    configs = load_configs(REPO / "monitoring")
    assert {"default", "BR", "MX"} <= set(configs)
    default, br, mx = configs["default"], configs["BR"], configs["MX"]
    assert br.stability == default.stability  # not restated in BR.yaml: merged from default
    assert "robbery_rate_shift" in {r.id for r in br.rules} and "robbery_rate_shift" not in {
        r.id for r in default.rules
    }
    mx_block = next(r for r in mx.rules if r.id == "block_rate_high")
    assert (
        mx_block.detector.enter > next(r for r in default.rules if r.id == "block_rate_high").detector.enter
    )
    assert for_market(configs, "AR") is default
    for config in configs.values():  # every rule names a defined indicator
        assert {r.indicator for r in config.rules} <= {i.id for i in config.indicators}


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def test_errors_name_the_file_and_the_field(tmp_path):
    with pytest.raises(ConfigError, match="no default.yaml"):
        load_configs(tmp_path)
    _write(tmp_path, "default.yaml", "market: default\nstability: {bins: 1}\n")
    with pytest.raises(ConfigError, match=r"default.yaml.*\n.*field stability.bins"):
        load_configs(tmp_path)
    _write(tmp_path, "default.yaml", "market: default\n")
    _write(tmp_path, "BR.yaml", "market: MX\n")
    with pytest.raises(ConfigError, match="named 'BR'"):
        load_configs(tmp_path)
    _write(tmp_path, "BR.yaml", "market: BR\ndisable_rules: [nope]\n")
    with pytest.raises(ConfigError, match="unknown rule"):
        load_configs(tmp_path)
    _write(
        tmp_path,
        "BR.yaml",
        "market: BR\nadd_rules:\n"
        "  - {id: r, indicator: missing, detector: {kind: threshold, enter: 1, exit: 0}}\n",
    )
    with pytest.raises(ConfigError, match="unknown indicator"):
        load_configs(tmp_path)
