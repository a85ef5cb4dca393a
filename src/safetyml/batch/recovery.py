"""Truth recovery: how well flagged zones match the simulator's planted hot zones (strict cell matching)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def recovery(
    zones: pd.DataFrame, truth: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, float]:
    """How well flagged zones recover planted hot zones active in [start, end) — strict cell matching.

    A flagged cell is a true positive only if it *is* a planted cell active in the window (in its city);
    a flagged neighbour of a planted cell counts as a false positive. Recall is over planted cells; the
    cluster recall counts a planted cluster (connected planted cells of one kind) found if any of its
    cells is flagged. A cell is flagged if flagged in any band.
    """
    import h3

    active = truth[(truth["start"] < end) & (truth["end"] > start)]
    if "city" in zones.columns and len(zones):
        active = active[active["city"].isin(set(zones["city"]))]
    planted = set(zip(active["city"], active["h3"], strict=True))
    flagged_rows = zones[zones["flagged"].astype(bool)]
    flagged = set(zip(flagged_rows["city"], flagged_rows["h3"], strict=True))
    hit = planted & flagged
    near = {
        (c, z) for c, z in flagged if (c, z) in planted or any((c, n) in planted for n in h3.grid_disk(z, 1))
    }
    clusters = _clusters(active)
    found = [any(cell in flagged for cell in cluster) for cluster, _ in clusters]
    emerging = {
        (c, z)
        for c, z, k in zip(active["city"], active["h3"], active["kind"], strict=True)
        if k == "emerging"
    }
    return {
        "planted_cells": float(len(planted)),
        "flagged_cells": float(len(flagged)),
        "recall": len(hit) / len(planted) if planted else float("nan"),
        "precision": len(hit) / len(flagged) if flagged else float("nan"),
        "precision_within_1": len(near) / len(flagged) if flagged else float("nan"),
        "cluster_recall": float(np.mean(found)) if found else float("nan"),
        "emerging_recall": len(emerging & flagged) / len(emerging) if emerging else float("nan"),
        "emerging_clusters_found": float(
            sum(f for f, (_, kind) in zip(found, clusters, strict=True) if kind == "emerging")
        ),
    }


def _clusters(active: pd.DataFrame) -> list[tuple[set[tuple[str, str]], str]]:
    """Connected groups of planted cells (H3 adjacency, same city and kind)."""
    import h3

    out: list[tuple[set[tuple[str, str]], str]] = []
    for (city, kind), part in active.groupby(["city", "kind"], sort=True):
        todo = set(part["h3"])
        while todo:
            stack = [todo.pop()]
            cluster = set()
            while stack:
                cell = stack.pop()
                cluster.add((city, cell))
                for n in h3.grid_disk(cell, 1):
                    if n in todo:
                        todo.remove(n)
                        stack.append(n)
            out.append((cluster, kind))
    return out
