"""The processes a soak runs and breaks: redis-server, PostgreSQL, the API (`serve`) and workers,
each on loopback, each started, killed with SIGKILL and restarted by the driver (bench/soak.py)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (httpx.TransportError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc; zombies left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class Redis:
    def __init__(self, workdir: Path):
        self.port, self.dir = free_port(), workdir / "redis"
        self.proc: subprocess.Popen | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        # No persistence: a restart loses every queued message, the worst case the API must repair.
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--dir", str(self.dir)], stdout=subprocess.DEVNULL)
        wait_for(self._answers, 20, "redis")

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), 1):
            return True

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Postgres:
    """A throw-away database: on the server given (ACCEL_TEST_POSTGRES_URL), else on a cluster of our own."""

    def __init__(self, workdir: Path, admin_url: str | None):
        self.workdir, self.admin_url = workdir / "pg", admin_url or ""
        self.cluster: tuple[Path, Path] | None = None
        self.name = f"accel_soak_{uuid.uuid4().hex[:10]}"

    def start(self) -> str:
        from sqlalchemy import create_engine, text

        if not self.admin_url:
            self.admin_url = self._own_cluster()
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        admin.dispose()
        return self.admin_url.rsplit("/", 1)[0] + f"/{self.name}"

    def _own_cluster(self) -> str:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        port, data = free_port(), self.workdir / "data"
        self.workdir.mkdir(parents=True)
        shutil.chown(self.workdir, "postgres", "postgres")
        as_postgres = ["su", "postgres", "-c"]
        subprocess.run(
            [*as_postgres, f"{bins[-1]}/initdb -D {data} -A trust -U postgres"], check=True, capture_output=True
        )
        options = f"-p {port} -k {self.workdir} -c listen_addresses=127.0.0.1"
        start = f"{bins[-1]}/pg_ctl -D {data} -o '{options}' -l {self.workdir}/log start -w"
        subprocess.run([*as_postgres, start], check=True, capture_output=True)
        self.cluster = (bins[-1], data)
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def stop(self) -> None:
        from sqlalchemy import create_engine, text

        try:
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()
        finally:
            if self.cluster is not None:
                bin_dir, data = self.cluster
                subprocess.run(
                    ["su", "postgres", "-c", f"{bin_dir}/pg_ctl -D {data} stop -m fast"], capture_output=True
                )


class Service:
    """`serve` and workers as subprocesses of one environment; every log goes to a file."""

    def __init__(self, workdir: Path, env: dict):
        self.workdir, self.env = workdir, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.url = f"http://127.0.0.1:{env['ACCEL_PORT']}"

    def _spawn(self, name: str, args: list[str], extra: dict | None = None) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "api", *args],
            env={**self.env, **(extra or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start_api(self, local_worker: bool) -> None:
        proc = self._spawn("api", ["serve"] if local_worker else ["serve", "--no-local-worker"])
        wait_for(lambda: proc.poll() is not None or httpx.get(self.url + "/healthz", timeout=2).is_success, 120, "API")
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited: see {self.workdir / 'api.log'}")

    def start_worker(self, name: str, token: str) -> None:
        args = ["worker", "--server", self.url, "--threads", "1", "--node-id", name, "--name", name]
        # Each worker keeps its own data dir (its key file, by which a restart takes its node over).
        self._spawn(name, args, {"ACCEL_JOIN_TOKEN": token, "ACCEL_DATA_DIR": str(self.workdir / f"data-{name}")})

    def kill(self, name: str) -> None:
        """SIGKILL to the process alone (a crash): a worker's Celery child dies with it, serve's worker lives on."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    def kill_local_worker(self) -> bool:
        kids = children(self.procs["api"].pid)
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
        return bool(kids)

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def service_env(workdir: Path, cache_dir: Path, database_url: str | None, broker_url: str | None) -> dict[str, str]:
    env = dict(
        os.environ,
        ACCEL_DATA_DIR=str(workdir / "data"),
        ACCEL_CACHE_DIR=str(cache_dir),
        ACCEL_PORT=str(free_port()),
        ACCEL_HEARTBEAT_INTERVAL_S="2",
        ACCEL_NODE_LOST_AFTER_S="10",
        ACCEL_REDISPATCH_AFTER_S="15",
        ACCEL_RETRAIN_EVERY_N="1000000",  # a retrain mid-soak would measure the learner, not the service
        TORCHINDUCTOR_CACHE_DIR=str(cache_dir / "inductor"),
        OMP_WAIT_POLICY="PASSIVE",
    )
    if database_url and broker_url:  # distributed: PostgreSQL, Redis, a real secret
        env.update(
            ACCEL_MODE="distributed",
            ACCEL_DATABASE_URL=database_url,
            ACCEL_BROKER_URL=broker_url,
            ACCEL_RESULT_BACKEND=broker_url,
            ACCEL_SECRET_KEY=secrets.token_urlsafe(32),
        )
    return env
