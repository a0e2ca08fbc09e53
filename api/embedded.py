"""First-start work of `accel-advisor serve`: mirror the registry, ship-in profiles, the admin
credential, and (in the embedded default) a supervised local worker process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from importlib import resources
from pathlib import Path

from sqlmodel import col, func, select

from api.auth import create_api_key, create_join_token
from api.catalog import sync_methods
from profiles.db import session_scope
from profiles.models import ApiKey, ProfileRun
from profiles.settings import Settings, write_secret_file

log = logging.getLogger(__name__)
SHIPPED_PROFILES = "seed_profiles.jsonl.gz"
RESTART_BACKOFF_S = (1, 2, 5, 10, 30)  # waits before restarts that come in quick succession


def shipped_profiles() -> Path | None:
    path = Path(str(resources.files("profiles") / "data" / SHIPPED_PROFILES))
    return path if path.exists() else None


def prepare_store(settings: Settings) -> str | None:
    """Idempotent start-up work; returns the first admin key when this start created it.

    Only its hash is in the store; the key itself goes to ``admin_key`` in the data dir (0600)
    and, through the caller, to the operator's terminal — never to a log.
    """
    created = None
    with session_scope() as session:
        methods = sync_methods(session)
        stored = session.exec(select(func.count()).select_from(ProfileRun)).one()
        shipped = shipped_profiles()
        if stored == 0 and shipped is not None:
            result = import_shipped(session, shipped)
            log.info("imported %d shipped profile runs from %s", result, shipped.name)
        has_admin = session.exec(
            select(ApiKey).where(ApiKey.scope == "admin", col(ApiKey.revoked_at).is_(None))
        ).first()
        if has_admin is None:
            _row, created = create_api_key(session, "admin", name="first admin (created by serve)")
            write_secret_file(settings.data_dir / "admin_key", created)
    log.info("registry: %d methods mirrored", methods)
    return created


def import_shipped(session, path: Path) -> int:
    from profiles.transfer import import_file

    return import_file(session, path).added


class LocalWorker:
    """Starts the embedded worker and restarts it whenever it exits while `serve` runs.

    Each start joins with a fresh one-use token; the worker presents its node's last key, so it
    takes over its own node even when the previous process died a moment ago and the node
    still counts as online.
    """

    def __init__(self, settings: Settings, server_url: str):
        self.settings, self.server_url = settings, server_url
        self.state = "starting"
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="local-worker", daemon=True)

    def start(self) -> LocalWorker:
        global _local
        _local = self
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen:
        with session_scope() as session:
            _row, token = create_join_token(session, timedelta(minutes=10), max_uses=1, note="embedded local worker")
        env = dict(os.environ, ACCEL_JOIN_TOKEN=token)  # in the environment, never on a command line
        command = [sys.executable, "-m", "api", "worker", "--server", self.server_url, "--name", "local"]
        return subprocess.Popen([*command, "--parent-pid", str(os.getpid())], env=env, start_new_session=True)

    def _supervise(self) -> None:
        quick_exits = 0
        while not self._stop.is_set():
            try:
                self._proc = self._spawn()
            except Exception:  # e.g. the store is busy: try again shortly
                log.exception("could not start the local worker")
                self._stop.wait(RESTART_BACKOFF_S[-1])
                continue
            self.state, started = "running", time.monotonic()
            code = self._proc.wait()  # also reaps it: no zombie
            if self._stop.is_set():
                break
            quick_exits = 0 if time.monotonic() - started > 60 else quick_exits + 1
            wait = RESTART_BACKOFF_S[min(quick_exits, len(RESTART_BACKOFF_S) - 1)]
            self.state, self.restarts = "restarting", self.restarts + 1
            log.warning("local worker exited with code %s; restarting in %d s", code, wait)
            self._stop.wait(wait)
        self.state = "stopped"

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(5)


_local: LocalWorker | None = None


def local_worker_state() -> str | None:
    """ "running", "restarting", … for the embedded local worker of this process; None without one."""
    return _local.state if _local is not None else None
