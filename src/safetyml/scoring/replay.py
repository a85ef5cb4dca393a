"""Replay a recorded decision: the same model version on the stored feature snapshot, and today's champion.

An appeal reviewer must be able to show that the score a rider or merchant got is the one the model gives:
replay loads the exact registered version named on the decision (``tracking.load_model_version``) and
scores the feature values the audit log kept, through the same code as the live path (LightGBM matrix with
the booster's own category codes, TreeSHAP contributions, :func:`~safetyml.explain.reasons.reason_codes`),
so the probability comes back identical, not merely close, and so do the reasons (their contributions to
the last bit, except after a many-row batch: see :data:`CONTRIBUTION_RTOL`). It also shows what today's
champion would decide on the same snapshot, when the snapshot holds every feature that champion needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from safetyml.scoring.model_inputs import fast_matrix, predict_matrix
from safetyml.tasks import MERCHANT_CREDIT

if TYPE_CHECKING:
    from safetyml.features.definitions import FeatureSet
    from safetyml.model import RiskModel
    from safetyml.scoring.policies import PolicySet

REASON_KEYS = (
    "feature",
    "group",
    "value",
    "contribution_logodds",
    "contribution_probability",
    "direction",
    "text",
)
CONTRIBUTIONS = ("contribution_logodds", "contribution_probability")
# A reason's contribution is its group's sum of TreeSHAP values, a matrix product over the rows scored
# together (explain.reasons: phi @ onehot). BLAS sums a many-row product in another order than a one-row
# one, so a merchant scored in a batch of 500 and replayed alone can differ in the last bits (seen: 185 of
# 191,204 decisions of the medium load run, all merchants). The reasons are the same (features, groups,
# values, order, sentences); their contributions agree to this relative tolerance. ``reasons_bitwise``
# says whether they are also equal to the last bit (always, for trips: the live path groups one row).
CONTRIBUTION_RTOL = 1e-9


@dataclass
class Verdict:
    """One model's answer on a snapshot: probability, [credit score], tier, action, reasons."""

    model_name: str
    model_version: str
    probability: float
    risk_tier: str
    action: str
    policy_version: str
    reasons: list[dict[str, Any]] = field(default_factory=list)
    credit_score: float | None = None


@dataclass
class ReplayResult:
    """A decision next to its replay (same model version) and to today's champion on the same snapshot."""

    decision: dict[str, Any]
    replayed: Verdict
    champion: Verdict | None
    champion_note: str = ""

    @property
    def score_identical(self) -> bool:
        recorded = self.decision["probability"]
        return recorded == self.replayed.probability and (
            self.decision.get("credit_score") is None
            or self.decision["credit_score"] == self.replayed.credit_score
        )

    @property
    def reasons_requested(self) -> bool:
        """Whether the caller asked for reasons (``explain``); if not, none were recorded to compare."""
        return bool((self.decision.get("request") or {}).get("explain", True))

    @property
    def reasons_identical(self) -> bool:
        """The replayed reasons are the recorded ones: same features, groups, values, directions and
        sentences in the same order, contributions equal to :data:`CONTRIBUTION_RTOL` (vacuously true when
        none were requested)."""
        recorded = self.decision.get("reasons") or []
        if not self.reasons_requested:
            return not recorded
        replayed = self.replayed.reasons
        if _reason_view(recorded, exact=False) != _reason_view(replayed, exact=False):
            return False
        return all(
            np.isclose(float(a[k]), float(b[k]), rtol=CONTRIBUTION_RTOL, atol=0.0)
            for a, b in zip(recorded, replayed, strict=True)
            for k in CONTRIBUTIONS
        )

    @property
    def reasons_bitwise(self) -> bool:
        """The replayed reasons equal the recorded ones to the last bit of every contribution."""
        recorded = _reason_view(self.decision.get("reasons") or [])
        if not self.reasons_requested:
            return not recorded
        return recorded == _reason_view(self.replayed.reasons)

    @property
    def action_identical(self) -> bool:
        return self.decision["action"] == self.replayed.action

    @property
    def policy_changed(self) -> bool:
        return self.decision["policy_version"] != self.replayed.policy_version


def _reason_view(reasons: list[dict[str, Any]], exact: bool = True) -> list[tuple[Any, ...]]:
    keys = REASON_KEYS if exact else tuple(k for k in REASON_KEYS if k not in CONTRIBUTIONS)
    return [tuple(r.get(key) for key in keys) for r in reasons]


class Replayer:
    """Replays decisions; keeps each loaded model version (and today's champions) for the next one."""

    def __init__(self, policies: PolicySet | None = None, feature_set: FeatureSet | None = None):
        from safetyml.credit_score import credit_scale
        from safetyml.features.definitions import load_feature_set
        from safetyml.scoring.policies import load_policies

        self.policies = policies if policies is not None else load_policies()
        self.feature_set = feature_set if feature_set is not None else load_feature_set()
        self.credit = credit_scale()
        self._models: dict[tuple[str, str], RiskModel] = {}
        self._champions: dict[str, tuple[RiskModel, str, str] | str] = {}

    def model(self, name: str, version: str) -> RiskModel:
        """The registered version ``name``/``version`` (downloaded once into SAFETYML_HOME/models)."""
        from safetyml import tracking

        key = (name, str(version))
        if key not in self._models:
            try:
                self._models[key] = tracking.load_model_version(name, str(version))
            except Exception as exc:
                raise LookupError(
                    f"cannot load registered model {name!r} version {version} named on the decision: {exc}"
                ) from exc
        return self._models[key]

    def verdict(
        self,
        model: RiskModel,
        name: str,
        version: str,
        task: str,
        market: str | None,
        features: dict[str, Any],
    ) -> Verdict:
        """Score one stored snapshot exactly as the live path does (fast matrix, TreeSHAP, reason codes)."""
        from safetyml.credit_score import credit_of
        from safetyml.explain.reasons import reason_codes
        from safetyml.scoring.scorer import reason_dicts

        row = {name_: features.get(name_) for name_ in model.features}
        matrix = fast_matrix(model, [row])
        probability = float(predict_matrix(model, matrix)[0])
        contributions = np.asarray(
            model.booster.predict(matrix, pred_contrib=True, num_threads=1), dtype="float64"
        )
        reasons = reason_dicts(
            reason_codes(model, row, self.feature_set, k=3, contributions=contributions)[0]
        )
        policy = self.policies.for_market(market)
        tier, action = policy.decide_one(task, probability)
        credit = None
        if task == MERCHANT_CREDIT:
            points, _ = credit_of(np.array([probability]), self.credit)
            credit = float(points[0])
        return Verdict(name, str(version), probability, tier, action, policy.label, reasons, credit)

    def champion(self, task: str) -> tuple[RiskModel, str, str] | str:
        """Today's champion of ``task`` as (model, name, version), or why it cannot be loaded."""
        from safetyml import tracking

        if task not in self._champions:
            try:
                model, ref = tracking.load_model(task, "champion")
                self._champions[task] = (model, ref.name, str(ref.version))
            except Exception as exc:  # no registry, no champion: the replay itself still stands
                self._champions[task] = f"today's champion cannot be loaded: {exc}"
        return self._champions[task]

    def replay(self, decision: dict[str, Any], with_champion: bool = True) -> ReplayResult:
        """Replay one decision record (as :func:`safetyml.scoring.audit.get_decision` returns it)."""
        task, market = str(decision["task"]), decision.get("market")
        features = decision.get("features") or {}
        name, version = str(decision["model_name"]), str(decision["model_version"])
        replayed = self.verdict(self.model(name, version), name, version, task, market, features)
        champion, note = None, ""
        if with_champion:
            found = self.champion(task)
            if isinstance(found, str):
                note = found
            else:
                model, champ_name, champ_version = found
                missing = [f for f in model.features if f not in features]
                if missing:
                    shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
                    note = (
                        f"today's champion v{champ_version} needs {len(missing)} features the snapshot "
                        f"does not hold ({shown}); not scored"
                    )
                else:
                    champion = self.verdict(model, champ_name, champ_version, task, market, features)
        return ReplayResult(decision, replayed, champion, note)


def replay_decision(decision_id: str, path: Any = None, with_champion: bool = True) -> ReplayResult:
    """Replay the decision ``decision_id`` of the audit log at ``path`` (default: SAFETYML_HOME's)."""
    from safetyml.scoring.audit import default_path, get_decision

    decision = get_decision(decision_id, path)
    if decision is None:
        raise LookupError(f"no decision {decision_id!r} in the audit log {path or default_path()}")
    return Replayer().replay(decision, with_champion=with_champion)
