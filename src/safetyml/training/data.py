"""Training data: the task's frame from the feature pipeline, the selected features and the usable rows."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from safetyml.tasks import INCIDENT_RISK, MERCHANT_CREDIT
from safetyml.training.config import TrainingConfig

if TYPE_CHECKING:
    from safetyml.features.definitions import FeatureDefinition, FeatureSet
    from safetyml.tables import Tables

KEY_COLUMNS = {INCIDENT_RISK: ["trip_id"], MERCHANT_CREDIT: ["merchant_id", "as_of"]}


def data_fingerprint(data_dir: Path) -> str:
    """SHA-256 over the contract tables' files (names and bytes) of a data folder."""
    from safetyml.contract import TABLE_ORDER
    from safetyml.tables import table_files, table_path

    digest = hashlib.sha256()
    for name in TABLE_ORDER:
        path = table_path(Path(data_dir), name)
        if path is None:
            continue
        for file in table_files(path):  # the file, or each part of a folder of Parquet parts
            digest.update(file.relative_to(path.parent).as_posix().encode())
            with file.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def select_features(fs: FeatureSet, config: TrainingConfig) -> list[FeatureDefinition]:
    """The task's feature definitions minus the configured exclusions (or only the included ones)."""
    chosen = list(fs.for_task(config.task))
    sel = config.features
    known = {f.name for f in chosen}
    unknown = [n for n in (*sel.exclude, *(sel.include or [])) if n not in known]
    if unknown:
        raise ValueError(
            f"training config {config.task}: feature(s) {', '.join(unknown)} are not {config.task} features"
        )
    if sel.include is not None:
        chosen = [f for f in chosen if f.name in set(sel.include)]
    chosen = [
        f
        for f in chosen
        if f.name not in sel.exclude
        and f.group not in sel.exclude_groups
        and f.entity not in sel.exclude_entities
        and getattr(f, "window", None) not in sel.exclude_windows
    ]
    if not chosen:
        raise ValueError(f"training config {config.task}: the feature selection leaves no feature")
    return chosen


def build_task_frame(tables: Tables, fs: FeatureSet, config: TrainingConfig) -> pd.DataFrame:
    """The task's training frame from the feature pipeline, label settings from the config."""
    from safetyml.features.frames import build_frame

    if config.task == INCIDENT_RISK:
        return build_frame(INCIDENT_RISK, tables, fs, label_min_severity=config.label.min_severity)
    return build_frame(
        MERCHANT_CREDIT,
        tables,
        fs,
        horizon_days=config.label.horizon_days,
        min_history_days=config.label.min_history_days,
    )


def usable_rows(frame: pd.DataFrame, config: TrainingConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows a model may learn from and be judged on, in time order; the counts say what was left out."""
    notes: dict[str, int] = {"rows_in_frame": len(frame)}
    out = frame
    if "label_mature" in out.columns:
        mature = out["label_mature"].fillna(False).astype(bool).to_numpy()
        notes["rows_label_immature_dropped"] = int((~mature).sum())
        out = out.loc[mature]
    if "insufficient_history" in out.columns:
        young = out["insufficient_history"].fillna(False).astype(bool).to_numpy()
        notes["rows_insufficient_history"] = int(young.sum())
        if not config.label.train_on_insufficient_history:
            notes["rows_insufficient_history_dropped"] = int(young.sum())
            out = out.loc[~young]
    keys = [k for k in KEY_COLUMNS[config.task] if k in out.columns and k != "as_of"]
    out = out.sort_values(["as_of", *keys], kind="stable").reset_index(drop=True)
    out["label"] = out["label"].astype("int64")
    notes["rows_used"] = len(out)
    return out, notes


__all__ = ["KEY_COLUMNS", "build_task_frame", "data_fingerprint", "select_features", "usable_rows"]
