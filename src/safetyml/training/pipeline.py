"""Train one task end to end: frame → time split → Optuna → final fit → calibration → test metrics
(model and oracle) → MLflow run with nested trials, plots and a pyfunc model → registry (challenger).

Each step is a plain function (frame in, arrays or dataclasses out); :func:`train` wires them and is
the only place that talks to :mod:`safetyml.tracking`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from safetyml import paths
from safetyml.model import RiskModel
from safetyml.training.calibrate import CalibrationChoice, choose_calibrator
from safetyml.training.config import TrainingConfig, load_training_config
from safetyml.training.data import build_task_frame, data_fingerprint, select_features, usable_rows
from safetyml.training.latency import depth_candidates, explanation_p50_ms, shallower
from safetyml.training.metrics import (
    classification_metrics,
    expected_calibration_error,
    lift_by_decile,
)
from safetyml.training.monotone import constraints_for
from safetyml.training.selection import SelectionResult, feature_list_version, run_selection
from safetyml.training.split import TimeSplit, time_split
from safetyml.training.truth import evaluate_against_truth
from safetyml.training.tuning import FitData, TuningResult, base_params, fit_booster, trial_params, tune

if TYPE_CHECKING:
    from safetyml.tables import Tables

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What one training produced; ``metrics`` and ``oracle_metrics`` are on the test split."""

    task: str
    model: RiskModel
    metrics: dict[str, float]
    oracle_metrics: dict[str, float] | None
    oracle_share: float | None
    model_version: str | None
    run_id: str | None
    experiment: str
    config: TrainingConfig
    split: dict[str, Any]
    tuning: TuningResult
    calibration: CalibrationChoice
    class_weight: str
    lift: pd.DataFrame
    notes: dict[str, Any] = field(default_factory=dict)
    selection: SelectionResult | None = None
    structure: dict[str, Any] = field(default_factory=dict)
    test_frame: pd.DataFrame | None = None
    promoted: bool = False
    seconds: float = 0.0

    def render(self) -> Any:
        """A rich summary: split, choices, test metrics vs oracle, registry (see training.report)."""
        from safetyml.training.report import render_training

        return render_training(self)


# ------------------------------------------------------------------------------------------ inputs


# ------------------------------------------------------------------------------------------ fitting


def study_name_for(config: TrainingConfig, data_fp: str, seed: int) -> str:
    """Same task, config (apart from the trial budget), data and seed → same study, so it resumes."""
    dump = config.model_dump(mode="json")
    dump["tuning"].pop("trials", None)
    dump["tuning"].pop("timeout_s", None)
    digest = hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config.task}-{digest}-{data_fp[:10]}-seed{seed}"


@dataclass
class Fitted:
    model: RiskModel
    split: TimeSplit
    tuning: TuningResult
    calibration: CalibrationChoice
    class_weight: str
    params: dict[str, Any]
    selection: SelectionResult | None = None
    structure: dict[str, Any] = field(default_factory=dict)  # monotone, depth cap, explanation latency


def fit_model(
    frame: pd.DataFrame,
    features: list[Any],
    config: TrainingConfig,
    seed: int = 0,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    on_trial: Any = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    fs: Any = None,
    client: Any = None,
) -> Fitted:
    """Split, select features, tune, refit on all training rows, keep within the explanation budget,
    calibrate on validation. ``frame`` comes from usable_rows; ``fs`` (the FeatureSet) makes the latency
    check include the reason codes; ``client`` (a Dask client) makes the final fit a distributed
    ``lightgbm.dask`` fit on that cluster (safetyml.training.distributed)."""
    names = [f.name for f in features]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(
            f"{config.task} frame lacks {len(missing)} feature column(s): {', '.join(missing[:10])}"
        )
    categories = {
        f.name: [str(c) for c in (f.categories or list(frame[f.name].cat.categories))]
        for f in features
        if f.kind == "categorical"
    }
    shell = RiskModel(task=config.task, booster=None, features=names, categories=categories)
    X = shell.prepare(frame)
    y = frame["label"].to_numpy(dtype="int64")
    split = time_split(frame["as_of"], y, config.split)
    tr, va = split.mask("train"), split.mask("valid")

    sample = np.flatnonzero(tr)
    limit = config.tuning.sample_rows
    if limit is not None and len(sample) > limit:
        sample = np.sort(np.random.default_rng(seed).choice(sample, size=limit, replace=False))
    selection = run_selection(features, X, y, sample, np.flatnonzero(va), config, seed)
    if len(selection.selected) < len(names):
        keep = set(selection.selected)
        features = [f for f in features if f.name in keep]
        names = [f.name for f in features]
        categories = {k: v for k, v in categories.items() if k in keep}
        X = X.loc[:, names]
    # Constraints from each feature's direction; validation may still turn them off (monotone: search).
    monotone = constraints_for(features, config.monotone_constraints is not False)
    tuning_data = FitData(X.iloc[sample], y[sample], X.loc[va], y[va], monotone)
    tuning = tune(
        tuning_data,
        config,
        seed=seed,
        study_name=study_name or f"{config.task}-adhoc-seed{seed}",
        storage=storage,
        trials=trials if trials is not None else config.tuning.trials,
        timeout=timeout if timeout is not None else config.tuning.timeout_s,
        on_trial=on_trial,
        progress=progress,
    )
    class_weight = tuning.best_params["class_weight"]
    use_monotone = bool(tuning.best_params["monotone"])
    params = trial_params(base_params(config, seed, monotone), tuning.best_params, y[tr])
    full = FitData(X.loc[tr], y[tr], X.loc[va], y[va], monotone if use_monotone else [0] * len(names))
    shell = RiskModel(task=config.task, booster=None, features=names, categories=categories)
    booster, best_iteration = _final_booster(params, full, config, client)
    structure = {
        "monotone": use_monotone,
        "max_depth": int(params.get("max_depth", -1)),
        "explanation_budget_ms": config.explanation_budget_ms,
        "depth_lowered_for_latency": [],
        "final_fit": "pandas (one process)" if client is None else _dask_fit_note(client),
    }
    if config.explanation_budget_ms is not None:
        # The serving path explains every score: a model over the budget is refit with the next lower cap.
        valid_frame = X.loc[va]
        shell.booster = booster
        latency = explanation_p50_ms(shell, valid_frame, fs, seed=seed)
        while latency > config.explanation_budget_ms:
            lower = shallower(int(params.get("max_depth", -1)), depth_candidates(config))
            if lower is None:
                break
            structure["depth_lowered_for_latency"].append(
                {"from": int(params.get("max_depth", -1)), "to": lower, "p50_ms": round(latency, 3)}
            )
            params["max_depth"] = lower
            booster, best_iteration = _final_booster(params, full, config, client)
            shell.booster = booster
            latency = explanation_p50_ms(shell, valid_frame, fs, seed=seed)
        structure.update(max_depth=int(params.get("max_depth", -1)), explain_p50_ms=round(latency, 4))
        structure["within_budget"] = bool(latency <= config.explanation_budget_ms)

    raw_valid = 1.0 / (1.0 + np.exp(-booster.predict(X.loc[va], raw_score=True)))
    calibration = choose_calibrator(
        raw_valid,
        y[va],
        list(config.calibration.methods),
        config.calibration.folds,
        config.calibration.ece_bins,
    )
    model = RiskModel(
        task=config.task,
        booster=booster,
        features=names,
        categories=categories,
        calibrator=calibration.calibrator,
        metadata={
            **(metadata or {}),
            "best_iteration": int(best_iteration),
            "class_weight": class_weight,
            "params": {k: v for k, v in params.items() if k != "monotone_constraints"},
            "monotone_constraints": dict(zip(names, full.monotone, strict=True)),
            "structure": structure,
            "feature_list_version": feature_list_version(names),
            "selection": selection.summary(),
            "calibration": calibration.method,
            "split": split.describe(),
            "primary_metric": config.primary_metric,
            "review_capacity": config.review_capacity,
            "credit_score": config.credit_score.model_dump() if config.credit_score else None,
        },
    )
    return Fitted(model, split, tuning, calibration, class_weight, params, selection, structure)


def _final_booster(
    params: dict[str, Any], data: FitData, config: TrainingConfig, client: Any = None
) -> tuple[Any, int]:
    """Fit on all training rows with early stopping; keep only the trees up to the best iteration, so the
    saved file and the booster in memory agree. With a Dask ``client`` the fit is distributed."""
    import lightgbm as lgb

    if client is not None:
        from safetyml.training.distributed import final_fit_dask

        return final_fit_dask(client, params, data, config.num_boost_round, config.early_stopping_rounds)
    booster = fit_booster(params, data, config.num_boost_round, config.early_stopping_rounds)
    best_iteration = booster.best_iteration or booster.current_iteration()
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best_iteration)), int(best_iteration)


def _dask_fit_note(client: Any) -> str:
    from safetyml.engine import worker_count

    return f"dask (lightgbm.dask data-parallel on {worker_count(client)} workers)"


def evaluate(
    model: RiskModel, frame: pd.DataFrame, config: TrainingConfig
) -> tuple[dict[str, float], np.ndarray]:
    """Test metrics of the model on ``frame`` (the test rows), and its probabilities."""
    y = frame["label"].to_numpy(dtype="int64")
    p = model.predict_proba(frame)
    metrics = classification_metrics(y, p, config.review_capacity, config.calibration.ece_bins)
    metrics["ece_uncalibrated"] = expected_calibration_error(
        y, model.predict_uncalibrated(frame), config.calibration.ece_bins
    )
    return metrics, p


def _example(frame: pd.DataFrame, model: RiskModel, rows: int = 5) -> pd.DataFrame:
    """A small input example with plain dtypes (categoricals as strings) for the MLflow signature."""
    out = frame.loc[:, model.features].head(rows).copy()
    for name in model.features:
        if name in model.categories:
            out[name] = out[name].astype("object").where(out[name].notna(), None)
        else:
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    return out.reset_index(drop=True)


def features_table(features: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "name": f.name,
                "entity": f.entity,
                "group": f.group,
                "kind": f.kind,
                "direction": f.direction,
                "description": f.description,
            }
            for f in features
        ]
    )


def credit_grade_table(p: np.ndarray, y: np.ndarray, config: TrainingConfig) -> pd.DataFrame:
    """Test rows per credit grade with their observed default rate (merchant credit only)."""
    from safetyml.credit_score import credit_of, credit_scale

    _, grades = credit_of(p, credit_scale(config))
    df = pd.DataFrame({"grade": grades, "label": y, "p": p})
    return (
        df.groupby("grade")
        .agg(
            rows=("label", "size"),
            defaults=("label", "sum"),
            default_rate=("label", "mean"),
            mean_pd=("p", "mean"),
        )
        .reset_index()
    )


# ------------------------------------------------------------------------------------------ train


def train(
    task: str,
    data_dir: Path,
    trials: int | None = None,
    timeout: float | None = None,
    seed: int = 0,
    config_overrides: dict | None = None,
    experiment: str | None = None,
    register: bool = True,
    progress: bool = True,
    tables: Tables | None = None,
    frame: pd.DataFrame | None = None,
    client: Any = None,
) -> TrainingResult:
    """Train, evaluate, log to MLflow and (``register=True``) register a new challenger version.

    The first version of a registered model also becomes champion; later ones wait for
    ``safetyml promote``. ``frame`` reuses a task frame already built from ``data_dir`` with the same
    definitions and label settings (e.g. across the runs of an ablation); by default it is built here.
    ``client`` (a Dask client, ``train --engine dask``) runs the final fit with ``lightgbm.dask``.
    """
    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.tables import load_tables

    started = time.perf_counter()
    config = load_training_config(task, config_overrides)
    data_dir = Path(data_dir)
    fs = load_feature_set()
    features = select_features(fs, config)
    if frame is None:
        frame = build_task_frame(tables if tables is not None else load_tables(data_dir), fs, config)
    frame, notes = usable_rows(frame, config)
    timings = {"seconds_load_and_frame": time.perf_counter() - started}
    data_fp = data_fingerprint(data_dir)
    experiment = experiment or config.mlflow_experiment
    storage = f"sqlite:///{paths.home() / 'optuna.db'}"
    study_name = study_name_for(config, data_fp, seed)
    trials_budget = trials if trials is not None else config.tuning.trials

    tags = {
        "safetyml.task": task,
        "safetyml.data_fingerprint": data_fp,
        "safetyml.feature_set_version": fs.version,
        "safetyml.config_fingerprint": config.fingerprint(),
        "safetyml.optuna_study": study_name,
        "mlflow.source.git.commit": tracking.git_commit(),
    }
    run_name = f"{task}-seed{seed}-{time.strftime('%Y%m%dT%H%M%S')}"
    with tracking.start_run(experiment, run_name, tags) as run:
        run.log_params(
            {
                "config": config.model_dump(mode="json"),
                "seed": seed,
                "trials": trials_budget,
                "timeout_s": timeout if timeout is not None else config.tuning.timeout_s,
                "data_dir": str(data_dir.resolve()),
                "data_fingerprint": data_fp,
                "feature_set_version": fs.version,
                "n_features": len(features),
                "optuna_storage": storage,
                "optuna_study": study_name,
            }
        )
        run.log_dict(config.model_dump(mode="json"), "config/training_config.json")
        run.log_text(features_table(features).to_csv(index=False), "features/candidates.csv")
        metric = config.primary_metric

        def on_trial(info: dict[str, Any]) -> None:
            metrics = {f"valid_{metric}": info["value"]} if info["value"] is not None else {}
            if info.get("best_iteration") is not None:
                metrics["best_iteration"] = info["best_iteration"]
            if info.get("last_step") is not None:
                metrics["last_reported_round"] = info["last_step"]
            run.child(
                f"trial-{info['number']}",
                info["params"],
                metrics,
                {"optuna.state": info["state"], "optuna.trial": info["number"]},
            )

        fit_started = time.perf_counter()
        fitted = fit_model(
            frame,
            features,
            config,
            seed=seed,
            trials=trials_budget,
            timeout=timeout,
            storage=storage,
            study_name=study_name,
            on_trial=on_trial,
            progress=progress,
            metadata={
                "feature_set_version": fs.version,
                "data_fingerprint": data_fp,
                "seed": seed,
                "config_fingerprint": config.fingerprint(),
                "registered_model_name": config.registered_model_name,
            },
            fs=fs,
            client=client,
        )
        model, split = fitted.model, fitted.split
        selection = fitted.selection
        timings["seconds_tune_fit_calibrate"] = time.perf_counter() - fit_started
        test = frame.loc[split.mask("test")].reset_index(drop=True)
        metrics, p_test = evaluate(model, test, config)
        y_test = test["label"].to_numpy(dtype="int64")
        truth = evaluate_against_truth(data_dir, test, p_test, config)  # simulated data only (truth/)
        oracle, oracle_metrics, share = truth.oracle, truth.metrics, truth.share
        lift = lift_by_decile(y_test, p_test)
        counts = split.counts()
        split_info = {
            **split.describe(),
            **{f"rows_{k}": v for k, v in counts.items()},
            **{
                f"positives_{k}": int(frame.loc[split.mask(k), "label"].sum())
                for k in ("train", "valid", "test")
            },
        }
        notes.update({"data_dir": str(data_dir)})

        run.log_params(
            {
                "split": split_info,
                "best": fitted.tuning.best_params,
                "class_weight": fitted.class_weight,
                "calibration": fitted.calibration.method,
                "best_iteration": model.metadata["best_iteration"],
                "selection": {**selection.summary(), "dropped_groups": dropped_groups(selection)},
                "structure": fitted.structure,
                "n_features_selected": len(model.features),
                "feature_list_version": model.metadata["feature_list_version"],
            }
        )
        run.set_tags({"safetyml.feature_list_version": model.metadata["feature_list_version"]})
        # the model's (selected) features: name, entity, group, kind, direction, description
        feats = features_table([f for f in features if f.name in set(model.features)])
        run.log_dict(feats.to_dict(orient="records"), "features/features.json")
        run.log_text(feats.to_csv(index=False), "features/features.csv")
        run.log_text(selection.table.to_csv(index=False), "features/selection.csv")
        run.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        if oracle_metrics:
            run.log_metrics({f"oracle_{k}": v for k, v in oracle_metrics.items()})
            run.log_metrics({"oracle_share": share})
        run.log_metrics(
            {
                f"valid_best_{metric}": fitted.tuning.best_value,
                "valid_ece_before_calibration": fitted.calibration.ece_before,
                "valid_ece_after_calibration": fitted.calibration.ece_after,
                **{f"calibration_cv_log_loss_{k}": v for k, v in fitted.calibration.cv_log_loss.items()},
                "selection_seconds": selection.seconds,
                "n_features_selected": len(model.features),
                **(
                    {"explain_p50_ms": fitted.structure["explain_p50_ms"]}
                    if "explain_p50_ms" in fitted.structure
                    else {}
                ),
                "trials_complete": fitted.tuning.trials_complete,
                "trials_pruned": fitted.tuning.trials_pruned,
                **{k: v for k, v in notes.items() if isinstance(v, int)},
            }
        )
        with tempfile.TemporaryDirectory(prefix="safetyml-train-") as tmp:
            tmp_path = Path(tmp)
            scores = {"model": p_test}
            if oracle is not None and not np.isnan(oracle).any():
                scores["oracle (truth)"] = oracle
            plots = tracking_plots(y_test, scores, tmp_path / "plots", task)
            run.log_artifacts(plots, "plots")
            lift.to_csv(tmp_path / "lift_by_decile.csv", index=False)
            pd.DataFrame(fitted.tuning.trials).to_csv(tmp_path / "optuna_trials.csv", index=False)
            extra = [tmp_path / "lift_by_decile.csv", tmp_path / "optuna_trials.csv"]
            if config.credit_score is not None:
                credit_grade_table(p_test, y_test, config).to_csv(
                    tmp_path / "credit_grades_test.csv", index=False
                )
                extra.append(tmp_path / "credit_grades_test.csv")
            run.log_artifacts(extra, "evaluation")
            model_dir = model.save(tmp_path / "model")
            example = _example(test, model)
            model_uri = run.log_model(model_dir, example, model.predict_proba(example))

        version, promoted = None, False
        if register:
            version = tracking.register(
                model_uri,
                config.registered_model_name,
                run.run_id,
                tags={
                    "task": task,
                    f"test_{metric}": f"{metrics[metric]:.6f}",
                    "data_fingerprint": data_fp,
                    "feature_set_version": fs.version,
                    "feature_list_version": model.metadata["feature_list_version"],
                    "n_features": len(model.features),
                    "seed": seed,
                },
                alias="challenger",
            )
            from safetyml.training.promote import promote_first_if_no_champion

            promoted = promote_first_if_no_champion(task, config.registered_model_name, version)
            run.set_tags({"safetyml.registered_version": version})
        seconds = time.perf_counter() - started
        timings["seconds_total"] = seconds
        run.log_metrics(timings)
        notes.update({k: round(v, 1) for k, v in timings.items()})

    return TrainingResult(
        task=task,
        model=model,
        metrics=metrics,
        oracle_metrics=oracle_metrics,
        oracle_share=share,
        model_version=version,
        run_id=run.run_id,
        experiment=experiment,
        config=config,
        split=split_info,
        tuning=fitted.tuning,
        calibration=fitted.calibration,
        class_weight=fitted.class_weight,
        lift=lift,
        notes=notes,
        selection=selection,
        structure=fitted.structure,
        test_frame=test,
        promoted=promoted,
        seconds=seconds,
    )


def dropped_groups(selection: SelectionResult) -> list[str]:
    """The groups selection dropped (for the run's parameters; the reasons are in features/selection.csv)."""
    return selection.table.loc[selection.table["decision"] == "drop", "group"].tolist()


def tracking_plots(y: np.ndarray, scores: dict[str, np.ndarray], out_dir: Path, task: str) -> list[Path]:
    from safetyml.training.plots import evaluation_plots

    return evaluation_plots(y, scores, out_dir, task)
