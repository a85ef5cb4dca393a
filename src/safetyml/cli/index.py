"""Commands for the TRUST index: ``index build``, ``index report`` and ``index history``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from safetyml.cli.common import fail

console = Console()
index_app = typer.Typer(help="The TRUST composite safety index per city and zone.", no_args_is_help=True)

_CONFIG = typer.Option(None, "--config", help="Index configuration (default index/trust.yaml).")
_REPS = typer.Option(None, "--replications", "-n", help="Monte Carlo replications (default from the config).")
_ZONES = typer.Option(None, "--zones/--no-zones", help="Also index zones (default from the config).")
_HOT = typer.Option(None, "--hot-zones", help="zones.parquet of `safetyml score-zones`, for hot_zone_share.")
_SCORES = typer.Option(None, "--scores", help="Scored trips (trip_id, probability) for predicted_risk.")
_MLFLOW = typer.Option(True, "--mlflow/--no-mlflow", help="Log the run to MLflow.")


def _errors() -> tuple[type[BaseException], ...]:
    from safetyml.errors import SafetymlError
    from safetyml.tables import ContractError

    return (SafetymlError, ContractError, FileNotFoundError, KeyError)


def _summary(result) -> Table:
    from safetyml.values import is_missing

    index = result.index
    latest = index[(index["level"] == "city") & (index["period"] == index["period"].max())].sort_values(
        "rank"
    )
    table = Table(
        "rank",
        "city",
        "score",
        "90% interval",
        "rank interval",
        "change",
        title=f"{result.config.name} index, {latest['period'].max():%Y-%m} (0 safest, 100 least safe)",
    )
    for row in latest.itertuples():
        change = "—" if is_missing(row.score_change) else f"{row.score_change:+.1f}"
        table.add_row(
            str(row.rank),
            row.city,
            f"{row.score:.1f}",
            f"{row.score_low:.1f}–{row.score_high:.1f}",
            f"{row.rank_low}–{row.rank_high}",
            change,
        )
    return table


def _report_lines(result) -> None:
    for name, reason in result.notes.items():
        console.print(f"[yellow]{name}[/]: {reason}")
    imputed = result.imputation
    for row in imputed[imputed["imputed"] > 0].itertuples():
        console.print(
            f"imputed {row.imputed} of {row.units} {row.level} values of {row.indicator} with the {row.how}"
        )
    for level, figures in (result.truth or {}).items():
        console.print(
            f"truth ({level}): Spearman {figures['spearman']:.2f}, true rank in its interval for "
            f"{figures['coverage']:.0%} of {int(figures['units'])} units"
        )
    for name, path in result.outputs.items():
        console.print(f"{name}: {path}")
    if result.run_id:
        console.print(f"MLflow run: {result.run_id}")


@index_app.command("build")
def build(
    data: Path = typer.Option(..., "--data", help="Data folder (contract tables)."),
    out: Path = typer.Option(Path("index-out"), "--out", help="Folder for the Parquet tables and report."),
    config: Path | None = _CONFIG,
    replications: int | None = _REPS,
    seed: int | None = typer.Option(None, "--seed", help="Monte Carlo seed (default from the config)."),
    zones: bool | None = _ZONES,
    hot_zones: Path | None = _HOT,
    scores: Path | None = _SCORES,
    mlflow: bool = _MLFLOW,
) -> None:
    """Compute the index for every period of DATA, with intervals, decomposition and the HTML report."""
    from safetyml.index.build import build_index

    try:
        result = build_index(
            data,
            out,
            config,
            replications=replications,
            seed=seed,
            zones=zones,
            hot_zones=hot_zones,
            scores=scores,
            log_mlflow=mlflow,
        )
    except _errors() as exc:
        fail(str(exc))
    console.print(_summary(result))
    _report_lines(result)


@index_app.command("report")
def report(
    out: Path = typer.Option(Path("index-out"), "--out", help="Folder written by `index build`."),
    config: Path | None = _CONFIG,
    path: Path | None = typer.Option(
        None, "--path", help="Where to write the HTML (default OUT/report.html)."
    ),
) -> None:
    """Render the HTML report again from the files of an index build."""
    from safetyml.index.config import load_config
    from safetyml.index.report import write_report

    try:
        written = write_report(out, path, load_config(config) if config else None)
    except _errors() as exc:
        fail(str(exc))
    console.print(f"report: {written}")


@index_app.command("history")
def history(
    data: Path = typer.Option(..., "--data", help="Data folder (contract tables)."),
    out: Path = typer.Option(Path("index-out"), "--out", help="Folder for history.parquet (and the build)."),
    config: Path | None = _CONFIG,
    replications: int | None = _REPS,
    zones: bool | None = _ZONES,
    mlflow: bool = _MLFLOW,
) -> None:
    """Recompute every past period with the current method (history.parquet; revisions.parquet if the
    method changed since the last history)."""
    from safetyml.index.history import recompute_history

    try:
        done = recompute_history(data, out, config, replications=replications, zones=zones, log_mlflow=mlflow)
    except _errors() as exc:
        fail(str(exc))
    cities = done.history[done.history["level"] == "city"]
    trend = cities.pivot_table(index="city", columns="period", values="score")
    table = Table(
        "city", *[f"{p:%Y-%m}" for p in trend.columns], title=f"history ({done.result.config.fingerprint()})"
    )
    for city, row in trend.iterrows():
        table.add_row(str(city), *[f"{v:.1f}" for v in row.values])
    console.print(table)
    if done.revisions is not None:
        moved = done.revisions[done.revisions["rank_revision"] != 0]
        console.print(
            f"method changed: {len(moved)} of {len(done.revisions)} period × unit ranks revised "
            f"({out / 'revisions.parquet'})"
        )
    console.print(f"history: {done.path}")


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
