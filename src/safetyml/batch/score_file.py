"""Score a features-built Parquet file in chunks, on pandas or on Dask, with the service's scorer.

The input is a frame written by ``safetyml features build`` (keys, label, model features). Every column
that is not a model feature is kept as a key column, unchanged; the scorer's outputs are appended
(``probability``, ``risk_tier``, ``action``, ``policy_version``, ``model_version``, for merchant_credit
``credit_score`` and ``grade``; with ``--explain`` a ``reasons`` column holding each row's reason codes
as a JSON list). Rows keep the input order.

Memory does not grow with the file: the pandas engine reads one Parquet row group at a time (scored in
slices of ``batch_size`` rows) and appends each scored slice to a ``ParquetWriter``; the Dask engine keeps
at most a few partitions (Parquet row groups) in flight and writes them in order as they arrive.
Workers rebuild the scorer from the model's LightGBM text and JSON sidecar (no pickled booster).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from safetyml.engine import EngineChoice, resolve, session, worker_count

if TYPE_CHECKING:
    from safetyml.scoring.scorer import Scorer

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 131_072
SCORE_TYPES: dict[str, pa.DataType] = {
    "probability": pa.float64(),
    "credit_score": pa.float64(),
    "grade": pa.string(),
    "risk_tier": pa.string(),
    "action": pa.string(),
    "policy_version": pa.string(),
    "model_version": pa.string(),
    "reasons": pa.string(),
}


@dataclass
class ScoreFileResult:
    """What a score-file run did."""

    task: str
    engine: str
    rows: int
    seconds: float
    out: Path

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        return (
            f"{self.task}: scored {self.rows:,} rows with the {self.engine} engine in {self.seconds:.1f} s "
            f"({self.rows_per_second:,.0f} rows/s) → {self.out}"
        )


# ---------------------------------------------------------------------------------------------- one chunk


def key_columns(schema: pa.Schema, features: list[str]) -> list[str]:
    """Input columns that are not model features, in file order (ids, city, cells, as_of, label…)."""
    feats = set(features)
    return [name for name in schema.names if name not in feats]


def output_schema(input_schema: pa.Schema, features: list[str], task: str, explain: bool) -> pa.Schema:
    """Key columns with their input types, then the score columns with fixed types."""
    fields = [input_schema.field(name) for name in key_columns(input_schema, features)]
    names = ["probability"]
    if task == "merchant_credit":
        names += ["credit_score", "grade"]
    names += ["risk_tier", "action", "policy_version", "model_version"]
    if explain:
        names.append("reasons")
    taken = {f.name for f in fields}
    clash = [n for n in names if n in taken]
    if clash:
        raise ValueError(f"input file already has score column(s) {', '.join(clash)}; drop them first")
    return pa.schema(fields + [pa.field(n, SCORE_TYPES[n]) for n in names])


def scorer_inputs(schema: pa.Schema, features: list[str]) -> list[str]:
    """Columns the scorer reads: the model's features, plus ``market``/``city`` for the policy if present."""
    extra = [name for name in ("market", "city") if name in schema.names and name not in features]
    return list(features) + extra


def score_chunk(
    scorer: Scorer, task: str, chunk: pa.Table | pa.RecordBatch, schema: pa.Schema, explain: bool, k: int
) -> pa.Table:
    """Score one chunk of input rows (Arrow) into an Arrow table of ``schema``.

    Only the scorer's inputs go through pandas; key columns are carried over as Arrow arrays unchanged.
    """
    features = scorer.bundle.models[task].features
    # split_blocks: one array per column, no consolidating copy (the scorer reads the columns one by one)
    X = chunk.select(scorer_inputs(chunk.schema, features)).to_pandas(split_blocks=True)
    scored = scorer.score_features(task, X, explain=explain, k=k)
    columns: dict[str, Any] = {}
    for field_ in schema:
        name = field_.name
        if name in SCORE_TYPES and name in scored.columns:
            values = scored[name]
            if name == "reasons":
                values = [json.dumps(v, default=str, separators=(",", ":")) for v in values]
                columns[name] = pa.array(values, type=field_.type)
            elif pa.types.is_string(field_.type):  # from the Series: pandas' str columns are Arrow already
                columns[name] = pa.array(values, type=field_.type, from_pandas=True)
            else:
                columns[name] = pa.array(values.to_numpy(dtype="float64"), type=field_.type)
        else:
            column = chunk.column(name)
            columns[name] = column if column.type == field_.type else column.cast(field_.type)
    return pa.table(columns, schema=schema)


# ------------------------------------------------------------------------------------------ scorer payload


def scorer_payload(scorer: Scorer, task: str) -> dict[str, Any]:
    """What a worker needs to rebuild the scorer for ``task``: model text + sidecar, policies, feature set."""
    model = scorer.bundle.models[task]
    text = model.booster.model_to_string(num_iteration=-1)
    sidecar = model.sidecar()
    digest = hashlib.sha256((text + json.dumps(sidecar, sort_keys=True, default=str)).encode()).hexdigest()
    return {
        "task": task,
        "model_text": text,
        "sidecar": sidecar,
        "version": scorer.bundle.versions.get(task, "local"),
        "name": scorer.bundle.names.get(task, task),
        "policies": scorer.policies,
        "feature_set": scorer.feature_set,
        "digest": digest,
    }


_WORKER_SCORERS: dict[str, Any] = {}


def scorer_from_payload(payload: dict[str, Any]) -> Any:
    """The scorer described by ``payload``, built once per worker process and cached by model digest."""
    cached = _WORKER_SCORERS.get(payload["digest"])
    if cached is not None:
        return cached
    import lightgbm as lgb

    from safetyml.calibration import Calibrator
    from safetyml.model import RiskModel
    from safetyml.scoring.scorer import Scorer

    sidecar = payload["sidecar"]
    model = RiskModel(
        task=sidecar["task"],
        booster=lgb.Booster(model_str=payload["model_text"]),
        features=list(sidecar["features"]),
        categories={k: list(v) for k, v in sidecar.get("categories", {}).items()},
        calibrator=Calibrator.from_dict(sidecar.get("calibrator", {})),
        metadata=sidecar.get("metadata", {}),
    )
    task = payload["task"]
    scorer = Scorer(
        models={task: model},
        policies=payload["policies"],
        feature_set=payload["feature_set"],
        model_versions={task: payload["version"]},
        model_names={task: payload["name"]},
    )
    _WORKER_SCORERS.clear()  # one model at a time per worker
    _WORKER_SCORERS[payload["digest"]] = scorer
    return scorer


def _score_partition(
    part: pd.DataFrame, payload: dict[str, Any], schema: pa.Schema, explain: bool, k: int
) -> pa.Table:
    scorer = scorer_from_payload(payload)
    table = pa.Table.from_pandas(part, preserve_index=False)
    return score_chunk(scorer, payload["task"], table, schema, explain, k)


# ---------------------------------------------------------------------------------------------- engines


def _progress(total: int, enabled: bool, description: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _pandas_engine(
    scorer: Scorer,
    task: str,
    source: pq.ParquetFile,
    schema: pa.Schema,
    writer: pq.ParquetWriter,
    explain: bool,
    k: int,
    batch_size: int,
    progress: bool,
) -> int:
    """Score chunk by chunk; reading the next chunk and writing the last one overlap with scoring.

    One reader and one writer thread, each with at most one chunk in flight (memory stays bounded by a
    few chunks); pyarrow's Parquet reads and writes release the GIL, so they run while LightGBM scores.
    The writer thread writes in input order, so the output is the same file as a plain loop writes.
    """
    from concurrent.futures import ThreadPoolExecutor

    total = source.metadata.num_rows
    rows = 0
    chunks = iter_chunks(source, batch_size)
    with (
        _progress(total, progress, f"scoring {task}") as bar,
        ThreadPoolExecutor(1, thread_name_prefix="score-file-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="score-file-write") as write_thread,
    ):
        job = bar.add_task(f"scoring {task}", total=total)
        pending_read = reader.submit(next, chunks, None)
        pending_write = None
        while (batch := pending_read.result()) is not None:
            pending_read = reader.submit(next, chunks, None)
            scored = score_chunk(scorer, task, batch, schema, explain, k)
            if pending_write is not None:
                pending_write.result()  # raises a write error here, in order
            pending_write = write_thread.submit(writer.write_table, scored)
            rows += batch.num_rows
            bar.update(job, advance=batch.num_rows)
        if pending_write is not None:
            pending_write.result()
    return rows


def iter_chunks(source: pq.ParquetFile, batch_size: int) -> Iterator[pa.Table]:
    """The file one row group at a time, each cut into slices of at most ``batch_size`` rows.

    Row group by row group rather than ``ParquetFile.iter_batches``: with pyarrow 25 the latter kept
    Arrow memory growing with the number of batches read (measured ~300 MB over a 1M-row file), while
    ``read_row_group`` frees each group, so memory stays bounded by one row group.
    """
    for group in range(source.metadata.num_row_groups):
        table = source.read_row_group(group)
        for start in range(0, table.num_rows, batch_size):
            yield table.slice(start, batch_size)
        del table


def _dask_engine(
    scorer: Scorer,
    task: str,
    path: Path,
    schema: pa.Schema,
    writer: pq.ParquetWriter,
    explain: bool,
    k: int,
    choice: EngineChoice,
    progress: bool,
) -> int:
    import dask
    import dask.dataframe as dd

    payload = scorer_payload(scorer, task)
    total = pq.ParquetFile(path).metadata.num_rows
    rows = 0
    with session(choice) as client:
        with dask.config.set({"dataframe.convert-string": False}):
            ddf = dd.read_parquet(str(path), split_row_groups=True)
        parts = ddf.to_delayed()
        [payload_future] = client.scatter([payload], broadcast=True)
        score = dask.delayed(_score_partition, pure=True)
        in_flight: deque = deque()
        max_in_flight = 2 * worker_count(client)
        with _progress(total, progress, f"scoring {task} on dask") as bar:
            job = bar.add_task(f"scoring {task} on dask", total=total)
            for part in parts:
                in_flight.append(client.compute(score(part, payload_future, schema, explain, k)))
                if len(in_flight) >= max_in_flight:
                    rows += _write_next(in_flight, writer, bar, job)
            while in_flight:
                rows += _write_next(in_flight, writer, bar, job)
    return rows


def _write_next(in_flight: deque, writer: pq.ParquetWriter, bar: Any, job: Any) -> int:
    table = in_flight.popleft().result()
    writer.write_table(table)
    bar.update(job, advance=table.num_rows)
    return table.num_rows


def score_file(
    task: str,
    input: Path,
    out: Path,
    scorer: Scorer | None = None,
    explain: bool = False,
    k: int = 3,
    engine: str | EngineChoice = "pandas",
    scheduler: str | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: bool = True,
    n_workers: int | None = None,
    processes: bool = True,
) -> ScoreFileResult:
    """Score ``input`` (a features-built Parquet file) into ``out`` with ``scorer`` (default: the champions).

    ``engine`` is an :class:`~safetyml.engine.EngineChoice` or a name resolved by
    :func:`safetyml.engine.resolve` with ``scheduler``, ``n_workers`` and ``processes``: ``"dask"`` runs
    on the cluster at the scheduler address (its workers must be able to read ``input``), or on a
    LocalCluster sized to the machine when there is none.
    """
    # resolved before loading the models, so a missing extra is named up front
    choice = (
        engine
        if isinstance(engine, EngineChoice)
        else resolve(engine, scheduler, n_workers=n_workers, processes=processes)
    )
    input, out = Path(input), Path(out)
    if not input.exists():
        raise FileNotFoundError(f"input file {input} does not exist")
    if input.resolve() == out.resolve():
        raise ValueError("--out must differ from --input")
    if scorer is None:
        scorer = _champion_scorer(task)
    if task not in scorer.bundle.models:
        raise ValueError(
            f"the scorer has no model for task {task!r}; it has {', '.join(scorer.bundle.models)}"
        )
    model = scorer.bundle.models[task]
    source = pq.ParquetFile(input)
    missing = [f for f in model.features if f not in source.schema_arrow.names]
    if missing:
        raise ValueError(
            f"{input}: {len(missing)} feature column(s) of the {task} model are missing "
            f"(e.g. {', '.join(missing[:5])}); build the file with `safetyml features build {task}`"
        )
    schema = output_schema(source.schema_arrow, model.features, task, explain)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    started = time.perf_counter()
    with pq.ParquetWriter(tmp, schema) as writer:
        if choice.is_dask:
            rows = _dask_engine(scorer, task, input, schema, writer, explain, k, choice, progress)
        else:
            rows = _pandas_engine(scorer, task, source, schema, writer, explain, k, batch_size, progress)
    tmp.replace(out)
    return ScoreFileResult(task, choice.engine, rows, time.perf_counter() - started, out)


def _champion_scorer(task: str) -> Any:
    """A scorer holding the champion of ``task`` only (no online store: the features are in the file)."""
    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.scoring.scorer import Scorer

    model, ref = tracking.load_model(task, "champion")
    return Scorer(
        models={task: model},
        feature_set=load_feature_set(),
        model_versions={task: str(ref.version)},
        model_names={task: str(ref.name)},
    )


def read_scores(path: Path) -> pd.DataFrame:
    """Read a scored file back, with ``reasons`` parsed from JSON when present."""
    df = pd.read_parquet(path)
    if "reasons" in df.columns:
        df["reasons"] = [json.loads(v) if isinstance(v, str) else v for v in df["reasons"]]
    return df
