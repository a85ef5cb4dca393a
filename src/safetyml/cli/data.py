"""Commands for data: ``simulate`` a platform and ``validate`` a data folder against the contract."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from safetyml.cli.common import engine_choice, engine_option, fail, scheduler_option

console = Console()


def simulate(
    out: Path = typer.Option(..., "--out", help="Folder to write the tables and truth/ to."),
    preset: str = typer.Option(
        "small", "--preset", help="small (~50k trips), medium (~1M), large (~10M), xlarge (~100M)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives byte-identical files."),
    drift: list[str] = typer.Option(
        [],
        "--drift",
        help="Inject a change from a day on (repeatable): city_incident_rate:CITY:+30%:DAY or "
        "feature_shift:order_value|distance_km:CITY:+20%:DAY; CITY may be 'all', DAY a date or a day "
        "number. Recorded in truth/drift.json.",
    ),
    dynamics: bool = typer.Option(
        True, "--dynamics/--no-dynamics", help="Rider spells, merchant fronts, zone waves, daily rider risk."
    ),
    partitioned: bool | None = typer.Option(
        None,
        "--partitioned/--single-file",
        help="Trips as trips/date=YYYY-MM-DD/part-N.parquet (default for xlarge) or one trips.parquet.",
    ),
) -> None:
    """Simulate a food-delivery platform (cities, riders, merchants, trips, incidents, ledger, truth)."""
    from safetyml.simulate import PRESETS, Dynamics, parse_drifts
    from safetyml.simulate import simulate as run_simulation

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    try:
        drifts = parse_drifts(PRESETS[preset], drift)
    except ValueError as exc:
        fail(str(exc))
    try:
        summary = run_simulation(
            out,
            preset=preset,
            seed=seed,
            drift=drifts,
            dynamics=None if dynamics else Dynamics.off(),
            partitioned=partitioned,
        )
    except FileExistsError as exc:
        fail(str(exc))
    console.print(summary.render())


def validate(
    data: Path = typer.Argument(..., help="Data folder with one file per table."),
    on_invalid: str = typer.Option(
        "raise", "--on-invalid", help="raise: report and exit 1; quarantine: set invalid rows aside."
    ),
    quarantine_dir: Path | None = typer.Option(
        None, help="Where quarantined rows go (default DATA/quarantine)."
    ),
    describe: bool = typer.Option(False, "--describe", help="Print the data contract and exit."),
    engine: str = engine_option(),
    scheduler: str | None = scheduler_option(),
) -> None:
    """Check a data folder (each table a file or a folder of Parquet parts) against the data contract."""
    from safetyml.contract import contract_markdown
    from safetyml.engine import session
    from safetyml.tables import (
        ContractError,
        load_tables,
        load_tables_dask,
        validate_dir,
        validate_dir_dask,
    )

    if describe:
        console.print(contract_markdown(), markup=False)
        return
    if on_invalid not in ("raise", "quarantine"):
        fail(f"--on-invalid must be raise or quarantine, not {on_invalid!r}")
    choice = engine_choice(engine, scheduler)
    try:
        if on_invalid == "quarantine":
            with session(choice) as client:
                if client is None:
                    tables = load_tables(data, on_invalid="quarantine", quarantine_dir=quarantine_dir)
                    rows = {name: len(df) for name, df in tables.items()}
                else:
                    tables = load_tables_dask(data, client, "quarantine", quarantine_dir)
                    rows = {n: c - tables.quarantined.get(n, 0) for n, c in tables.row_counts.items()}
            quarantined = tables.quarantined
        else:
            with session(choice) as client:
                report = validate_dir(data) if client is None else validate_dir_dask(data, client)
            if not report.ok:
                summary = report.summary()
                table = Table("table", "column", "rule", "rows", "example keys", title="Contract violations")
                for row in summary.itertuples(index=False):
                    table.add_row(row.table, row.column, row.rule, str(row.rows), row.examples)
                console.print(table)
                fail(report.message(), code=1)
            rows, quarantined = report.row_counts, {}
    except (ContractError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table("table", "valid rows", "quarantined", title=f"{data}: contract OK")
    for name, count in rows.items():
        table.add_row(name, f"{count:,}", f"{quarantined.get(name, 0):,}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(simulate)
    app.command()(validate)
