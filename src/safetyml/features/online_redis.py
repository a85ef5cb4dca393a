"""The online store on Redis (``SAFETYML_ONLINE_STORE_URL=redis://host:6379/0``): one store every replica of
the service reads, with the same methods and the same answers as the embedded SQLite store.

Why this layout: a lookup must be one round trip, a new version must appear all at once, and an old version
must go away cheaply.

- ``<prefix>:g<N>:<entity>`` is a hash: id -> the entity's vector as a JSON array in its column order
  (``null`` = missing). Python writes floats with their shortest round-tripping repr, so a value read back
  is bit-for-bit the float64 the SQLite store keeps. One ``HGET`` per lookup; dropping a version is one
  ``UNLINK`` per entity (freed in the background by Redis).
- ``<prefix>:current`` is the pointer: JSON naming, for each entity, the generation holding it, its columns
  and kinds and row count, plus the as_of and the feature definitions' version.
- Writing a version (:meth:`RedisOnlineStore.write_all`, what ``materialize`` calls): under a Redis lock
  (one materializer at a time), take a new generation number (``INCR``), write every entity's hash under
  it, then replace the pointer with one ``SET``. Until that ``SET`` no reader can see the new keys; after
  it every new request reads only the new version. A request pins the pointer for its whole duration
  (:meth:`RedisOnlineStore.pinned`, used by the scorer), so the rider, merchant, pair and zone vectors of one
  decision always come from one as_of.
- Cleaning: after the switch, every generation referenced by neither the new pointer nor the previous one
  is unlinked. The previous version is kept so a request that pinned it just before the switch finishes on
  it; the partial generation of a materialization that crashed is removed by the next one.

Readers cache the pointer for ``refresh_seconds`` (1 s by default) so a lookup costs one round trip, not
two: a replica sees a new version at most that long after the switch.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from safetyml.errors import SafetymlError
from safetyml.features.online import encode_columns, entity_meta, frame_of, row_dict
from safetyml.values import utc_timestamp

DEFAULT_PREFIX = "safetyml:online"
_CHUNK = 5_000  # ids per HSET / HMGET command
SMALL_ENTITY = 256  # an entity with at most this many rows (cities) is read whole and kept per version


class StoreUnavailableError(SafetymlError, ConnectionError):
    """The Redis server of the online store cannot be reached or refused a command (the service: 503)."""


def _reachable(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the redis client's errors into :class:`StoreUnavailableError` naming the store."""

    @functools.wraps(method)
    def call(self: RedisOnlineStore, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return method(self, *args, **kwargs)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"online store {self.path}: {type(exc).__name__}: {exc}") from exc

    return call


class RedisOnlineStore:
    """Feature vectors by entity id on a Redis server, written by whole versions (see the module doc)."""

    prefetches = True  # pinned(prefetch=...) saves round trips: callers should say what they will read

    def __init__(
        self, client: Any, url: str = "", prefix: str = DEFAULT_PREFIX, refresh_seconds: float = 1.0
    ):
        self._client = client
        self.url = url
        self.path = _redacted(url)  # shown in metadata and messages like the SQLite store's file path
        self.prefix = prefix
        self.refresh_seconds = refresh_seconds
        self._local = threading.local()
        self._cached: dict[str, Any] | None = None
        self._cached_at = -float("inf")
        self._small_cache: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_url(
        cls, url: str, prefix: str = DEFAULT_PREFIX, refresh_seconds: float = 1.0
    ) -> RedisOnlineStore:
        """Connect (lazily: the first command opens the connection) to the Redis server at ``url``."""
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                "the online store on Redis needs the redis package: pip install 'safetyml[redis]'"
            ) from exc
        client = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        return cls(client, url=url, prefix=prefix, refresh_seconds=refresh_seconds)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RedisOnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts)])

    # ------------------------------------------------------------------------------------------ write
    @_reachable
    def write_all(self, vectors: Mapping[str, pd.DataFrame], as_of: Any, version: str) -> int:
        """Write ``vectors`` (entity -> frame indexed by id) as a new version, switch the pointer to it in
        one command, then unlink the versions nobody can be reading. Entities not in ``vectors`` keep their
        current data. Returns the rows written."""
        stamp = utc_timestamp(as_of).isoformat()
        with self._client.lock(self._key("write-lock"), timeout=3600, blocking_timeout=600):
            generation = int(self._client.incr(self._key("generation")))
            self._client.sadd(self._key("generations"), generation)
            previous = self._fetch_pointer()
            entities = {e: _stored(m) for e, m in ((previous or {}).get("entities") or {}).items()}
            total = 0
            for entity, frame in vectors.items():
                kinds, values = encode_columns(entity, frame)
                self._write_hash(self._key(f"g{generation}", entity), values)
                meta = entity_meta(frame, kinds, as_of, version)
                entities[entity] = {**meta, "generation": generation}
                total += len(frame)
            pointer = {"as_of": stamp, "version": version, "generation": generation, "entities": entities}
            self._client.set(self._key("current"), json.dumps(pointer))
            self._clean(keep=_generations(pointer) | _generations(previous))
        self._cached, self._cached_at = self._prepared(pointer), time.monotonic()
        return total

    def write(self, entity: str, frame: pd.DataFrame, as_of: Any, version: str) -> int:
        """Replace one entity (a new version holding it; the other entities stay as they are). Prefer
        :meth:`write_all`: one switch for all entities keeps their as_of times together."""
        return self.write_all({entity: frame}, as_of, version)

    def _write_hash(self, key: str, values: list[Any]) -> None:
        ids, columns = values[0], values[1:]
        pipe = self._client.pipeline(transaction=False)
        self._client.unlink(key)  # a crashed writer may have left a partial hash under this generation
        for start in range(0, len(ids), _CHUNK):
            stop = start + _CHUNK
            chunk = (
                zip(*(c[start:stop] for c in columns), strict=True)
                if columns
                else ([] for _ in ids[start:stop])
            )
            mapping = {
                i: json.dumps(list(row), allow_nan=False, separators=(",", ":"))
                for i, row in zip(ids[start:stop], chunk, strict=True)
            }
            pipe.hset(key, mapping=mapping)
            pipe.execute()

    def _clean(self, keep: set[int]) -> None:
        known = {int(g) for g in self._client.smembers(self._key("generations"))}
        for generation in sorted(known - keep):
            keys = list(self._client.scan_iter(match=self._key(f"g{generation}", "*"), count=1000))
            if keys:
                self._client.unlink(*keys)
            self._client.srem(self._key("generations"), generation)

    # ------------------------------------------------------------------------------------------ read
    @_reachable
    def _fetch_pointer(self) -> dict[str, Any] | None:
        raw = self._client.get(self._key("current"))
        return None if raw is None else self._prepared(json.loads(raw))

    def _prepared(self, pointer: dict[str, Any]) -> dict[str, Any]:
        """The pointer with each entity's column list and hash key (computed once per pointer read)."""
        entities = {}
        for entity, meta in (pointer.get("entities") or {}).items():
            key = self._key(f"g{meta['generation']}", entity)
            entities[entity] = {**meta, "columns": list(meta["kinds"]), "key": key}
        return {**pointer, "entities": entities}

    def _pointer(self) -> dict[str, Any] | None:
        pinned = getattr(self._local, "pointer", None)
        if pinned is not None:
            return pinned
        now = time.monotonic()
        if now - self._cached_at >= self.refresh_seconds:
            self._cached, self._cached_at = self._fetch_pointer(), now
        return self._cached

    @contextmanager
    def pinned(self, prefetch: Iterable[tuple[str, str]] = ()) -> Iterator[None]:
        """Every read in the block (this thread) uses one version: the pointer is read once at the start.

        ``prefetch``: (entity, id) pairs the block will look up, fetched in ONE round trip (a pipeline of
        ``HGET``); a trip's rider, merchant, pair and zones then cost one round trip instead of five.
        """
        if getattr(self._local, "pointer", None) is not None:  # nested: the outer block's version
            yield
            return
        pointer = self._local.pointer = self._pointer()
        self._local.fetched = self._fetch_many(pointer, prefetch)
        try:
            yield
        finally:
            self._local.pointer = self._local.fetched = None

    @_reachable
    def _fetch_many(
        self, pointer: dict[str, Any] | None, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple, Any]:
        entities = (pointer or {}).get("entities") or {}
        wanted = list(dict.fromkeys((e, str(i)) for e, i in keys if e in entities and i is not None))
        if not wanted:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for entity, entity_id in wanted:
            pipe.hget(entities[entity]["key"], entity_id)
        return dict(zip(wanted, pipe.execute(), strict=True))

    @_reachable
    def _small(self, meta: dict[str, Any]) -> dict[str, Any]:
        """A small entity's whole hash (the cities), read once per version: versions never change."""
        table = self._small_cache.get(meta["key"])
        if table is None:
            raw = self._client.hgetall(meta["key"])
            table = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
            self._small_cache = {meta["key"]: table, **dict(list(self._small_cache.items())[-15:])}
        return table

    def _entity_meta(self, entity: str) -> dict[str, Any]:
        meta = ((self._pointer() or {}).get("entities") or {}).get(entity)
        if meta is None:
            raise KeyError(
                f"the online store {self.path} has no {entity!r} vectors; run `safetyml features materialize`"
            )
        return meta

    @_reachable
    def get(self, entity: str, ids: Any, with_city: bool = False) -> pd.DataFrame:
        """Vectors of the given ids, indexed by id (unknown ids are absent); ``city`` only if asked."""
        meta = self._entity_meta(entity)
        wanted = [str(i) for i in pd.Series(ids, dtype="object").dropna().unique()]
        rows = []
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            for entity_id, raw in zip(chunk, self._client.hmget(meta["key"], chunk), strict=True):
                if raw is not None:
                    rows.append((entity_id, *json.loads(raw)))
        return frame_of(meta, rows, with_city)

    @_reachable
    def get_one(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        """One vector as a dict (one ``HGET``, or none if prefetched or small); None if unknown."""
        meta = self._entity_meta(entity)
        key = (entity, str(entity_id))
        fetched = getattr(self._local, "fetched", None)
        if fetched is not None and key in fetched:
            raw = fetched[key]
        elif meta["rows"] <= SMALL_ENTITY:
            raw = self._small(meta).get(key[1])
        else:
            raw = self._client.hget(meta["key"], key[1])
        return None if raw is None else row_dict(meta, json.loads(raw))

    @_reachable
    def ids(self, entity: str) -> list[str]:
        """Every id of an entity, sorted ([] if the entity was never written)."""
        try:
            meta = self._entity_meta(entity)
        except KeyError:
            return []
        return sorted(i.decode() if isinstance(i, bytes) else str(i) for i in self._client.hkeys(meta["key"]))

    def metadata(self) -> dict[str, Any]:
        """as_of, definitions version and row counts of the current version (what readers see)."""
        pointer = self._pointer() or {}
        entities = pointer.get("entities") or {}
        return {
            "as_of": pointer.get("as_of"),
            "version": pointer.get("version"),
            "rows": {entity: meta["rows"] for entity, meta in entities.items()},
            "path": self.path,
            "generation": pointer.get("generation"),
        }


def _stored(meta: dict[str, Any]) -> dict[str, Any]:
    """An entity's pointer entry without what :meth:`RedisOnlineStore._prepared` derives from it."""
    return {k: v for k, v in meta.items() if k not in ("columns", "key")}


def _generations(pointer: dict[str, Any] | None) -> set[int]:
    if not pointer:
        return set()
    return {int(meta["generation"]) for meta in (pointer.get("entities") or {}).values()}


def _redacted(url: str) -> str:
    """The URL without its password (it is shown in /metadata and in messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    return urlunsplit(parts._replace(netloc=netloc))
