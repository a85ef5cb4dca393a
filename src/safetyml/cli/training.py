"""Commands for training: ``train``, ``promote``, ``ui`` and ``experiment run``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from safetyml.cli.common import engine_choice, engine_option, fail, scheduler_option

console = Console()
experiment_app = typer.Typer(
    help="Train experiments (YAML overrides of a training config).", no_args_is_help=True
)


def print_training_summary(result) -> None:
    console.print(result.render())


def train(
    task: str = typer.Argument(..., help="incident_risk or merchant_credit"),
    data: Path = typer.Option(..., "--data", help="Data folder (tables, and truth/ if simulated)."),
    trials: int | None = typer.Option(None, "--trials", help="Optuna trials (default from the config)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop tuning after this many seconds."),
    seed: int = typer.Option(0, "--seed", help="Seed: same data, config and seed give the same model."),
    engine: str = engine_option(),
    scheduler: str | None = scheduler_option(),
) -> None:
    """Tune, train, calibrate and evaluate a model; log it to MLflow and register it as challenger.

    With ``--engine dask`` the final fit on all training rows is a distributed ``lightgbm.dask`` fit on
    the cluster (tuning still runs on a seeded sample in this process)."""
    from safetyml.engine import session

    choice = engine_choice(engine, scheduler)
    from safetyml.training.config import TASKS, TrainingConfigError
    from safetyml.training.pipeline import train as run_training
    from safetyml.training.split import SplitError

    if task not in TASKS:
        fail(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not data.is_dir():
        fail(f"data folder {data} does not exist")
    try:
        with session(choice) as client:
            if client is not None:
                console.print(f"engine: {choice.describe()} (final fit with lightgbm.dask)")
            result = run_training(task, data, trials=trials, timeout=timeout, seed=seed, client=client)
    except (TrainingConfigError, SplitError) as exc:
        fail(str(exc))
    print_training_summary(result)


def promote(
    task: str = typer.Argument(..., help="incident_risk or merchant_credit"),
    data: Path | None = typer.Option(None, "--data", help="Data to compare on (default: the challenger's)."),
    force: bool = typer.Option(False, "--force", help="Promote even if the challenger is worse."),
    reason: str | None = typer.Option(None, "--reason", help="Why (required with --force; recorded)."),
) -> None:
    """Move the champion alias to the challenger if it is not worse on the latest test window."""
    from safetyml.training.promote import promote as run_promotion

    if force and not reason:
        fail("--force needs --reason TEXT; the reason is recorded on the model version")
    try:
        decision = run_promotion(task, data, force=force, reason=reason)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    verdict = "[bold green]promoted[/]" if decision.promoted else "[bold yellow]kept the champion[/]"
    console.print(
        f"{decision.name}: {verdict} — challenger v{decision.challenger_version}; {decision.reason}"
    )


def ui(port: int = typer.Option(5000, "--port", help="Port on 127.0.0.1.")) -> None:
    """Start the MLflow UI on the embedded store (or MLFLOW_TRACKING_URI), bound to 127.0.0.1."""
    import os

    from safetyml import tracking

    cmd = tracking.ui_command(port)
    store = cmd[cmd.index("--backend-store-uri") + 1]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (store {store}); Ctrl-C stops it")
    # replace this process, so Ctrl-C or a kill reaches the MLflow server itself
    os.execv(cmd[0], cmd)


@experiment_app.command("run")
def experiment_run(
    path: Path = typer.Argument(..., help="experiments/NAME.yaml"),
    data: Path = typer.Option(..., "--data", help="Data folder."),
    trials: int | None = typer.Option(None, "--trials"),
    timeout: float | None = typer.Option(None, "--timeout"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train an experiment in its own MLflow experiment (not registered); compare it with the champion."""
    from safetyml.training.config import TrainingConfigError
    from safetyml.training.experiments import run_experiment
    from safetyml.training.report import metrics_table
    from safetyml.training.split import SplitError

    try:
        out = run_experiment(path, data, trials=trials, timeout=timeout, seed=seed)
    except (TrainingConfigError, SplitError, FileNotFoundError) as exc:
        fail(str(exc))
    result = out.result
    print_training_summary(result)
    columns = {
        f"experiment {out.spec.name}": result.metrics,
        f"champion v{out.champion_version}" if out.champion_version else "champion": out.champion_metrics,
        "oracle (truth)": result.oracle_metrics,
    }
    console.print(
        metrics_table(
            f"{out.spec.name} vs champion on the same test rows", columns, result.config.review_capacity
        )
    )
    for note in out.notes:
        console.print(f"[yellow]{note}[/]")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(promote)
    app.command()(ui)
    app.add_typer(experiment_app, name="experiment")
