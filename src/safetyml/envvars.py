"""Every environment variable safetyml reads, named once, and a context manager to set some for a block.

Other modules import the names from here (``envvars.HOME``), so `grep envvars.` finds every reader and the
docs' table can be checked against :data:`ALL`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

HOME = "SAFETYML_HOME"  # state folder (MLflow store, online store, audit log); default .safetyml/
PROJECT_DIR = "SAFETYML_PROJECT_DIR"  # folder holding features/, training/, serving/, experiments/
CITIES = "SAFETYML_CITIES"  # YAML file of extra cities merged with the built-in ones
POLICIES = "SAFETYML_POLICIES"  # folder of decision policies; default serving/policies
API_TOKEN = "SAFETYML_API_TOKEN"  # bearer token the service requires (unset: loopback only)
HOST = "SAFETYML_HOST"  # interface the service binds when a token is set (default 127.0.0.1)
SERVE_WORKERS = "SAFETYML_SERVE_WORKERS"  # service worker processes (default 1)
SERVE_THREADS = "SAFETYML_SERVE_THREADS"  # threads per worker (default 4)
SERVE_POLL_SECONDS = "SAFETYML_SERVE_POLL_SECONDS"  # seconds between registry champion polls (0: off)
SERVE_ACCESS_LOG = "SAFETYML_SERVE_ACCESS_LOG"  # 1: BentoML's access log on (default off: it costs latency)
SERVE_TRACE_RATE = "SAFETYML_SERVE_TRACE_RATE"  # OpenTelemetry sampling rate 0..1 (default 0)
SHADOW_RUNNER = "SAFETYML_SHADOW_RUNNER"  # 0: the workers do not start the shadow runner (run it yourself)
AUDIT_URL = "SAFETYML_AUDIT_URL"  # postgresql://... : decision audit store on PostgreSQL (default SQLite)
ONLINE_STORE_URL = "SAFETYML_ONLINE_STORE_URL"  # redis://... : online store on Redis (default SQLite file)
AUDIT_FSYNC = "SAFETYML_AUDIT_FSYNC"  # 0: audit journal without fdatasync (process-crash safe only)
MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"  # MLflow's own: a tracking server instead of the embedded store
MLFLOW_REGISTRY_URI = "MLFLOW_REGISTRY_URI"  # MLflow's own: a separate model registry
DASK_SCHEDULER_ADDRESS = "DASK_SCHEDULER_ADDRESS"  # Dask's own: scheduler for --engine dask

ALL: tuple[str, ...] = (
    HOME,
    PROJECT_DIR,
    CITIES,
    POLICIES,
    API_TOKEN,
    HOST,
    SERVE_WORKERS,
    SERVE_THREADS,
    SERVE_POLL_SECONDS,
    SERVE_ACCESS_LOG,
    SERVE_TRACE_RATE,
    SHADOW_RUNNER,
    AUDIT_FSYNC,
    AUDIT_URL,
    ONLINE_STORE_URL,
    MLFLOW_TRACKING_URI,
    MLFLOW_REGISTRY_URI,
    DASK_SCHEDULER_ADDRESS,
)
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeSettings:
    """What the service reads from the environment at start-up (``safetyml serve`` sets the last three)."""

    token: str | None
    host: str
    workers: int
    threads: int
    access_log: bool = False
    trace_rate: float = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeSettings:
        """Read the settings; the host stays loopback unless a token is set (deny by default)."""
        env = os.environ if env is None else env
        token = env.get(API_TOKEN) or None
        return cls(
            token=token,
            host=env.get(HOST, LOOPBACK) if token else LOOPBACK,
            workers=_positive_int(env, SERVE_WORKERS, 1),
            threads=_positive_int(env, SERVE_THREADS, 4),
            access_log=env.get(SERVE_ACCESS_LOG, "0") not in ("", "0", "false", "no"),
            trace_rate=_rate(env, SERVE_TRACE_RATE),
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r}: expected a whole number >= 1") from None
    if value < 1:
        raise ValueError(f"environment variable {name}={raw!r}: expected a whole number >= 1")
    return value


def _rate(env: Mapping[str, str], name: str) -> float:
    raw = env.get(name) or "0"
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"environment variable {name}={raw!r}: expected a number between 0 and 1")
    return value


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, with ``None``, unset) variables for the block; restore the previous values after it."""
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
