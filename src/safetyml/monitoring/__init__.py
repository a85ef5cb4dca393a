"""Monitoring and early warning: stability (PSI/CSI), maturing performance, nowcast, alert rules, report.

Modules with one job each: :mod:`~safetyml.monitoring.config` (YAML per market), :mod:`.stability`,
:mod:`.performance`, :mod:`.nowcast`, :mod:`.detectors` (pure series → signals), :mod:`.alerts` (state in
the audit SQLite store), :mod:`.indicators` (KPI series from tables and decisions), :mod:`.report`
(HTML + Parquet) and :mod:`.run` (one evaluation of everything, for cron).
"""
