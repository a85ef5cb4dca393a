"""SHAP explanations of risk scores: exact TreeSHAP, probability points, reason codes, cohort views, reports.

Import the submodules directly (``safetyml.explain.reasons``, ``.cohorts``, ``.report``); this package
file loads nothing heavy, so ``import safetyml.explain.reasons`` in the serving hot path stays light.
The package itself is callable: ``safetyml.explain(model, X)`` is :func:`explain`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safetyml._callable import make_callable

if TYPE_CHECKING:
    import pandas as pd

    from safetyml.features.definitions import FeatureSet
    from safetyml.model import RiskModel

__all__ = ["explain"]


def explain(
    model: RiskModel,
    X: pd.DataFrame,
    fs: FeatureSet | None = None,
    k: int = 3,
    include_negative: bool = False,
) -> pd.DataFrame:
    """The top ``k`` reason codes of each row of ``X`` as a long table (row, rank, direction, feature, …).

    ``fs`` defaults to the project's feature definitions (for the reason sentences' descriptions).
    """
    from safetyml.explain.reasons import reason_table
    from safetyml.features.definitions import load_feature_set

    return reason_table(model, X, fs if fs is not None else load_feature_set(), k, include_negative)


make_callable(__name__)
