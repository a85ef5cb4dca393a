"""Challengers, replay and the paired-bootstrap gate, measured on load runs of real trips and merchants.

Needs a SAFETYML_HOME (``--home``) whose registry holds, for each task, a champion and a *different*
``challenger`` version, and the data folder those models were trained on (``--data``). ``--train-challengers``
trains deliberately worse challengers into ``--home`` first (incident risk without zone features, as
``experiments/no_zone_features.yaml``; merchant credit on three weak features), one Optuna trial each, when a
task's challenger is the champion itself. Everything else works on copies of the home. It:

1. materializes the online store ``--window-days`` before the data's last trip (so the scored trips'
   outcomes are not in their features) and takes ``--trips`` trips of the next ``--window-days - 7`` days;
2. **shadow bar over HTTP**: starts the real service twice (``safetyml serve``, ``--workers``), one with
   no challenger and one with a shadow challenger of both tasks in every market (``SAFETYML_POLICIES``),
   each on its own copy of the home, and drives them with ``wrk`` at ``--concurrency`` connections for
   ``--duration`` s, alternating which goes first, ``--rounds`` times; prints p50/p99/req/s of each run,
   ``uptime`` before each, the medians over rounds, their difference and ratio (the bar: p99 +1 ms at
   most). The shadow service's workers start the shadow runner (:mod:`safetyml.scoring.shadow`, a
   process under SCHED_IDLE); after each shadow run the benchmark prints how many decisions it was behind
   and waits until it has caught up (``--kill-runner``: SIGKILL it in the middle of the second shadow
   run). Then, servers stopped and the runner drained, checks that every decision id the shadow service
   answered is in the audit log **and has its challenger score**;
3. optionally (``--inprocess-rounds``) the same comparison in process (``Scorer.score_trip``, 8 threads),
   with the request threads' own CPU per request;
4. **merchant credit**: a store materialized ``horizon + 10`` days before the data's end, every merchant
   scored in process with the shadow challenger (``as_of`` = the store's), labels matured over the horizon;
5. **replay**: replays every decision of the load runs with the version it names (exact score, reasons,
   action);
6. **gates**: the challenger report of each task (coverage, agreement, swaps, paired bootstrap CI and the
   gate's verdict), then the same rows with the roles swapped (the champion as challenger of the other).

Usage: ``flock /tmp/safetyml-heavy.lock python benchmarks/bench_challengers.py --home DIR --data DIR
[--trips 3000] [--concurrency 8] [--rounds 5] [--duration 30] [--workers 2] [--boot 1000] [--kill-runner]
[--only-shadow-bar]``. The load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import _free_port, missing_from_audit, start_server, wrk_load  # noqa: E402

# deliberately worse challengers (--train-challengers)
WORSE = {
    "incident_risk": {"features": {"exclude_entities": ["zone"]}},  # experiments/no_zone_features.yaml
    "merchant_credit": {
        "features": {
            "include": ["merchant_category", "merchant_sales_volatility_30d", "merchant_refund_rate_30d"]
        }
    },
}
NO_STATE = shutil.ignore_patterns("audit*", "serving_*", "online_store*", "bench_server.log")


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def names() -> dict[str, str]:
    from safetyml.tasks import TASKS
    from safetyml.training.config import load_training_config

    return {task: load_training_config(task).registered_model_name for task in TASKS}


def train_challengers(data: Path, seed: int) -> None:
    """Train WORSE[task] as the challenger of each task whose challenger alias is the champion itself."""
    from safetyml import tracking
    from safetyml.training.pipeline import train

    for task, name in names().items():
        champion, challenger = tracking.get_alias(name, "champion"), tracking.get_alias(name, "challenger")
        if challenger is not None and champion is not None and challenger.version != champion.version:
            continue
        t0 = time.perf_counter()
        train(task, data, trials=1, seed=seed, config_overrides=WORSE[task], progress=False)
        print(f"trained a worse {task} challenger in {time.perf_counter() - t0:.0f} s ({load()})", flush=True)


def policies_with(folder: Path, challengers: list[str]) -> Path:
    """A copy of the shipped policies with a shadow challenger of each spec in every market (none: []);
    a merchant-credit challenger keys on merchant_id (its requests carry no rider)."""
    import yaml

    from safetyml import paths
    from safetyml.scoring.policies import task_of_model

    folder.mkdir(parents=True, exist_ok=True)
    entries = [
        {"model": spec, "mode": "shadow"}
        | ({"sticky_key": "merchant_id"} if task_of_model(spec.split("@")[0]) == "merchant_credit" else {})
        for spec in challengers
    ]
    for path in (paths.project_dir() / "serving" / "policies").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["challengers"] = entries
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


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def compare(runs: dict[str, list[dict[str, float]]], what: str) -> float:
    """Print the medians over rounds of each configuration and their ratio; returns the p99 difference
    (shadow - none)."""
    med = {k: {q: statistics.median(x[q] for x in runs[k]) for q in ("p50", "p99", "rps")} for k in runs}
    for kind in runs:
        m = med[kind]
        print(
            f"{what} median over {len(runs[kind])} rounds, {kind:6s}: p50 {m['p50']:.2f} ms  "
            f"p99 {m['p99']:.2f} ms  {m['rps']:.0f} req/s"
        )
    d50, d99 = (med["shadow"][q] - med["none"][q] for q in ("p50", "p99"))
    ratio = {q: med["shadow"][q] / med["none"][q] for q in ("p50", "p99", "rps")}
    paired = [s["p99"] - n["p99"] for s, n in zip(runs["shadow"], runs["none"], strict=True)]
    print(
        f"{what}: the shadow challenger adds p50 {d50:+.2f} ms, p99 {d99:+.2f} ms (bar: p99 ≤ +1 ms); "
        f"ratio shadow/none p50 {ratio['p50']:.3f}, p99 {ratio['p99']:.3f}, req/s {ratio['rps']:.3f}; "
        f"per-round p99 differences {', '.join(f'{d:+.2f}' for d in paired)}"
    )
    return d99


CONTROLS = {
    "aa": "A/A: the 'shadow' service has no challenger either (what the two services differ by without one)",
    "runner-off": "the 'shadow' service records the challenger's snapshot but its workers start no runner "
    "(SAFETYML_SHADOW_RUNNER=0); the runner scores everything after the load",
}


def runner_pid(home: Path) -> int | None:
    """The pid in the shadow runner's status file (None before it wrote one)."""
    import json

    try:
        return int(json.loads((home / "shadow" / "status.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def backlog(home: Path, ids: set[str]) -> tuple[int, int]:
    """(answered decisions not yet in the audit database, stored decisions after the runner's cursor)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{home / 'audit.sqlite'}?mode=ro", uri=True)) as conn:
        found = conn.execute("SELECT position FROM challenger_cursor").fetchone()
        cursor = int(found[0]) if found else 0
        behind = conn.execute("SELECT COUNT(*) FROM decisions WHERE rowid > ?", (cursor,)).fetchone()[0]
        stored = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    return max(len(ids) - stored, 0), int(behind)


def wait_caught_up(home: Path, ids: set[str], timeout: float = 600.0) -> tuple[int, float]:
    """Wait until every answered decision is stored and behind the runner's cursor; returns (the backlog
    when called, seconds it took)."""
    t0 = time.perf_counter()
    unshipped, behind = backlog(home, ids)
    first = unshipped + behind
    while unshipped + behind > 0:
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"shadow runner not caught up after {timeout:.0f} s ({unshipped + behind} left)")
        time.sleep(0.2)
        unshipped, behind = backlog(home, ids)
    return first, time.perf_counter() - t0


def http_shadow_bar(args: argparse.Namespace, home: Path, work: Path, requests: list[Any], specs: list[str]):
    """Both services up, alternating wrk runs; returns the homes of both.

    The shadow service's workers start the shadow runner (a process under SCHED_IDLE scoring the challengers
    from the audit store). After each shadow run the benchmark waits until the runner has caught up (every
    answered decision stored and behind its cursor) and prints the backlog and how long it took, so each
    run starts with an idle runner and the work a run left behind is not charged to the next champion-only
    run. With ``--kill-runner`` the runner is killed with SIGKILL in the middle of the second shadow run
    (the workers start another one within 5 s; nothing may be lost).
    """
    bodies = [r.model_dump(mode="json") for r in requests]
    homes = {kind: work / f"http_{kind}" for kind in ("none", "shadow")}
    folders = {
        "none": policies_with(work / "pol_none", []),
        "shadow": policies_with(work / "pol_shadow", [] if args.control == "aa" else specs),
    }
    runner_on = args.control is None  # the shadow service's workers start the runner
    if args.control:
        print(f"CONTROL RUN '{args.control}': {CONTROLS[args.control]}", flush=True)
    servers: dict[str, Any] = {}
    token = secrets.token_hex(16)
    urls: dict[str, str] = {}
    received: dict[str, set[str]] = {"none": set(), "shadow": set()}
    runs: dict[str, list[dict[str, float]]] = {"none": [], "shadow": []}
    shadow_runs = 0
    try:
        for kind, target in homes.items():
            shutil.copytree(home, target, ignore=shutil.ignore_patterns("audit*", "serving_*", "shadow"))
            os.environ["SAFETYML_POLICIES"] = str(folders[kind])
            port = _free_port()
            t0 = time.perf_counter()
            extra = {"SAFETYML_SHADOW_RUNNER": "0"} if args.control == "runner-off" else {}
            servers[kind] = start_server(port, token, target, args.workers, extra_env=extra)
            urls[kind] = f"http://127.0.0.1:{port}"
            print(f"service '{kind}' ready in {time.perf_counter() - t0:.0f} s on {urls[kind]}", flush=True)
        os.environ.pop("SAFETYML_POLICIES", None)
        for kind in ("none", "shadow"):  # warm both: the first requests fill caches
            received[kind] |= set(
                wrk_load(urls[kind], token, bodies, 5, args.concurrency, work / kind)["ids"]
            )
        if runner_on:
            left, took = wait_caught_up(homes["shadow"], received["shadow"])
            pid = runner_pid(homes["shadow"])
            print(f"warm-up: shadow runner pid {pid} caught up ({left} left, {took:.1f} s)", flush=True)
        for r in range(args.rounds):
            for kind in ("none", "shadow") if r % 2 == 0 else ("shadow", "none"):
                print(f"  uptime before: {uptime()}", flush=True)
                killer = None
                if kind == "shadow":
                    shadow_runs += 1
                    if args.kill_runner and shadow_runs == 2:
                        killer = threading.Timer(args.duration / 2, kill_runner, (homes["shadow"],))
                        killer.start()
                out = wrk_load(urls[kind], token, bodies, args.duration, args.concurrency, work / kind)
                if killer is not None:
                    killer.join()
                received[kind] |= set(out["ids"])
                errors = out["non2xx"] + out["socket_errors"]
                runs[kind].append({"p50": out["p50"], "p99": out["p99"], "rps": out["rps"]})
                print(
                    f"HTTP round {r + 1} {kind:6s}: p50 {out['p50']:.2f} ms  p99 {out['p99']:.2f} ms  "
                    f"{out['rps']:.0f} req/s ({out['n']} answers, {errors} errors; c={args.concurrency}, "
                    f"{args.workers} workers; load {out['load_before']:.1f}→{out['load_after']:.1f})",
                    flush=True,
                )
                if kind == "shadow" and runner_on:
                    left, took = wait_caught_up(homes["shadow"], received["shadow"])
                    pid = runner_pid(homes["shadow"])
                    print(
                        f"  shadow runner (pid {pid}): {left:,} decisions behind when the run ended, "
                        f"caught up in {took:.1f} s",
                        flush=True,
                    )
        print(f"  uptime after the rounds: {uptime()}", flush=True)
    finally:
        for process in servers.values():  # a normal stop: journals shipped, then the runner drains and exits
            process.send_signal(signal.SIGTERM)
        for process in servers.values():
            process.wait(180)
    from safetyml.scoring.shadow import runner_running

    deadline = time.monotonic() + 300
    while runner_running(homes["shadow"] / "shadow") and time.monotonic() < deadline:
        time.sleep(0.5)
    compare(runs, "HTTP")
    if args.control == "aa":
        return homes
    if args.control == "runner-off":  # the runner started after the load, as an operator would after a burst
        from safetyml.scoring.policies import load_policies
        from safetyml.scoring.shadow import ShadowRunner

        runner = ShadowRunner(homes["shadow"] / "audit.sqlite", policies=load_policies(folders["shadow"]))
        t0 = time.perf_counter()
        read = runner.catch_up()
        print(
            f"shadow runner started after the load: {read:,} decisions read, {runner.scored:,} scores in "
            f"{time.perf_counter() - t0:.1f} s ({load()})",
            flush=True,
        )
        runner.close()
    from safetyml.scoring.challengers import read_challenger_scores

    for kind, target in homes.items():
        missing = missing_from_audit(target, received[kind])
        print(
            f"service '{kind}': {len(received[kind]):,} decisions answered, {missing} missing from the audit"
        )
    scored = set(read_challenger_scores(homes["shadow"] / "audit.sqlite")["decision_id"])
    lacking = len(received["shadow"] - scored)
    status = (homes["shadow"] / "shadow" / "status.json").read_text()
    print(
        f"shadow service: {len(received['shadow']):,} decisions answered, {lacking} without their challenger "
        f"score once the runner caught up (bar: 0); challenger scores recorded: {len(scored):,}; "
        f"runner's last status: {status}"
    )
    return homes


def gil_profile(
    args: argparse.Namespace, home: Path, work: Path, requests: list[Any], specs: list[str]
) -> None:
    """Where the GIL goes in a serving worker of the shadow service under ``wrk``: ``py-spy record --gil``
    samples only the thread holding the GIL, so each sample is attributed to the shadow writer thread
    (``ShadowLog._loop``), the audit shipper, or the rest (the request path and the event loop). With
    ``--project`` pointing at an older checkout the service runs that code (its ``src`` first on the path)."""
    import collections

    target = work / "gil_shadow"
    shutil.copytree(home, target, ignore=shutil.ignore_patterns("audit*", "serving_*", "shadow"))
    project = args.project.resolve() if args.project else None
    extra = {"SAFETYML_POLICIES": str(policies_with(work / "pol_gil", specs))}
    if project is not None:
        extra["PYTHONPATH"] = str(project / "src")
    token, port = secrets.token_hex(16), _free_port()
    server = start_server(
        port, token, target, args.workers, **({"project": project} if project else {}), extra_env=extra
    )
    bodies = [r.model_dump(mode="json") for r in requests]
    url = f"http://127.0.0.1:{port}"
    try:
        wrk_load(url, token, bodies, 5, args.concurrency, work / "gil")
        children = subprocess.run(
            ["pgrep", "-P", str(server.pid)], capture_output=True, text=True, check=False
        )
        pids = children.stdout.split()
        worker = next((w for w in pids if b"worker" in Path(f"/proc/{w}/cmdline").read_bytes()), pids[0])
        out = work / "gil.txt"
        command = ["record", "--pid", worker, "--gil", "--nonblocking", "--rate", "250", "--format", "raw"]
        command += ["--duration", str(int(args.gil_profile)), "--output", str(out)]
        spy = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), *command], stderr=subprocess.DEVNULL
        )
        load = wrk_load(url, token, bodies, args.gil_profile + 3, args.concurrency, work / "gil")
        spy.wait(120)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(180)
    counts: collections.Counter[str] = collections.Counter()
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "challengers.py" in stack and "_loop" in stack:
            role = "shadow writer thread (ShadowLog._loop)"
        elif "_ship_loop" in stack:
            role = "audit shipper thread"
        else:
            role = "request path, event loop, rest"
        counts[role] += int(n)
    total = sum(counts.values())
    print(
        f"GIL profile of worker {worker} ({'code of ' + str(project) if project else 'this checkout'}), "
        f"{args.gil_profile:.0f} s at c={args.concurrency} ({load['rps']:.0f} req/s, "
        f"p99 {load['p99']:.2f} ms; {uptime()}): {total:,} samples holding the GIL"
    )
    for role, n in counts.most_common():
        print(f"  {role}: {n:,} samples, {n / max(total, 1):.1%} of the GIL time")


def kill_runner(home: Path) -> None:
    pid = runner_pid(home)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        print(f"  killed the shadow runner (pid {pid}) with SIGKILL mid-run", flush=True)


def inprocess_shadow_bar(args: argparse.Namespace, home: Path, work: Path, requests: list[Any], spec: str):
    """The same comparison in process (no HTTP): request-path latency and CPU."""
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.scorer import Scorer
    from safetyml.scoring.shadow import ShadowRunner

    audits = {k: AuditLog(work / f"inproc_{k}" / "audit.sqlite") for k in ("none", "shadow")}
    store = home / "online_store.sqlite"
    scorers = {
        "none": Scorer.from_registry(store_path=store, audit=audits["none"],
                                     policies_dir=policies_with(work / "pol_none", [])),
        "shadow": Scorer.from_registry(store_path=store, audit=audits["shadow"],
                                       policies_dir=policies_with(work / "pol_shadow_trip", [spec])),
    }  # fmt: skip
    runs: dict[str, list[dict[str, float]]] = {"none": [], "shadow": []}
    for scorer in scorers.values():
        closed_loop(scorer, requests[:200], args.concurrency)
    for r in range(args.inprocess_rounds):
        for kind in ("none", "shadow") if r % 2 == 0 else ("shadow", "none"):
            cpu: list[float] = []
            before = load()
            lat = closed_loop(scorers[kind], requests, args.concurrency, cpu)
            runs[kind].append({"p50": pct(lat, 50), "p99": pct(lat, 99)})
            print(
                f"in-process round {r + 1} {kind:6s}: p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms  "
                f"request-thread CPU {np.mean(cpu) * 1000:.3f} ms/request ({before})",
                flush=True,
            )
    for audit in audits.values():
        audit.flush(120)
    runner = ShadowRunner(audits["shadow"].path, policies=scorers["shadow"].policies)
    t0 = time.perf_counter()
    read = runner.catch_up()
    print(f"in process: the shadow runner scored {read:,} decisions in {time.perf_counter() - t0:.1f} s")
    runner.close()
    compare(runs, "in process")
    for audit in audits.values():
        audit.close()


def incident_gate_run(
    args: argparse.Namespace, home: Path, work: Path, window: pd.DataFrame, spec: str
) -> Path:
    """``--gate-trips`` distinct trips of the window scored in process (no reasons, batches of 500) with the
    shadow incident challenger, then scored by the shadow runner: more labelled trips for the gate than
    the HTTP load run's ``--trips``. Returns the audit store."""
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.challenger_report import trip_requests
    from safetyml.scoring.scorer import Scorer
    from safetyml.scoring.shadow import ShadowRunner

    target = work / "gate"
    shutil.copytree(home, target, ignore=NO_STATE)
    chosen = window.sample(min(args.gate_trips, len(window)), random_state=args.seed).sort_values(
        "requested_at"
    )
    requests = [r.model_copy(update={"explain": False}) for r in trip_requests(chosen)]
    audit = AuditLog(target / "audit.sqlite", fsync=False)
    scorer = Scorer.from_registry(
        store_path=home / "online_store.sqlite", audit=audit,
        policies_dir=policies_with(work / "pol_gate", [spec]),
    )  # fmt: skip
    t0 = time.perf_counter()
    for start in range(0, len(requests), 500):
        with audit.batch():
            scorer.score_trips(requests[start : start + 500])
    audit.flush(300)
    took = time.perf_counter() - t0
    runner = ShadowRunner(target / "audit.sqlite", policies=scorer.policies)
    t1 = time.perf_counter()
    runner.catch_up()
    print(
        f"gate run: {len(requests):,} distinct trips of {chosen['requested_at'].min():%Y-%m-%d} → "
        f"{chosen['requested_at'].max():%Y-%m-%d} scored in {took:.0f} s; the shadow runner scored them in "
        f"{time.perf_counter() - t1:.1f} s ({runner.status()['scores_written']:,} scores; {load()})",
        flush=True,
    )
    runner.close()
    audit.close()
    return target / "audit.sqlite"


def credit_run(home: Path, work: Path, tables: Any, specs: list[str]) -> Path:
    """Every merchant scored in process with a shadow credit challenger, from a store old enough for the
    90-day labels to have matured. Returns the audit store."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.schemas import MerchantScoreRequest
    from safetyml.scoring.scorer import Scorer, store_as_of
    from safetyml.scoring.shadow import ShadowRunner
    from safetyml.training.config import load_training_config

    horizon = load_training_config("merchant_credit").label.horizon_days
    target = work / "credit"
    shutil.copytree(home, target, ignore=NO_STATE)
    end = max(tables.merchant_ledger["event_at"].max(), tables.credit_events["event_at"].max())
    as_of = end - pd.Timedelta(days=horizon + 10)
    store = OnlineStore.open(target / "online_store.sqlite")
    materialize(tables, load_feature_set(), as_of=as_of, store=store)
    store.close()
    audit = AuditLog(target / "audit.sqlite")
    scorer = Scorer.from_registry(
        store_path=target / "online_store.sqlite", audit=audit,
        policies_dir=policies_with(work / "pol_shadow_credit", specs),
    )  # fmt: skip
    stamp = store_as_of(scorer.store)
    merchants = sorted(tables.merchants["merchant_id"])
    t0 = time.perf_counter()
    for start in range(0, len(merchants), 500):
        batch = [MerchantScoreRequest(merchant_id=m, as_of=stamp) for m in merchants[start : start + 500]]
        with audit.batch():
            scorer.score_merchants(batch)
    took = time.perf_counter() - t0
    audit.flush(120)
    runner = ShadowRunner(target / "audit.sqlite", policies=scorer.policies)
    runner.catch_up()
    print(
        f"merchant credit: {len(merchants):,} merchants scored as of {stamp:%Y-%m-%d} "
        f"(data end {end:%Y-%m-%d}) in {took:.1f} s; shadow runner {runner.status()}"
    )
    runner.close()
    audit.close()
    return target / "audit.sqlite"


def replay_all(stores: list[Path], policies: Any) -> None:
    from safetyml.scoring.audit import get_decision, read_decisions
    from safetyml.scoring.replay import Replayer

    decisions = pd.concat([read_decisions(path=p).assign(store=str(p)) for p in stores], ignore_index=True)
    replayer = Replayer(policies=policies)
    t0 = time.perf_counter()
    exact = same_reasons = bitwise = same_action = 0
    for decision_id, store in zip(decisions["decision_id"], decisions["store"], strict=True):
        result = replayer.replay(get_decision(decision_id, Path(store)), with_champion=False)
        exact += result.score_identical
        same_reasons += result.reasons_identical
        bitwise += result.reasons_bitwise
        same_action += result.action_identical
    took = time.perf_counter() - t0
    by_task = decisions["task"].value_counts().to_dict()
    print(
        f"replay: {len(decisions):,} decisions {by_task}; score identical {exact:,}, reasons identical "
        f"{same_reasons:,} (contributions to the last bit: {bitwise:,}), action identical {same_action:,} "
        f"({took:.1f} s, "
        f"{took / max(len(decisions), 1) * 1000:.2f} ms each; {load()})"
    )


def gate(task: str, path: Path, tables: Any, boot: int, seed: int) -> None:
    from safetyml.scoring.challenger_report import challenger_report, paired_bootstrap

    t0 = time.perf_counter()
    rep = challenger_report(task, path=path, tables=tables, n_boot=boot, seed=seed)
    cov = rep.coverage
    print(
        f"\n{task}: challenger v{', v'.join(rep.challenger_versions)} (shadow) vs champion "
        f"v{', v'.join(rep.champion_versions)}: {len(rep.pairs):,} decision pairs; coverage "
        f"{int(cov['decisions'].sum()):,} decisions since the first shadow score, {rep.missing} missing "
        f"their challenger score; {rep.label_note}"
    )
    print(rep.agreement.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    swapped = int(rep.swaps["decisions"].sum()) if len(rep.swaps) else 0
    print(
        f"swap set: {swapped:,} of {len(rep.pairs):,} decisions would change action; top: "
        + "; ".join(f"{a}→{b} {n}" for a, b, n in rep.swaps.head(4).itertuples(index=False))
    )
    if rep.bootstrap is None:
        return
    verdict = "ALLOWS promotion" if rep.gate else "REFUSES promotion"
    print(
        f"gate {verdict}: {rep.bootstrap.describe(rep.margin)} ({time.perf_counter() - t0:.0f} s, {load()})"
    )
    rows = rep.pairs[rep.pairs["label"].notna()].drop_duplicates("label_key").sort_values("label_key")
    reverse = paired_bootstrap(
        rows["label"].to_numpy(), rows["p_challenger"].to_numpy(), rows["p_champion"].to_numpy(),
        rep.bootstrap.metric, n_boot=boot, seed=seed,
    )  # fmt: skip
    verdict = "ALLOWS promotion" if reverse.passes(rep.margin) else "REFUSES promotion"
    print(
        f"roles swapped (the champion as the other's challenger): gate {verdict}: "
        f"{reverse.describe(rep.margin)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument(
        "--train-challengers", action="store_true", help="train worse challengers into --home"
    )
    parser.add_argument("--trips", type=int, default=3000)
    parser.add_argument("--window-days", type=int, default=28)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of each wrk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--inprocess-rounds", type=int, default=0)
    parser.add_argument(
        "--kill-runner", action="store_true", help="SIGKILL the shadow runner during the 2nd shadow run"
    )
    parser.add_argument("--only-shadow-bar", action="store_true", help="stop after the shadow bar")
    parser.add_argument("--control", choices=sorted(CONTROLS), default=None, help="a control run of the bar")
    parser.add_argument(
        "--gil-profile", type=float, default=0.0, help="only: seconds of py-spy --gil on a worker"
    )
    parser.add_argument("--project", type=Path, default=None, help="checkout whose code --gil-profile serves")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument(
        "--gate-trips",
        type=int,
        default=0,
        help="only the incident gate, on this many distinct trips in process",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("SAFETYML_AUDIT_URL", None)
    os.environ["SAFETYML_AUDIT_FSYNC"] = "1"
    if args.train_challengers:
        os.environ["SAFETYML_HOME"] = str(args.home)
        train_challengers(args.data, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_challengers_"))
    home = work / "home"
    shutil.copytree(args.home, home, ignore=NO_STATE)
    os.environ["SAFETYML_HOME"] = str(home)

    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.scoring.challenger_report import trip_requests
    from safetyml.scoring.policies import load_policies
    from safetyml.tables import load_tables

    specs: dict[str, str] = {}  # task -> challenger spec, for the tasks with a challenger of their own
    for task, name in names().items():
        champion, challenger = tracking.get_alias(name, "champion"), tracking.get_alias(name, "challenger")
        if not champion or not challenger or champion.version == challenger.version:
            print(f"{name}: no challenger other than the champion: {task} left out (--train-challengers)")
            continue
        print(f"{name}: champion v{champion.version}, challenger v{challenger.version}", flush=True)
        specs[task] = f"{name}@challenger"
    assert "incident_risk" in specs, "the shadow bar needs an incident_risk challenger"
    print(f"{os.cpu_count()} cpus; {load()}; work folder {work}", flush=True)

    tables = load_tables(args.data)
    end = tables.trips["requested_at"].max()
    as_of = end - pd.Timedelta(days=args.window_days)
    t0 = time.perf_counter()
    store = OnlineStore.open(home / "online_store.sqlite")
    materialize(tables, load_feature_set(), as_of=as_of, store=store)
    store.close()
    window = tables.trips[
        (tables.trips["requested_at"] >= as_of)
        & (tables.trips["requested_at"] < end - pd.Timedelta(days=7))  # a week for incidents to be reported
    ]
    full_window = window
    window = window.sample(min(args.trips, len(window)), random_state=args.seed).sort_values("requested_at")
    requests = trip_requests(window)
    print(
        f"store as of {as_of}; {len(requests)} trips of {window['requested_at'].min():%Y-%m-%d} → "
        f"{window['requested_at'].max():%Y-%m-%d} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )

    if args.gil_profile:  # only the profile
        gil_profile(args, home, work, requests, list(specs.values()))
        return
    if args.gate_trips:
        path = incident_gate_run(args, home, work, full_window, specs["incident_risk"])
        gate("incident_risk", path, tables, args.boot, args.seed)
        print(f"\nwork folder {work}; {load()}")
        return
    homes = http_shadow_bar(args, home, work, requests, list(specs.values()))
    if args.inprocess_rounds:
        inprocess_shadow_bar(args, home, work, requests, specs["incident_risk"])
    if args.only_shadow_bar:
        print(f"\nwork folder {work}; {load()}")
        return
    stores = {"incident_risk": homes["shadow"] / "audit.sqlite"}
    if "merchant_credit" in specs:
        stores["merchant_credit"] = credit_run(home, work, tables, list(specs.values()))
    policies = load_policies(policies_with(work / "pol_replay", []))
    replay_all([*stores.values(), homes["none"] / "audit.sqlite"], policies)
    for task, path in stores.items():
        gate(task, path, tables, args.boot, args.seed)
    print(f"\nwork folder {work}; {load()}")


if __name__ == "__main__":
    main()
