"""A real Prometheus scrapes the running service's /metrics and loads the example alerting rules.

Needs the ``prometheus`` binary (Debian package ``prometheus``; .ci/run installs it in CI). It runs on
127.0.0.1 with its own data folder and is always stopped, whatever the test's outcome.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.test_serving_api import Served, _free_port, _trip_payload, served  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "monitoring" / "prometheus-rules.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="prometheus is not installed (apt-get install -y prometheus)"
    ),
]


def test_example_alerting_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


@contextlib.contextmanager
def prometheus(target: str, folder: Path):
    """Run Prometheus scraping ``target`` every second; yield its base URL; always stop it."""
    port = _free_port()
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: safetyml\n"
        "    metrics_path: /metrics\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {process.returncode}:\n{(folder / 'prometheus.log').read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready:\n{(folder / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _query(url: str, expr: str) -> list[dict]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait_for(url: str, expr: str, check, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = _query(url, expr)
        if check(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"prometheus query {expr!r} never satisfied the check; last result {result}")
        time.sleep(1.0)


def test_prometheus_scrapes_the_service_metrics(served: Served, tmp_path: Path):  # noqa: F811
    trips = 3
    for _ in range(trips):
        assert served.post("/score_trip", _trip_payload(served.trip)).status_code == 200
    refused = served.post("/reload", {"alias": "no-such-alias"})  # a SafetymlError → counted as an error
    assert refused.status_code >= 400
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    assert "safetyml_decisions_total" in text and "safetyml_score_bucket" in text

    port = served.url.rsplit(":", 1)[1]
    with prometheus(f"127.0.0.1:{port}", tmp_path) as url:
        _wait_for(url, 'up{job="safetyml"}', lambda r: bool(r) and r[0]["value"][1] == "1")
        decisions = _wait_for(
            url,
            'sum(safetyml_decisions_total{task="incident_risk"})',
            lambda r: bool(r) and float(r[0]["value"][1]) >= trips,
        )
        assert float(decisions[0]["value"][1]) == trips
        by_label = _query(url, "safetyml_decisions_total")
        labels = by_label[0]["metric"]
        assert {"task", "market", "policy", "action"} <= set(labels)
        scores = _query(url, 'sum(safetyml_score_count{task="incident_risk"})')
        assert float(scores[0]["value"][1]) == trips
        errors = _query(url, 'sum(safetyml_errors_total{endpoint="reload"})')
        assert errors and float(errors[0]["value"][1]) >= 1
        assert _query(url, "safetyml_audit_queue_depth")  # the gauge is exported
        rules = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        names = {rule["name"] for group in rules for rule in group["rules"]}
        assert "SafetymlAuditQueueBacklog" in names and len(names) == 6
