"""Live Prometheus metrics of the scoring service, named by Prometheus conventions.

| metric | type | labels | what |
| --- | --- | --- | --- |
| ``safetyml_score`` | histogram | task, market | calibrated probability of each decision |
| ``safetyml_decisions_total`` | counter | task, market, policy, action | decisions by policy and action |
| ``safetyml_cold_start_decisions_total`` | counter | task, market | decisions made with cold-start defaults |
| ``safetyml_errors_total`` | counter | endpoint, status | requests answered with an error, by HTTP status |
| ``safetyml_audit_queue_depth`` | gauge | — | decisions accepted but not yet shipped to the audit store |

The metrics are built on a prometheus_client-compatible module passed in: ``prometheus_client`` in tests
and tools, ``bentoml.metrics`` in the service (BentoML's drop-in wrapper that sets up its multi-process
registry, so that every worker's samples reach the one ``/metrics`` endpoint). This module does not
import BentoML; the service passes the module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# probability buckets: the policy bands sit between 0.02 and 0.30, so the buckets are dense there
SCORE_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
PREFIX = "safetyml"


class ServiceMetrics:
    """The service's metric objects and the two calls the service makes: :meth:`observe`, :meth:`error`."""

    def __init__(self, backend: Any = None, prefix: str = PREFIX, registry: Any = None):
        if backend is None:
            import prometheus_client as backend
        # bentoml.metrics must not be given a registry (it sets up its own multi-process one)
        extra = {"registry": registry} if registry is not None else {}
        self.score = backend.Histogram(
            f"{prefix}_score",
            "Calibrated probability given by each decision.",
            **extra,
            labelnames=("task", "market"),
            buckets=SCORE_BUCKETS,
        )
        self.decisions = backend.Counter(
            f"{prefix}_decisions",  # prometheus_client adds the _total suffix of counters
            "Decisions made, by the policy that chose the action and the action.",
            **extra,
            labelnames=("task", "market", "policy", "action"),
        )
        self.cold_start = backend.Counter(
            f"{prefix}_cold_start_decisions",
            "Decisions made with cold-start defaults because an id had no stored features.",
            **extra,
            labelnames=("task", "market"),
        )
        self.errors = backend.Counter(
            f"{prefix}_errors",
            "Requests answered with an error, by endpoint and HTTP status.",
            **extra,
            labelnames=("endpoint", "status"),
        )
        self.audit_queue = backend.Gauge(
            f"{prefix}_audit_queue_depth",
            "Decisions accepted but not yet shipped to the audit store (summed over workers).",
            multiprocess_mode="livesum",
            **extra,
        )

    def observe(self, response: Any) -> None:
        """Count the decisions of one response (a single decision or a batch with ``items``)."""
        for decision in _decisions(response):
            task = getattr(decision, "task", "unknown")
            market = getattr(decision, "market", None) or "unknown"
            probability = getattr(decision, "probability", None)
            if probability is None:
                probability = getattr(decision, "probability_of_default", None)
            if probability is not None:
                self.score.labels(task=task, market=market).observe(float(probability))
            self.decisions.labels(
                task=task,
                market=market,
                policy=getattr(decision, "policy_version", "unknown"),
                action=getattr(decision, "action", "unknown"),
            ).inc()
            if getattr(decision, "cold_start", False):
                self.cold_start.labels(task=task, market=market).inc()

    def error(self, endpoint: str, status: int) -> None:
        self.errors.labels(endpoint=endpoint, status=str(status)).inc()

    def queue_depth(self, depth: int) -> None:
        self.audit_queue.set(depth)


def _decisions(response: Any) -> Iterable[Any]:
    items = getattr(response, "items", None)
    if isinstance(items, list):
        return items
    return [response] if hasattr(response, "decision_id") else []
