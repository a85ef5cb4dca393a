"""Latency, throughput, soak and crash recovery of real-time trip scoring (with reason codes).

Needs a SAFETYML_HOME with both champions registered and the online store materialized (``make demo``
leaves one). It starts the real service (``safetyml serve``) on a free loopback port, then measures:

- in process: ``Scorer.score_trip`` latency (p50/p95/p99), no HTTP, with the audit log off and on (on = the
  service's guarantee: the decision is fsync'd to the journal before the call returns);
- HTTP, concurrency 1: ``POST /score_trip`` latency with a keep-alive Python client, and with ``wrk`` at one
  connection (a C client: what the server adds, without the Python client's own ~0.3 ms);
- HTTP, concurrency N (default 8): ``wrk`` (Debian package ``wrk``) requests/s and latency; every decision
  id it receives is kept;
- ``--ceiling 16,32``: ``wrk`` at those concurrencies too; the highest req/s of all runs is the ceiling;
- ``--soak S``: ``wrk`` for S seconds at ``--soak-concurrency`` (default 16): errors, RSS growth of all the
  service's processes;
- ``--kills K``: a ``wrk`` run during which one worker is killed with SIGKILL K times: errors, time back to
  ready after each kill;
- at the end (server stopped): every decision id any ``wrk`` run received must be in the audit log.

Usage: ``python benchmarks/bench_serving.py [--duration 30] [--concurrency 8] [--workers 2] [--soak 300]
[--kills 3] [--ceiling 16,32] [--home DIR]``; the service's knobs come from the environment
(``SAFETYML_SERVE_THREADS``, ``SAFETYML_AUDIT_FSYNC``, ``SAFETYML_SERVE_ACCESS_LOG``, ...). The load
average is printed beside each figure: on a shared machine it is part
of the measurement.
"""

from __future__ import annotations

import argparse
import contextlib
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


def in_process(requests: list[dict[str, Any]], duration: float, audit_dir: Path | None) -> dict[str, float]:
    """Scorer.score_trip latency without HTTP; with ``audit_dir``, each decision is durable (fsync'd to the
    journal) before the call returns, as in the service."""
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.schemas import TripScoreRequest
    from safetyml.scoring.scorer import Scorer

    audit = AuditLog(audit_dir / "audit.sqlite") if audit_dir is not None else None
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
    if audit is not None:
        audit.close()
    out = _percentiles(times)
    out["rps"] = 1000 / out["mean"]
    return out


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


def start_server(
    port: int,
    token: str,
    home: Path,
    workers: int = 1,
    project: Path = REPO,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    import httpx

    env = {
        **os.environ,
        "SAFETYML_HOME": str(home),
        "SAFETYML_API_TOKEN": token,
        "BENTOML_DO_NOT_TRACK": "true",
        **(extra_env or {}),
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
        cwd=project,
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


WRK_SCRIPT = r"""
-- cycles through request bodies (one JSON per line of $BENCH_BODIES); writes every decision id received
-- (or ERR <status>) to $BENCH_IDS.<thread>
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  bodies = {}
  for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
  out = io.open(os.getenv("BENCH_IDS") .. "." .. tid, "w")
  out:setvbuf("line")
  i = tid
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")}
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/score_trip", headers, bodies[i])
end
function response(status, hdrs, body)
  if status == 200 then
    out:write(string.match(body, '"decision_id":"([^"]+)"') or "NOID", "\n")
  else
    out:write("ERR ", status, "\n")
  end
end
"""


def _ms(text: str) -> float:
    value, unit = float(text.rstrip("usm")), text.lstrip("0123456789.")
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk_load(
    url: str, token: str, requests: list[dict[str, Any]], duration: float, concurrency: int, work: Path
) -> dict[str, Any]:
    """``wrk`` closed loop at ``concurrency`` connections (2 threads): req/s, latency percentiles, errors and
    the decision ids received."""
    import json
    import re
    import shutil

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    work.mkdir(parents=True, exist_ok=True)
    script, bodies = work / "score.lua", work / "bodies.jsonl"
    script.write_text(WRK_SCRIPT)
    bodies.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in requests))
    ids_prefix = work / f"ids-c{concurrency}-{time.time_ns()}"
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_IDS": str(ids_prefix), "BENCH_TOKEN": token}
    load_before = os.getloadavg()[0]
    result = subprocess.run(
        [
            "wrk",
            f"-t{min(2, concurrency)}",
            f"-c{concurrency}",
            f"-d{int(duration)}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    text = result.stdout
    if result.returncode != 0 or "error" in result.stderr.lower():
        raise SystemExit(f"wrk failed ({result.returncode}):\n{result.stderr}\n{text}")
    out: dict[str, Any] = {"load_before": load_before, "load_after": os.getloadavg()[0], "wrk": text}
    out["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+\w+)", text, re.M)
        out[f"p{pct}"] = _ms(match.group(1)) if match else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    out["socket_errors"] = sum(map(int, sock.groups())) if sock else 0
    ids: list[str] = []
    errors: dict[str, int] = {}
    for path in work.glob(ids_prefix.name + ".*"):
        for line in path.read_text().splitlines():
            if line.startswith("ERR") or line == "NOID":
                errors[line] = errors.get(line, 0) + 1
            elif line:
                ids.append(line)
    out["ids"], out["error_statuses"], out["n"] = ids, errors, len(ids)
    if not ids:
        raise SystemExit(f"wrk received no decision: {errors or 'no response logged'}\n{text}")
    return out


def service_rss_mb(pid: int) -> float:
    """Resident memory of the server and all its processes (MB)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20


def worker_pids(pid: int) -> list[int]:
    """The service's worker processes (those that serve HTTP)."""
    import psutil

    out = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if "worker" in " ".join(proc.cmdline()):
                out.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def kill_run(
    url: str,
    token: str,
    requests: list[dict[str, Any]],
    duration: float,
    concurrency: int,
    kills: int,
    server_pid: int,
    work: Path,
) -> dict[str, Any]:
    """``wrk`` for ``duration`` s while one worker is SIGKILLed ``kills`` times, evenly spaced; records the
    seconds until /readyz says 200 again after each kill."""
    import httpx

    recovery: list[float] = []
    killed: list[int] = []

    def killer() -> None:
        gap = duration / (kills + 1)
        for k in range(kills):
            time.sleep(gap if k == 0 else max(gap - recovery[-1], 1.0))
            pids = worker_pids(server_pid)
            if not pids:
                continue
            victim = pids[k % len(pids)]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            started = time.monotonic()
            time.sleep(0.2)
            while time.monotonic() - started < 120:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            recovery.append(time.monotonic() - started)

    thread = threading.Thread(target=killer)
    thread.start()
    out = wrk_load(url, token, requests, duration, concurrency, work)
    thread.join()
    out["recovery_s"], out["killed"] = recovery, killed
    return out


KNOBS: list[tuple[str, int, dict[str, str]]] = [
    ("defaults (2 workers, 4 threads)", 2, {}),
    ("1 worker", 1, {}),
    ("2 threads per worker", 2, {"SAFETYML_SERVE_THREADS": "2"}),
    ("8 threads per worker", 2, {"SAFETYML_SERVE_THREADS": "8"}),
    (
        "access log on, every request traced",
        2,
        {"SAFETYML_SERVE_ACCESS_LOG": "1", "SAFETYML_SERVE_TRACE_RATE": "1"},
    ),
    ("SAFETYML_AUDIT_FSYNC=0 (no fdatasync)", 2, {"SAFETYML_AUDIT_FSYNC": "0"}),
]


def knob_runs(
    home: Path, requests: list[dict[str, Any]], duration: float, concurrency: int, work: Path, project: Path
) -> tuple[list[tuple[str, dict[str, Any], dict[str, Any]]], set[str]]:
    """Each setting of :data:`KNOBS` on a fresh server: ``wrk`` at one connection and at ``concurrency``."""
    out, received = [], set()
    for label, workers, env in KNOBS:
        port, token = _free_port(), secrets.token_hex(16)
        process = start_server(port, token, home, workers, project, env)
        try:
            url = f"http://127.0.0.1:{port}"
            wrk_load(url, token, requests, 3, concurrency, work)  # warm-up
            one = wrk_load(url, token, requests, duration, 1, work)
            many = wrk_load(url, token, requests, duration, concurrency, work)
            received |= set(one["ids"]) | set(many["ids"])
            out.append((label, one, many))
            print(f"  knob run done: {label}", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(120)
    return out, received


def missing_from_audit(home: Path, ids: set[str]) -> int:
    """How many received decision ids are not in the audit database (after replaying any journal left)."""
    from safetyml.scoring.audit import AuditLog, read_decisions

    path = home / "audit.sqlite"
    log = AuditLog(path)  # ships whatever a killed worker left in its journal
    deadline = time.monotonic() + 60
    own = getattr(log, "_journal", None)  # None: an older checkout without journals (--project)
    while own and any(p != own.path for p in log.journals.glob("*.journal")) and time.monotonic() < deadline:
        time.sleep(0.2)
    log.close()
    stored = set(read_decisions(path=path)["decision_id"])
    return len(ids - stored)


def _fmt_row(name: str, m: dict[str, Any]) -> str:
    load = f"{m.get('load_before', float('nan')):.1f}→{m.get('load_after', float('nan')):.1f}"
    errors = m.get("non2xx", 0) + m.get("socket_errors", 0) + m.get("errors", 0)
    return (
        f"{name:<42} {m.get('n', 0):>8} {m['p50']:>7.2f} {m.get('p90', m.get('p95', float('nan'))):>7.2f} "
        f"{m['p99']:>7.2f} {m['rps']:>8.1f} {errors:>6} {load:>10}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per measurement (default 30)")
    parser.add_argument(
        "--inproc-duration", type=float, default=None, help="seconds in process (default: duration/3)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--workers", type=int, default=2, help="server worker processes (default 2: one per core)"
    )
    parser.add_argument("--soak", type=float, default=0.0, help="soak seconds (e.g. 300); 0 = no soak")
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL a worker this many times under load")
    parser.add_argument("--kill-duration", type=float, default=60.0)
    parser.add_argument("--home", type=Path, default=None, help="SAFETYML_HOME (default: the environment's)")
    parser.add_argument("--requests", type=int, default=500, help="distinct trip requests to cycle through")
    parser.add_argument(
        "--ceiling", default="", help="more wrk concurrencies (e.g. 16,32): the req/s ceiling"
    )
    parser.add_argument(
        "--knobs", action="store_true", help="also run each setting of KNOBS (workers, threads, logs, fsync)"
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=REPO,
        help="project folder whose serving/ is served (with PYTHONPATH=<its src>: an older checkout)",
    )
    args = parser.parse_args()

    if args.home is not None:
        os.environ["SAFETYML_HOME"] = str(args.home)
    import tempfile

    from safetyml import paths
    from safetyml.features.online import OnlineStore
    from safetyml.scoring.examples import example_trip_requests

    home = paths.home()
    with OnlineStore.open() as store:
        requests = example_trip_requests(store, args.requests, seed=1)
    fsync = os.environ.get("SAFETYML_AUDIT_FSYNC", "1") != "0"
    print(
        f"SAFETYML_HOME={home}; {len(requests)} requests; cpus={os.cpu_count()}; workers={args.workers}; "
        f"audit journal fdatasync {'on' if fsync else 'OFF (SAFETYML_AUDIT_FSYNC=0)'}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    inproc_seconds = args.inproc_duration or max(args.duration / 3, 3.0)
    rows: list[tuple[str, dict[str, Any]]] = []
    for label, audit_dir in (
        ("audit off", None),
        (f"audit on, fsync {'on' if fsync else 'off'}", work / "inproc"),
    ):
        before = os.getloadavg()[0]
        m = in_process(requests, inproc_seconds, audit_dir)
        m.update(load_before=before, load_after=os.getloadavg()[0])
        rows.append((f"in process, {label}", m))

    port, token = _free_port(), secrets.token_hex(16)
    process = start_server(port, token, home, args.workers, args.project)
    url = f"http://127.0.0.1:{port}"
    received: set[str] = set()
    extra: list[str] = []
    try:
        before = os.getloadavg()[0]
        serial = http_load(url, token, requests, args.duration, 1, process.pid)
        serial.update(load_before=before, load_after=os.getloadavg()[0])
        rows.append(("HTTP c=1 (Python keep-alive client)", serial))
        serial_wrk = wrk_load(url, token, requests, args.duration, 1, work)
        received |= set(serial_wrk["ids"])
        rows.append(("HTTP c=1 (wrk)", serial_wrk))
        parallel = wrk_load(url, token, requests, args.duration, args.concurrency, work)
        received |= set(parallel["ids"])
        rows.append((f"HTTP c={args.concurrency} (wrk)", parallel))
        ceiling = [(args.concurrency, parallel["rps"])]
        for concurrency in [int(c) for c in args.ceiling.split(",") if c.strip()]:
            run = wrk_load(url, token, requests, args.duration, concurrency, work)
            received |= set(run["ids"])
            rows.append((f"HTTP c={concurrency} (wrk)", run))
            ceiling.append((concurrency, run["rps"]))
        if args.soak:
            rss_before = service_rss_mb(process.pid)
            soak = wrk_load(url, token, requests, args.soak, args.soak_concurrency, work)
            rss_after = service_rss_mb(process.pid)
            received |= set(soak["ids"])
            rows.append((f"soak {args.soak:.0f} s, c={args.soak_concurrency} (wrk)", soak))
            extra.append(
                f"soak: RSS of all service processes {rss_before:.0f} MB -> {rss_after:.0f} MB "
                f"({100 * (rss_after / rss_before - 1):+.1f} %); "
                f"error statuses {soak['error_statuses'] or 'none'}"
            )
        if args.kills:
            crash = kill_run(
                url, token, requests, args.kill_duration, args.concurrency, args.kills, process.pid, work
            )
            received |= set(crash["ids"])
            rows.append((f"{args.kills} x kill -9 of a worker, c={args.concurrency}", crash))
            extra.append(
                f"kills: workers {crash['killed']}; back to ready after "
                f"{', '.join(f'{s:.1f}' for s in crash['recovery_s'])} s; error statuses "
                f"{crash['error_statuses'] or 'none'}; socket errors {crash['socket_errors']}"
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    knobs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    if args.knobs:
        knobs, knob_ids = knob_runs(home, requests, args.duration, args.concurrency, work, args.project)
        received |= knob_ids
    missing = missing_from_audit(home, received)

    print("\nscore_trip with reason codes (latency in ms; load = 1-min load average before→after)")
    print(
        f"{'measure':<42} {'n':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'req/s':>8} {'errors':>6} {'load':>10}"
    )
    for name, m in rows:
        print(_fmt_row(name, m))
    print(f"(in process p90 column = p95; HTTP c=1 server CPU per request: {serial['server_cpu_ms']:.2f} ms)")
    for line in extra:
        print(line)
    if knobs:
        print(f"\nknobs (wrk, {args.duration:.0f} s each; ms)")
        print(
            f"{'setting':<40} {'c=1 p50':>8} {'c=1 p99':>8} {f'c={args.concurrency} p50':>8} "
            f"{f'c={args.concurrency} p99':>8} {'req/s':>7} {'errors':>6} {'load':>10}"
        )
        for label, one, many in knobs:
            errors = sum(m["non2xx"] + m["socket_errors"] for m in (one, many))
            load = f"{one['load_before']:.1f}→{many['load_after']:.1f}"
            print(
                f"{label:<40} {one['p50']:>8.2f} {one['p99']:>8.2f} {many['p50']:>8.2f} {many['p99']:>8.2f} "
                f"{many['rps']:>7.0f} {errors:>6} {load:>10}"
            )
    print(f"decision ids received by wrk: {len(received):,}; missing from the audit log: {missing}")
    bare, durable = rows[0][1], rows[1][1]
    best = max(ceiling, key=lambda pair: pair[1])
    print(
        f"\nbars: HTTP c=1 p50 {serial['p50']:.2f} ms (Python client) / {serial_wrk['p50']:.2f} ms (wrk) vs "
        f"in-process p50 {durable['p50']:.2f} ms with the durable audit "
        f"(+{serial['p50'] - durable['p50']:.2f} / +{serial_wrk['p50'] - durable['p50']:.2f} ms; bar +1.5) "
        f"and {bare['p50']:.2f} ms without it; "
        f"c={args.concurrency} p99 {parallel['p99']:.1f} ms (bar 30), {parallel['rps']:.0f} req/s (bar 400); "
        f"ceiling {best[1]:.0f} req/s (at c={best[0]}); missing decisions {missing} (bar 0)"
    )
    load = os.getloadavg()
    print(
        f"load average now (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; {os.cpu_count()} cpus"
    )


if __name__ == "__main__":
    main()
