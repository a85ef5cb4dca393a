"""Decision policies: per-market YAML files that map score bands of each task to actions.

Policy teams edit ``serving/policies/<MARKET>.yaml`` (plus ``default.yaml`` for markets without their own
file), never code. Each file has a version that is written into every decision, so a decision can be
replayed against the exact policy that made it. An invalid file stops start-up with a message naming the
file and the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from safetyml import envvars
from safetyml.errors import SafetymlError, read_yaml_mapping, validated
from safetyml.tasks import MERCHANT_CREDIT, TASKS, Task

log = logging.getLogger(__name__)

Action = Literal["allow", "monitor", "step_up_verification", "manual_review", "block"]
ACTIONS: tuple[str, ...] = ("allow", "monitor", "step_up_verification", "manual_review", "block")
DEFAULT_MARKET = "default"
POLICIES_ENV = envvars.POLICIES


class PolicyError(SafetymlError, ValueError):
    """A policy file is missing or invalid; the message names the file and the field."""


class Band(BaseModel):
    """Scores with ``probability < upper`` (and >= the previous band's upper) get this tier and action."""

    model_config = ConfigDict(extra="forbid")

    upper: float = Field(gt=0.0, le=1.0, description="exclusive upper bound of the probability (1.0 = top)")
    tier: str = Field(min_length=1, description="risk tier name shown in responses")
    action: Action


class TaskPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bands: list[Band] = Field(min_length=1)

    @field_validator("bands")
    @classmethod
    def _increasing_and_complete(cls, bands: list[Band]) -> list[Band]:
        uppers = [band.upper for band in bands]
        if any(b <= a for a, b in zip(uppers, uppers[1:], strict=False)):
            raise ValueError(f"band 'upper' values must strictly increase, got {uppers}")
        if uppers[-1] != 1.0:
            raise ValueError(
                f"the last band must have upper: 1.0 so every probability has an action, got {uppers[-1]}"
            )
        return bands


MAX_PRINCIPAL_REASONS = 4  # adverse-action practice: at most four specific principal reasons
_STATEMENT_FIELDS = {"decision_id": "d", "decided_at": "t", "days": 30}


class Statement(BaseModel):
    """What a rider or merchant is told: the action, the principal reasons and how to appeal, in one language.

    ``reasons`` maps a prefix of a reason's feature group (``rider_incidents``, ``dropoff_``) to a phrase;
    the longest matching prefix wins and ``""`` is the catch-all. Left empty, the reasons' own sentences
    (English, from features/*.yaml) are used.
    """

    model_config = ConfigDict(extra="forbid")

    language: str = Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$", description="BCP 47 tag, e.g. pt-BR")
    heading: str = Field(min_length=1, description="first line; may use {decision_id} and {decided_at}")
    actions: dict[Task, dict[Action, str]]
    reasons_intro: str = Field(min_length=1)
    reasons: dict[str, str] = Field(default_factory=dict)
    appeal: str = Field(min_length=1, description="how to appeal; may use {decision_id} and {days}")
    appeal_days: int = Field(default=30, ge=1, le=365)

    @model_validator(mode="after")
    def _complete(self) -> Statement:
        for task in TASKS:
            missing = [a for a in ACTIONS if a not in self.actions.get(task, {})]  # type: ignore[call-overload]
            if missing:
                raise ValueError(f"statement.actions.{task}: no text for {', '.join(missing)}")
        for where, text in [("heading", self.heading), ("appeal", self.appeal), *self.reasons.items()]:
            try:
                text.format(**_STATEMENT_FIELDS)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"statement {where!r}: placeholder {exc} is not one of {', '.join(_STATEMENT_FIELDS)}"
                ) from None
        return self

    def reason_text(self, reason: dict) -> str:
        """The phrase for one reason code: its group's longest matching prefix, else its own sentence."""
        if not self.reasons:
            return str(reason.get("text") or reason.get("feature"))
        group = str(reason.get("group") or reason.get("feature") or "")
        best = max((p for p in self.reasons if group.startswith(p)), key=len, default=None)
        return self.reasons[best] if best is not None else str(reason.get("text") or group)


Mode = Literal["shadow", "canary"]


class Challenger(BaseModel):
    """A model run beside the champion in this market: ``shadow`` (scored off the response path, never
    served) or ``canary`` (serves a sticky ``share`` of requests, chosen by a hash of ``sticky_key``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        pattern=r"^[A-Za-z0-9_.\-]+@[A-Za-z0-9_.\-]+$",
        description="<registered model>@<alias or version>, e.g. safetyml-incident-risk@challenger",
    )
    mode: Mode
    share: float = Field(default=1.0, gt=0.0, le=1.0, description="share of requests (canary: served by it)")
    sticky_key: Literal["rider_id", "merchant_id"] = "rider_id"

    @property
    def registered_name(self) -> str:
        return self.model.split("@", 1)[0]

    @property
    def alias(self) -> str:
        return self.model.split("@", 1)[1]


class Policy(BaseModel):
    """One market's policy file."""

    model_config = ConfigDict(extra="forbid")

    market: str = Field(pattern=r"^([A-Z]{2}|default)$")
    version: str = Field(min_length=1)
    description: str = ""
    tasks: dict[Task, TaskPolicy]
    statement: Statement | None = None
    challengers: list[Challenger] = Field(default_factory=list)

    @model_validator(mode="after")
    def _all_tasks(self) -> Policy:
        missing = [task for task in TASKS if task not in self.tasks]
        if missing:
            raise ValueError(f"tasks: missing policy for {', '.join(missing)}")
        seen = set()
        for i, challenger in enumerate(self.challengers):
            if challenger.model in seen:
                raise ValueError(f"challengers[{i}].model: {challenger.model} is listed twice")
            seen.add(challenger.model)
        return self

    def decide(self, task: str, probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised: (tier, action) arrays for an array of probabilities."""
        bands = self.tasks[task].bands  # type: ignore[index]
        uppers = np.array([band.upper for band in bands[:-1]], dtype="float64")
        idx = np.searchsorted(uppers, np.asarray(probability, dtype="float64"), side="right")
        tiers = np.array([band.tier for band in bands], dtype=object)
        actions = np.array([band.action for band in bands], dtype=object)
        return tiers[idx], actions[idx]

    def decide_one(self, task: str, probability: float) -> tuple[str, str]:
        """Scalar version of :meth:`decide` for the online path (no numpy allocation)."""
        for band in self.tasks[task].bands:  # type: ignore[index]
            if probability < band.upper:
                return band.tier, band.action
        last = self.tasks[task].bands[-1]  # type: ignore[index]
        return last.tier, last.action

    @property
    def label(self) -> str:
        """``<market>@<version>``: how the policy is named in responses and the audit log."""
        return f"{self.market}@{self.version}"


def load_policy(path: Path) -> Policy:
    """Read and validate one policy file; the market must match the file name (``BR.yaml`` → ``BR``)."""
    path = Path(path)
    raw = read_yaml_mapping(
        path,
        "policy",
        PolicyError,
        f"invalid policy file {path}: expected a mapping with market, version, tasks",
    )
    policy = validated(Policy, raw, f"invalid policy file {path}", PolicyError)
    if policy.market != path.stem:
        raise PolicyError(
            f"invalid policy file {path}: field market is {policy.market!r} "
            f"but the file is named for {path.stem!r}"
        )
    _check_challengers(policy, path)
    return policy


def task_of_model(registered_name: str) -> Task | None:
    """The task whose training config registers models under ``registered_name`` (None: no task does)."""
    from safetyml.training.config import load_training_config

    for task in TASKS:
        if load_training_config(task).registered_model_name == registered_name:
            return task
    return None


def _check_challengers(policy: Policy, path: Path) -> None:
    """Each challenger names a task's registered model, a key that task's requests carry, and the canary
    shares of a task leave room for the champion."""
    canary: dict[str, float] = {}
    for i, challenger in enumerate(policy.challengers):
        task = task_of_model(challenger.registered_name)
        where = f"invalid policy file {path}: challengers[{i}]"
        if task is None:
            raise PolicyError(
                f"{where}.model: {challenger.registered_name!r} is not the registered model of any task "
                "(registered_model_name in training/<task>.yaml)"
            )
        if task == MERCHANT_CREDIT and challenger.sticky_key != "merchant_id":
            raise PolicyError(f"{where}.sticky_key: {task} requests carry merchant_id only")
        if challenger.mode == "canary":
            canary[task] = canary.get(task, 0.0) + challenger.share
            if canary[task] >= 1.0:
                raise PolicyError(f"{where}.share: canary shares of {task} add up to {canary[task]:g} (< 1)")


@dataclass(frozen=True)
class PolicySet:
    """All markets' policies; markets without a file fall back to ``default``."""

    policies: dict[str, Policy]

    def for_market(self, market: str | None) -> Policy:
        if market and market in self.policies:
            return self.policies[market]
        return self.policies[DEFAULT_MARKET]

    def for_city(self, city: str | None) -> Policy:
        """The policy of the city's market (unknown or missing city → default)."""
        return self.for_market(market_of_city(city))

    def versions(self) -> dict[str, str]:
        return {market: policy.version for market, policy in sorted(self.policies.items())}


def market_of_city(city: str | None) -> str | None:
    """The city's market, or None when the city is missing or unknown (so the default policy applies)."""
    if not city:
        return None
    from safetyml import cities

    try:
        return cities.market_of(city)
    except cities.UnknownCityError:
        return None


def load_policies(folder: Path | None = None) -> PolicySet:
    """Load every ``*.yaml`` in the policies folder; ``default.yaml`` is required.

    The folder is ``folder`` if given, else ``$SAFETYML_POLICIES``, else ``serving/policies`` of the project.
    """
    import os

    from safetyml import paths

    if folder is None:
        folder = Path(os.environ[POLICIES_ENV]) if os.environ.get(POLICIES_ENV) else paths.policies_dir()
    folder = Path(folder)
    if not folder.is_dir():
        raise PolicyError(f"policies folder {folder} does not exist")
    files = sorted(folder.glob("*.yaml"))
    policies = {}
    for path in files:
        policy = load_policy(path)
        policies[policy.market] = policy
    if DEFAULT_MARKET not in policies:
        raise PolicyError(
            f"policies folder {folder} has no default.yaml (used for markets without their own file)"
        )
    log.debug("loaded policies %s from %s", {m: p.version for m, p in policies.items()}, folder)
    return PolicySet(policies)
