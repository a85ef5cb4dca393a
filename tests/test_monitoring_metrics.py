"""Service metrics: Prometheus names, labels and values from real response objects."""

from __future__ import annotations

from datetime import UTC, datetime

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from safetyml.scoring import schemas as s
from safetyml.scoring.metrics import ServiceMetrics


def _trip(probability: float, action: str, market: str = "BR", cold: bool = False) -> s.TripScoreResponse:
    return s.TripScoreResponse(
        decision_id="d",
        decided_at=datetime(2026, 9, 1, tzinfo=UTC),
        risk_tier="low",
        action=action,
        model_name="safetyml-incident-risk",
        model_version="1",
        policy_version=f"{market}@2026.11.2",
        market=market,
        cold_start=cold,
        trip_id="T1",
        rider_id="R1",
        merchant_id="M1",
        probability=probability,
    )


def _samples(registry: prometheus_client.CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = prometheus_client.generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_decisions_scores_cold_starts_errors_and_queue_depth():
    registry = prometheus_client.CollectorRegistry()
    metrics = ServiceMetrics(prometheus_client, registry=registry)
    metrics.observe(_trip(0.01, "allow"))
    metrics.observe(
        s.TripBatchResponse(items=[_trip(0.1, "manual_review", cold=True), _trip(0.01, "allow", "MX")])
    )
    metrics.error("score_trip", 422)
    metrics.queue_depth(7)
    got = _samples(registry)
    allow_br = ("action", "allow"), ("market", "BR"), ("policy", "BR@2026.11.2"), ("task", "incident_risk")
    assert got[("safetyml_decisions_total", allow_br)] == 1
    assert got[("safetyml_score_count", (("market", "BR"), ("task", "incident_risk")))] == 2
    assert got[("safetyml_score_bucket", (("le", "0.02"), ("market", "BR"), ("task", "incident_risk")))] == 1
    assert got[("safetyml_score_sum", (("market", "MX"), ("task", "incident_risk")))] == 0.01
    assert got[("safetyml_cold_start_decisions_total", (("market", "BR"), ("task", "incident_risk")))] == 1
    assert got[("safetyml_errors_total", (("endpoint", "score_trip"), ("status", "422")))] == 1
    assert got[("safetyml_audit_queue_depth", ())] == 7
    metrics.observe(s.ReloadResponse(model_versions={}, previous_versions={}))  # not a decision: ignored
    assert _samples(registry)[("safetyml_decisions_total", allow_br)] == 1
