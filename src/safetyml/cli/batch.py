"""Batch commands: ``score-zones`` (zone risk map with hotspots) and ``score-file`` (score a file)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from safetyml.cli.common import (
    as_of_option,
    engine_choice,
    engine_option,
    fail,
    features_option,
    scheduler_option,
)
from safetyml.tasks import TASKS

console = Console()


def score_zones(
    data: Path = typer.Option(..., "--data", help="Data folder (one file per table; truth/ if simulated)."),
    as_of: str | None = as_of_option("End of the window"),
    window: str = typer.Option("7d", "--window", help="Length of the window before --as-of, e.g. 7d or 36h."),
    city: str | None = typer.Option(None, "--city", help="Only this city id (default: every city)."),
    out: Path = typer.Option(..., "--out", help="Folder for zones.parquet, zones.geojson and zone_map.html."),
    features: Path | None = features_option(),
    config: Path | None = typer.Option(
        None, "--config", help="YAML overriding the zone settings (tiers, bands…)."
    ),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the outputs to MLflow."),
    engine: str = engine_option(),
    scheduler: str | None = scheduler_option(),
) -> None:
    """Zone risk map: expected and observed incident risk per H3 zone and time band, Gi* hotspots, drivers."""
    from safetyml.batch.zone_config import ZoneConfig
    from safetyml.batch.zones import parse_window
    from safetyml.batch.zones import score_zones as run
    from safetyml.cities import UnknownCityError
    from safetyml.engine import session
    from safetyml.tables import ContractError

    choice = engine_choice(engine, scheduler)
    try:
        parse_window(window)
        settings = ZoneConfig.from_yaml(config) if config else ZoneConfig()
        with session(choice) as client:
            if client is not None:
                console.print(f"engine: {choice.describe()}")
            result = run(
                data,
                as_of=as_of,
                window=window,
                out=out,
                city=city,
                config=settings,
                features=features,
                log_mlflow=not no_mlflow,
                client=client,
            )
    except (ValueError, FileNotFoundError, UnknownCityError, ContractError) as exc:
        fail(str(exc))
    console.print(result)


def score_file(
    task: str = typer.Argument(..., help="incident_risk or merchant_credit."),
    input: Path = typer.Option(
        ..., "--input", help="Features-built Parquet file (`safetyml features build`)."
    ),
    out: Path = typer.Option(..., "--out", help="Parquet file to write: key columns + scores."),
    explain: bool = typer.Option(False, "--explain", help="Add reason codes (a JSON list per row)."),
    engine: str = engine_option(),
    scheduler: str | None = scheduler_option(),
    workers: int | None = typer.Option(
        None, "--workers", help="LocalCluster workers when no scheduler is given (default: one per core)."
    ),
    batch_rows: int = typer.Option(131_072, "--batch-rows", help="Rows per chunk of the pandas engine."),
) -> None:
    """Score a features file in chunks with the champion model (the same scorer as the service)."""
    from safetyml._optional import MissingExtraError
    from safetyml.batch.score_file import score_file as run

    if task not in TASKS:
        fail(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    choice = engine_choice(engine, scheduler, n_workers=workers)
    try:
        result = run(task, input, out, explain=explain, engine=choice, batch_size=batch_rows)
    except (ValueError, FileNotFoundError, MissingExtraError) as exc:
        fail(str(exc))
    console.print(str(result))


def register(app: typer.Typer) -> None:
    app.command("score-zones")(score_zones)
    app.command("score-file")(score_file)
