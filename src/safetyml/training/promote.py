"""Promotion: move the ``champion`` alias to the challenger only if it is not worse than the champion.

The evidence is, in order of preference:

1. **shadow decisions**: when the challenger ran in shadow or canary beside this champion
   (:mod:`safetyml.scoring.challengers`) and enough of those live decisions have mature labels in the
   data, both models' scores *on the same decisions*;
2. otherwise **the latest test window**: both versions scored on the same rows (the test window of the
   current data, split as the training config says).

Either way the task's primary metric (PR AUC for incident risk, ROC AUC for merchant credit) is compared
with a **paired bootstrap** CI of challenger − champion (same resamples for both;
:func:`safetyml.scoring.challenger_report.paired_bootstrap`, seed 0), and the challenger is promoted when
the CI excludes a loss beyond ``promotion.margin`` (its lower end is above −margin). The decision, the
figures, the CI, the evidence and the reason are written as tags on the challenger's model version;
``force`` overrides the rule and needs a reason, which is recorded.
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
    ci_low: float | None = None
    ci_high: float | None = None
    evidence: str = "test window"

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
            "promotion.ci_low": self.ci_low,
            "promotion.ci_high": self.ci_high,
            "promotion.evidence": self.evidence,
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


def latest_test_predictions(
    task: str, models: dict[str, Any], data_dir: Path, tables: Tables | None = None
) -> tuple[Any, dict[str, Any]]:
    """The labels of the latest test window of ``data_dir`` and each model's probabilities on those rows."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.tables import load_tables
    from safetyml.training.data import build_task_frame, usable_rows
    from safetyml.training.split import time_split

    config = load_training_config(task)
    fs = load_feature_set()
    frame, _ = usable_rows(build_task_frame(tables or load_tables(data_dir), fs, config), config)
    split = time_split(frame["as_of"], frame["label"].to_numpy(), config.split)
    test = frame.loc[split.mask("test")].reset_index(drop=True)
    return test["label"].to_numpy(), {key: model.predict_proba(test) for key, model in models.items()}


def score_on_latest_test(
    task: str, models: dict[str, Any], data_dir: Path, tables: Tables | None = None
) -> tuple[dict[str, float], int]:
    """The primary metric of each model on the latest test window of ``data_dir``."""
    from safetyml.training.metrics import classification_metrics

    config = load_training_config(task)
    y, predictions = latest_test_predictions(task, models, data_dir, tables)
    out = {
        key: classification_metrics(y, p, config.review_capacity)[config.primary_metric]
        for key, p in predictions.items()
    }
    return out, len(y)


def paired_evidence(
    task: str,
    name: str,
    challenger_version: str,
    champion_version: str,
    data_dir: Path,
    tables: Tables | None = None,
) -> tuple[Any, str]:
    """The paired bootstrap of challenger vs champion: on shadow decisions when enough are labelled, else on
    the latest test window. Returns (PairedBootstrap, evidence description)."""
    from safetyml import tracking
    from safetyml.scoring.challenger_report import ChallengerReportError, challenger_report, paired_bootstrap
    from safetyml.tables import load_tables

    config = load_training_config(task)
    tables = tables or load_tables(data_dir)
    try:
        report = challenger_report(task, tables=tables, challenger_version=challenger_version, seed=0)
    except ChallengerReportError:
        report = None
    if report is not None and report.bootstrap is not None and report.champion_versions == [champion_version]:
        return report.bootstrap, f"shadow decisions ({report.spec}; {report.label_note})"
    models = {
        "challenger": tracking.load_model_version(name, challenger_version),
        "champion": tracking.load_model_version(name, champion_version),
    }
    y, p = latest_test_predictions(task, models, data_dir, tables)
    boot = paired_bootstrap(y, p["champion"], p["challenger"], config.primary_metric, seed=0)
    return boot, f"test window of {data_dir}"


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
        boot, evidence = paired_evidence(
            task, name, challenger.version, champion.version, Path(data_dir), tables
        )
        ok = boot.passes(margin)
        comparison = (
            f"challenger v{challenger.version} vs champion v{champion.version}: {boot.describe(margin)}; "
            f"evidence: {evidence}"
        )
        if force:
            promoted, why = True, f"forced: {reason} ({comparison})"
        elif ok:
            promoted, why = True, f"the CI excludes a loss beyond the margin: {comparison}"
        else:
            promoted, why = False, f"the CI does not exclude a loss beyond the margin: {comparison}"
        decision = PromotionDecision(
            task,
            name,
            challenger.version,
            champion.version,
            promoted,
            why,
            metric,
            boot.challenger,
            boot.champion,
            margin,
            force,
            boot.rows,
            boot.ci_low,
            boot.ci_high,
            "shadow" if evidence.startswith("shadow") else "test window",
        )
    if decision.promoted:
        tracking.set_alias(name, "champion", challenger.version)
        if champion is not None:
            tracking.set_version_tags(name, champion.version, {"replaced_by": challenger.version})
    tracking.set_version_tags(
        name, challenger.version, {k: v for k, v in decision.tags().items() if v is not None}
    )
    return decision
