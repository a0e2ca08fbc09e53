"""Helpers for the multi-process tests: the API and workers as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx

from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.settings import get_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Stack:
    """The API and its workers as subprocesses sharing one environment."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.url = f"http://127.0.0.1:{env['ACCEL_PORT']}"

    def _spawn(self, name: str, args: list[str], extra_env: dict | None = None) -> subprocess.Popen:
        # The child gets its own copy of the log's descriptor: ours can close once it has started.
        with open(self.logs / f"{name}.log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "api", *args],
                env={**self.env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_api(self) -> None:
        proc = self._spawn("api", ["serve", "--no-local-worker"])
        wait_for(lambda: proc.poll() is not None or self._healthy(), 60, "the API")
        assert proc.poll() is None, self.log("api")

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def start_worker(self, name: str, threads: int, token: str) -> subprocess.Popen:
        return self._spawn(
            name,
            [
                "worker",
                "--server",
                self.url,
                "--threads",
                str(threads),
                "--node-id",
                name,
                "--name",
                name,
            ],
            # The token in the environment, never on a command line other users can read in `ps`.
            {"ACCEL_DATA_DIR": str(self.logs / f"data-{name}"), "ACCEL_JOIN_TOKEN": token},
        )

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-4000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def make_stack(tmp_path: Path, zoo_cache: Path, broker_url: str | None, monkeypatch) -> Stack:
    env = dict(
        os.environ,
        ACCEL_PORT=str(free_port()),
        ACCEL_CACHE_DIR=str(zoo_cache),
        ACCEL_NODE_LOST_AFTER_S="4",
        ACCEL_HEARTBEAT_INTERVAL_S="1",
        ACCEL_RETRAIN_EVERY_N="100000",
        TORCHINDUCTOR_CACHE_DIR=str(zoo_cache / "inductor"),
    )
    if broker_url is None:  # the embedded transport: one SQLite broker file that every process shares
        data_dir = Path(os.environ["ACCEL_DATA_DIR"])
        broker_url, env["ACCEL_RESULT_BACKEND"] = (
            f"sqla+sqlite:///{data_dir / 'broker.db'}",
            f"db+sqlite:///{data_dir / 'results.db'}",
        )
    else:
        env["ACCEL_RESULT_BACKEND"] = broker_url
    env["ACCEL_BROKER_URL"] = broker_url
    for key in ("ACCEL_PORT", "ACCEL_CACHE_DIR", "ACCEL_BROKER_URL", "ACCEL_RESULT_BACKEND"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    get_settings.cache_clear()
    default_engine.cache_clear()
    upgrade(default_engine())
    return Stack(env, tmp_path)


def credentials() -> tuple[dict, str]:
    """Admin and client headers plus a join token, made directly in the store the API uses."""
    from api.auth import create_api_key, create_join_token

    with session_scope() as session:
        admin = create_api_key(session, "admin", "e2e admin")[1]
        client = create_api_key(session, "client", "e2e client")[1]
        token = create_join_token(session, timedelta(hours=1))[1]
    return ({"admin": {"Authorization": f"Bearer {admin}"}, "client": {"Authorization": f"Bearer {client}"}}, token)
