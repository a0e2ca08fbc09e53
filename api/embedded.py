"""First-start work of `accel-advisor serve`: mirror the registry, ship-in profiles, the admin
credential, and (in the embedded default) a local worker process joined with a one-use token."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta
from importlib import resources
from pathlib import Path

from sqlmodel import func, select

from api.auth import create_api_key, create_join_token
from api.catalog import sync_methods
from profiles.db import session_scope
from profiles.models import ApiKey, ProfileRun
from profiles.settings import Settings
from profiles.transfer import import_file

log = logging.getLogger(__name__)
SHIPPED_PROFILES = "seed_profiles.jsonl.gz"


def shipped_profiles() -> Path | None:
    path = Path(str(resources.files("profiles") / "data" / SHIPPED_PROFILES))
    return path if path.exists() else None


def prepare_store(settings: Settings) -> str | None:
    """Idempotent start-up work; returns the admin key when one is kept in the data dir."""
    key_file = settings.data_dir / "admin_key"
    with session_scope() as session:
        methods = sync_methods(session)
        stored = session.exec(select(func.count()).select_from(ProfileRun)).one()
        shipped = shipped_profiles()
        if stored == 0 and shipped is not None:
            result = import_file(session, shipped)
            log.info("imported %d shipped profile runs from %s", result.added, shipped.name)
        has_admin = session.exec(select(ApiKey).where(ApiKey.scope == "admin", ApiKey.revoked_at.is_(None))).first()
        if has_admin is None:
            _row, key = create_api_key(session, "admin", name="first admin (created by serve)")
            # Only the hash is in the store; the embedded default keeps the key where its owner can read it.
            key_file.touch(mode=0o600)
            key_file.write_text(key + "\n")
    log.info("registry: %d methods mirrored", methods)
    return key_file.read_text().strip() if key_file.exists() else None


def spawn_local_worker(settings: Settings, server_url: str) -> subprocess.Popen:
    with session_scope() as session:
        _row, token = create_join_token(session, timedelta(minutes=10), max_uses=1, note="embedded local worker")
    env = dict(os.environ, ACCEL_JOIN_TOKEN=token)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api",
            "worker",
            "--server",
            server_url,
            "--name",
            "local",
            "--parent-pid",
            str(os.getpid()),
        ],
        env=env,
        start_new_session=True,
    )
