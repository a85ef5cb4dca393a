"""Reading a data folder into validated tables, with a quarantine for invalid rows.

A data folder holds one file per contract table, named after it (``trips.parquet`` or ``trips.csv``),
plus ``truth/`` when it was simulated. Every command that reads tables goes through :func:`load_tables`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from safetyml import cities
from safetyml.contract import TABLE_ORDER, TABLES, ColumnSpec, TableSpec
from safetyml.errors import SafetymlError

log = logging.getLogger(__name__)

OnInvalid = Literal["raise", "quarantine"]
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"
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
    for suffix in (".parquet", ".csv"):
        path = data_dir / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def read_raw(data_dir: Path, spec: TableSpec) -> pd.DataFrame:
    """Read a table's file as it is; a missing optional table is an empty frame with its columns."""
    path = table_path(data_dir, spec.name)
    if path is None:
        if spec.required:
            expected = f"{spec.name}.parquet or {spec.name}.csv"
            raise FileNotFoundError(f"table {spec.name!r} not found in {data_dir}: expected {expected}")
        log.warning("optional table %s is absent from %s; using an empty table", spec.name, data_dir)
        return pd.DataFrame({c.name: pd.Series(dtype=object) for c in spec.columns if c.required})
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={c.name: "str" for c in spec.columns if c.kind in ("id", "string")})


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


def _schema(spec: TableSpec, present: set[str], parents: dict[str, pd.Index]):
    """The pandera schema of a table, and the rule name of each check keyed by (column, check number)."""
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
        columns[col.name] = pa.Column(checks=checks, nullable=col.nullable, unique=col.unique)
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


def validate_table(spec: TableSpec, df: pd.DataFrame, parents: dict[str, pd.Index]) -> pd.DataFrame:
    """All rule violations of one (already coerced) table, as failure rows."""
    import pandera.pandas as pa

    positional = df.reset_index(drop=True)
    schema, names = _schema(spec, set(positional.columns), parents)
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
        df, failures = coerce(spec, raw[name])
        df = df.reset_index(drop=True)
        failures.append(validate_table(spec, df, parents))
        failures_df = pd.concat(
            [f for f in failures if not f.empty] or [_empty_failures()], ignore_index=True
        )
        all_failures.append(failures_df)
        bad_rows = np.unique(failures_df["row"].to_numpy().astype("int64"))
        reasons = (
            failures_df.assign(reason=failures_df["column"] + ":" + failures_df["rule"])
            .groupby("row")["reason"]
            .agg("; ".join)
        )
        invalid[name] = df.iloc[bad_rows].assign(_reasons=reasons.reindex(bad_rows).to_numpy())
        valid[name] = _finalise(spec, df.drop(index=bad_rows))
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
            raw[spec.name] = pd.DataFrame(
                {c.name: pd.Series(dtype=object) for c in spec.columns if c.required}
            )
    valid, invalid, failures = check_tables(raw)
    quarantined = {name: len(rows) for name, rows in invalid.items() if len(rows)}
    if quarantined:
        report = ValidationReport(failures=failures, row_counts={n: len(df) for n, df in raw.items()})
        if on_invalid == "raise":
            raise ContractError(report.message(), failures)
        if quarantine_dir is None:
            raise ValueError("quarantine needs a folder to write invalid rows to")
        quarantine_dir = Path(quarantine_dir)
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        for name, rows in invalid.items():
            if len(rows):
                rows.to_parquet(quarantine_dir / f"{name}.parquet", index=False)
                log.warning("quarantined %d invalid row(s) of %s to %s", len(rows), name, quarantine_dir)
    return Tables(**valid, source=source, quarantined=quarantined)


def write_tables(tables: Tables | dict[str, pd.DataFrame], out_dir: Path) -> None:
    """Write tables as Parquet, one file per table, deterministically (no pandas index)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = tables.items() if isinstance(tables, Tables) else tables.items()
    for name, df in items:
        df.to_parquet(out_dir / f"{name}.parquet", index=False)
