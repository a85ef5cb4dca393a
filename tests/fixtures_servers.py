"""Real servers on 127.0.0.1 for the tests, started once per session and always stopped: PostgreSQL (the
audit log), redis-server (the online store), and helpers to start/stop the scoring service itself.

The Debian packages (``postgresql``, ``redis-server``) are installed by ``.ci/run``; a test needing a
server that is not installed is skipped with a message saying which package to install.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Postgres:
    """A throw-away PostgreSQL cluster (Debian's binaries; run as the ``postgres`` user when we are root)."""

    def __init__(self) -> None:
        self.bin = Path(PG_BIN[-1])
        self.root = Path(tempfile.mkdtemp(prefix="safetyml-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://safetyml@127.0.0.1:{self.port}/postgres"
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "safetyml", "--auth=trust", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for the session (tests may stop and start it; it is stopped at the end)."""
    if not PG_BIN:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql; .ci/run does)")
    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped by a test
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1 and a free port, without persistence."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="safetyml-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        import redis

        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.root), "--protected-mode", "yes",
        ]  # fmt: skip
        with open(self.root / "log", "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (self.root / "log").read_text()
                    raise RuntimeError(f"redis-server did not start:\n{log}") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the session, always stopped (the data is thrown away)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run does)")
    pytest.importorskip("redis")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


# ------------------------------------------------------------------------------------------- the service


def start_service(
    home: Path, root: Path, env: Mapping[str, str], workers: int = 2, timeout: float = 120.0
) -> tuple[subprocess.Popen, str, Path]:
    """``safetyml serve`` on a free loopback port against ``home``; waits for ``/readyz``. Returns the
    process, its URL and its log file. Stop it with :func:`stop_service`."""
    import httpx

    from safetyml import paths

    port = free_port()
    full_env = {
        **os.environ,
        "SAFETYML_HOME": str(home),
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        **env,
    }
    full_env.pop("MLFLOW_TRACKING_URI", None)
    log_path = root / f"server-{port}.log"
    safetyml_cli = Path(sys.executable).with_name("safetyml")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(safetyml_cli), "serve", "--port", str(port), "--workers", str(workers)],
            env=full_env,
            cwd=paths.project_dir(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url, log_path
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_service(process)
            pytest.fail(f"server not ready after {timeout} s:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)


def stop_service(process: subprocess.Popen) -> None:
    """SIGTERM the server (the arbiter stops its workers); SIGKILL the whole tree if it does not stop."""
    import psutil

    if process.poll() is not None:
        return
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(60)
    for proc in tree:  # workers run in their own sessions: kill them by pid, not by process group
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running():
                proc.kill()
    process.wait(30)
