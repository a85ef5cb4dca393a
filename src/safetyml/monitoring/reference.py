"""The reference profile of a model: computed once from its test window, stored with its MLflow run.

The profile is written to ``SAFETYML_HOME/monitoring/reference/<model>-v<version>.json`` and attached
to the model's training run as the artifact ``monitoring/reference_profile.json``; later runs read the
local copy (or fetch the artifact) instead of recomputing it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from safetyml.monitoring.stability import ReferenceProfile, build_profile

log = logging.getLogger(__name__)

ARTIFACT_DIR = "monitoring"
ARTIFACT_FILE = "reference_profile.json"


def cache_path(model_name: str, version: str) -> Path:
    from safetyml import paths

    return paths.home() / "monitoring" / "reference" / f"{model_name}-v{version}.json"


def reference_window(model: Any, as_of: pd.Series) -> tuple[np.ndarray, dict[str, str]]:
    """Rows of the model's test window (from its split metadata), and the window; empty if unknown."""
    split = (getattr(model, "metadata", None) or {}).get("split") or {}
    start, end = split.get("test_start"), split.get("test_end")
    if not start or not end:
        return np.zeros(len(as_of), dtype=bool), {}
    lo = pd.Timestamp(start)
    hi = pd.Timestamp(end)
    lo = lo.tz_localize("UTC") if lo.tzinfo is None else lo
    hi = hi.tz_localize("UTC") if hi.tzinfo is None else hi
    hi_exclusive = hi + pd.Timedelta(days=1) if hi == hi.normalize() else hi + pd.Timedelta(microseconds=1)
    t = pd.to_datetime(as_of, utc=True)
    mask = ((t >= lo) & (t < hi_exclusive)).to_numpy()
    return mask, {"start": lo.isoformat(), "end": hi.isoformat(), "source": "model test window"}


def _fetch_artifact(run_id: str, dst: Path) -> bool:
    try:
        from safetyml import tracking

        fetch = getattr(tracking, "download_artifact", None)
        if fetch is None:
            return False
        got = fetch(run_id, f"{ARTIFACT_DIR}/{ARTIFACT_FILE}", dst.parent)
        if got and Path(got).exists():
            Path(got).replace(dst) if Path(got) != dst else None
            return True
    except Exception as exc:  # noqa: BLE001 - an absent artifact just means "compute it"
        log.debug("no stored reference profile in run %s: %s", run_id, exc)
    return False


def get_or_build(
    model: Any,
    frame: pd.DataFrame,
    score: np.ndarray,
    model_name: str = "adhoc",
    version: str = "0",
    run_id: str | None = None,
    bins: int = 10,
    fallback_days: int = 28,
) -> tuple[ReferenceProfile, str]:
    """The model's reference profile and where it came from (``cached``, ``run artifact`` or ``built``).

    Built from the frame rows in the model's test window; if the frame does not reach it (for example
    a model trained on older data), from the first ``fallback_days`` of the frame, and the profile says so.
    """
    path = cache_path(model_name, version)
    if path.exists():
        return ReferenceProfile.load(path), "cached"
    if run_id and _fetch_artifact(run_id, path):
        return ReferenceProfile.load(path), "run artifact"
    mask, window = reference_window(model, frame["as_of"])
    if mask.sum() < 100:
        t = pd.to_datetime(frame["as_of"], utc=True)
        end = t.min() + pd.Timedelta(days=fallback_days)
        mask = (t < end).to_numpy()
        window = {
            "start": t.min().isoformat(),
            "end": end.isoformat(),
            "source": f"first {fallback_days} days of the monitored data (test window not in the data)",
        }
    profile = build_profile(
        frame.loc[mask],
        list(model.features),
        score=np.asarray(score)[mask],
        bins=bins,
        task=getattr(model, "task", ""),
        window=window,
        model={"name": model_name, "version": str(version), "run_id": run_id or ""},
    )
    profile.save(path)
    if run_id and window.get("source") == "model test window":
        try:
            from safetyml import tracking

            staged = path.parent / ARTIFACT_FILE
            staged.write_text(profile.to_json(), encoding="utf-8")
            tracking.log_artifacts(run_id, [staged], ARTIFACT_DIR)
            staged.unlink()
        except Exception as exc:  # noqa: BLE001 - monitoring goes on with the local copy
            log.warning("could not attach the reference profile to run %s: %s", run_id, exc)
    return profile, "built"
