"""Challengers, replay and the paired-bootstrap gate, measured on a load run of real trips.

Needs a SAFETYML_HOME (``--home``) whose incident-risk registry holds a champion and a *different*
challenger version, and the data folder those models were trained on (``--data``), e.g. the champion
trained with ``safetyml train incident_risk`` and a challenger trained without zone features
(``experiments/no_zone_features.yaml``'s override, registered). Works on a copy of the home. It:

1. materializes the online store ``--window-days`` before the data's last trip (so the scored trips'
   outcomes are not in their features) and takes the trips of the next ``--window-days - 7`` days;
2. **response path**: scores them in process with ``--concurrency`` threads (closed loop, audit log on,
   fsync on) with no challenger, then with a shadow challenger in every market, alternating ``--rounds``
   times; prints p50/p99 per request of each and the difference of the medians over rounds; then checks
   every audited decision of the shadow runs has its challenger score;
3. **replay**: replays every decision of the load run with the version it names and counts exact matches
   (score, reasons, action);
4. **gate**: the challenger report on the shadow decisions with labels: agreement, swaps, the paired
   bootstrap CI and the gate's verdict; then the same with the two versions' roles swapped (the
   champion as challenger of the other), so a worse and a better challenger are both shown.

Usage: ``python benchmarks/bench_challengers.py --home DIR --data DIR [--trips 3000] [--concurrency 8]
[--rounds 3] [--boot 1000]``. The load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def policies_with(folder: Path, challenger: str | None) -> Path:
    """A copy of the shipped policies with (or without) a shadow ``challenger`` in every market."""
    import yaml

    from safetyml import paths

    folder.mkdir(parents=True, exist_ok=True)
    for path in (paths.project_dir() / "serving" / "policies").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["challengers"] = [{"model": challenger, "mode": "shadow"}] if challenger else []
        (folder / path.name).write_text(yaml.safe_dump(raw, allow_unicode=True))
    return folder


def closed_loop(
    scorer: Any, requests: list[Any], concurrency: int, cpu: list[float] | None = None
) -> list[float]:
    """Each thread scores its share of ``requests`` one at a time, in an audit batch like the service.
    Returns the latencies; ``cpu`` collects each request thread's own CPU time per request (the response
    path's CPU, which the machine's other load does not inflate the way it inflates latency)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def work(part: list[Any]) -> None:
        mine = []
        cpu0 = time.thread_time()
        for request in part:
            start = time.perf_counter()
            with scorer.audit.batch():
                scorer.score_trip(request)
            mine.append(time.perf_counter() - start)
        spent = time.thread_time() - cpu0
        with lock:
            latencies.extend(mine)
            if cpu is not None and part:
                cpu.append(spent / len(part))

    threads = [threading.Thread(target=work, args=(requests[i::concurrency],)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--trips", type=int, default=3000)
    parser.add_argument("--window-days", type=int, default=28)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_challengers_"))
    home = work / "home"
    shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("audit*", "serving_*", "online_store*"))
    os.environ["SAFETYML_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["SAFETYML_AUDIT_FSYNC"] = "1"

    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.scoring.audit import AuditLog, read_decisions
    from safetyml.scoring.challenger_report import challenger_report, trip_requests
    from safetyml.scoring.replay import Replayer
    from safetyml.scoring.scorer import Scorer
    from safetyml.tables import load_tables
    from safetyml.training.config import load_training_config

    name = load_training_config("incident_risk").registered_model_name
    champion, challenger = tracking.get_alias(name, "champion"), tracking.get_alias(name, "challenger")
    assert champion and challenger and champion.version != challenger.version, "need champion != challenger"
    print(f"{name}: champion v{champion.version}, challenger v{challenger.version}; {load()}", flush=True)

    tables = load_tables(args.data)
    end = tables.trips["requested_at"].max()
    as_of = end - pd.Timedelta(days=args.window_days)
    t0 = time.perf_counter()
    materialize(tables, load_feature_set(), as_of=as_of, store=OnlineStore.open())
    window = tables.trips[
        (tables.trips["requested_at"] >= as_of)
        & (tables.trips["requested_at"] < end - pd.Timedelta(days=7))  # a week for incidents to be reported
    ]
    window = window.sample(min(args.trips, len(window)), random_state=args.seed).sort_values("requested_at")
    requests = trip_requests(window)
    print(
        f"store as of {as_of}; {len(requests)} trips of {window['requested_at'].min():%Y-%m-%d} → "
        f"{window['requested_at'].max():%Y-%m-%d} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )

    # ------------------------------------------------------------------ response path
    spec = f"{name}@challenger"
    runs: dict[str, list[dict[str, float]]] = {"none": [], "shadow": []}
    audit_path = home / "audit.sqlite"  # the shadow runs' decisions (the plain runs' go to their own store)
    audit, plain_audit = AuditLog(audit_path), AuditLog(home / "audit_plain.sqlite")
    plain = Scorer.from_registry(audit=plain_audit, policies_dir=policies_with(work / "pol_none", None))
    shadowed = Scorer.from_registry(audit=audit, policies_dir=policies_with(work / "pol_shadow", spec))
    assert shadowed.shadow is not None and not plain.bundle.challengers
    warm = requests[:200]
    closed_loop(plain, warm, args.concurrency)
    closed_loop(shadowed, warm, args.concurrency)
    for r in range(args.rounds):
        for kind, scorer in (
            (("none", plain), ("shadow", shadowed)) if r % 2 == 0 else (("shadow", shadowed), ("none", plain))
        ):
            before = load()
            cpu: list[float] = []
            lat = closed_loop(scorer, requests, args.concurrency, cpu)
            runs[kind].append(
                {
                    "p50": pct(lat, 50),
                    "p99": pct(lat, 99),
                    "n": len(lat),
                    "load": before,
                    "cpu": np.mean(cpu) * 1000,
                }
            )
            last = runs[kind][-1]
            print(
                f"round {r + 1} {kind:6s}: p50 {last['p50']:.2f} ms  p99 {last['p99']:.2f} ms  "
                f"response-path CPU {last['cpu']:.3f} ms/request "
                f"({len(lat)} requests, concurrency {args.concurrency}; {before})",
                flush=True,
            )
    shadowed.shadow.flush(120)
    audit.flush(120)
    plain_audit.flush(120)
    print(f"shadow writer: {shadowed.shadow.stats()}")
    for kind in runs:
        p50 = statistics.median(x["p50"] for x in runs[kind])
        p99 = statistics.median(x["p99"] for x in runs[kind])
        cpu_ms = statistics.median(x["cpu"] for x in runs[kind])
        print(
            f"median over rounds, {kind:6s}: p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
            f"response-path CPU {cpu_ms:.3f} ms"
        )
    d50 = statistics.median(x["p50"] for x in runs["shadow"]) - statistics.median(
        x["p50"] for x in runs["none"]
    )
    d99 = statistics.median(x["p99"] for x in runs["shadow"]) - statistics.median(
        x["p99"] for x in runs["none"]
    )
    print(f"shadow challenger adds: p50 {d50:+.2f} ms, p99 {d99:+.2f} ms (bar: p99 ≤ +1 ms)")

    # the shadow's own CPU, off the response path, on 1,000 requests: as one-request jobs, and merged as the
    # shadow thread merges what gathers between its wake-ups
    from safetyml.scoring.challengers import ShadowJob, merge_jobs, score_job

    rows, _, cities = shadowed.trip_rows(requests[:1000])
    loaded = next(iter(shadowed.bundle.challengers.loaded.values()))
    policy, served = shadowed.policies.for_city(cities[0]), shadowed.bundle.models["incident_risk"].features
    jobs = [
        ShadowJob("incident_risk", [row], [(0, f"d{i}", policy, served, [loaded], [])])
        for i, row in enumerate(rows)
    ]
    for label, work_jobs in (("one-request jobs", jobs), ("merged", merge_jobs(jobs))):
        t0 = time.process_time()
        for job in work_jobs:
            score_job(job)
        cpu = (time.process_time() - t0) / len(rows) * 1000
        print(f"shadow scoring CPU off the response path, {label}: {cpu:.3f} ms per decision ({load()})")

    report = challenger_report(
        "incident_risk", path=audit_path, tables=tables, n_boot=args.boot, seed=args.seed
    )
    cov = report.coverage
    print(
        f"coverage: {int(cov['decisions'].sum())} decisions since the first shadow score, "
        f"{report.missing} missing their challenger score (bar: 0)"
    )

    # ------------------------------------------------------------------ replay
    stores = (audit_path, home / "audit_plain.sqlite")
    decisions = pd.concat([read_decisions(path=p).assign(store=str(p)) for p in stores], ignore_index=True)
    replayer = Replayer(policies=shadowed.policies)
    t0 = time.perf_counter()
    exact = same_reasons = same_action = 0
    from safetyml.scoring.audit import get_decision

    for decision_id, store in zip(decisions["decision_id"], decisions["store"], strict=True):
        result = replayer.replay(get_decision(decision_id, Path(store)), with_champion=False)
        exact += result.score_identical
        same_reasons += result.reasons_identical
        same_action += result.action_identical
    took = time.perf_counter() - t0
    print(
        f"replay: {len(decisions)} decisions; score identical {exact}, reasons identical {same_reasons}, "
        f"action identical {same_action} ({took:.1f} s, {took / max(len(decisions), 1) * 1000:.2f} ms each; "
        f"{load()})"
    )

    # ------------------------------------------------------------------ gate
    def show(rep: Any, label: str) -> None:
        print(f"\n{label}: {len(rep.pairs)} decision pairs; {rep.label_note}")
        print(rep.agreement.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        swapped = int(rep.swaps["decisions"].sum()) if len(rep.swaps) else 0
        print(
            f"swap set: {swapped} decisions would change action; top: "
            + "; ".join(f"{a}→{b} {n}" for a, b, n in rep.swaps.head(4).itertuples(index=False))
        )
        if rep.bootstrap is not None:
            verdict = "ALLOWS promotion" if rep.gate else "REFUSES promotion"
            print(f"gate {verdict}: {rep.bootstrap.describe(rep.margin)}")

    show(report, f"challenger v{challenger.version} (shadow) vs champion v{champion.version}")
    # the same pairs, roles swapped: the champion as the challenger of the other version
    from safetyml.scoring.challenger_report import paired_bootstrap

    pairs = report.pairs[report.pairs["label"].notna()].drop_duplicates("label_key").sort_values("label_key")
    reverse = paired_bootstrap(
        pairs["label"].to_numpy(),
        pairs["p_challenger"].to_numpy(),
        pairs["p_champion"].to_numpy(),
        "pr_auc",
        n_boot=args.boot,
        seed=args.seed,
    )
    verdict = "ALLOWS promotion" if reverse.passes(report.margin) else "REFUSES promotion"
    print(
        f"\nroles swapped (v{champion.version} as challenger of v{challenger.version}): gate {verdict}: "
        f"{reverse.describe(report.margin)}"
    )
    audit.close()
    plain_audit.close()
    shadowed.shadow.close()
    print(f"\nwork folder {work}; {load()}")


if __name__ == "__main__":
    main()
