"""The online store: the latest feature vector of every rider, merchant and zone in embedded SQLite.

One table per entity (``id`` primary key, one column per feature, plus ``city`` for merchants, zones and
cities) and a ``metadata`` table with the as_of and the definitions' version hash. SQLite because it ships
with Python, needs no server, and a primary-key lookup on an open connection takes a few microseconds.
The ``city`` entity holds the city-level zone values used for trips whose zone is unknown.

Several replicas share one store on Redis instead: ``SAFETYML_ONLINE_STORE_URL=redis://...`` makes
:meth:`OnlineStore.open` return a :class:`~safetyml.features.online_redis.RedisOnlineStore`, which has the
same methods (``write_all``, ``write``, ``get``, ``get_one``, ``ids``, ``metadata``, ``pinned``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from safetyml import envvars, paths
from safetyml.features import zones
from safetyml.features.definitions import FeatureSet, load_feature_set, pair_id
from safetyml.values import is_missing, utc_timestamp

STORE_FILE = "online_store.sqlite"
ENTITIES = ("rider", "merchant", "pair", "zone", "city")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BULK = 2_000  # above this many ids, read the whole table once instead of IN (...) queries
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class OnlineStore:
    """Feature vectors by entity id in one SQLite file; keep one instance open for fast lookups."""

    prefetches = False  # lookups take microseconds: pinned(prefetch=...) ignores the list

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._conn.commit()
        self._lock = threading.Lock()
        self._schema: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, path: Path | str | None = None) -> Any:
        """Open (creating if needed) the store: a ``redis://`` (``rediss://``, ``unix://``) URL, else a
        SQLite file; default ``SAFETYML_ONLINE_STORE_URL`` if set, else ``SAFETYML_HOME/online_store.sqlite``.
        """
        target = path if path is not None else os.environ.get(envvars.ONLINE_STORE_URL) or None
        if isinstance(target, str) and target.startswith(REDIS_SCHEMES):
            from safetyml.features.online_redis import RedisOnlineStore

            return RedisOnlineStore.from_url(target)
        return cls(Path(target) if target is not None else paths.home() / STORE_FILE)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ write
    def write_all(self, vectors: Mapping[str, pd.DataFrame], as_of: Any, version: str) -> int:
        """Replace every entity's table with its frame in ONE transaction (a reader's statement sees all
        of the old version or all of the new one); returns the rows written."""
        with self._lock, self._conn:
            total = sum(self._write_table(e, frame, as_of, version) for e, frame in vectors.items())
        self._schema.clear()
        return total

    def write(self, entity: str, frame: pd.DataFrame, as_of: Any, version: str) -> int:
        """Replace the entity's table with ``frame`` (index = id; a ``city`` column is kept as a key)."""
        return self.write_all({entity: frame}, as_of, version)

    def _write_table(self, entity: str, frame: pd.DataFrame, as_of: Any, version: str) -> int:
        kinds, values = encode_columns(entity, frame)
        columns = list(kinds)
        table = _table(entity)
        ddl = ", ".join(f'"{c}" {"TEXT" if kinds[c] == "text" else "REAL"}' for c in columns)
        rows = list(zip(*values, strict=True)) if len(frame) else []
        placeholders = ", ".join("?" * (len(columns) + 1))
        meta = entity_meta(frame, kinds, as_of, version)
        self._conn.execute(f"DROP TABLE IF EXISTS {table}")
        self._conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY{', ' + ddl if ddl else ''})")
        self._conn.executemany(f"INSERT INTO {table} VALUES ({placeholders})", rows)
        self._conn.execute(
            "INSERT OR REPLACE INTO metadata VALUES (?, ?)", (f"entity:{entity}", json.dumps(meta))
        )
        self._conn.execute("INSERT OR REPLACE INTO metadata VALUES ('as_of', ?)", (meta["as_of"],))
        self._conn.execute("INSERT OR REPLACE INTO metadata VALUES ('version', ?)", (version,))
        return len(frame)

    @contextmanager
    def pinned(self, prefetch: Iterable[tuple[str, str]] = ()) -> Iterator[None]:
        """Reads inside the block belong to one version (the Redis store pins its pointer and fetches
        ``prefetch`` in one round trip; here lookups take microseconds and each materialization is one
        SQLite transaction, so this is a no-op kept for the common interface)."""
        yield

    def ids(self, entity: str) -> list[str]:
        """Every id of an entity, sorted (examples and benchmarks; [] if the entity was never written)."""
        _check_name(entity)
        try:
            with self._lock:
                rows = self._conn.execute(f"SELECT id FROM {_table(entity)} ORDER BY id").fetchall()  # noqa: S608
        except sqlite3.OperationalError:
            return []
        return [r[0] for r in rows]

    # ------------------------------------------------------------------------------------------ read
    def _entity_meta(self, entity: str) -> dict[str, Any]:
        if entity not in self._schema:
            _check_name(entity)
            with self._lock:
                row = self._conn.execute(
                    "SELECT value FROM metadata WHERE key = ?", (f"entity:{entity}",)
                ).fetchone()
            if row is None:
                raise KeyError(
                    f"the online store {self.path} has no {entity!r} table; "
                    "run `safetyml features materialize`"
                )
            meta = json.loads(row[0])
            meta["columns"] = list(meta["kinds"])
            meta["sql_one"] = f"SELECT * FROM {_table(entity)} WHERE id = ?"
            self._schema[entity] = meta
        return self._schema[entity]

    def get(self, entity: str, ids: Any, with_city: bool = False) -> pd.DataFrame:
        """Vectors of the given ids, indexed by id (unknown ids are absent); ``city`` only if asked."""
        meta = self._entity_meta(entity)
        wanted = [str(i) for i in pd.Series(ids, dtype="object").dropna().unique()]
        if len(wanted) > _BULK:
            with self._lock:
                rows = self._conn.execute(f"SELECT * FROM {_table(entity)}").fetchall()
        else:
            rows = []
            with self._lock:
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    marks = ", ".join("?" * len(chunk))
                    rows += self._conn.execute(
                        f"SELECT * FROM {_table(entity)} WHERE id IN ({marks})", chunk
                    ).fetchall()
        if len(wanted) > _BULK:
            keep = set(wanted)
            rows = [r for r in rows if r[0] in keep]
        return frame_of(meta, rows, with_city)

    def get_one(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        """One vector as a dict (the fastest path for a single real-time request); None if unknown."""
        meta = self._entity_meta(entity)
        with self._lock:
            row = self._conn.execute(meta["sql_one"], (str(entity_id),)).fetchone()
        return None if row is None else row_dict(meta, row[1:])

    def metadata(self) -> dict[str, Any]:
        """as_of, definitions version and row counts of what was last materialized."""
        with self._lock:
            rows = dict(self._conn.execute("SELECT key, value FROM metadata").fetchall())
        counts = {
            k.split(":", 1)[1]: json.loads(v)["rows"] for k, v in rows.items() if k.startswith("entity:")
        }
        return {
            "as_of": rows.get("as_of"),
            "version": rows.get("version"),
            "rows": counts,
            "path": str(self.path),
        }


def _table(entity: str) -> str:
    return f"features_{entity}"


def encode_columns(entity: str, frame: pd.DataFrame) -> tuple[dict[str, str], list[np.ndarray]]:
    """Each column's kind (``text`` or ``real``) and the values to store: the ids first, then one object
    array per column with ``None`` for a missing value (the same encoding for SQLite and Redis)."""
    _check_name(entity)
    columns = [str(c) for c in frame.columns]
    for column in columns:
        _check_name(column)
    kinds = {c: ("text" if _is_text(frame[c]) else "real") for c in columns}
    values = [frame.index.astype("str").to_numpy(dtype=object)]
    for c in columns:
        if kinds[c] == "text":
            col = pd.Series(frame[c], dtype="object").to_numpy()
            values.append(np.array([None if is_missing(v) else str(v) for v in col], dtype=object))
        else:
            col = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            values.append(np.where(np.isnan(col), None, col).astype(object))
    return kinds, values


def entity_meta(frame: pd.DataFrame, kinds: dict[str, str], as_of: Any, version: str) -> dict[str, Any]:
    """What the store keeps about one written entity: as_of, definitions version, rows, column kinds."""
    return {"as_of": utc_timestamp(as_of).isoformat(), "version": version, "rows": len(frame), "kinds": kinds}


def frame_of(meta: dict[str, Any], rows: list[Any], with_city: bool) -> pd.DataFrame:
    """Rows ``(id, value, ...)`` in the entity's column order as the frame :meth:`OnlineStore.get`
    returns (both stores): indexed by id, reals as float64 (missing = NaN), texts as objects."""
    columns, kinds = meta["columns"], meta["kinds"]
    names = [c for c in columns if with_city or c != "city"]
    values = list(zip(*rows, strict=True)) if rows else [()] * (len(columns) + 1)
    data = {}
    for c, col in zip(columns, values[1:], strict=True):
        if c in names:
            data[c] = np.array(col, dtype=object) if kinds[c] == "text" else np.array(col, dtype="float64")
    return pd.DataFrame(data, index=pd.Index(list(values[0]), dtype="object", name="id"), columns=names)


def row_dict(meta: dict[str, Any], values: Any) -> dict[str, Any]:
    """One stored row's values (without the id) as the dict :meth:`OnlineStore.get_one` returns."""
    kinds = meta["kinds"]
    return {
        c: (np.nan if v is None and kinds[c] == "real" else v)
        for c, v in zip(meta["columns"], values, strict=True)
    }


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"online store: {name!r} is not a valid entity or column name (lower_snake_case)")


def _is_text(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values)


# ---------------------------------------------------------------------------------------------- materialize


def default_as_of(tables: Any) -> pd.Timestamp:
    """The first whole minute after the last event in the data, so every event counts."""
    from safetyml.features.engine import max_event_time

    return (max_event_time(tables) + pd.Timedelta(microseconds=1)).ceil("min")


def entity_vectors(
    engine: Any, as_of: pd.Timestamp, columns: dict[str, list[str]] | None = None
) -> dict[str, pd.DataFrame]:
    """Every rider, merchant, zone (seen cells and their neighbours) and city as of one time.

    ``columns`` (from :func:`store_columns`) limits each entity's columns; None computes them all.
    """
    fs = engine.fs
    ev = engine.events
    out: dict[str, pd.DataFrame] = {}
    if columns is not None:
        engine = _ColumnLimited(engine, columns)
    for entity, key in (("rider", "rider_id"), ("merchant", "merchant_id")):
        table = ev.riders if entity == "rider" else ev.merchants
        ids = table[key].astype("str").to_numpy()
        frame = engine.compute(entity, ids, as_of)
        frame.index = pd.Index(ids, name="id")
        if entity == "merchant":
            frame["city"] = table["city"].astype("str").to_numpy()
        out[entity] = frame
    if fs.entity_features("pair"):  # every pair seen in the data; an unseen pair is a first trip (cold start)
        codes = np.arange(len(engine.index["pair"]))
        keys = engine.index["pair"].to_numpy()
        n_merchants = max(len(ev.merchants), 1)
        riders = ev.riders["rider_id"].astype("str").to_numpy()[keys // n_merchants]
        merchants = ev.merchants["merchant_id"].astype("str").to_numpy()[keys % n_merchants]
        frame = engine.compute("pair", None, as_of, codes=codes)
        frame.index = pd.Index(
            [pair_id(r, m) for r, m in zip(riders, merchants, strict=True)], dtype="object", name="id"
        )
        out["pair"] = frame
    if "zone" in fs.files:
        seen = engine.index["zone"].to_numpy()
        disk = zones.neighbours(seen).ravel()
        cell_ids = np.unique(np.concatenate([seen, disk[disk != zones.NO_CELL]]))
        cells = pd.DataFrame({"cell": cell_ids, "city": zones.nearest_city(cell_ids)})
        frame = engine.compute("zone", cells["cell"].to_numpy(), as_of, city=cells["city"])
        frame.index = pd.Index(zones.to_str(cells["cell"].to_numpy()).to_numpy(), name="id")
        frame["city"] = cells["city"].astype("str").to_numpy()
        out["zone"] = frame
        city_ids = np.asarray(engine.index["city"], dtype=object)
        city_frame = engine.compute("zone", np.zeros(len(city_ids), dtype=np.int64), as_of, city=city_ids)
        city_frame.index = pd.Index(city_ids.astype(str), name="id")
        out["city"] = city_frame
    return out


def materialize(
    tables: Any,
    fs: FeatureSet | None = None,
    as_of: Any = None,
    store: OnlineStore | None = None,
    engine: Any = None,
    features: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Write the latest vector of every rider, merchant, zone (and city fallback) as of ``as_of``.

    ``as_of`` defaults to just after the last event in the data. ``features`` (model columns, e.g. the
    champions' selected lists) limits each entity's columns to what those models need
    (:func:`store_columns`); None stores every definition. Returns the store's metadata.
    """
    from safetyml.features.engine import FeatureEngine

    fs = fs or load_feature_set()
    stamp = utc_timestamp(default_as_of(tables) if as_of is None else as_of)
    engine = engine or FeatureEngine(tables, fs)
    store = store or OnlineStore.open()
    columns = None if features is None else store_columns(fs, features)
    store.write_all(entity_vectors(engine, stamp, columns), stamp, fs.version)
    return store.metadata()


def store_columns(fs: FeatureSet, features: Iterable[str]) -> dict[str, list[str]]:
    """The entity columns that model columns ``features`` need, per store entity (``city`` = ``zone``).

    A rider, merchant or pair column is stored under its own name, a pickup/drop-off zone column under
    its zone name, and a request-time trip feature needs the rider/merchant columns it is computed from.
    """
    wanted: dict[str, set[str]] = {entity: set() for entity in ENTITIES}
    for name in features:
        d = fs.get(name)
        if d.entity == "trip":
            for ref in d.spec.references:
                wanted[fs.get(ref).entity].add(ref)
        else:
            wanted[d.entity].add(d.base)
    wanted["city"] = set(wanted["zone"])
    order = {e: [d.name for d in fs.entity_features("zone" if e == "city" else e)] for e in ENTITIES}
    return {e: [c for c in order[e] if c in wanted[e]] for e in ENTITIES}


class _ColumnLimited:
    """The engine with ``compute`` limited to some columns per entity (an entity with none: ids only)."""

    def __init__(self, engine: Any, columns: dict[str, list[str]]):
        self._engine, self._columns = engine, columns
        self.fs, self.events, self.index = engine.fs, engine.events, engine.index

    def compute(self, entity: str, ids: Any, as_of: Any, city: Any = None, codes: Any = None) -> pd.DataFrame:
        names = self._columns.get(entity, [])  # zone and city rows share the zone columns
        if not names:
            return pd.DataFrame(index=pd.RangeIndex(len(ids) if ids is not None else len(codes)))
        return self._engine.compute(entity, ids, as_of, city=city, names=names, codes=codes)
