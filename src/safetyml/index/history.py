"""History: every past period recomputed with the *current* method, in one command.

As the JRC's INFORM index does, a method change is applied back to earlier periods so trends stay
comparable. ``recompute_history`` computes every period in the data with the current configuration and
writes ``history.parquet`` (one row per period × unit, with the method fingerprint). When the folder
already holds a history made by another method, ``revisions.parquet`` lists, per period and unit, the
old and new score and rank, so a method change is visible rather than silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from safetyml.index.build import IndexResult, build_index
from safetyml.index.config import IndexConfig

HISTORY_FILE = "history.parquet"
REVISIONS_FILE = "revisions.parquet"
KEYS = ["level", "period", "city", "h3"]


@dataclass
class History:
    result: IndexResult
    history: pd.DataFrame
    revisions: pd.DataFrame | None
    path: Path


def revisions(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Old vs new score and rank per (level, period, city, h3) present in both histories."""
    cols = ["score", "rank", "method"]
    merged = old[KEYS + cols].merge(new[KEYS + cols], on=KEYS, suffixes=("_old", "_new"), how="inner")
    merged["score_revision"] = merged["score_new"] - merged["score_old"]
    merged["rank_revision"] = merged["rank_new"] - merged["rank_old"]
    return merged


def recompute_history(
    data: Path,
    out: Path,
    config: IndexConfig | Path | None = None,
    replications: int | None = None,
    zones: bool | None = None,
    progress: bool = True,
    **options,
) -> History:
    """Recompute every period of ``data`` with the current method into ``out/history.parquet``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / HISTORY_FILE
    previous = pd.read_parquet(path) if path.exists() else None
    result = build_index(
        data, out, config, replications=replications, zones=zones, progress=progress, **options
    )
    table = result.index.assign(computed_at=pd.Timestamp.now(tz="UTC"))
    changed = None
    if previous is not None and set(previous["method"]) != {result.config.fingerprint()}:
        changed = revisions(previous, table)
        changed.to_parquet(out / REVISIONS_FILE, index=False)
    table.to_parquet(path, index=False)
    return History(result, table, changed, path)
