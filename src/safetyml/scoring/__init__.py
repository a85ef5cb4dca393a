"""Scoring: the plain-Python scorer and what a service around it needs, none of it tied to BentoML.

Modules: ``scorer`` (Scorer, its errors), ``model_inputs`` (fast LightGBM matrices, credit points,
markets), ``schemas`` (request/response models), ``policies`` (per-market decision policies), ``audit``
(the decision log), ``examples`` (example requests), ``auth`` (bearer-token middleware), ``reload`` (loading
and reloading across workers), ``http`` (errors → HTTP status), ``startup`` (service start-up, metadata).
Names are imported lazily so ``import safetyml.scoring.policies`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safetyml._lazy import lazy_getattr

if TYPE_CHECKING:
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.policies import PolicySet, load_policies
    from safetyml.scoring.scorer import AsOfError, NotReadyError, ReloadError, Scorer

_NAMES = {
    "Scorer": "scorer",
    "NotReadyError": "scorer",
    "AsOfError": "scorer",
    "ReloadError": "scorer",
    "AuditLog": "audit",
    "PolicySet": "policies",
    "load_policies": "policies",
}
__all__ = ["AsOfError", "AuditLog", "NotReadyError", "PolicySet", "ReloadError", "Scorer", "load_policies"]

__getattr__ = lazy_getattr(__name__, _NAMES)
