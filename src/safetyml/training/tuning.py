"""LightGBM fitting and Optuna tuning: TPE (seeded), early stopping, median pruning, SQLite storage.

Each trial fits on the (possibly sampled) training rows with early stopping on validation and reports
the validation metric every few rounds so the median pruner can stop hopeless trials. The class
weighting (none vs balanced ``scale_pos_weight``), monotone constraints on or off and (in the shipped
search spaces) the depth cap are search dimensions too, so validation decides them. A study is named
after the task, config, data and seed; rerunning the same training resumes it and only runs the trials
still missing, so a finished study replays to the same best parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from safetyml.training.config import TrainingConfig

LGB_METRIC = {"pr_auc": "average_precision", "roc_auc": "auc"}
REPORT_EVERY = 10


@dataclass
class FitData:
    """Model inputs of the three splits plus the per-feature constraints."""

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_valid: pd.DataFrame
    y_valid: np.ndarray
    monotone: list[int]


@dataclass
class TuningResult:
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    study_name: str
    storage: str | None
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    trials_run_now: int
    trials: list[dict[str, Any]] = field(default_factory=list)


def base_params(config: TrainingConfig, seed: int, monotone: list[int]) -> dict[str, Any]:
    """The fixed LightGBM parameters plus what makes a fit reproducible (seeded, deterministic, row-wise)."""
    params = {
        "objective": "binary",
        "verbosity": -1,
        "num_threads": 1,
        **config.lightgbm,
        "metric": LGB_METRIC[config.primary_metric],
        "first_metric_only": True,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "feature_pre_filter": False,
    }
    if any(monotone):
        params["monotone_constraints"] = list(monotone)
        params["monotone_constraints_method"] = "intermediate"
    return params


def apply_class_weight(params: dict[str, Any], mode: str, y: np.ndarray) -> dict[str, Any]:
    """``balanced`` weighs positives by negatives/positives (``scale_pos_weight``); ``none``: weight 1."""
    out = {k: v for k, v in params.items() if k not in ("scale_pos_weight", "is_unbalance", "class_weight")}
    if mode == "balanced":
        positives = max(float(np.sum(y)), 1.0)
        out["scale_pos_weight"] = (len(y) - positives) / positives
    elif mode != "none":
        raise ValueError(f"class weight must be none or balanced, got {mode!r}")
    return out


def fit_booster(
    params: dict[str, Any],
    data: FitData,
    num_boost_round: int,
    early_stopping_rounds: int,
    callbacks: list[Callable] | None = None,
):
    """Train on ``data.X_train`` with early stopping on validation; returns the booster."""
    import lightgbm as lgb

    train_set = lgb.Dataset(data.X_train, label=data.y_train, free_raw_data=False, params={"verbosity": -1})
    valid_set = lgb.Dataset(data.X_valid, label=data.y_valid, reference=train_set, free_raw_data=False)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=num_boost_round,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False),
            *(callbacks or []),
        ],
    )
    return booster


def _pruning_callback(trial, metric: str) -> Callable:
    """Report the validation metric every few rounds; stop the trial when the median pruner says so.

    Our own because optuna-integration (which has LightGBMPruningCallback) is not installed here.
    """
    import optuna

    def callback(env) -> None:
        if (env.iteration + 1) % REPORT_EVERY:
            return
        for name, metric_name, value, _ in env.evaluation_result_list:
            if name == "valid" and metric_name == metric:
                trial.report(float(value), step=env.iteration + 1)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"round {env.iteration + 1}: valid {metric} {value:.4f}")

    callback.order = 40  # after early stopping's bookkeeping
    return callback


def suggest(trial, config: TrainingConfig) -> dict[str, Any]:
    """Draw one point of the configured search space (plus the class weighting when it is searched)."""
    out: dict[str, Any] = {}
    for name, spec in config.tuning.search_space.items():
        if spec.type == "float":
            out[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif spec.type == "int":
            out[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        else:
            out[name] = trial.suggest_categorical(name, spec.choices)
    if config.class_weight == "search":
        out["class_weight"] = trial.suggest_categorical("class_weight", ["none", "balanced"])
    else:
        out["class_weight"] = config.class_weight
    if config.monotone_constraints == "search":
        out["monotone"] = trial.suggest_categorical("monotone", [True, False])
    else:
        out["monotone"] = bool(config.monotone_constraints)
    return out


CHOICES = ("class_weight", "monotone")  # searched like parameters, applied by trial_params


def trial_params(base: dict[str, Any], choice: dict[str, Any], y_train: np.ndarray) -> dict[str, Any]:
    """LightGBM parameters of one point of the search: base + tuned values, class weighting applied and,
    when the point says ``monotone: False``, the monotone constraints removed."""
    params = apply_class_weight(
        {**base, **{k: v for k, v in choice.items() if k not in CHOICES}},
        choice.get("class_weight", "none"),
        y_train,
    )
    if not choice.get("monotone", True):
        params.pop("monotone_constraints", None)
        params.pop("monotone_constraints_method", None)
    return params


def tune(
    data: FitData,
    config: TrainingConfig,
    seed: int,
    study_name: str,
    storage: str | None,
    trials: int,
    timeout: float | None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> TuningResult:
    """Run (or resume) the Optuna study; returns the best parameters found (class_weight included)."""
    import optuna
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric = LGB_METRIC[config.primary_metric]
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=config.tuning.pruner_startup_trials,
            n_warmup_steps=config.tuning.pruner_warmup_rounds,
        ),
        load_if_exists=True,
    )
    done = [t for t in study.trials if t.state.is_finished()]
    remaining = max(trials - len(done), 0)
    base = base_params(config, seed, data.monotone)

    def objective(trial) -> float:
        params = trial_params(base, suggest(trial, config), data.y_train)
        booster = fit_booster(
            params,
            data,
            config.num_boost_round,
            config.early_stopping_rounds,
            [_pruning_callback(trial, metric)],
        )
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        return float(booster.best_score["valid"][metric])

    def record(study_, trial) -> None:
        if on_trial is not None:
            on_trial(
                {
                    "number": trial.number,
                    "state": trial.state.name,
                    "value": trial.value,
                    "params": dict(trial.params),
                    "best_iteration": trial.user_attrs.get("best_iteration"),
                    "last_step": trial.last_step,
                }
            )

    if remaining:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            disable=not progress,
            transient=False,
        ) as bar:
            task_id = bar.add_task(f"tuning {config.task}", total=remaining, best="")

            def advance(study_, trial) -> None:
                try:
                    best = (
                        f"best valid {config.primary_metric} {study_.best_value:.4f} "
                        f"(trial {study_.best_trial.number})"
                    )
                except ValueError:
                    best = "no complete trial yet"
                bar.update(task_id, advance=1, best=best)

            study.optimize(
                objective, n_trials=remaining, timeout=timeout, callbacks=[record, advance], catch=()
            )

    finished = study.trials
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(
            f"Optuna study {study_name!r}: no trial completed ({len(finished)} pruned or failed)"
        )
    best = study.best_trial
    best_params = dict(best.params)
    if "class_weight" not in best_params:
        best_params["class_weight"] = config.class_weight if config.class_weight != "search" else "none"
    if "monotone" not in best_params:
        best_params["monotone"] = config.monotone_constraints is not False
    return TuningResult(
        best_params=best_params,
        best_value=float(best.value),
        best_trial=best.number,
        study_name=study_name,
        storage=storage,
        trials_complete=len(complete),
        trials_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in finished),
        trials_failed=sum(t.state == optuna.trial.TrialState.FAIL for t in finished),
        trials_run_now=len(finished) - len(done),
        trials=[{"number": t.number, "state": t.state.name, "value": t.value, **t.params} for t in finished],
    )
