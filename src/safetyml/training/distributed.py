"""The final fit on a Dask cluster with distributed LightGBM (``lightgbm.dask.DaskLGBMClassifier``).

``train --engine dask`` tunes on a seeded sample in the client as the pandas engine does, then fits the
final model on *all* training rows with LightGBM's data-parallel tree learner: the rows are spread over
the workers, each worker builds the gradient histograms of its own rows and the workers sum them over
LightGBM's own network (``machines``/``local_listen_port``, set up by ``lightgbm.dask``) before every
split is chosen. Every worker ends with the same trees; the client gets one booster, saved as LightGBM
text like any other model.

How the result differs from the pandas engine's single-process fit on the same rows and parameters:

- **bin boundaries**: each feature's histogram bins are found by one worker from *its* rows (a sample of
  ``bin_construct_sample_cnt`` of them) and then shared, instead of from a sample of all rows; rows are
  dealt to workers in turn (row ``i`` to piece ``i % pieces``) so every worker's rows span the whole time
  range and the bins stay close to the single-process ones;
- **histogram sums**: a histogram is a sum over workers, added in another order, so split gains differ in
  the last bits and a near-tie between two splits can go the other way;
- **early stopping**: ``lightgbm.dask`` does not support it (LightGBM issues #3712, #4493: with a
  partitioned validation set each worker would see another metric and stop at another round, and the
  cluster hangs). Here every worker gets the *whole* validation set (:class:`WholeValidation`) and
  LightGBM's own ``early_stopping`` callback, so all workers stop at the same round, by the rule the
  pandas engine applies to the same validation rows.

``benchmarks/bench_engine.py --train`` measures the difference (ROC AUC of both models on the same test
rows); the bar is 0.005.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from safetyml._optional import require

__all__ = [
    "DaskFit",
    "ScatteredRows",
    "WholeValidation",
    "final_fit_dask",
    "fit_booster_dask",
    "scatter_rows",
]


class WholeValidation:
    """A LightGBM callback that adds the whole validation set to the booster before the first round.

    It runs in every worker of a distributed fit: the rows are binned with the training set's shared bin
    boundaries, and from then on LightGBM evaluates them after every round, so a stock
    ``lightgbm.early_stopping`` callback sees the same metric in every worker (same trees, same rows)
    and all workers stop at the same round.
    """

    before_iteration = True
    order = 0

    def __init__(self, X_valid: pd.DataFrame, y_valid: np.ndarray) -> None:
        self.X_valid = X_valid
        self.y_valid = np.asarray(y_valid)

    def __call__(self, env: Any) -> None:
        import lightgbm as lgb

        if env.iteration != env.begin_iteration:
            return
        booster = env.model
        booster.add_valid(lgb.Dataset(self.X_valid, label=self.y_valid, reference=booster.train_set), "valid")


@dataclass
class DaskFit:
    """A distributed fit: the booster cut at its best round, and how long the fit took."""

    booster: Any
    best_iteration: int
    seconds: float


@dataclass
class ScatteredRows:
    """Training rows dealt to the workers: Dask collections over the pieces, and each worker's row count."""

    X: Any
    y: Any
    rows_per_worker: dict[str, int]


def scatter_rows(client: Any, X: pd.DataFrame, y: np.ndarray, pieces: int | None = None) -> ScatteredRows:
    """Deal the rows of ``X``/``y`` to the workers, row ``i`` to piece ``i % pieces`` (one piece per worker
    by default), each piece placed on its worker; returns a Dask DataFrame and Series over the pieces.

    Dealing rows in turn (rather than cutting the time-ordered frame into blocks) gives every worker rows
    from the whole time range, so the bin boundaries a worker finds for its features fit all the data.
    """
    dd = require("dask.dataframe", "dask")
    workers = sorted(client.scheduler_info()["workers"])
    pieces = pieces or len(workers)
    frames, labels, per_worker = [], [], dict.fromkeys(workers, 0)
    y_series = pd.Series(np.asarray(y), index=X.index, name="label")
    for piece in range(pieces):
        rows = slice(piece, None, pieces)
        worker = workers[piece % len(workers)]
        frames.append(client.scatter(X.iloc[rows], workers=[worker]))
        labels.append(client.scatter(y_series.iloc[rows], workers=[worker]))
        per_worker[worker] += len(range(*rows.indices(len(X))))
    return ScatteredRows(
        dd.from_delayed(frames, meta=X.iloc[:0], verify_meta=False),
        dd.from_delayed(labels, meta=y_series.iloc[:0], verify_meta=False),
        per_worker,
    )


def fit_booster_dask(
    client: Any,
    params: dict[str, Any],
    X_train: Any,
    y_train: Any,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    num_boost_round: int,
    early_stopping_rounds: int,
) -> DaskFit:
    """Fit ``params`` on the Dask collections ``X_train``/``y_train`` with ``lightgbm.dask`` (data-parallel),
    stopping on the whole validation set; the booster returned keeps only the trees up to the best round,
    as the pandas engine's final fit does."""
    import time
    import warnings

    require("distributed", "dask")
    import lightgbm as lgb
    from lightgbm.dask import DaskLGBMClassifier

    started = time.perf_counter()
    local = {k: v for k, v in params.items() if k not in ("num_threads", "n_jobs", "num_iterations")}
    model = DaskLGBMClassifier(client=client, n_estimators=int(num_boost_round), **local)
    with warnings.catch_warnings():  # "n_jobs will be ignored": each worker uses its own threads
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        model.fit(
            X_train,
            y_train,
            callbacks=[
                WholeValidation(X_valid, y_valid),
                lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False),
            ],
        )
    fitted = model.booster_
    best = int(fitted.best_iteration or fitted.current_iteration())
    booster = lgb.Booster(model_str=fitted.model_to_string(num_iteration=best))
    return DaskFit(booster, best, time.perf_counter() - started)


def final_fit_dask(
    client: Any, params: dict[str, Any], data: Any, num_boost_round: int, early_stopping_rounds: int
) -> tuple[Any, int]:
    """The pipeline's final fit on the cluster: the training rows of ``data`` (a ``FitData``) dealt to the
    workers, fitted with :func:`fit_booster_dask`; returns ``(booster, best_iteration)`` like the pandas
    engine's final fit."""
    rows = scatter_rows(client, data.X_train, data.y_train)
    try:
        fit = fit_booster_dask(
            client,
            params,
            rows.X,
            rows.y,
            data.X_valid,
            data.y_valid,
            num_boost_round,
            early_stopping_rounds,
        )
    finally:
        del rows  # the scattered pieces are released with their futures
    return fit.booster, fit.best_iteration
