"""The two scoring tasks, named once for the whole package."""

from __future__ import annotations

from typing import Literal, get_args

Task = Literal["incident_risk", "merchant_credit"]
"""A scoring task: ``incident_risk`` scores a trip at dispatch; ``merchant_credit``, a merchant."""

TASKS: tuple[Task, ...] = get_args(Task)
INCIDENT_RISK: Task = "incident_risk"
MERCHANT_CREDIT: Task = "merchant_credit"

__all__ = ["INCIDENT_RISK", "MERCHANT_CREDIT", "TASKS", "Task"]
