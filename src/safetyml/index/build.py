"""Building the TRUST index: tables → indicators → values → nominal index → Monte Carlo → outputs.

``build_index`` is the Python API behind ``safetyml index build``. It computes every period found in
the data at once (normalisation bounds are shared by all periods, so scores compare over time) for
cities and, when enabled, zones; writes the Parquet tables, the HTML report and a manifest; and logs the
run to MLflow.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from safetyml.index import aggregate, decomposition, rates, sensitivity, truth, uncertainty
from safetyml.index.composite import Choice, Composite, compose
from safetyml.index.config import IndexConfig, load_config
from safetyml.index.indicators import CITY_KEYS, ZONE_KEYS, Inputs, Panel, build_panel, prepare, read_optional

log = logging.getLogger(__name__)

EXPERIMENT = "trust-index"
LEVELS = ("city", "zone")
FILES = {
    "index": "index.parquet",
    "indicators": "indicators.parquet",
    "replications": "replications.parquet",
    "sensitivity": "sensitivity.parquet",
    "imputation": "imputation.parquet",
    "manifest": "manifest.json",
    "report": "report.html",
}


@dataclass
class LevelResult:
    """Everything computed for one level (cities or zones)."""

    panel: Panel
    values: rates.Values
    nominal: Composite
    ranks: np.ndarray
    monte_carlo: uncertainty.MonteCarlo
    contributions: np.ndarray
    changes: np.ndarray

    @property
    def keys(self) -> list[str]:
        return CITY_KEYS[1:] if self.panel.level == "city" else ZONE_KEYS[1:]

    def table(self, config: IndexConfig) -> pd.DataFrame:
        """One row per period × unit: score, interval, rank, rank interval and pillar values."""
        units = self.panel.units
        out = units[["period", "city", *(["h3"] if self.panel.level == "zone" else [])]].copy()
        if "h3" not in out:
            out["h3"] = pd.Series([None] * len(out), dtype="object")
        out.insert(0, "level", self.panel.level)
        out["market"] = units["market"].to_numpy()
        out["trips"] = units["trips"].to_numpy(dtype="int64")
        out["score"] = self.nominal.score
        intervals = self.monte_carlo.intervals(config.uncertainty.interval, Choice.nominal(config))
        out["score_low"] = intervals.get("score_low", self.nominal.score)
        out["score_high"] = intervals.get("score_high", self.nominal.score)
        out["rank"] = self.ranks
        out["rank_low"] = intervals.get("rank_low", self.ranks)
        out["rank_high"] = intervals.get("rank_high", self.ranks)
        out["units_ranked"] = out.groupby("period")["score"].transform("size").to_numpy()
        for p, pillar in enumerate(self.nominal.weights.pillars):
            out[f"pillar_{pillar}"] = self.nominal.pillars[:, p]
        out["imputed"] = [
            ", ".join(n for n, flag in zip(self.panel.indicators, row, strict=True) if flag)
            for row in self.values.imputed
        ]
        out["score_change"] = np.nansum(self.changes, axis=1)
        out.loc[np.isnan(self.changes).all(axis=1), "score_change"] = np.nan
        out["method"] = config.fingerprint()
        return out.reset_index(drop=True)

    def indicator_table(self) -> pd.DataFrame:
        """Long table: one row per period × unit × indicator with counts, raw and shrunk values, parts."""
        units, names = self.panel.units, self.panel.indicators
        n_units, n_ind = len(units), len(names)
        rep = np.repeat(np.arange(n_units), n_ind)
        return pd.DataFrame(
            {
                "level": self.panel.level,
                "period": units["period"].to_numpy()[rep],
                "city": units["city"].to_numpy()[rep],
                "h3": units["h3"].to_numpy()[rep] if "h3" in units else None,
                "indicator": np.tile(names, n_units),
                "numerator": self.panel.num.ravel(),
                "denominator": self.panel.den.ravel(),
                "raw": self.panel.raw.ravel(),
                "value": self.values.values.ravel(),
                "imputed": self.values.imputed.ravel(),
                "normalised": self.nominal.normalised.ravel(),
                "weight": np.tile(self.nominal.weights.overall, n_units),
                "contribution": self.contributions.ravel(),
                "change_contribution": self.changes.ravel(),
            }
        )


@dataclass
class IndexResult:
    """The index of one data folder: per-level results, tables, and where they were written."""

    config: IndexConfig
    levels: dict[str, LevelResult]
    notes: dict[str, str]
    seconds: dict[str, float]
    data: Path | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None
    # agreement with the simulator's true incident risk, and (true_index_*) with the true index
    truth: dict[str, dict[str, float]] | None = None

    @property
    def index(self) -> pd.DataFrame:
        return pd.concat([r.table(self.config) for r in self.levels.values()], ignore_index=True)

    @property
    def indicators(self) -> pd.DataFrame:
        return pd.concat([r.indicator_table() for r in self.levels.values()], ignore_index=True)

    @property
    def replications(self) -> pd.DataFrame:
        return pd.concat([r.monte_carlo.replications for r in self.levels.values()], ignore_index=True)

    @property
    def sensitivity(self) -> pd.DataFrame:
        return sensitivity.first_order(self.replications)

    @property
    def imputation(self) -> pd.DataFrame:
        return pd.concat([r.values.report for r in self.levels.values()], ignore_index=True)


def compute_level(
    inputs: Inputs,
    config: IndexConfig,
    level: str,
    replications: int | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> LevelResult:
    """The nominal index, its Monte Carlo and its decomposition for one level."""
    names = [n for n, s in config.indicators.items() if level in s.levels]
    min_trips = config.zones.min_trips if level == "zone" else 1
    panel = build_panel(inputs, names, level, min_trips)
    required_missing = [n for n in panel.notes if config.indicators[n].required]
    if required_missing:
        from safetyml.index.config import IndexDataError

        name = required_missing[0]
        raise IndexDataError(
            f"{config.source}: field indicators.{name}: {panel.notes[name]}; give the input or set "
            f"`required: false` to publish without it"
        )
    if panel.units.empty:
        from safetyml.index.config import IndexDataError

        raise IndexDataError(
            f"no {level} has enough trips to be indexed (zones.min_trips in {config.source})"
        )
    return evaluate(panel, config, replications, seed, progress)


def evaluate(
    panel: Panel,
    config: IndexConfig,
    replications: int | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> LevelResult:
    """Everything after counting: values, nominal index, ranks, Monte Carlo, decomposition."""
    values = rates.nominal(panel, config)
    choice = Choice.nominal(config)
    cache = uncertainty.WeightCache(config, panel.indicators, values.values)
    nominal = compose(values.values, config, panel.indicators, choice, cache.get(choice))
    periods = panel.period_codes()[0]
    ranks = aggregate.ranks(nominal.score, periods)
    mc = uncertainty.run(panel, config, values.values, ranks, replications, seed, progress, cache)
    keys = CITY_KEYS[1:] if panel.level == "city" else ZONE_KEYS[1:]
    parts = decomposition.contributions(
        nominal.normalised, nominal.score, nominal.weights, choice.aggregation
    )
    changes = decomposition.changes(
        panel.units, keys, nominal.normalised, nominal.score, nominal.weights, choice.aggregation
    )
    return LevelResult(panel, values, nominal, ranks, mc, parts, changes)


def build_index(
    data: Path | None = None,
    out: Path | None = None,
    config: IndexConfig | Path | None = None,
    *,
    tables: Any = None,
    replications: int | None = None,
    seed: int | None = None,
    zones: bool | None = None,
    hot_zones: Path | pd.DataFrame | None = None,
    scores: Path | pd.DataFrame | None = None,
    log_mlflow: bool = True,
    report: bool = True,
    progress: bool = True,
) -> IndexResult:
    """Compute the index of a data folder (or of already loaded ``tables``) and write it to ``out``."""
    from safetyml.tables import load_tables

    started = time.perf_counter()
    cfg = config if isinstance(config, IndexConfig) else load_config(config)
    if tables is None:
        if data is None:
            raise ValueError("build_index needs a data folder or loaded tables")
        tables = load_tables(Path(data))
    hot = hot_zones if isinstance(hot_zones, pd.DataFrame) or hot_zones is None else read_optional(hot_zones)
    scored = scores if isinstance(scores, pd.DataFrame) or scores is None else read_optional(scores)
    inputs = prepare(tables, cfg.period, cfg.experienced_days, hot, scored)
    seconds = {"prepare": time.perf_counter() - started}
    levels: dict[str, LevelResult] = {}
    notes: dict[str, str] = {}
    use_zones = cfg.zones.enabled if zones is None else zones
    for level in LEVELS:
        if level == "zone" and not use_zones:
            continue
        t0 = time.perf_counter()
        levels[level] = compute_level(inputs, cfg, level, replications, seed, progress)
        notes.update(levels[level].panel.notes)
        seconds[level] = time.perf_counter() - t0
    result = IndexResult(cfg, levels, notes, seconds, Path(data) if data is not None else None)
    if truth.has_truth(result.data):
        result.truth = {
            level: truth.agreements(result.data, inputs, r.table(cfg), r, cfg) for level, r in levels.items()
        }
    if out is not None:
        write_outputs(result, Path(out), report=report)
        if log_mlflow:
            result.run_id = log_run(result)
    result.seconds["total"] = time.perf_counter() - started
    return result


def manifest(result: IndexResult) -> dict[str, Any]:
    index = result.index
    return {
        "name": result.config.name,
        "method": result.config.fingerprint(),
        "config": result.config.source,
        "data": str(result.data) if result.data else None,
        "periods": sorted({f"{pd.Timestamp(p):%Y-%m-%d}" for p in index["period"]}),
        "units": {level: int((index["level"] == level).sum()) for level in result.levels},
        "replications": {lvl: int(len(r.monte_carlo.replications)) for lvl, r in result.levels.items()},
        "not_available": result.notes,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "truth": result.truth,
    }


def write_outputs(result: IndexResult, out: Path, report: bool = True) -> dict[str, Path]:
    """Write the Parquet tables, the manifest and (optionally) the HTML report into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "index": result.index,
        "indicators": result.indicators,
        "replications": result.replications,
        "sensitivity": result.sensitivity,
        "imputation": result.imputation,
    }
    for name, frame in tables.items():
        path = out / FILES[name]
        frame.to_parquet(path, index=False)
        result.outputs[name] = path
    path = out / FILES["manifest"]
    path.write_text(json.dumps(manifest(result), indent=2), encoding="utf-8")
    result.outputs["manifest"] = path
    if report:
        from safetyml.index.report import write_report

        result.outputs["report"] = write_report(out, out / FILES["report"], config=result.config)
    return result.outputs


def log_run(result: IndexResult) -> str:
    """One MLflow run per build: method, replications, headline figures, and the output files."""
    from safetyml import tracking

    index = result.index
    latest = index[index["period"] == index["period"].max()]
    cities = latest[latest["level"] == "city"]
    with tracking.start_job_run(EXPERIMENT, f"index-{pd.Timestamp(index['period'].max()):%Y-%m}") as run:
        run.log_params(
            {
                "method": result.config.fingerprint(),
                "config": result.config.model_dump(mode="json"),
                "data": str(result.data),
                "not_available": ", ".join(result.notes) or "none",
            }
        )
        metrics = {f"seconds_{k}": v for k, v in result.seconds.items()}
        metrics.update({f"units_{lvl}": float((index["level"] == lvl).sum()) for lvl in result.levels})
        for level, figures in (result.truth or {}).items():
            metrics.update({f"truth_{level}_{k}": v for k, v in figures.items()})
        for row in cities.itertuples():
            metrics[f"score_{row.city}"] = float(row.score)
            metrics[f"rank_width_{row.city}"] = float(row.rank_high - row.rank_low)
        run.log_metrics(metrics)
        run.log_artifacts(list(result.outputs.values()), "index")
        return run.run_id
