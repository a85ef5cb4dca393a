"""Appeals: the outcome of a human review of a decision, recorded append-only next to the audit log.

A rider or merchant may contest a decision (the EU DSA's internal complaint procedure; adverse-action
practice in credit). A reviewer looks at the decision (``safetyml decisions show`` / ``replay``) and
records ``upheld`` or ``overturned`` with a note. Outcomes live in the ``appeals`` table of the same store
as the decisions (``audit.sqlite``, or PostgreSQL); triggers refuse any UPDATE or DELETE, so the table is
append-only like the decisions. A decision may be reviewed again (a second instance); the latest outcome
counts for the overturn rates, and each new reviewer must differ from everyone already on the decision.
With the decisions on PostgreSQL (``SAFETYML_AUDIT_URL``) the appeals table is in that database, beside
them, and triggers refuse UPDATE, DELETE and TRUNCATE there too (:mod:`safetyml.scoring.side_tables`).

Overturn rates per market, task, action, reason code, policy version and model version are what policy
teams learn from (and what monitoring reads: :func:`overturn_rates`); each comes with a Wilson interval
(statsmodels), since a rate of 2 out of 3 says little.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from safetyml.errors import SafetymlError
from safetyml.scoring.side_tables import SideSchema, SideTableError, SideTables, append_only_postgres

if TYPE_CHECKING:
    import pandas as pd

Outcome = Literal["upheld", "overturned"]
OUTCOMES: tuple[str, ...] = ("upheld", "overturned")
# the groupings of the overturn rates (columns of :func:`read_appeals`; reason_code is one row per reason)
RATE_BY: tuple[str, ...] = ("market", "task", "action", "reason_code", "policy_version", "model_version")

_TABLE = """
CREATE TABLE IF NOT EXISTS appeals (
    appeal_id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('upheld', 'overturned')),
    reviewer TEXT NOT NULL CHECK (length(trim(reviewer)) > 0),
    note TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    task TEXT NOT NULL,
    market TEXT,
    action TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    model_name TEXT,
    model_version TEXT NOT NULL,
    reason_codes TEXT NOT NULL{seq}
);
CREATE INDEX IF NOT EXISTS appeals_decision ON appeals (decision_id);
"""
_APPEND_ONLY = "appeals are append-only: record a new appeal instead"
_SCHEMA = SideSchema(
    "appeals",
    sqlite=_TABLE.format(seq="")
    + f"""
CREATE TRIGGER IF NOT EXISTS appeals_no_update BEFORE UPDATE ON appeals
BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS appeals_no_delete BEFORE DELETE ON appeals
BEGIN SELECT RAISE(ABORT, 'appeals are append-only: nothing is deleted'); END;
""",
    # PostgreSQL has no rowid: ``seq`` keeps the order of recording for appeals in the same microsecond
    postgres=_TABLE.format(seq=",\n    seq BIGSERIAL") + append_only_postgres("appeals", _APPEND_ONLY),
)
_COLUMNS = (
    "appeal_id",
    "decision_id",
    "outcome",
    "reviewer",
    "note",
    "recorded_at",
    "task",
    "market",
    "action",
    "policy_version",
    "model_name",
    "model_version",
    "reason_codes",
)


class AppealError(SafetymlError, ValueError):
    """An appeal that cannot be recorded (unknown decision, bad outcome, reviewer on the decision)."""


@dataclass(frozen=True)
class Appeal:
    """One recorded review outcome, with the decision fields the overturn rates group by."""

    appeal_id: str
    decision_id: str
    outcome: str
    reviewer: str
    note: str
    recorded_at: str
    task: str
    market: str | None
    action: str
    policy_version: str
    model_name: str | None
    model_version: str
    reason_codes: list[str]


def _connect(path: Path | None) -> SideTables:
    try:
        return SideTables(path, _SCHEMA)
    except SideTableError as exc:  # e.g. PostgreSQL unreachable: the commands say so, no traceback
        raise AppealError(str(exc)) from None


def _order(tables: SideTables) -> str:
    """Recording order: time, then insertion (SQLite's rowid, PostgreSQL's seq); byte order of the text."""
    return ' ORDER BY recorded_at COLLATE "C", seq' if tables.postgres else " ORDER BY recorded_at, rowid"


def _norm(person: str) -> str:
    return " ".join(str(person).split()).casefold()


def people_on(decision: dict[str, Any], earlier: list[Appeal]) -> dict[str, str]:
    """Everyone recorded on a decision, normalised -> where: its subjects (rider, merchant) and the
    reviewers of earlier appeals. A reviewer must be none of them."""
    found: dict[str, str] = {}
    request = decision.get("request") or {}
    for key in ("rider_id", "merchant_id"):
        if request.get(key):
            found[_norm(request[key])] = f"the decision's {key}"
    for part in str(decision.get("subject_id") or "").split("/"):
        if part:
            found.setdefault(_norm(part), "the decision's subject_id")
    for appeal in earlier:
        found[_norm(appeal.reviewer)] = f"the reviewer of appeal {appeal.appeal_id} ({appeal.outcome})"
    return found


def appeals_of(decision_id: str, path: Path | None = None) -> list[Appeal]:
    """The appeals recorded on one decision, oldest first."""
    with _connect(path) as tables:
        query = f"SELECT {', '.join(_COLUMNS)} FROM appeals WHERE decision_id = ?" + _order(tables)
        rows = tables.rows(query, (decision_id,))
    return [_appeal(row) for row in rows]


def _appeal(row: tuple[Any, ...]) -> Appeal:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["reason_codes"] = json.loads(values["reason_codes"])
    return Appeal(**values)


def record_appeal(
    decision_id: str,
    outcome: str,
    reviewer: str,
    note: str,
    path: Path | None = None,
    now: datetime | None = None,
) -> Appeal:
    """Record the outcome of a review of ``decision_id`` (append-only) and return it.

    Refused with :class:`AppealError` when the decision is not in the audit log, the outcome is not
    ``upheld``/``overturned``, the reviewer or note is empty, or the reviewer is someone already recorded on
    the decision (its subject, or the reviewer of an earlier appeal of it).
    """
    from safetyml.scoring.audit import default_path, get_decision

    store = Path(path) if path is not None else default_path()
    if outcome not in OUTCOMES:
        raise AppealError(f"--outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if not str(reviewer).strip():
        raise AppealError("--reviewer is required: who reviewed the appeal")
    if not str(note).strip():
        raise AppealError("--note is required: why the decision is upheld or overturned")
    decision = get_decision(decision_id, store)
    if decision is None:
        with _connect(store) as tables:
            where = tables.shown()
        raise AppealError(f"no decision {decision_id!r} in the audit log {where}")
    earlier = appeals_of(decision_id, store)
    clash = people_on(decision, earlier).get(_norm(reviewer))
    if clash is not None:
        raise AppealError(
            f"reviewer {reviewer!r} is already recorded on decision {decision_id} as {clash}; "
            "an appeal must be reviewed by someone else"
        )
    appeal = Appeal(
        appeal_id=str(uuid.uuid4()),
        decision_id=decision_id,
        outcome=outcome,
        reviewer=str(reviewer).strip(),
        note=str(note).strip(),
        recorded_at=(now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds"),
        task=str(decision["task"]),
        market=decision.get("market"),
        action=str(decision["action"]),
        policy_version=str(decision["policy_version"]),
        model_name=decision.get("model_name"),
        model_version=str(decision["model_version"]),
        reason_codes=[str(r.get("group") or r.get("feature")) for r in decision.get("reasons") or []],
    )
    row = asdict(appeal)
    row["reason_codes"] = json.dumps(appeal.reason_codes)
    with _connect(store) as tables, tables.transaction() as cursor:
        cursor.execute(
            f"INSERT INTO appeals ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
            tuple(row[c] for c in _COLUMNS),
        )
    return appeal


def read_appeals(path: Path | None = None, latest_only: bool = True) -> pd.DataFrame:
    """Every appeal (``latest_only``: the latest per decision, the outcome that stands), oldest first."""
    import pandas as pd

    with _connect(path) as tables:
        rows = tables.rows(f"SELECT {', '.join(_COLUMNS)} FROM appeals" + _order(tables))
    frame = pd.DataFrame.from_records(rows, columns=list(_COLUMNS))
    frame["reason_codes"] = [json.loads(v) for v in frame["reason_codes"]]
    if latest_only and len(frame):
        frame = frame.drop_duplicates("decision_id", keep="last").reset_index(drop=True)
    return frame


def overturn_rates(appeals: pd.DataFrame, by: str, alpha: float = 0.05) -> pd.DataFrame:
    """Appeals, overturned and the overturn rate with a Wilson ``1 - alpha`` interval per value of ``by``.

    ``by`` is one of :data:`RATE_BY`; for ``reason_code`` an appeal counts once for each reason code its
    decision gave. Sorted by the number of appeals, largest first.
    """
    import pandas as pd
    from statsmodels.stats.proportion import proportion_confint

    if by not in RATE_BY:
        raise AppealError(f"overturn rates by {by!r}: expected one of {', '.join(RATE_BY)}")
    columns = [by, "appeals", "overturned", "overturn_rate", "ci_low", "ci_high"]
    if appeals.empty:
        return pd.DataFrame(columns=columns)
    frame = appeals.assign(overturned=(appeals["outcome"] == "overturned").astype(int))
    if by == "reason_code":
        frame = (
            frame.assign(reason_code=frame["reason_codes"])
            .explode("reason_code")
            .dropna(subset=["reason_code"])
        )
    frame[by] = frame[by].fillna("(none)")
    out = (
        frame.groupby(by, sort=False)
        .agg(appeals=("overturned", "size"), overturned=("overturned", "sum"))
        .reset_index()
    )
    out["overturn_rate"] = out["overturned"] / out["appeals"]
    low, high = proportion_confint(out["overturned"], out["appeals"], alpha=alpha, method="wilson")
    out["ci_low"], out["ci_high"] = low, high
    return out.sort_values(["appeals", by], ascending=[False, True]).reset_index(drop=True)[columns]


def all_overturn_rates(path: Path | None = None) -> dict[str, pd.DataFrame]:
    """The overturn rates by each of :data:`RATE_BY` (the table monitoring reads)."""
    appeals = read_appeals(path)
    return {by: overturn_rates(appeals, by) for by in RATE_BY}
