"""Reading a data folder into validated tables, with a quarantine for invalid rows.

A data folder holds one entry per contract table, named after it: a file (``trips.parquet`` or
``trips.csv``) or a directory of Parquet parts as data lakes write them (``trips/`` or
``trips.parquet/``, hive-partitioned or not, e.g. ``trips/date=2026-09-01/part-0.parquet``), plus
``truth/`` when it was simulated. Every command that reads tables goes through :func:`load_tables`
(pandas) or :func:`load_tables_dask` (Dask); both read a table as the same ordered list of parts
(:func:`table_parts`, one part per file of a directory or per row group of a single Parquet file) with
the same reader (:func:`read_part`), and both check every rule of :mod:`safetyml.contract` and write the
same quarantine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from safetyml import cities
from safetyml.contract import PAIR_PARTS, PAIR_SEPARATOR, TABLE_ORDER, TABLES, ColumnSpec, TableSpec
from safetyml.errors import SafetymlError

log = logging.getLogger(__name__)

OnInvalid = Literal["raise", "quarantine"]
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"
ROW_GROUP_ROWS = 100_000  # rows per Parquet row group of the frames and tables safetyml writes
_EXAMPLES = 5


class ContractError(SafetymlError, ValueError):
    """Input tables break the data contract. The message names table, column, rule, count and examples."""

    def __init__(self, message: str, failures: pd.DataFrame):
        super().__init__(message)
        self.failures = failures


@dataclass
class Tables:
    """The validated contract tables of one data folder, timestamps in UTC."""

    riders: pd.DataFrame
    merchants: pd.DataFrame
    trips: pd.DataFrame
    incidents: pd.DataFrame
    merchant_ledger: pd.DataFrame
    credit_events: pd.DataFrame
    source: Path | None = None
    quarantined: dict[str, int] = field(default_factory=dict)

    def get(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; contract tables: {', '.join(TABLE_ORDER)}")
        return getattr(self, name)

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [(name, self.get(name)) for name in TABLE_ORDER]


@dataclass
class ValidationReport:
    """Every rule violation found, one row per (table, column, rule, row)."""

    failures: pd.DataFrame
    row_counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.failures.empty

    def summary(self) -> pd.DataFrame:
        """One line per (table, column, rule): how many rows, and a few example keys."""
        if self.failures.empty:
            return pd.DataFrame(columns=["table", "column", "rule", "rows", "examples"])
        grouped = self.failures.groupby(["table", "column", "rule"], sort=False)
        return grouped.agg(
            rows=("row", "nunique"),
            examples=("key", lambda keys: ", ".join(map(str, list(dict.fromkeys(keys))[:_EXAMPLES]))),
        ).reset_index()

    def message(self) -> str:
        lines = ["data contract violated:"]
        for row in self.summary().itertuples(index=False):
            lines.append(
                f"  table {row.table!r}, column {row.column!r}: rule {row.rule} failed for {row.rows} "
                f"row(s); e.g. {row.examples}"
            )
        lines.append("Fix the rows, or pass --on-invalid quarantine to set them aside and go on.")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- reading


def table_path(data_dir: Path, name: str) -> Path | None:
    """The file or directory holding table ``name`` in ``data_dir`` (None when there is none)."""
    for candidate in (data_dir / f"{name}.parquet", data_dir / f"{name}.csv", data_dir / name):
        if candidate.is_file() or (candidate.is_dir() and candidate.suffix != ".csv"):
            return candidate
    return None


def _is_data_file(path: Path) -> bool:
    """A Parquet part of a dataset directory (not ``_SUCCESS``, ``_metadata``, ``.crc`` or hidden files)."""
    return path.is_file() and not path.name.startswith(("_", ".")) and not path.name.endswith(".crc")


def table_files(path: Path) -> list[Path]:
    """The data files of a table, in a fixed order (sorted relative paths): the file itself, or the Parquet
    parts under a dataset directory."""
    if path.is_file():
        return [path]
    files = sorted((f for f in path.rglob("*") if _is_data_file(f)), key=lambda f: f.relative_to(path).parts)
    if not files:
        raise FileNotFoundError(f"table directory {path} holds no Parquet parts")
    return files


@dataclass(frozen=True)
class Part:
    """One piece of a table read as a unit: a file, or one row group of a Parquet file.

    ``partition`` holds the hive keys of its directories (``date=2026-09-01`` → ``{"date": ...}``).
    """

    path: Path
    row_group: int | None = None
    partition: tuple[tuple[str, str], ...] = ()


def _hive_keys(path: Path, root: Path) -> tuple[tuple[str, str], ...]:
    from urllib.parse import unquote

    keys = []
    for folder in path.relative_to(root).parts[:-1]:
        if "=" in folder:
            key, value = folder.split("=", 1)
            keys.append((key, unquote(value)))
    return tuple(keys)


def table_parts(data_dir: Path, spec: TableSpec, split_row_groups: bool = False) -> list[Part]:
    """How a table is cut into parts: one per file (a single file, or each file of a dataset directory),
    or with ``split_row_groups`` (the Dask engine) one per Parquet row group of each file, so a part holds
    at most a row group whatever the files' sizes; an absent optional table is no part at all."""
    import pyarrow.parquet as pq

    def split(file: Path, partition: tuple = ()) -> list[Part]:
        if split_row_groups and file.suffix == ".parquet":
            groups = pq.ParquetFile(file).metadata.num_row_groups
            if groups > 1:
                return [Part(file, group, partition) for group in range(groups)]
        return [Part(file, None, partition)]

    path = table_path(data_dir, spec.name)
    if path is None:
        if spec.required:
            expected = f"{spec.name}.parquet or {spec.name}.csv (or a folder {spec.name}/ of Parquet parts)"
            raise FileNotFoundError(f"table {spec.name!r} not found in {data_dir}: expected {expected}")
        log.warning("optional table %s is absent from %s; using an empty table", spec.name, data_dir)
        return []
    if path.is_file():
        return split(path)
    return [part for file in table_files(path) for part in split(file, _hive_keys(file, path))]


def read_part(part: Part, spec: TableSpec) -> pd.DataFrame:
    """Read one part as it is. Hive keys that are contract columns (e.g. ``city=``) become string columns;
    other keys (e.g. ``date=``) only lay the files out and are not added."""
    path = part.path
    if path.suffix == ".csv":
        df = pd.read_csv(path, dtype={c.name: "str" for c in spec.columns if c.kind in ("id", "string")})
    elif part.row_group is not None:
        import pyarrow.parquet as pq

        df = pq.ParquetFile(path).read_row_group(part.row_group).to_pandas()
    else:
        df = pd.read_parquet(path)
    contract_columns = set(spec.column_names)
    for key, value in part.partition:
        if key in contract_columns and key not in df.columns:
            df[key] = pd.Series([value] * len(df), index=df.index, dtype="str")
    return df


def _empty_raw(spec: TableSpec) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=object) for c in spec.columns if c.required})


def read_raw(data_dir: Path, spec: TableSpec) -> pd.DataFrame:
    """Read a table (file or directory of parts) as it is; a missing optional table is an empty frame."""
    parts = table_parts(data_dir, spec)
    if not parts:
        return _empty_raw(spec)
    frames = [read_part(part, spec) for part in parts]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------- coercion


def _coerce_column(col: ColumnSpec, values: pd.Series) -> pd.Series:
    """Convert a column to its contract type; unparseable values become missing (and are then reported)."""
    if col.kind == "timestamp":
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        else:
            parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        return parsed.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
    if col.kind in ("float", "int"):
        return pd.to_numeric(values, errors="coerce").astype("float64")
    if col.kind == "bool":
        if pd.api.types.is_bool_dtype(values):
            return values.astype("boolean")
        mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
        return values.astype("str").str.lower().map(mapping).astype("boolean")
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype("str")


def coerce(spec: TableSpec, raw: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Give each contract column its type; report values that could not be parsed and missing columns."""
    df = raw.copy()
    failures: list[pd.DataFrame] = []
    for col in spec.columns:
        if col.name not in df.columns:
            if col.required:
                raise ContractError(
                    f"table {spec.name!r} has no column {col.name!r} ({col.rules()}); "
                    f"it has: {', '.join(map(str, raw.columns))}",
                    pd.DataFrame(),
                )
            continue
        before = df[col.name]
        after = _coerce_column(col, before)
        bad = before.notna().to_numpy() & after.isna().to_numpy()
        if bad.any():
            failures.append(_failure_rows(spec, df, np.flatnonzero(bad), col.name, f"type_{col.kind}"))
        if col.kind == "int":
            fractional = after.notna() & (after % 1 != 0)
            if fractional.any():
                failures.append(
                    _failure_rows(spec, df, np.flatnonzero(fractional.to_numpy()), col.name, "type_int")
                )
        df[col.name] = after
    return df, failures


def _failure_rows(
    spec: TableSpec, df: pd.DataFrame, positions: np.ndarray, column: str, rule: str
) -> pd.DataFrame:
    keys = df[spec.key].iloc[positions].astype("str").to_numpy() if spec.key else positions.astype(str)
    return pd.DataFrame({"table": spec.name, "column": column, "rule": rule, "row": positions, "key": keys})


# ---------------------------------------------------------------------------------------------- validation


def _schema(spec: TableSpec, present: set[str], parents: dict[str, pd.Index], unique: bool = True):
    """The pandera schema of a table, and the rule name of each check keyed by (column, check number).

    ``unique=False`` leaves key uniqueness out: the Dask engine checks it across partitions instead."""
    import pandera.pandas as pa

    columns = {}
    names: dict[tuple[str | None, int], str] = {}
    for col in spec.columns:
        if col.name not in present:
            continue
        checks = []
        if col.allowed:
            checks.append(pa.Check.isin(list(col.allowed), name="allowed_values"))
        if col.ge is not None:
            checks.append(pa.Check.ge(col.ge, name=f"min_{col.ge:g}"))
        if col.le is not None:
            checks.append(pa.Check.le(col.le, name=f"max_{col.le:g}"))
        if col.references:
            parent_keys = parents[col.references]
            checks.append(pa.Check.isin(parent_keys, name=f"exists_in_{col.references}"))
        if col.name == "city":
            checks.append(pa.Check.isin(list(cities.registry()), name="known_city_with_time_zone"))
        if col.kind == "id" and col.name in PAIR_PARTS:  # the pair id joins rider and merchant ids with it
            checks.append(
                pa.Check(
                    lambda s: ~s.astype("str").str.contains(PAIR_SEPARATOR, regex=False),
                    name="no_vertical_bar",
                )
            )
        columns[col.name] = pa.Column(checks=checks, nullable=col.nullable, unique=col.unique and unique)
        names.update({(col.name, number): check.name for number, check in enumerate(checks)})
    frame_checks = [
        pa.Check(lambda df, r=rule: ~(df[r.left] < df[r.right]), name=rule.name) for rule in spec.row_rules
    ]
    names.update({(None, number): check.name for number, check in enumerate(frame_checks)})
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=False, coerce=False), names


_BUILTIN_RULES = {"not_nullable": "not_null", "field_uniqueness": "unique"}


def _rule_name(
    names: dict[tuple[str | None, int], str], column: object, check: object, number: object
) -> str:
    if str(check) in _BUILTIN_RULES:
        return _BUILTIN_RULES[str(check)]
    column_key = column if isinstance(column, str) else None
    if pd.notna(number) and (column_key, int(number)) in names:
        return names[(column_key, int(number))]
    return str(check)


def validate_table(
    spec: TableSpec, df: pd.DataFrame, parents: dict[str, pd.Index], unique: bool = True
) -> pd.DataFrame:
    """All rule violations of one (already coerced) table or partition, as failure rows.

    ``parents`` holds, for each referenced table, its valid keys (at least those this table uses)."""
    import pandera.pandas as pa

    positional = df.reset_index(drop=True)
    schema, names = _schema(spec, set(positional.columns), parents, unique)
    try:
        schema.validate(positional, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.dropna(subset=["index"]).astype({"check": "str"})
        out = []
        for (context, column, check, number), group in cases.groupby(
            ["schema_context", "column", "check", "check_number"], sort=False, dropna=False
        ):
            positions = np.unique(group["index"].astype("int64").to_numpy())
            row_level = context == "DataFrameSchema" or not isinstance(column, str)
            column_name = "*row*" if row_level else str(column)
            rule = _rule_name(names, None if row_level else column, check, number)
            out.append(_failure_rows(spec, positional, positions, column_name, rule))
        return pd.concat(out, ignore_index=True) if out else _empty_failures()
    return _empty_failures()


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "table": pd.Series(dtype="str"),
            "column": pd.Series(dtype="str"),
            "rule": pd.Series(dtype="str"),
            "row": pd.Series(dtype="int64"),
            "key": pd.Series(dtype="str"),
        }
    )


def _finalise(spec: TableSpec, df: pd.DataFrame) -> pd.DataFrame:
    """Types that only make sense once invalid rows are gone (an int column without missing values)."""
    for col in spec.columns:
        if col.kind == "int" and col.name in df.columns and not col.nullable:
            df[col.name] = df[col.name].astype("int64")
    return df.reset_index(drop=True)


def _ordered_failures(spec: TableSpec, failures: list[pd.DataFrame]) -> pd.DataFrame:
    """The failures of a table in one canonical order, by contract column (row rules last), rule, row, so
    both engines give the same report and the same ``_reasons`` whatever order the checks ran in."""
    frames = [f for f in failures if not f.empty]
    if not frames:
        return _empty_failures()
    out = pd.concat(frames, ignore_index=True)
    rank = {name: number for number, name in enumerate(spec.column_names)}
    order = out["column"].map(rank).fillna(len(rank)).astype("int64")
    out = out.assign(_rank=order).sort_values(["_rank", "rule", "row"], kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)


def check_table(
    spec: TableSpec, raw: pd.DataFrame, parents: dict[str, pd.Index], unique: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coerce and validate one table or partition: (coerced rows, positionally indexed; failures)."""
    df, failures = coerce(spec, raw)
    df = df.reset_index(drop=True)
    failures.append(validate_table(spec, df, parents, unique))
    return df, _ordered_failures(spec, failures)


def split_rows(
    spec: TableSpec, df: pd.DataFrame, failures: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid rows with their final types, invalid rows with a ``_reasons`` column) of checked rows."""
    bad_rows = np.unique(failures["row"].to_numpy().astype("int64"))
    reasons = (
        failures.assign(reason=failures["column"] + ":" + failures["rule"])
        .groupby("row", sort=False)["reason"]
        .agg("; ".join)
    )
    invalid = df.iloc[bad_rows].assign(_reasons=reasons.reindex(bad_rows).to_numpy())
    return _finalise(spec, df.drop(index=bad_rows)), invalid


def check_tables(
    raw: dict[str, pd.DataFrame],
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame]:
    """Coerce and validate raw tables in parent-first order.

    Returns (valid rows per table, invalid rows per table with a ``_reasons`` column, all failures).
    Foreign keys are checked against the parents' *valid* rows, so a child of a quarantined parent is
    quarantined too rather than left dangling.
    """
    valid: dict[str, pd.DataFrame] = {}
    invalid: dict[str, pd.DataFrame] = {}
    all_failures: list[pd.DataFrame] = []
    parents: dict[str, pd.Index] = {}
    for name in TABLE_ORDER:
        spec = TABLES[name]
        df, failures = check_table(spec, raw[name], parents)
        all_failures.append(failures)
        valid[name], invalid[name] = split_rows(spec, df, failures)
        if spec.key:
            parents[name] = pd.Index(valid[name][spec.key].dropna().unique())
    return valid, invalid, pd.concat(all_failures, ignore_index=True)


def read_raw_tables(data_dir: Path) -> dict[str, pd.DataFrame]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    return {name: read_raw(data_dir, TABLES[name]) for name in TABLE_ORDER}


def validate_dir(data_dir: Path) -> ValidationReport:
    """Check a data folder against the contract without changing anything."""
    raw = read_raw_tables(data_dir)
    _, _, failures = check_tables(raw)
    return ValidationReport(failures=failures, row_counts={n: len(df) for n, df in raw.items()})


def load_tables(
    data_dir: Path,
    on_invalid: OnInvalid = "raise",
    quarantine_dir: Path | None = None,
) -> Tables:
    """Read and validate a data folder.

    ``on_invalid="raise"`` stops with a :class:`ContractError` at the first invalid row;
    ``"quarantine"`` writes invalid rows with their reasons to ``quarantine_dir`` (default
    ``DATA_DIR/quarantine``) and goes on with the valid ones. Nothing is dropped silently.
    """
    data_dir = Path(data_dir)
    raw = read_raw_tables(data_dir)
    return tables_from_frames(raw, on_invalid, quarantine_dir or data_dir / "quarantine", source=data_dir)


def tables_from_frames(
    raw: dict[str, pd.DataFrame],
    on_invalid: OnInvalid = "raise",
    quarantine_dir: Path | None = None,
    source: Path | None = None,
) -> Tables:
    """Validate in-memory frames (for example a notebook's) exactly as :func:`load_tables` does."""
    for spec in TABLES.values():
        if spec.name not in raw:
            if spec.required:
                raise ContractError(f"table {spec.name!r} is missing", _empty_failures())
            raw[spec.name] = _empty_raw(spec)
    valid, invalid, failures = check_tables(raw)
    quarantined = {name: len(rows) for name, rows in invalid.items() if len(rows)}
    if quarantined:
        report = ValidationReport(failures=failures, row_counts={n: len(df) for n, df in raw.items()})
        _quarantine(report, invalid, on_invalid, quarantine_dir)
    return Tables(**valid, source=source, quarantined=quarantined)


def _quarantine(
    report: ValidationReport, invalid: dict[str, pd.DataFrame], on_invalid: OnInvalid, folder: Path | None
) -> None:
    """Raise the report, or write each table's invalid rows (with ``_reasons``) to ``folder/NAME.parquet``."""
    if on_invalid == "raise":
        raise ContractError(report.message(), report.failures)
    if folder is None:
        raise ValueError("quarantine needs a folder to write invalid rows to")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in invalid.items():
        if len(rows):
            rows.to_parquet(folder / f"{name}.parquet", index=False)
            log.warning("quarantined %d invalid row(s) of %s to %s", len(rows), name, folder)


def write_parquet(df: pd.DataFrame, path: Path, row_group_rows: int | None = None) -> None:
    """Write ``df`` as Parquet without its index, in row groups of at most ``row_group_rows`` rows
    (default :data:`ROW_GROUP_ROWS`), so readers that go one row group at a time (``score-file``, the Dask
    engine) hold a bounded number of rows whatever the file's size."""
    df.to_parquet(path, index=False, row_group_size=row_group_rows or ROW_GROUP_ROWS)


def write_tables(tables: Tables | dict[str, pd.DataFrame], out_dir: Path) -> None:
    """Write tables as Parquet, one file per table, deterministically (no pandas index)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = tables.items() if isinstance(tables, Tables) else tables.items()
    for name, df in items:
        write_parquet(df, out_dir / f"{name}.parquet")


# ---------------------------------------------------------------------------------------------- Dask engine
#
# The same contract on a cluster. Each part of a table is read, coerced and checked by the same functions
# as above, on a worker (the checks that look at one row at a time). What needs the whole table is done
# across partitions: key uniqueness (a hash-partitioned count of the keys) and foreign keys (each child's
# distinct references, matched against the parent's *valid* keys partition by partition, so only the keys
# a child uses travel). Row positions are shifted by each partition's offset, so failures, reasons and
# the quarantine are those of the pandas engine.


@dataclass
class DaskTables:
    """Validated contract tables as Dask DataFrames (one partition per part), held on the cluster."""

    frames: dict[str, Any]
    row_counts: dict[str, int]
    source: Path | None = None
    quarantined: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, list] = field(default_factory=dict)  # futures of each table's valid parts, in order

    def get(self, name: str) -> Any:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; contract tables: {', '.join(TABLE_ORDER)}")
        return self.frames[name]

    def compute(self) -> Tables:
        """The tables gathered into pandas (small data only: tests, notebooks)."""
        frames = {name: self.frames[name].compute().reset_index(drop=True) for name in TABLE_ORDER}
        return Tables(**frames, source=self.source, quarantined=dict(self.quarantined))


def _read_and_coerce(part: Part | None, spec: TableSpec) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    raw = _empty_raw(spec) if part is None else read_part(part, spec)
    df, failures = coerce(spec, raw)
    return df.reset_index(drop=True), failures


def _distinct(coerced: tuple[pd.DataFrame, list[pd.DataFrame]], column: str) -> np.ndarray:
    df = coerced[0]
    return df[column].dropna().unique() if column in df.columns else np.array([], dtype=object)


def _union(*arrays: np.ndarray) -> pd.Index:
    values = [a for a in arrays if len(a)]
    return pd.Index(pd.unique(np.concatenate(values)) if values else np.array([], dtype=object))


def _present(valid: pd.DataFrame, column: str, wanted: pd.Index) -> np.ndarray:
    keys = valid[column]
    return keys[keys.isin(wanted)].dropna().unique()


def _key_column(coerced: tuple[pd.DataFrame, list[pd.DataFrame]], column: str) -> pd.Series:
    return coerced[0][column].reset_index(drop=True)


def _check_partition(
    coerced: tuple[pd.DataFrame, list[pd.DataFrame]],
    spec: TableSpec,
    parents: dict[str, pd.Index],
    duplicated: pd.Index | None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """(valid rows, invalid rows, failures with partition-local rows, row count) of one coerced part."""
    df, failures = coerced
    failures = list(failures)
    failures.append(validate_table(spec, df, parents, unique=False))
    if duplicated is not None and len(duplicated):
        key = next(c.name for c in spec.columns if c.unique)
        positions = np.flatnonzero(df[key].isin(duplicated).to_numpy())
        failures.append(_failure_rows(spec, df, positions, key, _BUILTIN_RULES["field_uniqueness"]))
    ordered = _ordered_failures(spec, failures)
    valid, invalid = split_rows(spec, df, ordered)
    return valid, invalid, ordered, len(df)


def _item(value: tuple, number: int | slice) -> Any:
    return value[number]


def _empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _duplicated_keys(client, coerced: list, column: str):
    """A future of the keys that occur more than once across all partitions (hash-partitioned counts)."""
    import dask
    import dask.dataframe as dd

    series = [client.submit(_key_column, part, column) for part in coerced]
    meta = client.submit(_empty_like, series[0]).result()
    # a task-based shuffle: the counts are small, and it keeps the p2p shuffle's log lines out
    with dask.config.set({"dataframe.convert-string": False, "dataframe.shuffle.method": "tasks"}):
        keys = dd.from_delayed(series, meta=meta, verify_meta=False)
        counts = keys.value_counts(split_out=max(1, len(series) // 4))
        return client.compute(counts[counts > 1].index.to_series(), optimize_graph=False)


def check_tables_dask(
    data_dir: Path, client
) -> tuple[dict[str, list], dict[str, pd.DataFrame], pd.DataFrame, dict[str, int]]:
    """Check every table of ``data_dir`` on the cluster of ``client``, parents first.

    Returns (futures of each table's valid partitions, invalid rows per table with ``_reasons`` gathered
    here, all failures with table-wide row positions, raw row counts); the same failures and invalid rows
    as :func:`check_tables` on the whole tables.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    parts = {name: table_parts(data_dir, TABLES[name], split_row_groups=True) for name in TABLE_ORDER}
    valid: dict[str, list] = {}
    invalid: dict[str, pd.DataFrame] = {}
    all_failures: list[pd.DataFrame] = []
    row_counts: dict[str, int] = {}
    for name in TABLE_ORDER:
        spec = TABLES[name]
        coerced = client.map(_read_and_coerce, parts[name] or [None], spec=spec, pure=False)
        parents = {}
        for col in spec.columns:
            if col.references:
                parent = TABLES[col.references]
                wanted = client.submit(_union, *client.map(_distinct, coerced, column=col.name, pure=False))
                found = client.map(_present, valid[parent.name], column=parent.key, wanted=wanted)
                parents[col.references] = client.submit(_union, *found)
        unique = [c.name for c in spec.columns if c.unique]
        duplicated = _duplicated_keys(client, coerced, unique[0]) if unique else None
        checked = client.map(
            _check_partition, coerced, spec=spec, parents=parents, duplicated=duplicated, pure=False
        )
        valid[name] = client.map(_item, checked, number=0)
        results = client.gather(client.map(_item, checked, number=slice(1, None)))
        offset, failures, bad = 0, [], []
        for rows_invalid, rows_failed, count in results:
            rows_failed = rows_failed.assign(row=rows_failed["row"] + offset)
            if not spec.key:
                rows_failed["key"] = rows_failed["row"].astype("str")
            failures.append(rows_failed)
            bad.append(rows_invalid.set_axis(rows_invalid.index + offset))
            offset += count
        row_counts[name] = offset
        all_failures.append(_ordered_failures(spec, failures))
        invalid[name] = pd.concat(bad) if len(bad) > 1 else bad[0]
    return valid, invalid, pd.concat(all_failures, ignore_index=True), row_counts


def _dask_frames(client, valid: dict[str, list]) -> dict[str, Any]:
    import dask
    import dask.dataframe as dd

    frames = {}
    with dask.config.set({"dataframe.convert-string": False}):
        for name, futures in valid.items():
            meta = client.submit(_empty_like, futures[0]).result()
            frames[name] = dd.from_delayed(futures, meta=meta, verify_meta=False)
    return frames


def validate_dir_dask(data_dir: Path, client) -> ValidationReport:
    """:func:`validate_dir` on the Dask engine: the same report, tables read and checked on the cluster."""
    _, _, failures, row_counts = check_tables_dask(data_dir, client)
    return ValidationReport(failures=failures, row_counts=row_counts)


def load_tables_dask(
    data_dir: Path,
    client,
    on_invalid: OnInvalid = "raise",
    quarantine_dir: Path | None = None,
) -> DaskTables:
    """:func:`load_tables` on the Dask engine: the same checks and the same quarantine files; the valid
    rows stay on the cluster as Dask DataFrames (one partition per file or row group)."""
    data_dir = Path(data_dir)
    valid, invalid, failures, row_counts = check_tables_dask(data_dir, client)
    quarantined = {name: len(rows) for name, rows in invalid.items() if len(rows)}
    if quarantined:
        report = ValidationReport(failures=failures, row_counts=row_counts)
        _quarantine(report, invalid, on_invalid, quarantine_dir or data_dir / "quarantine")
    return DaskTables(
        _dask_frames(client, valid), row_counts, source=data_dir, quarantined=quarantined, partitions=valid
    )
