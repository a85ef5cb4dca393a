"""The explanation latency budget at training time: a model whose one-row score + reasons is too slow is
refit shallower.

Serving explains every score with exact TreeSHAP, whose cost grows with trees × leaves × depth² (see
docs/explanations.md). Validation chooses the depth cap among the search space's candidates; this module
then measures what the chosen model costs on the serving path (one row as a dict → TreeSHAP → calibrated
score → top-3 reasons), as the calling thread's CPU time so a busy machine does not inflate it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

# Depth caps the latency check can always fall back to (TreeSHAP cost shrinks with depth squared).
FALLBACK_DEPTHS = (8, 6, 4, 3)


def explanation_p50_ms(model: Any, X: pd.DataFrame, fs: Any = None, rows: int = 150, seed: int = 0) -> float:
    """Median CPU milliseconds of one row's calibrated score plus top-3 reason codes (the serving path)."""
    from safetyml.explain.probability import probability_scale
    from safetyml.explain.reasons import reason_codes
    from safetyml.explain.shap_values import explain_logodds

    if len(X) == 0:
        return float("nan")
    pick = np.random.default_rng(seed).choice(len(X), size=min(rows, len(X)), replace=False)
    columns = {name: X[name].to_numpy(dtype=object) for name in model.features}
    records = [{name: columns[name][i] for name in model.features} for i in pick]

    def one(record: dict[str, Any]) -> None:
        contributions = explain_logodds(model, record)
        probability_scale(model, contributions)
        if fs is not None:
            reason_codes(model, record, fs, k=3, contributions=contributions)

    for record in records[:10]:  # warm the reason plan and category lookups
        one(record)
    cpu = []
    for record in records:
        start = time.thread_time()
        one(record)
        cpu.append(time.thread_time() - start)
    return float(np.median(cpu) * 1e3)


def depth_candidates(config: Any) -> list[int]:
    """Depth caps the latency check may fall back to, deepest first: the search space's ``max_depth``
    choices (what validation chose among) and, below them, :data:`FALLBACK_DEPTHS`."""
    spec = config.tuning.search_space.get("max_depth")
    values = set(FALLBACK_DEPTHS)
    if spec is not None and spec.type == "categorical":
        values |= {int(c) for c in spec.choices if int(c) > 0}
    elif spec is not None:
        values |= set(range(max(int(spec.low), 1), int(spec.high) + 1))
    return sorted(values, reverse=True)


def shallower(depth: int | None, candidates: list[int]) -> int | None:
    """The next cap below ``depth`` (None or -1: no cap yet), or None when there is none."""
    below = [d for d in candidates if depth is None or depth <= 0 or d < depth]
    return max(below) if below else None


__all__ = ["FALLBACK_DEPTHS", "depth_candidates", "explanation_p50_ms", "shallower"]
