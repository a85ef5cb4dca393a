"""Commands for explanations: ``explain case`` (a score and reasons), ``explain report`` (policy HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from safetyml.cli.common import fail
from safetyml.tasks import INCIDENT_RISK, MERCHANT_CREDIT, TASKS

console = Console()
app = typer.Typer(
    help="Explain scores: reason codes of one case, policy review reports.", no_args_is_help=True
)


def _check_task(task: str) -> None:
    if task not in TASKS:
        fail(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def _champion(task: str) -> tuple[Any, Any]:
    from safetyml import tracking

    try:
        return tracking.load_model(task, "champion")
    except LookupError as exc:
        fail(str(exc))


def _data_dir(data: Path | None, run_id: str) -> Path:
    """``--data``, else the folder the champion was trained on (recorded in its MLflow run)."""
    if data is not None:
        return data
    from safetyml import tracking

    info = tracking.run_info(run_id)
    recorded = info["params"].get("data_dir") or info["tags"].get("data_dir")
    if not recorded:
        fail("no --data given and the champion's run does not record its data folder; pass --data DIR")
    return Path(recorded)


def _frame(task: str, data: Path) -> tuple[Any, Any, Any]:
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.frames import build_frame
    from safetyml.tables import ContractError, load_tables

    try:
        tables = load_tables(data)
    except (ContractError, FileNotFoundError) as exc:
        fail(str(exc))
    fs = load_feature_set()
    with console.status(f"building {task} features from {data}"):
        frame = build_frame(task, tables, fs)
    return tables, fs, frame


def case_row(task: str, frame: Any, case_id: str) -> Any:
    """The frame row of one case: a trip (as of its request) or a merchant's latest snapshot."""
    key = "trip_id" if task == INCIDENT_RISK else "merchant_id"
    hits = frame.loc[frame[key].astype(str) == str(case_id)]
    if hits.empty:
        what = "trip" if task == INCIDENT_RISK else "merchant"
        fail(f"no {what} with {key} {case_id!r} in the {task} frame ({len(frame):,} rows)")
    if "as_of" in hits.columns:
        hits = hits.sort_values("as_of", kind="stable")
    return hits.iloc[[-1]]


def case(
    task: str = typer.Argument(
        ..., help="incident_risk (ID is a trip_id) or merchant_credit (a merchant_id)."
    ),
    case_id: str = typer.Option(..., "--id", help="trip_id or merchant_id to explain."),
    data: Path | None = typer.Option(
        None, "--data", help="Data folder (default: the champion's training data)."
    ),
    k: int = typer.Option(3, "--k", min=1, help="How many reasons in each direction."),
    down: bool = typer.Option(True, "--down/--no-down", help="Also show what pulled the score down."),
) -> None:
    """Print one score with its reason codes, from the champion model."""
    _check_task(task)
    from safetyml.explain.probability import probability_scale
    from safetyml.explain.reasons import reason_codes
    from safetyml.explain.shap_values import explain_logodds

    model, ref = _champion(task)
    _, fs, frame = _frame(task, _data_dir(data, ref.run_id))
    row = case_row(task, frame, case_id)
    contributions = explain_logodds(model, row)
    _, p, p_base = probability_scale(model, contributions)
    reasons = reason_codes(model, row, fs, k=k, include_negative=down, contributions=contributions)[0]

    record = row.iloc[0]
    score = f"[bold]{100 * p[0]:.2f}%[/]"
    if task == MERCHANT_CREDIT:
        from safetyml.credit_score import credit_of, credit_scale

        points, grades = credit_of(p[:1], credit_scale())  # the project's scale, as serving uses
        score += f"  credit score {points[0]:.0f} (grade {grades[0]})"
    console.print(f"[bold]{task}[/] {ref.name} v{ref.version} (champion)")
    console.print(f"case {case_id}  as of {record.get('as_of', '?')}  city {record.get('city', '?')}")
    console.print(f"score {score}   base score {100 * p_base[0]:.2f}%   label {record.get('label', '?')}")
    table = Table("", "reason", "feature", "log-odds", "probability", title=f"Top {k} reasons")
    for r in reasons:
        arrow = "[red]▲[/]" if r.direction == "up" else "[green]▼[/]"
        table.add_row(
            arrow,
            r.text,
            r.feature,
            f"{r.contribution_logodds:+.3f}",
            f"{100 * r.contribution_probability:+.2f} pts",
        )
    if not reasons:
        console.print("no feature pushed this score away from the base score")
    else:
        console.print(table)


def report(
    task: str = typer.Argument(..., help="incident_risk or merchant_credit."),
    data: Path | None = typer.Option(
        None, "--data", help="Data folder (default: the champion's training data)."
    ),
    out: Path = typer.Option(..., "--out", help="HTML file to write."),
    cohort: str = typer.Option(
        "city", "--cohort", help="city, vehicle_type, merchant_category or score_band."
    ),
    sample: int = typer.Option(20_000, "--sample", min=100, help="Explain at most this many rows (random)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and the bootstrap."),
    all_rows: bool = typer.Option(
        False, "--all-rows", help="Explain every period, not only the test period."
    ),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the report to the champion's MLflow run."),
) -> None:
    """Write the policy review report (one self-contained HTML file) for the champion model."""
    _check_task(task)
    from safetyml.explain.report import COHORTS, write_report

    if task == MERCHANT_CREDIT and cohort == "vehicle_type":
        fail("merchant_credit rows are merchants: --cohort vehicle_type does not apply")
    _, ref = _champion(task)
    tables, _, frame = _frame(task, _data_dir(data, ref.run_id))
    with console.status("explaining") as status:
        try:
            result = write_report(
                task,
                _data_dir(data, ref.run_id),
                out,
                cohort=cohort,
                sample=sample,
                seed=seed,
                period="all" if all_rows else "test",
                log=log,
                tables=tables,
                frame=frame,
                progress=lambda step: status.update(f"explaining: {step}"),
            )
        except ValueError as exc:
            fail(f"{exc} (cohorts: {', '.join(COHORTS)})")
    console.print(
        f"wrote {result.path} ({result.bytes / 1e6:.2f} MB): {result.rows_explained:,} of "
        f"{result.rows_available:,} rows explained in {result.seconds:.1f} s"
    )
    if result.logged_to:
        console.print(f"logged to MLflow run {result.logged_to} under explanations/{result.path.name}")


app.command("case")(case)
app.command("report")(report)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="explain")
