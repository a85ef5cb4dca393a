"""Promotion: move the ``champion`` alias to the challenger only if it is not worse on the latest test window.

Both versions are scored on the same rows (the test window of the current data, split as the training
config says) with the task's primary metric (PR AUC for incident risk, ROC AUC for merchant credit).
The challenger wins unless it is worse than the champion by more than ``promotion.margin``. The
decision, the figures and the reason are written as tags on the challenger's model version; ``force``
overrides the rule and needs a reason, which is recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetyml.training.config import load_training_config

if TYPE_CHECKING:
    from safetyml.tables import Tables


@dataclass
class PromotionDecision:
    task: str
    name: str
    challenger_version: str
    champion_version: str | None
    promoted: bool
    reason: str
    metric: str
    challenger_value: float | None = None
    champion_value: float | None = None
    margin: float = 0.0
    forced: bool = False
    test_rows: int = 0

    def render(self) -> str:
        verdict = "promoted" if self.promoted else "kept the champion"
        return f"{self.name}: {verdict} (challenger v{self.challenger_version}): {self.reason}"

    def __str__(self) -> str:
        return self.render()

    def tags(self) -> dict[str, Any]:
        return {
            "promotion.decision": "promoted" if self.promoted else "rejected",
            "promotion.reason": self.reason,
            "promotion.metric": self.metric,
            "promotion.challenger_value": self.challenger_value,
            "promotion.champion_value": self.champion_value,
            "promotion.champion_version": self.champion_version,
            "promotion.margin": self.margin,
            "promotion.forced": self.forced,
            "promotion.test_rows": self.test_rows,
            "promotion.at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def decide(challenger_value: float, champion_value: float, margin: float) -> bool:
    """The rule: promote unless the challenger is worse by more than the margin."""
    return challenger_value >= champion_value - margin


def promote_first_if_no_champion(task: str, name: str, version: str) -> bool:
    """Make ``version`` champion when the registered model has none yet (the first model)."""
    from safetyml import tracking

    if tracking.get_alias(name, "champion") is not None:
        return False
    config = load_training_config(task)
    decision = PromotionDecision(
        task=task,
        name=name,
        challenger_version=version,
        champion_version=None,
        promoted=True,
        reason="first model of this registered model: becomes champion",
        metric=config.primary_metric,
    )
    tracking.set_alias(name, "champion", version)
    tracking.set_version_tags(name, version, {k: v for k, v in decision.tags().items() if v is not None})
    return True


def score_on_latest_test(
    task: str, models: dict[str, Any], data_dir: Path, tables: Tables | None = None
) -> tuple[dict[str, float], int]:
    """The primary metric of each model on the latest test window of ``data_dir``."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.tables import load_tables
    from safetyml.training.data import build_task_frame, usable_rows
    from safetyml.training.metrics import classification_metrics
    from safetyml.training.split import time_split

    config = load_training_config(task)
    fs = load_feature_set()
    frame, _ = usable_rows(build_task_frame(tables or load_tables(data_dir), fs, config), config)
    split = time_split(frame["as_of"], frame["label"].to_numpy(), config.split)
    test = frame.loc[split.mask("test")].reset_index(drop=True)
    y = test["label"].to_numpy()
    out = {
        key: classification_metrics(y, model.predict_proba(test), config.review_capacity)[
            config.primary_metric
        ]
        for key, model in models.items()
    }
    return out, len(test)


def promote(
    task: str,
    data_dir: Path | None = None,
    force: bool = False,
    reason: str | None = None,
    tables: Tables | None = None,
) -> PromotionDecision:
    """Compare challenger with champion and move ``champion`` if the rule (or ``force``) allows."""
    from safetyml import tracking

    config = load_training_config(task)
    name = config.registered_model_name
    challenger = tracking.get_alias(name, "challenger")
    if challenger is None:
        raise LookupError(
            f"registered model {name!r} has no challenger; train one with `safetyml train {task}`"
        )
    if force and not reason:
        raise ValueError("--force needs --reason TEXT: the reason is recorded on the model version")
    champion = tracking.get_alias(name, "champion")
    metric = config.primary_metric
    margin = config.promotion.margin
    if champion is None:
        decision = PromotionDecision(
            task,
            name,
            challenger.version,
            None,
            True,
            reason or "first model of this registered model: becomes champion",
            metric,
            margin=margin,
            forced=force,
        )
    elif champion.version == challenger.version:
        return PromotionDecision(
            task,
            name,
            challenger.version,
            champion.version,
            False,
            "challenger is already the champion",
            metric,
            margin=margin,
        )
    else:
        if data_dir is None:
            data_dir = Path(tracking.run_info(challenger.run_id)["params"]["data_dir"])
        models = {
            "challenger": tracking.load_model_version(name, challenger.version),
            "champion": tracking.load_model_version(name, champion.version),
        }
        values, rows = score_on_latest_test(task, models, Path(data_dir), tables)
        ok = decide(values["challenger"], values["champion"], margin)
        comparison = (
            f"test {metric} challenger v{challenger.version} {values['challenger']:.4f} vs champion "
            f"v{champion.version} {values['champion']:.4f} (margin {margin}) on {rows} rows of {data_dir}"
        )
        if force:
            promoted, why = True, f"forced: {reason} ({comparison})"
        elif ok:
            promoted, why = True, f"not worse than champion by more than the margin: {comparison}"
        else:
            promoted, why = False, f"worse than champion by more than the margin: {comparison}"
        decision = PromotionDecision(
            task,
            name,
            challenger.version,
            champion.version,
            promoted,
            why,
            metric,
            values["challenger"],
            values["champion"],
            margin,
            force,
            rows,
        )
    if decision.promoted:
        tracking.set_alias(name, "champion", challenger.version)
        if champion is not None:
            tracking.set_version_tags(name, champion.version, {"replaced_by": challenger.version})
    tracking.set_version_tags(
        name, challenger.version, {k: v for k, v in decision.tags().items() if v is not None}
    )
    return decision
