"""SHAP explanations of risk scores: exact TreeSHAP, probability points, reason codes, cohort views, reports.

Import the submodules directly (``safetyml.explain.reasons``, ``.cohorts``, ``.report``); this package
file stays empty so ``import safetyml.explain.reasons`` in the serving hot path loads nothing heavy.
"""
