"""The plain-Python scorer: champion models + online store + policies → decisions.

It knows nothing of BentoML: the service in ``serving/`` is a thin shell around it, batch scoring calls
:meth:`Scorer.score_features`, and a notebook can use it directly. Models live in one immutable bundle
that :meth:`Scorer.reload` replaces with a single assignment, so a request in flight finishes with the
models it started with.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from safetyml.credit_score import credit_of, credit_scale
from safetyml.errors import SafetymlError
from safetyml.model import RiskModel
from safetyml.scoring.model_inputs import fast_matrix, market_codes, predict_frame, predict_matrix
from safetyml.scoring.policies import PolicySet, load_policies, market_of_city
from safetyml.scoring.schemas import (
    MerchantScoreRequest,
    MerchantScoreResponse,
    ReasonCode,
    TripScoreRequest,
    TripScoreResponse,
)
from safetyml.tasks import INCIDENT_RISK, MERCHANT_CREDIT, TASKS, Task
from safetyml.values import optional_text, utc_timestamp

if TYPE_CHECKING:
    from safetyml.features.definitions import FeatureSet
    from safetyml.features.online import OnlineStore
    from safetyml.features.online_rows import TripPlan
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.challengers import ChallengerSet, LoadedChallenger, ShadowLog
    from safetyml.scoring.policies import Policy
    from safetyml.training.config import CreditScoreConfig

log = logging.getLogger(__name__)

TRIP_TASK, MERCHANT_TASK = INCIDENT_RISK, MERCHANT_CREDIT
_REQUEST_COLUMNS = (
    "rider_id",
    "merchant_id",
    "requested_at",
    "pickup_lat",
    "pickup_lng",
    "dropoff_lat",
    "dropoff_lng",
    "distance_km",
    "order_value",
    "payment_method",
    "rain",
    "city",
)


class NotReadyError(SafetymlError, RuntimeError):
    """The scorer lacks a model or the online store needed for the request."""


class AsOfError(SafetymlError, ValueError):
    """A merchant score was asked for before the online store's as_of (the store cannot go back in time)."""

    field = "as_of"


class ReloadError(SafetymlError, RuntimeError):
    """Loading the models under an alias failed; the previous models stay in use."""

    field = "alias"


@dataclass(frozen=True)
class ModelBundle:
    """The models in use, with their registry names and versions; replaced as a whole on reload."""

    models: dict[str, RiskModel]
    versions: dict[str, str]
    names: dict[str, str]
    challengers: ChallengerSet | None = None  # shadow/canary models of the policy files


def utc_now() -> datetime:
    """The current time in UTC (decision and load times)."""
    return datetime.now(UTC)


def _reason_dict(reason: Any) -> dict[str, Any]:
    if isinstance(reason, dict):
        out = dict(reason)
    elif hasattr(reason, "model_dump"):
        out = reason.model_dump()
    elif is_dataclass(reason):  # a shallow copy: asdict's deep copy costs ~30 µs a reason on the hot path
        out = {f.name: getattr(reason, f.name) for f in fields(reason)}
    else:  # a NamedTuple or plain object
        out = dict(reason._asdict()) if hasattr(reason, "_asdict") else dict(vars(reason))
    value = out.get("value")
    if isinstance(value, np.generic):
        out["value"] = value.item()
    if isinstance(out.get("value"), float) and not np.isfinite(out["value"]):
        out["value"] = None
    if isinstance(out.get("value"), pd.Timestamp):
        out["value"] = out["value"].isoformat()
    return out


def reason_dicts(reasons: Any) -> list[dict[str, Any]]:
    """Reason codes as the plain dicts that responses and the audit log hold (replay builds the same)."""
    return [_reason_dict(r) for r in reasons]


def _decision_fields(
    bundle: ModelBundle,
    task: Task,
    policy: Policy,
    decided_at: datetime,
    reasons: list[dict],
    cold_start: bool,
) -> dict[str, Any]:
    """The fields every decision response carries: its id and time, the model and policy behind it."""
    return {
        "decision_id": str(uuid.uuid4()),
        "decided_at": decided_at,
        "reasons": [ReasonCode.model_validate(r) for r in reasons],
        "model_name": bundle.names[task],
        "model_version": bundle.versions[task],
        "policy_version": policy.label,
        "market": policy.market,
        "cold_start": cold_start,
    }


class Scorer:
    """Scores trips and merchants with the champion models, the online store and the market policies."""

    def __init__(
        self,
        models: dict[str, RiskModel],
        store: OnlineStore | None = None,
        policies: PolicySet | None = None,
        feature_set: FeatureSet | None = None,
        model_versions: dict[str, str] | None = None,
        audit: AuditLog | None = None,
        model_names: dict[str, str] | None = None,
        credit: CreditScoreConfig | None = None,
        challengers: ChallengerSet | None = None,
        shadow: ShadowLog | None = None,
    ):
        """``credit``: the credit-score scale (default: the project's, from training/merchant_credit.yaml).
        ``challengers``: shadow/canary models (:mod:`safetyml.scoring.challengers`); ``shadow`` writes the
        champion's side of canary decisions off the response path (default: beside the audit log when a
        policy declares a canary). With shadow challengers and an audit log, the shadow process's cursor
        is started here, before this scorer's first decision (:func:`safetyml.scoring.shadow.init_cursor`);
        ``shadow_error`` says why when it cannot be (PostgreSQL)."""
        self._bundle = ModelBundle(
            models=dict(models),
            versions={task: str((model_versions or {}).get(task, "local")) for task in models},
            names={task: (model_names or {}).get(task, task) for task in models},
            challengers=challengers,
        )
        self.store = store
        self.policies = policies if policies is not None else load_policies()
        modes = {c.mode for policy in self.policies.policies.values() for c in policy.challengers}
        if shadow is None and "canary" in modes and audit is not None:
            from safetyml.scoring.challengers import ShadowLog

            shadow = ShadowLog(audit.path)
        self.shadow = shadow
        self.shadow_error: str | None = None
        if "shadow" in modes and audit is not None:
            from safetyml.scoring.shadow import ShadowRunnerError, init_cursor

            try:
                audit.flush()  # decisions this process made before: stored first, so before the cursor
                init_cursor(audit.path)
            except ShadowRunnerError as exc:
                self.shadow_error = str(exc)
                log.error("shadow challengers declared but cannot be scored: %s", exc)
        self._feature_set = feature_set
        self.audit = audit
        self._reload_lock = threading.Lock()
        self._plan: TripPlan | None = None  # built on first use
        self.credit = credit if credit is not None else credit_scale()

    # ------------------------------------------------------------------------------- construction
    @classmethod
    def from_registry(
        cls,
        alias: str = "champion",
        store_path: Path | None = None,
        policies_dir: Path | None = None,
        audit: AuditLog | None = None,
    ) -> Scorer:
        """Load each task's model under ``alias`` from MLflow, open the online store, load the policies."""
        from safetyml.features.definitions import load_feature_set
        from safetyml.features.online import OnlineStore

        policies = load_policies(policies_dir)  # first: an invalid policy file must stop start-up early
        bundle = _load_bundle(alias, policies)
        store = OnlineStore.open(store_path)
        scorer = cls(
            bundle.models,
            store=store,
            policies=policies,
            feature_set=load_feature_set(),
            model_versions=bundle.versions,
            audit=audit,
            model_names=bundle.names,
            challengers=bundle.challengers,
        )
        return scorer

    def reload(self, alias: str = "champion") -> dict[str, str]:
        """Load ``alias`` of each task afresh and swap it in atomically; returns the new versions."""
        with self._reload_lock:
            new = _load_bundle(alias, self.policies)
            old = self._bundle
            self._bundle = new  # one reference assignment: requests in flight keep their bundle
        log.info("models reloaded (%s): %s -> %s", alias, old.versions, new.versions)
        return dict(new.versions)

    # ------------------------------------------------------------------------------- properties
    @property
    def bundle(self) -> ModelBundle:
        return self._bundle

    @property
    def model_versions(self) -> dict[str, str]:
        return dict(self._bundle.versions)

    @property
    def feature_set(self) -> FeatureSet:
        if self._feature_set is None:
            from safetyml.features.definitions import load_feature_set

            self._feature_set = load_feature_set()
        return self._feature_set

    def ready(self) -> tuple[bool, str]:
        """Whether every task has a model and the online store is open, and if not, why."""
        missing = [task for task in TASKS if task not in self._bundle.models]
        if missing:
            return False, f"no model loaded for {', '.join(missing)}"
        if self.store is None:
            return False, "online store not open"
        try:
            rows = dict(self.store.metadata().get("rows") or {})
        except Exception as exc:  # a store file being replaced: not ready yet
            return False, f"online store unreadable: {exc}"
        empty = [entity for entity in ("rider", "merchant") if not rows.get(entity)]
        if empty:
            return False, (
                f"online store {getattr(self.store, 'path', '')} has no {' or '.join(empty)} vectors; "
                "run `safetyml features materialize`"
            )
        return True, "ready"

    def metadata(self) -> dict[str, Any]:
        """Model versions, feature definitions version, online store state and policy versions."""
        store_meta: dict[str, Any] = {}
        if self.store is not None:
            try:
                store_meta = {
                    k: (str(v) if not isinstance(v, int | float | str) else v)
                    for k, v in dict(self.store.metadata()).items()
                }
            except Exception as exc:  # the store file may be mid-rewrite; metadata must still answer
                store_meta = {"error": str(exc)}
        fs_version = getattr(self._feature_set, "version", None) if self._feature_set is not None else None
        challengers = self._bundle.challengers
        return {
            "model_versions": dict(self._bundle.versions),
            "model_names": dict(self._bundle.names),
            "feature_definitions_version": None if fs_version is None else str(fs_version),
            "online_store": store_meta,
            "policy_versions": self.policies.versions(),
            "challengers": {} if challengers is None else challengers.versions(),
            **({"shadow_runner": shadow_status()} if self.declares_shadows() else {}),
        }

    def declares_shadows(self) -> bool:
        """Whether some market's policy runs a challenger in shadow mode (then a shadow runner must run)."""
        return any(c.mode == "shadow" for p in self.policies.policies.values() for c in p.challengers)

    def retry_challengers(self) -> bool:
        """Try again to load the challengers that failed (the worker's background loop calls this every
        few seconds); True if the loaded set changed. The swap is one reference assignment, like a reload."""
        with self._reload_lock:
            bundle = self._bundle
            if bundle.challengers is None or not bundle.challengers.errors:
                return False
            from dataclasses import replace

            from safetyml.scoring.challengers import load_challengers

            champions = {t: (bundle.names[t], bundle.versions[t]) for t in bundle.models}
            again = load_challengers(self.policies, champions, previous=bundle.challengers)
            self._bundle = replace(bundle, challengers=again)
        if set(again.loaded) != set(bundle.challengers.loaded):
            log.info("challengers loaded on retry: %s", again.versions())
            return True
        return False

    # ------------------------------------------------------------------------------- offline / batch
    def score_features(self, task: Task, X: pd.DataFrame, explain: bool = False, k: int = 3) -> pd.DataFrame:
        """Score a frame of model inputs (extra columns ignored), vectorised.

        Returns, indexed like ``X``: ``probability``; for merchant_credit also ``credit_score`` and
        ``grade``; ``risk_tier``, ``action`` and ``policy_version`` from the policy of each row's market
        (a ``market`` or ``city`` column if present, else the default policy); ``model_version``; and
        with ``explain=True`` a ``reasons`` column (a list of dicts per row). The probability is exactly
        ``model.predict_proba(X)``.
        """
        bundle = self._bundle
        return self._score_frame(bundle, task, X, explain=explain, k=k)

    def _score_frame(
        self,
        bundle: ModelBundle,
        task: Task,
        X: pd.DataFrame,
        explain: bool,
        k: int,
        markets: list[str | None] | None = None,
    ) -> pd.DataFrame:
        if task not in bundle.models:
            raise NotReadyError(
                f"no model loaded for task {task!r}; loaded: {', '.join(bundle.models) or 'none'}"
            )
        model = bundle.models[task]
        probability = predict_frame(model, X)
        out = pd.DataFrame({"probability": probability}, index=X.index)
        if task == MERCHANT_TASK:
            points, grades = credit_of(probability, self.credit)
            out["credit_score"] = points
            out["grade"] = grades
        codes, labels = market_codes(X, markets)
        tier = np.empty(len(X), dtype=object)
        action = np.empty(len(X), dtype=object)
        version = np.empty(len(X), dtype=object)
        for code, market in enumerate(labels):
            policy = self.policies.for_market(market)
            rows = codes == code
            tier[rows], action[rows] = policy.decide(task, probability[rows])
            version[rows] = policy.label
        out["risk_tier"] = tier
        out["action"] = action
        out["policy_version"] = version
        out["model_version"] = bundle.versions[task]
        if explain:
            out["reasons"] = self._reasons(model, X, k)
        return out

    def _reasons(self, model: RiskModel, X: pd.DataFrame, k: int) -> list[list[dict[str, Any]]]:
        from safetyml.explain.reasons import reason_codes

        return [[_reason_dict(r) for r in row] for row in reason_codes(model, X, self.feature_set, k=k)]

    # ------------------------------------------------------------------------------- online
    def trip_features(self, requests: list[TripScoreRequest]) -> pd.DataFrame:
        """Model inputs for trip requests: stored features by id + request-time features (offline code)."""
        from safetyml.features.frames import assemble_trip_features

        if self.store is None:
            raise NotReadyError("online store not open")
        rows = []
        for request in requests:
            row = request.model_dump(include=set(_REQUEST_COLUMNS))
            row["requested_at"] = pd.Timestamp(request.requested_at).tz_convert("UTC")
            rows.append(row)
        frame = pd.DataFrame(rows, columns=list(_REQUEST_COLUMNS))
        frame["requested_at"] = pd.to_datetime(frame["requested_at"], utc=True)
        frame["rain"] = frame["rain"].astype("boolean")
        with self.store.pinned():  # one store version for the whole request
            return assemble_trip_features(frame, self.store, self.feature_set)

    def score_trip(self, request: TripScoreRequest) -> TripScoreResponse:
        """Score one trip at dispatch time and record the decision."""
        return self.score_trips([request])[0]

    def score_trips(self, requests: list[TripScoreRequest]) -> list[TripScoreResponse]:
        """Score trips (the batch endpoint); one decision per trip, recorded in the audit log."""
        bundle = self._bundle
        model = bundle.models.get(TRIP_TASK)
        if model is None:
            raise NotReadyError(f"no model loaded for task {TRIP_TASK!r}")
        rows, cold, cities = self.trip_rows(requests)
        matrix = fast_matrix(model, rows)
        probability = predict_matrix(model, matrix)
        explain = [r.explain for r in requests]
        contributions = (
            np.asarray(model.booster.predict(matrix, pred_contrib=True, num_threads=1), dtype="float64")
            if any(explain)
            else None
        )
        decided_at = utc_now()
        responses = []
        challengers = bundle.challengers
        shadow_items: list[Any] = []
        for i, request in enumerate(requests):
            policy = self.policies.for_market(market_of_city(cities[i]))
            served, p_i = model, float(probability[i])
            contrib_i = contributions[i : i + 1] if contributions is not None else None
            entries = challengers.for_policy(policy, TRIP_TASK) if challengers else ()
            canary = None
            if entries:
                keys = {"rider_id": request.rider_id, "merchant_id": request.merchant_id}
                canary = _route(entries, TRIP_TASK, keys)[0]
                if canary is not None:  # this request's sticky key is in the canary's slice: it serves
                    served = canary.model
                    matrix_c = fast_matrix(served, [rows[i]])
                    p_i = float(predict_matrix(served, matrix_c)[0])
                    contrib_i = (
                        np.asarray(
                            served.booster.predict(matrix_c, pred_contrib=True, num_threads=1),
                            dtype="float64",
                        )
                        if explain[i]
                        else None
                    )
            tier, action = policy.decide_one(TRIP_TASK, p_i)
            reasons = self._row_reasons(served, rows[i], contrib_i) if explain[i] else []
            fields_ = _decision_fields(bundle, TRIP_TASK, policy, decided_at, reasons, cold[i])
            if canary is not None:
                fields_["model_name"], fields_["model_version"] = canary.name, canary.version
            response = TripScoreResponse(
                rider_id=request.rider_id,
                merchant_id=request.merchant_id,
                probability=p_i,
                risk_tier=tier,
                action=action,
                **fields_,
            )
            responses.append(response)
            # the snapshot also holds what the market's shadow challengers need (the shadow process)
            names = served.features
            if entries:
                names = challengers.snapshot_names(policy.market, TRIP_TASK, served)
            self._audit(
                response,
                subject_id=f"{request.rider_id}/{request.merchant_id}",
                probability=response.probability,
                features={name: rows[i][name] for name in names},
                reasons=reasons,
                request=request.model_dump(mode="json"),
            )
            if canary is not None and self.shadow is not None:  # the champion's side, already scored
                others = _champion_side(bundle, TRIP_TASK, canary, float(probability[i]), rows[i], served)
                shadow_items.append((i, response.decision_id, policy, [], others))
        if shadow_items:  # written off the response path by the worker's writer thread
            from safetyml.scoring.challengers import ShadowJob

            self.shadow.submit(ShadowJob(TRIP_TASK, rows, shadow_items))
        return responses

    def trip_rows(
        self, requests: list[TripScoreRequest]
    ) -> tuple[list[dict[str, Any]], list[bool], list[str | None]]:
        """The incident model's inputs as one dict per request, the cold-start flags and each trip's city.

        The real-time path (~1 ms a trip): :func:`safetyml.features.online_rows.assemble_trip_rows`, the
        single-row twin of the offline :func:`~safetyml.features.frames.assemble_trip_features`.
        """
        from safetyml.features.online_rows import TripPlan, assemble_trip_rows

        if self.store is None:
            raise NotReadyError("online store not open")
        fs = self.feature_set
        if self._plan is None or self._plan.fs_id != id(fs):
            self._plan = TripPlan.build(fs)
        prefetch = trip_lookups(requests, self._plan) if getattr(self.store, "prefetches", False) else ()
        with self.store.pinned(prefetch=prefetch):  # one store version for the whole request
            return assemble_trip_rows(requests, self.store, fs, self._plan)

    def _row_reasons(
        self, model: RiskModel, row: dict[str, Any], contributions: np.ndarray
    ) -> list[dict[str, Any]]:
        from safetyml.explain.reasons import reason_codes

        return reason_dicts(reason_codes(model, row, self.feature_set, k=3, contributions=contributions)[0])

    def score_merchant(self, request: MerchantScoreRequest) -> MerchantScoreResponse:
        """Score one merchant's probability of a credit event, with credit score, grade and action."""
        try:
            return self.score_merchants([request])[0]
        except AsOfError as exc:  # one request: its error needs no item index
            raise AsOfError(str(exc).replace("items[0].", "")) from None

    def score_merchants(self, requests: list[MerchantScoreRequest]) -> list[MerchantScoreResponse]:
        bundle = self._bundle
        X, as_of = self.merchant_features(requests)
        cities = [None if pd.isna(c) else str(c) for c in X["city"]] if "city" in X else [None] * len(X)
        markets = [market_of_city(c) for c in cities]
        explain = any(r.explain for r in requests)
        scored = self._score_frame(bundle, MERCHANT_TASK, X, explain=explain, k=3, markets=markets)
        model = bundle.models[MERCHANT_TASK]
        cold = _cold_start(X)
        decided_at = utc_now()
        responses = []
        challengers = bundle.challengers
        policies = [self.policies.for_market(m) for m in markets]
        routes = [
            _route(challengers.for_policy(p, MERCHANT_TASK), MERCHANT_TASK, {"merchant_id": r.merchant_id})
            if challengers and challengers.for_policy(p, MERCHANT_TASK)
            else None
            for p, r in zip(policies, requests, strict=True)
        ]
        served = {
            i: _canary_rows(self, route_[0], X, i, explain, markets)
            for i, route_ in enumerate(routes)
            if route_ and route_[0]
        }
        used = [served[i][2].model if i in served else model for i in range(len(requests))]
        names = [  # each snapshot also holds what its market's shadow challengers need (the shadow process)
            challengers.snapshot_names(p.market, MERCHANT_TASK, m) if route_ else m.features
            for p, route_, m in zip(policies, routes, used, strict=True)
        ]
        features = _records_by_names(X, names)
        shadow_items: list[Any] = []
        for i, request in enumerate(requests):
            policy = policies[i]
            row, row_i, canary = served.get(i, (scored, i, None))
            reasons = row["reasons"].iat[row_i] if explain and request.explain else []
            fields_ = _decision_fields(bundle, MERCHANT_TASK, policy, decided_at, reasons, cold[i])
            if canary is not None:
                fields_["model_name"], fields_["model_version"] = canary.name, canary.version
            response = MerchantScoreResponse(
                merchant_id=request.merchant_id,
                as_of=as_of,
                probability_of_default=float(row["probability"].iat[row_i]),
                credit_score=float(row["credit_score"].iat[row_i]),
                grade=str(row["grade"].iat[row_i]),
                risk_tier=str(row["risk_tier"].iat[row_i]),
                action=row["action"].iat[row_i],
                **fields_,
            )
            responses.append(response)
            self._audit(
                response,
                subject_id=request.merchant_id,
                probability=response.probability_of_default,
                features=features[i],
                reasons=reasons,
                request=request.model_dump(mode="json"),
                credit_score=response.credit_score,
                grade=response.grade,
            )
            if canary is not None and self.shadow is not None:  # the champion's side, already scored
                record = _feature_records(X.iloc[[i]], model.features)[0]
                p_champion = float(scored["probability"].iat[i])
                others = _champion_side(bundle, MERCHANT_TASK, canary, p_champion, record, used[i])
                shadow_items.append((i, response.decision_id, policy, [], others))
        if shadow_items:
            from safetyml.scoring.challengers import ShadowJob

            self.shadow.submit(ShadowJob(MERCHANT_TASK, X, shadow_items))
        return responses

    def merchant_features(self, requests: list[MerchantScoreRequest]) -> tuple[pd.DataFrame, datetime]:
        """Stored merchant features by id (cold-start values and ``cold_start`` when unknown), plus ``city``.

        The features are those of the online store's as_of, which is returned; a request's as_of may not be
        earlier than that (the store cannot go back in time).
        """
        from safetyml.features.frames import assemble_merchant_features

        if self.store is None:
            raise NotReadyError("online store not open")
        with self.store.pinned():  # as_of and every vector from one store version
            online_as_of = store_as_of(self.store)
            for i, request in enumerate(requests):
                if request.as_of is not None and online_as_of is not None and request.as_of < online_as_of:
                    raise AsOfError(
                        f"items[{i}].as_of: {request.as_of.isoformat()} is before the online store's as_of "
                        f"{online_as_of.isoformat()}; score earlier snapshots with batch scoring"
                    )
            fs = self.feature_set
            ids = [r.merchant_id for r in requests]
            X = assemble_merchant_features(ids, self.store, fs)
            X["city"] = [self._merchant_city(mid) for mid in ids]
        return X, online_as_of or utc_now()

    def _merchant_city(self, merchant_id: str) -> str | None:
        """The merchant's city from the online store (None when the merchant is unknown)."""
        row = self.store.get_one("merchant", merchant_id) if self.store is not None else None
        return optional_text((row or {}).get("city"))

    def _audit(
        self,
        response: Any,
        *,
        subject_id: str,
        probability: float,
        features: dict[str, Any],
        reasons: list[dict[str, Any]],
        request: dict[str, Any],
        credit_score: float | None = None,
        grade: str | None = None,
    ) -> None:
        if self.audit is None:
            return
        self.audit.record(
            {
                "decision_id": response.decision_id,
                "decided_at": response.decided_at,
                "task": response.task,
                "subject_id": subject_id,
                "market": response.market,
                "model_name": response.model_name,
                "model_version": response.model_version,
                "policy_version": response.policy_version,
                "probability": probability,
                "credit_score": credit_score,
                "grade": grade,
                "risk_tier": response.risk_tier,
                "action": response.action,
                "cold_start": response.cold_start,
                "features": features,
                "reasons": reasons,
                "request": request,
            }
        )


# ----------------------------------------------------------------------------------- helpers
def _load_bundle(alias: str, policies: PolicySet | None = None) -> ModelBundle:
    from safetyml import tracking

    models, versions, names = {}, {}, {}
    for task in TASKS:
        model, ref = tracking.load_model(task, alias)
        models[task] = model
        versions[task] = str(ref.version)
        names[task] = str(getattr(ref, "name", task))
    challengers = None
    if policies is not None and any(p.challengers for p in policies.policies.values()):
        from safetyml.scoring.challengers import load_challengers

        challengers = load_challengers(policies, champions={t: (names[t], versions[t]) for t in TASKS})
    return ModelBundle(models=models, versions=versions, names=names, challengers=challengers)


def shadow_status() -> dict[str, Any]:
    """The shadow runner's last status (what it loaded, its cursor and lag), or that none has run."""
    from safetyml.scoring.shadow import read_status, runner_running

    status = read_status() or {"error": "no shadow runner has written a status yet"}
    return {**status, "running": runner_running()}


def _route(entries: Any, task: str, keys: dict[str, str]) -> tuple[LoadedChallenger | None, list[Any]]:
    from safetyml.scoring.challengers import route

    return route(entries, task, keys)


def _canary_rows(
    scorer: Scorer,
    canary: LoadedChallenger,
    X: pd.DataFrame,
    i: int,
    explain: bool,
    markets: list[str | None],
) -> tuple[pd.DataFrame, int, LoadedChallenger]:
    """A merchant row scored by the canary challenger that serves it (same frame code as the champion)."""
    bundle = ModelBundle(
        {MERCHANT_TASK: canary.model}, {MERCHANT_TASK: canary.version}, {MERCHANT_TASK: canary.name}
    )
    frame = scorer._score_frame(
        bundle, MERCHANT_TASK, X.iloc[[i]], explain=explain, k=3, markets=[markets[i]]
    )
    return frame, 0, canary


def _champion_side(
    bundle: ModelBundle,
    task: Task,
    canary: LoadedChallenger | None,
    probability: float,
    row: dict[str, Any],
    served: RiskModel,
) -> list[tuple[Any, ...]]:
    """For a canary decision, the champion's (unserved) score to record beside it; else nothing."""
    if canary is None:
        return []
    from safetyml.scoring.challengers import ROLE_CHAMPION

    extra = {f: row.get(f) for f in bundle.models[task].features if f not in served.features}
    return [
        (ROLE_CHAMPION, "canary", canary.spec, bundle.names[task], bundle.versions[task], probability, extra)
    ]


def _cold_start(X: pd.DataFrame) -> list[bool]:
    if "cold_start" not in X.columns:
        return [False] * len(X)
    return [bool(v) for v in X["cold_start"].fillna(False)]


def _records_by_names(X: pd.DataFrame, names: list[list[str]]) -> list[dict[str, Any]]:
    """Row ``i``'s values of the features ``names[i]``, one frame conversion per distinct name list."""
    groups: dict[int, list[int]] = {}
    for i, columns in enumerate(names):
        groups.setdefault(id(columns), []).append(i)
    out: list[dict[str, Any]] = [{}] * len(X)
    for rows in groups.values():
        part = X if len(rows) == len(X) else X.iloc[rows]
        for i, record in zip(rows, _feature_records(part, names[rows[0]]), strict=True):
            out[i] = record
    return out


def _feature_records(X: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """The model inputs of each row as plain dicts, for the audit log."""
    sub = X.loc[:, [c for c in columns if c in X.columns]]
    records = sub.astype(object).where(sub.notna(), None).to_dict(orient="records")
    return records


def trip_lookups(requests: list[TripScoreRequest], plan: TripPlan) -> list[tuple[str, str]]:
    """The (entity, id) pairs :func:`~safetyml.features.online_rows.assemble_trip_rows` will look up, so a
    networked store (Redis) can fetch them in one round trip: rider, merchant, pair, pickup and drop-off
    zones (the city comes from the merchant; a store keeps that small entity in memory)."""
    from safetyml.features.definitions import pair_id
    from safetyml.features.zones import cell_of

    keys: list[tuple[str, str]] = []
    for r in requests:
        keys += [("rider", r.rider_id), ("merchant", r.merchant_id)]
        if plan.pairs:
            keys.append(("pair", pair_id(r.rider_id, r.merchant_id)))
        if plan.zones:
            for lat, lng in ((r.pickup_lat, r.pickup_lng), (r.dropoff_lat, r.dropoff_lng)):
                cell = cell_of(lat, lng)
                if cell is not None:
                    keys.append(("zone", cell))
    return keys


def store_as_of(store: OnlineStore) -> datetime | None:
    """The online store's as_of in UTC, or None when the store has no metadata yet."""
    try:
        value = dict(store.metadata()).get("as_of")
    except Exception:  # an empty store has no metadata yet
        return None
    if value is None:
        return None
    return utc_timestamp(value).to_pydatetime()
