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
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safetyml import envvars
from safetyml.errors import SafetymlError, validation_message
from safetyml.tasks import TASKS, Task

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


class Policy(BaseModel):
    """One market's policy file."""

    model_config = ConfigDict(extra="forbid")

    market: str = Field(pattern=r"^([A-Z]{2}|default)$")
    version: str = Field(min_length=1)
    description: str = ""
    tasks: dict[Task, TaskPolicy]

    @model_validator(mode="after")
    def _all_tasks(self) -> Policy:
        missing = [task for task in TASKS if task not in self.tasks]
        if missing:
            raise ValueError(f"tasks: missing policy for {', '.join(missing)}")
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
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"invalid policy file {path}: expected a mapping with market, version, tasks")
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(validation_message(f"invalid policy file {path}", exc)) from None
    if policy.market != path.stem:
        raise PolicyError(
            f"invalid policy file {path}: field market is {policy.market!r} "
            f"but the file is named for {path.stem!r}"
        )
    return policy


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
