"""Appeal and challenger commands: ``decisions replay|appeal|appeals`` and ``challenger report``.

They sit under the ``decisions`` group of :mod:`safetyml.cli.serving` (which registers them), next to
``show`` and ``export``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from safetyml.cli.common import fail

if TYPE_CHECKING:
    import pandas as pd

console = Console()
challenger_app = typer.Typer(
    help="Shadow and canary challengers: compare them with the champion.", no_args_is_help=True
)


def _fmt(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def replay(
    decision_id: str = typer.Argument(..., help="The decision_id returned by the service."),
    champion: bool = typer.Option(True, "--champion/--no-champion", help="Also score today's champion."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Replay a decision: the model version it names on its stored feature snapshot, and today's champion."""
    from safetyml.scoring.replay import replay_decision

    try:
        result = replay_decision(decision_id, with_champion=champion)
    except LookupError as exc:
        fail(str(exc))
    d, r, c = result.decision, result.replayed, result.champion
    if as_json:
        out = {
            "decision_id": decision_id,
            "score_identical": result.score_identical,
            "reasons_identical": result.reasons_identical,
            "recorded": {
                k: d.get(k)
                for k in ("model_version", "probability", "credit_score", "action", "policy_version")
            },
            "replayed": vars(r),
            "champion": None if c is None else vars(c),
            "champion_note": result.champion_note,
        }
        console.print_json(json.dumps(out, default=str))
        return
    table = Table(
        "", "recorded", f"replayed (v{r.model_version})", "today's champion", title=f"replay {decision_id}"
    )
    rows = [
        ("model", f"{d['model_name']} v{d['model_version']}", f"{r.model_name} v{r.model_version}"),
        ("probability", _fmt(d["probability"]), _fmt(r.probability)),
        ("risk tier", str(d.get("risk_tier")), r.risk_tier),
        ("action", str(d["action"]), r.action),
        ("policy", str(d["policy_version"]), r.policy_version),
    ]
    champion_cells = (
        [f"{c.model_name} v{c.model_version}", _fmt(c.probability), c.risk_tier, c.action, c.policy_version]
        if c is not None
        else ["-"] * 5
    )
    if d.get("credit_score") is not None:
        rows.append(("credit score", _fmt(d["credit_score"]), _fmt(r.credit_score)))
        champion_cells.append(_fmt(c.credit_score) if c is not None else "-")
    for row, cell in zip(rows, champion_cells, strict=True):
        table.add_row(*row, cell)
    console.print(table)
    same = "[green]identical[/]" if result.score_identical else "[red]DIFFERENT[/]"
    why = "[green]identical[/]" if result.reasons_identical else "[red]DIFFERENT[/]"
    console.print(f"score: {same}; reasons: {why}")
    if result.policy_changed:
        console.print(
            f"[yellow]note:[/] the market's policy changed since the decision ({d['policy_version']} → "
            f"{r.policy_version}); the replayed action uses today's policy"
        )
    reasons = Table("replayed reasons", "value", "log-odds", "today's champion reasons", title="reasons")
    theirs = c.reasons if c is not None else []
    for i in range(max(len(r.reasons), len(theirs))):
        mine = r.reasons[i] if i < len(r.reasons) else {}
        other = theirs[i] if i < len(theirs) else {}
        reasons.add_row(
            str(mine.get("text", "")),
            _fmt(mine.get("value", "")),
            f"{mine['contribution_logodds']:+.3f}" if mine else "",
            str(other.get("text", "")),
        )
    console.print(reasons)
    if result.champion_note:
        console.print(f"[yellow]note:[/] {result.champion_note}")


def appeal(
    decision_id: str = typer.Argument(..., help="The decision under appeal."),
    outcome: str = typer.Option(..., "--outcome", help="upheld or overturned."),
    reviewer: str = typer.Option(..., "--reviewer", help="Who reviewed it (must not be on the decision)."),
    note: str = typer.Option(..., "--note", help="Why: recorded with the outcome."),
) -> None:
    """Record the outcome of an appeal (append-only, next to the decision in the audit store)."""
    from safetyml.scoring.appeals import AppealError, record_appeal

    try:
        recorded = record_appeal(decision_id, outcome, reviewer, note)
    except AppealError as exc:
        fail(str(exc))
    console.print(
        f"recorded appeal {recorded.appeal_id}: decision {decision_id} {recorded.outcome} by "
        f"{recorded.reviewer} ({recorded.market} {recorded.task}, action {recorded.action}, "
        f"model v{recorded.model_version}, policy {recorded.policy_version})",
        highlight=False,
    )


def rate_table(rates: pd.DataFrame, by: str, title: str | None = None) -> Table:
    """One overturn-rate table (rows of :func:`safetyml.scoring.appeals.overturn_rates`)."""
    table = Table(by, "appeals", "overturned", "overturn rate", "95% CI (Wilson)", title=title or f"by {by}")
    for row in rates.itertuples(index=False):
        table.add_row(
            str(getattr(row, by)),
            str(row.appeals),
            str(row.overturned),
            f"{row.overturn_rate:.1%}",
            f"{row.ci_low:.1%} – {row.ci_high:.1%}",
        )
    return table


def appeals(
    by: list[str] = typer.Option(
        ["market", "task", "action", "reason_code"],
        "--by",
        help="Groupings: market, task, action, reason_code, policy_version, model_version (repeat).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the rates as JSON."),
) -> None:
    """List recorded appeals and the overturn rate by market, task, action and reason code."""
    from safetyml.scoring.appeals import AppealError, overturn_rates, read_appeals

    try:
        frame = read_appeals()
        rates = {b: overturn_rates(frame, b) for b in by}
    except AppealError as exc:
        fail(str(exc))
    if as_json:
        console.print_json(
            json.dumps({b: r.to_dict(orient="records") for b, r in rates.items()}, default=str)
        )
        return
    if frame.empty:
        console.print("no appeals recorded yet")
        return
    listing = Table(
        "decision",
        "outcome",
        "reviewer",
        "market",
        "task",
        "action",
        "model",
        "recorded",
        title="appeals (latest per decision)",
    )
    for row in frame.itertuples(index=False):
        listing.add_row(
            row.decision_id,
            row.outcome,
            row.reviewer,
            str(row.market),
            row.task,
            row.action,
            f"v{row.model_version}",
            row.recorded_at[:19],
        )
    console.print(listing)
    total = int((frame["outcome"] == "overturned").sum())
    console.print(
        f"{len(frame)} decisions appealed, {total} overturned ({total / len(frame):.1%})", highlight=False
    )
    for b, r in rates.items():
        console.print(rate_table(r, b))


def show_appeals(decision: dict[str, Any]) -> None:
    """For ``decisions show``: this decision's appeals and the overturn rates of its policy, model, market."""
    from safetyml.scoring.appeals import appeals_of, overturn_rates, read_appeals

    mine = appeals_of(decision["decision_id"])
    for a in mine:
        console.print(f"appeal {a.recorded_at[:19]}: {a.outcome} by {a.reviewer} — {a.note}", highlight=False)
    if not mine:
        console.print("no appeal recorded on this decision")
    frame = read_appeals()
    if frame.empty:
        return
    for by in ("policy_version", "model_version", "market"):
        rates = overturn_rates(frame, by)
        row = rates[rates[by] == (decision.get(by) or "(none)")]
        if len(row):
            console.print(
                rate_table(row, by, title=f"overturn rate of this decision's {by.replace('_', ' ')}")
            )


def print_statement(decision: dict[str, Any]) -> None:
    """For ``decisions show --statement``: the statement of reasons in the market's language."""
    from safetyml.scoring.statements import StatementError, statement_of_reasons

    try:
        statement = statement_of_reasons(decision)
    except StatementError as exc:
        fail(str(exc))
    console.print(f"[dim]statement of reasons ({statement.language})[/]")
    console.print(statement.render(), highlight=False, markup=False)


@challenger_app.command("report")
def challenger_report_command(
    task: str = typer.Option("incident_risk", "--task", help="incident_risk or merchant_credit."),
    model: str | None = typer.Option(None, "--model", help="Challenger NAME@ALIAS (default: most recorded)."),
    data: Path | None = typer.Option(None, "--data", help="Data folder with outcomes, to label decisions."),
    boot: int = typer.Option(1000, "--boot", min=100, help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    top: int = typer.Option(10, "--top", help="Swapped decisions to list."),
) -> None:
    """Challenger vs champion on the same live decisions: agreement by band, swap set, paired bootstrap."""
    from safetyml.scoring.challenger_report import ChallengerReportError, challenger_report

    try:
        report = challenger_report(task, spec=model, data_dir=data, n_boot=boot, seed=seed)
    except ChallengerReportError as exc:
        fail(str(exc))
    console.print(
        f"[bold]{report.spec}[/] ({task}): challenger v{', v'.join(report.challenger_versions)} vs champion "
        f"v{', v'.join(report.champion_versions)} on {len(report.pairs):,} decisions",
        highlight=False,
    )
    coverage = Table("market", "mode", "decisions", "with both scores", "missing", title="coverage")
    for row in report.coverage.itertuples(index=False):
        coverage.add_row(str(row.market), row.mode, str(row.decisions), str(row.paired), str(row.missing))
    console.print(coverage)
    columns = ("band (champion tier)", "decisions", "same action", "mean p champion", "mean p challenger")
    agreement = Table(*columns, "mean |Δp|", title="agreement by score band")
    for row in report.agreement.itertuples(index=False):
        agreement.add_row(
            str(row[0]), str(row[1]), f"{row[2]:.1%}", f"{row[3]:.4f}", f"{row[4]:.4f}", f"{row[5]:.4f}"
        )
    console.print(agreement)
    swaps = Table("champion action", "challenger action", "decisions", title="swap set")
    for row in report.swaps.itertuples(index=False):
        swaps.add_row(str(row[0]), str(row[1]), str(row[2]))
    console.print(swaps)
    pairs = report.pairs
    changed = pairs[pairs["action_champion"] != pairs["action_challenger"]]
    changed = changed.assign(gap=(changed["p_challenger"] - changed["p_champion"]).abs()).nlargest(top, "gap")
    for row in changed.itertuples(index=False):
        console.print(
            f"  {row.decision_id}  {row.market}  {row.action_champion} → {row.action_challenger}  "
            f"p {row.p_champion:.4f} → {row.p_challenger:.4f}",
            highlight=False,
            soft_wrap=True,
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"labels: {report.label_note}", highlight=False)
    if report.bootstrap is not None:
        verdict = "[green]passes[/]" if report.gate else "[red]fails[/]"
        console.print(
            f"promotion gate {verdict}: {report.bootstrap.describe(report.margin)}", highlight=False
        )


def register(decisions_app: typer.Typer, app: typer.Typer) -> None:
    decisions_app.command("replay")(replay)
    decisions_app.command("appeal")(appeal)
    decisions_app.command("appeals")(appeals)
    app.add_typer(challenger_app, name="challenger")
