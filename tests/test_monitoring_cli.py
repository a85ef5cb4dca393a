"""``safetyml monitor run|alerts|ack`` end to end on the small simulated platform and its champion."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml.cli import app

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The project's monitoring files plus a BR rule that always fires (to exercise the alert commands)."""
    folder = tmp_path / "monitoring"
    folder.mkdir()
    for name in ("default.yaml", "MX.yaml"):
        shutil.copy(REPO / "monitoring" / name, folder / name)
    (folder / "BR.yaml").write_text(
        "market: BR\nadd_rules:\n"
        "  - id: always\n    indicator: incident_rate_city\n"
        "    detector: {kind: threshold, direction: up, enter: -1, exit: -2}\n"
    )
    return folder


def test_monitor_run_writes_tables_and_report_and_manages_alerts(trained_env, config_dir, tmp_path):
    out = tmp_path / "out"
    args = [
        "monitor",
        "run",
        "--data",
        str(trained_env.data_dir),
        "--out",
        str(out),
        "--config",
        str(config_dir),
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    opened = int(re.search(r"alerts: (\d+) opened", first.output).group(1))
    assert opened >= 3, first.output  # at least the always-firing rule in the 3 BR cities
    firings = pd.read_parquet(out / "firings.parquet")
    always = firings[firings["rule_id"] == "always"]
    assert len(always) == 3 and always["active"].all() and set(always["market"]) == {"BR"}
    for name in ("stability", "performance", "nowcast", "signals", "alerts", "delays", "band_rates"):
        assert (out / f"{name}.parquet").exists()
    html = (out / "monitoring_report.html").read_text()
    assert "Monitoring report" in html and html.count("data:image/png;base64") >= 3
    assert not re.search(r"""(src|href)=["']https?://""", html)  # self-contained

    stability = pd.read_parquet(out / "stability.parquet")
    assert set(stability["city"]) == {"sao_paulo", "rio_de_janeiro", "belo_horizonte", "mexico_city"}
    checked = set(stability["feature"])
    assert "score" in checked and len(checked) > 20 and stability["p_value"].between(0, 1).all()
    assert "rider_tenure_days" not in checked  # excluded in default.yaml: it grows with time by design
    perf = pd.read_parquet(out / "performance.parquet")
    assert perf["mature"].any() and not perf["mature"].all()
    assert perf.loc[perf["mature"], "roc_auc"].notna().all() and perf["est_roc_auc"].notna().all()
    nowcast = pd.read_parquet(out / "nowcast.parquet")
    last = nowcast[nowcast["day"] == nowcast["day"].max()]
    assert (last["corrected"] >= last["known"]).all() and (last["reported_share"] < 0.6).all()

    # the reference profile is stored with the model run (and cached locally)
    from mlflow.tracking import MlflowClient

    run_id = trained_env.results["incident_risk"].run_id
    from safetyml import tracking

    tracking.configure()
    assert [a.path for a in MlflowClient().list_artifacts(run_id, "monitoring")] == [
        "monitoring/reference_profile.json"
    ]

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert f"alerts: 0 opened, {opened} still firing" in second.output.replace("\n", " "), second.output
    assert "reference: cached" in second.output.replace("\n", " ")

    listed = CliRunner().invoke(app, ["monitor", "alerts", "--state", "open"])
    assert listed.exit_code == 0 and listed.output.count("always") == 3
    alert_id = re.search(r"│\s*(\d+)\s*│\s*open", listed.output).group(1)
    acked = CliRunner().invoke(app, ["monitor", "ack", alert_id, "--by", "ops"])
    assert acked.exit_code == 0 and "acknowledged" in acked.output
    missing = CliRunner().invoke(app, ["monitor", "ack", "99999"])
    assert missing.exit_code == 2 and "no alert with id 99999" in missing.output
