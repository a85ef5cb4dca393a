"""Serving commands: ``serve`` starts the BentoML service; ``decisions show|export`` read the audit log
(``decisions replay|appeal|appeals`` and ``challenger report`` live in :mod:`safetyml.cli.decisions`)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console

from safetyml import envvars
from safetyml.cli.common import fail

console = Console()
TOKEN_ENV = envvars.API_TOKEN
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SERVICE = "serving.service:SafetyScoring"

decisions_app = typer.Typer(
    help="Read the decision audit log (appeal reviews, exports).", no_args_is_help=True
)


def bentoml_serve_command(port: int, host: str) -> list[str]:
    """The ``bentoml serve`` command line for the service, run from the project folder."""
    from safetyml import paths

    exe = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or shutil.which("bentoml")
    base = [exe] if exe else [sys.executable, "-m", "bentoml"]
    return [
        *base,
        "serve",
        SERVICE,
        "--working-dir",
        str(paths.project_dir()),
        "--host",
        host,
        "--port",
        str(port),
    ]


def serve(
    port: int = typer.Option(3000, "--port", help="Port to listen on."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind; other than loopback needs a token."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help=f"Worker processes, one per core [default: ${envvars.SERVE_WORKERS}]"
    ),
) -> None:
    """Start the real-time scoring service (BentoML) with the champion models and the online store."""
    from safetyml import paths
    from safetyml.scoring.policies import PolicyError, load_policies

    token = os.environ.get(TOKEN_ENV)
    if not token and host not in LOOPBACK:
        fail(f"refusing to bind {host} without authentication: set {TOKEN_ENV} or use --host 127.0.0.1")
    try:
        policies = load_policies()
    except PolicyError as exc:
        fail(str(exc))
    from safetyml._optional import MissingExtraError, ensure

    try:
        ensure("bentoml", "serve")
    except MissingExtraError as exc:
        fail(str(exc))
    if not token:
        console.print(
            f"[yellow]warning:[/] {TOKEN_ENV} is not set: the service is unauthenticated, bound to {host}"
        )
    console.print(
        f"serving on http://{host}:{port}  (SAFETYML_HOME={paths.home()}, policies {policies.versions()})",
        highlight=False,
    )
    command = bentoml_serve_command(port, host)
    if workers is not None:  # otherwise the service reads SAFETYML_SERVE_WORKERS itself (default 1)
        os.environ[envvars.SERVE_WORKERS] = str(workers)
    if token and host not in LOOPBACK:
        os.environ[envvars.HOST] = host
    sys.stdout.flush()
    os.chdir(paths.project_dir())
    os.execv(command[0], command)  # replace this process, so signals (Ctrl-C, SIGTERM) reach BentoML directly


@decisions_app.command("show")
def show(
    decision_id: str = typer.Argument(..., help="The decision_id returned by the service."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw record as JSON."),
    statement: bool = typer.Option(
        False, "--statement", help="Print what the rider or merchant is told, in the market's language."
    ),
) -> None:
    """Print one decision (scores, versions, features, reasons, request, appeals) for an appeal review."""
    from rich.table import Table

    from safetyml.cli import decisions as appeals_cli
    from safetyml.scoring.audit import COLUMNS, NESTED_COLUMNS, default_path, get_decision

    record = get_decision(decision_id)
    if record is None:
        fail(f"no decision {decision_id!r} in the audit log {default_path()}")
    if as_json:
        console.print_json(json.dumps(record, default=str))
        return
    if statement:
        appeals_cli.print_statement(record)
        return
    head = Table(show_header=False, title=f"decision {decision_id}")
    for key in COLUMNS[1:]:  # the id is the title
        if key in NESTED_COLUMNS:
            continue
        if record.get(key) is not None:
            head.add_row(key, str(record[key]))
    console.print(head)
    reasons = Table("feature", "value", "log-odds", "reason", title="reasons")
    for reason in record.get("reasons") or []:
        reasons.add_row(
            str(reason.get("feature")),
            _fmt(reason.get("value")),
            f"{reason.get('contribution_logodds', 0):+.3f}",
            str(reason.get("text")),
        )
    console.print(reasons)
    features = Table("feature", "value", title="feature values the model saw")
    for name, value in (record.get("features") or {}).items():
        features.add_row(name, _fmt(value))
    console.print(features)
    console.print("request: " + json.dumps(record.get("request"), default=str), highlight=False)
    appeals_cli.show_appeals(record)


def _fmt(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@decisions_app.command("export")
def export(
    since: datetime = typer.Option(..., "--since", help="Export decisions made at or after this time (UTC)."),
    out: Path = typer.Option(..., "--out", help="Parquet file to write."),
) -> None:
    """Write every decision made since TS to a Parquet file."""
    from safetyml.scoring.audit import export_decisions

    count = export_decisions(out, since=since)
    console.print(f"wrote {count:,} decisions since {since.isoformat()} to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(decisions_app, name="decisions")
    from safetyml.cli import decisions as appeals_cli  # replay, appeal, appeals; challenger report

    appeals_cli.register(decisions_app, app)
