"""Monitoring commands: ``monitor run`` (one evaluation, for cron), ``monitor alerts``, ``monitor ack``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from safetyml.cli.common import as_of_option, fail, features_option

console = Console()

monitor_app = typer.Typer(
    help="Monitoring and early warning: stability, maturing performance, nowcast, alert rules.",
    no_args_is_help=True,
)


@monitor_app.command("run")
def run(
    data: Path = typer.Option(..., "--data", help="Data folder (one file per table)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for the Parquet tables and monitoring_report.html (default: none written).",
    ),
    as_of: str | None = as_of_option("Evaluation time"),
    config: Path | None = typer.Option(
        None, "--config", help="Folder of monitoring YAML files (default: the project's monitoring/)."
    ),
    features: Path | None = features_option(),
    zones: Path | None = typer.Option(
        None, "--zones", help="A zones.parquet of `score-zones` (hot-zone count)."
    ),
    no_alerts: bool = typer.Option(False, "--no-alerts", help="Evaluate rules but do not record alerts."),
) -> None:
    """One evaluation of stability, performance, nowcast and rules; records alerts, writes the report."""
    from safetyml.cities import UnknownCityError
    from safetyml.errors import SafetymlError
    from safetyml.monitoring.run import run_monitoring
    from safetyml.tables import ContractError

    try:
        result = run_monitoring(
            data,
            out=out,
            as_of=as_of,
            config_dir=config,
            features=features,
            zones=zones,
            record_alerts=not no_alerts,
        )
    except (
        SafetymlError,
        ValueError,
        FileNotFoundError,
        LookupError,
        UnknownCityError,
        ContractError,
    ) as exc:
        fail(str(exc))
    console.print(result)


@monitor_app.command("alerts")
def alerts(
    state: str | None = typer.Option(
        None, "--state", help="Only alerts in this state: open, acknowledged, resolved or active."
    ),
    limit: int = typer.Option(50, "--limit", help="Most alerts shown (newest first)."),
) -> None:
    """List the alerts with their state (kept beside the decision audit log)."""
    from rich.table import Table

    from safetyml.monitoring.alerts import AlertError, list_alerts

    try:
        frame = list_alerts(state)
    except AlertError as exc:
        fail(str(exc))
    if frame.empty:
        console.print(f"no alerts{f' in state {state}' if state else ''}")
        return
    table = Table(title=f"alerts ({len(frame)})")
    for col in ("id", "state", "severity", "rule", "market", "series", "opened", "last seen", "firings"):
        table.add_column(col)
    for row in frame.head(limit).itertuples():
        table.add_row(
            str(row.alert_id),
            row.state,
            row.severity,
            row.rule_id,
            row.market,
            row.labels,
            row.opened_at[:16],
            row.last_seen_at[:16],
            str(row.firings),
        )
    console.print(table)


@monitor_app.command("ack")
def ack(
    alert_id: int = typer.Argument(..., help="Id of the alert (see `safetyml monitor alerts`)."),
    by: str = typer.Option("", "--by", help="Who acknowledges it."),
) -> None:
    """Acknowledge an open alert: someone is looking at it."""
    from safetyml.monitoring.alerts import AlertError, acknowledge

    try:
        row = acknowledge(alert_id, by)
    except AlertError as exc:
        fail(str(exc))
    console.print(f"alert {row['alert_id']} ({row['rule_id']}, {row['labels']}) is {row['state']}")


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
