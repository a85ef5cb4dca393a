"""Latency and throughput of real-time trip scoring (with reason codes), over HTTP and in process.

Needs a SAFETYML_HOME with both champions registered and the online store materialized (``make demo``
leaves one). It starts the real service (``safetyml serve``) on a free loopback port, then measures:

- in process: ``Scorer.score_trip`` latency (p50/p95/p99), no HTTP;
- HTTP, concurrency 1: ``POST /score_trip`` latency (p50/p95/p99) with a keep-alive client;
- HTTP, concurrency N (default 8): requests per second and latency.

Usage: ``python benchmarks/bench_serving.py [--duration 30] [--concurrency 8] [--home DIR] [--url URL]``
(``--url`` measures an already running server instead of starting one; pass its token in
SAFETYML_API_TOKEN). Targets on a 2-core machine: p50 <= 10 ms, p99 <= 30 ms, >= 200 requests/s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "n": len(ms),
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_process(requests: list[dict[str, Any]], duration: float) -> dict[str, float]:
    """Scorer.score_trip latency without HTTP (audit log on, as in the service)."""
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.schemas import TripScoreRequest
    from safetyml.scoring.scorer import Scorer

    audit = AuditLog()
    scorer = Scorer.from_registry(audit=audit)
    parsed = [TripScoreRequest.model_validate(r) for r in requests]
    for request in parsed[:20]:  # warm-up: caches, plans, first LightGBM calls
        scorer.score_trip(request)
    times: list[float] = []
    end = time.perf_counter() + duration
    i = 0
    while time.perf_counter() < end:
        request = parsed[i % len(parsed)]
        started = time.perf_counter()
        scorer.score_trip(request)
        times.append(time.perf_counter() - started)
        i += 1
    audit.close()
    return _percentiles(times)


def _cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of a process and its children: the server's cost, whatever the load."""
    if pid is None:
        return float("nan")
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def http_load(
    url: str,
    token: str | None,
    requests: list[dict[str, Any]],
    duration: float,
    concurrency: int,
    server_pid: int | None = None,
) -> dict[str, float]:
    """Closed-loop load: ``concurrency`` clients each sending the next request as soon as one returns."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    times: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start_gate = threading.Barrier(concurrency + 1)
    end_at: list[float] = [0.0]

    def client(k: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            for request in requests[:5]:  # warm-up the connection
                http.post("/score_trip", json=request)
            start_gate.wait()
            i = k
            while time.perf_counter() < end_at[0]:
                started = time.perf_counter()
                response = http.post("/score_trip", json=requests[i % len(requests)])
                elapsed = time.perf_counter() - started
                if response.status_code == 200:
                    times[k].append(elapsed)
                else:
                    errors[k] += 1
                i += concurrency

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    end_at[0] = time.perf_counter() + duration + 0.5
    start_gate.wait()
    began = time.perf_counter()
    cpu_before = _cpu_seconds(server_pid)
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    cpu_used = _cpu_seconds(server_pid) - cpu_before
    flat = [t for per in times for t in per]
    out = _percentiles(flat)
    out["rps"] = len(flat) / wall
    out["server_cpu_ms"] = 1000 * cpu_used / max(len(flat), 1)
    out["errors"] = sum(errors)
    return out


def start_server(port: int, token: str, home: Path, workers: int = 1) -> subprocess.Popen:
    import httpx

    env = {
        **os.environ,
        "SAFETYML_HOME": str(home),
        "SAFETYML_API_TOKEN": token,
        "BENTOML_DO_NOT_TRACK": "true",
    }
    log = open(home / "bench_server.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("safetyml")),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited ({process.returncode}); see {home / 'bench_server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)  # the arbiter stops its workers (they run in their own sessions)
    process.wait(60)
    raise SystemExit("server not ready after 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds per HTTP measurement (default 30)"
    )
    parser.add_argument(
        "--inproc-duration", type=float, default=None, help="seconds in process (default: duration/3)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--workers", type=int, default=2, help="server worker processes (default 2: one per core)"
    )
    parser.add_argument("--home", type=Path, default=None, help="SAFETYML_HOME (default: the environment's)")
    parser.add_argument("--url", default=None, help="measure a running server instead of starting one")
    parser.add_argument("--requests", type=int, default=500, help="distinct trip requests to cycle through")
    args = parser.parse_args()

    if args.home is not None:
        os.environ["SAFETYML_HOME"] = str(args.home)
    from safetyml import paths
    from safetyml.features.online import OnlineStore
    from safetyml.scoring.examples import example_trip_requests

    home = paths.home()
    with OnlineStore.open() as store:
        requests = example_trip_requests(store, args.requests, seed=1)
    print(f"SAFETYML_HOME={home}; {len(requests)} requests; cpus={os.cpu_count()}; workers={args.workers}")

    inproc = in_process(requests, args.inproc_duration or max(args.duration / 3, 3.0))
    process = None
    if args.url:
        url, token = args.url.rstrip("/"), os.environ.get("SAFETYML_API_TOKEN")
    else:
        port, token = _free_port(), secrets.token_hex(16)
        process = start_server(port, token, home, args.workers)
        url = f"http://127.0.0.1:{port}"
    try:
        pid = process.pid if process is not None else None
        serial = http_load(url, token, requests, args.duration, 1, pid)
        parallel = http_load(url, token, requests, args.duration, args.concurrency, pid)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)

    print("\nscore_trip with reason codes (ms)")
    print(f"{'measure':<34} {'n':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'req/s':>8} {'server CPU/req':>15}")
    rows = [
        ("in process (Scorer.score_trip)", inproc, 1000 / inproc["mean"]),
        ("HTTP, concurrency 1", serial, serial["rps"]),
        (f"HTTP, concurrency {args.concurrency}", parallel, parallel["rps"]),
    ]
    for name, m, rps in rows:
        cpu = m.get("server_cpu_ms", m["mean"] if m is inproc else float("nan"))
        stats = f"{m['n']:>7} {m['p50']:>7.2f} {m['p95']:>7.2f} {m['p99']:>7.2f}"
        print(f"{name:<34} {stats} {rps:>8.1f} {cpu:>15.2f}")
    load = os.getloadavg()
    print(
        f"\nload average during the run (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"on {os.cpu_count()} cpus (other work on the machine inflates wall-clock latency)"
    )
    errors = serial.get("errors", 0) + parallel.get("errors", 0)
    print(
        f"\nerrors: {errors}; targets: p50 <= 10 ms, p99 <= 30 ms (concurrency 1), >= 200 req/s "
        f"(concurrency {args.concurrency})"
    )
    ok = serial["p50"] <= 10 and serial["p99"] <= 30 and parallel["rps"] >= 200
    print("targets met" if ok else "targets NOT met")


if __name__ == "__main__":
    main()
