"""The one place where the compute engine is chosen: pandas (one process, the embedded default) or Dask.

Every heavy command takes ``--engine pandas|dask`` and ``--scheduler ADDRESS``; they call
:func:`resolve` to turn the flags (and ``DASK_SCHEDULER_ADDRESS``) into an :class:`EngineChoice`, and
:func:`session` to get a Dask client for the length of the command. Without an address, ``session``
starts a ``LocalCluster`` of worker *processes* sized to the machine (one single-threaded worker per
core, the machine's memory split between them), bound to 127.0.0.1, and closes it afterwards.
Dask is the ``dask`` extra: choosing it without the extra stops with an error naming
``pip install 'safetyml[dask]'`` before any slow work starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from safetyml import envvars
from safetyml._optional import ensure, require
from safetyml.errors import SafetymlError

__all__ = [
    "ENGINES",
    "Engine",
    "EngineChoice",
    "EngineError",
    "default_workers",
    "resolve",
    "session",
    "worker_count",
]

Engine = Literal["pandas", "dask"]
ENGINES: tuple[Engine, ...] = get_args(Engine)
LOOPBACK = envvars.LOOPBACK


class EngineError(SafetymlError, ValueError):
    """An engine flag or an engine job that cannot be honoured (unknown engine, scheduler without Dask)."""


@dataclass(frozen=True)
class EngineChoice:
    """Which engine a command runs on and, for Dask, which cluster.

    ``scheduler`` is a scheduler address (``tcp://host:8786``); ``None`` means a ``LocalCluster`` of
    ``n_workers`` processes (default: :func:`default_workers`) with ``memory_limit`` each (default:
    Dask's ``"auto"``, the machine's memory divided by the workers).
    """

    engine: Engine = "pandas"
    scheduler: str | None = None
    n_workers: int | None = None
    memory_limit: str | None = None
    processes: bool = True

    @property
    def is_dask(self) -> bool:
        return self.engine == "dask"

    def describe(self) -> str:
        """A short line for logs and command output."""
        if not self.is_dask:
            return "pandas (one process)"
        if self.scheduler:
            return f"dask on {self.scheduler}"
        kind = "processes" if self.processes else "threads"
        return f"dask on a LocalCluster of {self.n_workers or default_workers()} {kind}"


def default_workers() -> int:
    """One worker process per core the machine (or its CPU affinity mask) gives us."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


def resolve(
    engine: str | None = "pandas",
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    memory_limit: str | None = None,
    processes: bool = True,
    env: Mapping[str, str] | None = None,
) -> EngineChoice:
    """Turn ``--engine`` / ``--scheduler`` (and ``DASK_SCHEDULER_ADDRESS``) into an :class:`EngineChoice`.

    An explicit ``--scheduler`` with the pandas engine is an error (it would be silently ignored); the
    environment variable only applies when Dask is chosen. Choosing Dask checks the extra is installed.
    """
    name = (engine or "pandas").strip().lower()
    if name not in ENGINES:
        raise EngineError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if scheduler and name != "dask":
        raise EngineError(f"--scheduler {scheduler} needs --engine dask")
    if n_workers is not None and n_workers < 1:
        raise EngineError(f"the number of Dask workers must be >= 1, not {n_workers}")
    if name == "pandas":
        return EngineChoice()
    ensure("dask", "dask")
    ensure("distributed", "dask")
    if env is None:
        from_env = os.environ.get(envvars.DASK_SCHEDULER_ADDRESS)
    else:
        from_env = env.get(envvars.DASK_SCHEDULER_ADDRESS)
    address = scheduler or from_env or None
    return EngineChoice(
        engine="dask",
        scheduler=address,
        n_workers=n_workers,
        memory_limit=memory_limit,
        processes=processes,
    )


@contextmanager
def session(choice: EngineChoice) -> Iterator[Any]:
    """A ``distributed.Client`` for the block (``None`` on the pandas engine); a LocalCluster started
    here is closed here, whatever happens in the block."""
    if not choice.is_dask:
        yield None
        return
    distributed = require("distributed", "dask")
    if choice.scheduler:
        client = distributed.Client(choice.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = distributed.LocalCluster(
        n_workers=choice.n_workers or default_workers(),
        threads_per_worker=1,
        processes=choice.processes,
        host=LOOPBACK,
        dashboard_address=None,
        # no dashboard; the scheduler's health/metrics HTTP server on a free loopback port, not 8787
        scheduler_kwargs={"dashboard": False, "dashboard_address": f"{LOOPBACK}:0"},
        memory_limit=choice.memory_limit or "auto",
    )
    try:
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def worker_count(client: Any) -> int:
    """How many workers the client's cluster has right now (at least 1)."""
    return max(1, len(client.scheduler_info().get("workers", {})))
