"""Commands for features: ``features list``, ``features build TASK`` and ``features materialize``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from safetyml.cli.common import engine_choice, engine_option, fail, scheduler_option, stage

console = Console()
features_app = typer.Typer(
    help="Feature definitions, training frames and the online store.", no_args_is_help=True
)


def _feature_set(features_dir: Path | None):
    from safetyml.features.definitions import FeatureDefinitionError, load_feature_set

    try:
        return load_feature_set(features_dir)
    except FeatureDefinitionError as exc:
        fail(str(exc))


def _tables(data: Path, on_invalid: str, client=None):
    """Validated tables, in pandas, or on the cluster of ``client`` (Dask engine)."""
    from safetyml.tables import ContractError, load_tables, load_tables_dask

    if on_invalid not in ("raise", "quarantine"):
        fail(f"--on-invalid must be raise or quarantine, not {on_invalid!r}")
    try:
        if client is not None:
            return load_tables_dask(data, client, on_invalid)
        return load_tables(data, on_invalid=on_invalid)
    except (ContractError, FileNotFoundError) as exc:
        fail(str(exc))


@features_app.command("list")
def list_features(
    task: str | None = typer.Option(None, "--task", help="Only the model columns of this task."),
    family: str | None = typer.Option(
        None, "--family", help="Only the columns a feature family expands into."
    ),
    features_dir: Path | None = typer.Option(
        None, "--features-dir", help="Definitions folder (default features/)."
    ),
) -> None:
    """Print the feature definitions as a table, families and rates expanded into their columns."""
    from safetyml.tasks import TASKS

    fs = _feature_set(features_dir)
    if task is not None and task not in TASKS:
        fail(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    defs = fs.for_task(task) if task else fs.definitions
    if family is not None:
        families = sorted({d.family for d in fs.definitions if d.family})
        if family not in families:
            fail(f"no feature family {family!r}; families: {', '.join(families) or 'none'}")
        defs = [d for d in defs if d.family == family]
    what = f"{task}: {len(defs)} model columns" if task else f"{len(defs)} feature columns"
    title = f"{what}{f' of family {family}' if family else ''} (definitions {fs.version})"
    table = Table(
        "name", "entity", "family / group", "agg", "window", "direction", "description", title=title
    )
    for d in defs:
        direction = {1: "+1 risk", -1: "-1 risk", 0: "0"}[d.direction]
        window = d.window or "-"
        if d.horizon:
            window = f"{window}, ends {d.horizon} before" if d.variant is None else f"last {d.horizon}"
        group = f"{d.family} / {d.group}" if d.family else d.group
        table.add_row(d.name, d.entity, group, d.agg, window, direction, d.description)
    console.print(table)


@features_app.command("build")
def build(
    task: str = typer.Argument(..., help="incident_risk or merchant_credit."),
    data: Path = typer.Option(..., "--data", help="Data folder with one file per table."),
    out: Path = typer.Option(
        ..., "--out", help="Parquet file to write the frame to (--engine dask: a folder of daily parts)."
    ),
    on_invalid: str = typer.Option("raise", "--on-invalid", help="raise: stop on invalid rows; quarantine."),
    label_min_severity: int = typer.Option(
        1, help="incident_risk: least severity that makes a positive label."
    ),
    horizon_days: int = typer.Option(90, help="merchant_credit: label horizon in days."),
    min_history_days: int = typer.Option(60, help="merchant_credit: flag snapshots with less history."),
    features_dir: Path | None = typer.Option(
        None, "--features-dir", help="Definitions folder (default features/)."
    ),
    engine: str = engine_option(),
    scheduler: str | None = scheduler_option(),
) -> None:
    """Build a training frame (keys, as_of, label, features) and write it as Parquet."""
    from safetyml.features.frames import build_frame
    from safetyml.tables import ROW_GROUP_ROWS, write_parquet
    from safetyml.tasks import TASKS

    choice = engine_choice(engine, scheduler)
    if task not in TASKS:
        fail(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    fs = _feature_set(features_dir)
    if choice.is_dask:
        _build_on_dask(
            task, data, out, on_invalid, fs, choice, (label_min_severity, horizon_days, min_history_days)
        )
        return
    with stage(f"reading and validating {data}", console):
        tables = _tables(data, on_invalid)
    start = time.perf_counter()
    with stage(f"building the {task} frame", console):
        frame = build_frame(
            task,
            tables,
            fs,
            label_min_severity=label_min_severity,
            horizon_days=horizon_days,
            min_history_days=min_history_days,
        )
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    with stage(f"writing {out} (row groups of {ROW_GROUP_ROWS:,} rows)", console):
        write_parquet(frame, out)
    positives = int(frame["label"].sum())
    console.print(
        f"{task}: {len(frame):,} rows, {positives:,} positives ({positives / max(len(frame), 1):.2%}), "
        f"{len(fs.for_task(task))} features, built in {seconds:.1f} s → {out}"
    )
    if task == "merchant_credit":
        console.print(
            f"  immature labels: {int((~frame['label_mature']).sum()):,} rows; "
            f"insufficient history: {int(frame['insufficient_history'].sum()):,} rows (flagged, kept)"
        )


def _build_on_dask(
    task, data: Path, out: Path, on_invalid: str, fs, choice, labels: tuple[int, int, int]
) -> None:
    """``features build --engine dask``: tables validated on the cluster, the frame written as a dataset
    folder of daily parts (see safetyml.features.distributed)."""
    from safetyml.engine import EngineError, session
    from safetyml.features.distributed import build_frame_dask
    from safetyml.tables import ContractError

    if on_invalid not in ("raise", "quarantine"):
        fail(f"--on-invalid must be raise or quarantine, not {on_invalid!r}")
    label_min_severity, horizon_days, min_history_days = labels
    try:
        with session(choice) as client:
            console.print(f"engine: {choice.describe()}")
            with stage(f"reading and validating {data} on the cluster", console):
                tables = _tables(data, on_invalid, client)
            with stage(f"building the {task} frame into {out}/date=*/", console):
                result = build_frame_dask(
                    task,
                    tables,
                    client,
                    out,
                    fs,
                    label_min_severity=label_min_severity,
                    horizon_days=horizon_days,
                    min_history_days=min_history_days,
                )
    except (ContractError, FileNotFoundError, FileExistsError, EngineError) as exc:
        fail(str(exc))
    share = result.positives / max(result.rows, 1)
    console.print(
        f"{task}: {result.rows:,} rows, {result.positives:,} positives ({share:.2%}), "
        f"{len(fs.for_task(task))} features, {result.days} daily parts, groups {result.groups}, "
        f"built in {result.seconds:.1f} s → {out}"
    )


@features_app.command("materialize")
def materialize_cmd(
    data: Path = typer.Option(..., "--data", help="Data folder with one file per table."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Timestamp (UTC if no zone); default: after the last event."
    ),
    store_path: str | None = typer.Option(
        None,
        "--store",
        help="SQLite file or redis:// URL (default SAFETYML_ONLINE_STORE_URL, else "
        "SAFETYML_HOME/online_store.sqlite).",
    ),
    on_invalid: str = typer.Option("raise", "--on-invalid", help="raise: stop on invalid rows; quarantine."),
    features_dir: Path | None = typer.Option(
        None, "--features-dir", help="Definitions folder (default features/)."
    ),
    engine: str = engine_option(),
    scheduler: str | None = scheduler_option(),
    all_features: bool = typer.Option(
        False, "--all-features", help="Store every definition, not only what the registered models use."
    ),
) -> None:
    """Write the latest feature vector of every rider, merchant and zone to the online store.

    Only the columns the registered champions and challengers use (their selected feature lists), or every
    definition with ``--all-features`` or while a task has no champion yet.
    """
    import pandas as pd

    from safetyml.engine import session
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.training.selection import registered_features

    choice = engine_choice(engine, scheduler)

    stamp = None
    if as_of is not None:
        try:
            stamp = pd.Timestamp(as_of)
        except ValueError:
            fail(f"--as-of {as_of!r} is not a timestamp (e.g. 2026-09-01 or 2026-09-01T12:00Z)")
    fs = _feature_set(features_dir)
    used = None if all_features else registered_features()
    console.print(
        "columns: every definition"
        if used is None
        else f"columns: the {len(used)} model columns of the registered models (--all-features: every one)"
    )
    with session(choice) as client:
        if choice.is_dask:
            console.print(f"engine: {choice.describe()}")
        with stage(f"reading and validating {data}", console):
            tables = _tables(data, on_invalid, client)
        start = time.perf_counter()
        with OnlineStore.open(store_path) as store, stage("materializing the online store", console):
            if client is None:
                meta = materialize(tables, fs, as_of=stamp, store=store, features=used)
            else:
                from safetyml.features.distributed import materialize_dask

                meta = materialize_dask(tables, client, fs, as_of=stamp, store=store, features=used)
    table = Table("entity", "rows", title="online store")
    for entity, rows in meta["rows"].items():
        table.add_row(entity, f"{rows:,}")
    console.print(table)
    console.print(
        f"{meta['path']}: as_of {meta['as_of']}, definitions version {meta['version']}, "
        f"{time.perf_counter() - start:.1f} s"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
