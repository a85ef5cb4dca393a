"""Monitoring and early warning: stability (PSI/CSI), maturing performance, nowcast, alert rules, report.

Modules with one job each: :mod:`~safetyml.monitoring.config` (YAML per market), :mod:`.stability`,
:mod:`.reference` (the profile stored with the model run), :mod:`.performance`, :mod:`.nowcast`,
:mod:`.detectors` (pure series → signals), :mod:`.rules`, :mod:`.indicators` (KPI series),
:mod:`.alerts` (state in the audit SQLite store), :mod:`.report` (HTML + Parquet) and :mod:`.run`
(one evaluation of everything, for cron). Names load their module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safetyml._lazy import lazy_getattr

if TYPE_CHECKING:
    from safetyml.monitoring.alerts import acknowledge, list_alerts
    from safetyml.monitoring.config import MonitoringConfig, load_configs
    from safetyml.monitoring.run import monitor, run_monitoring

_NAMES = {
    "MonitoringConfig": "config",
    "load_configs": "config",
    "monitor": "run",
    "run_monitoring": "run",
    "acknowledge": "alerts",
    "list_alerts": "alerts",
}
__all__ = ["MonitoringConfig", "acknowledge", "list_alerts", "load_configs", "monitor", "run_monitoring"]

__getattr__ = lazy_getattr(__name__, _NAMES)
