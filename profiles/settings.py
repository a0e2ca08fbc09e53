"""One Settings object (env prefix ``ACCEL_``) that feeds the API, Celery workers and the store."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(RuntimeError):
    """Raised when the configuration cannot be used as given (e.g. a missing secret)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCEL_", env_file=".env", extra="ignore")

    # embedded: one machine, SQLite, no Redis; distributed: Redis + PostgreSQL, secrets required;
    # dev: like embedded but with a fixed, insecure secret so reloads keep sessions.
    mode: Literal["embedded", "distributed", "dev"] = "embedded"
    data_dir: Path = Path.home() / ".accel-advisor"
    # The defaults below are derived from the fields above them (already validated when a default
    # is made), so every path and URL has its final type and value once Settings exists.
    cache_dir: Path = Field(default_factory=lambda fields: fields["data_dir"] / "cache")
    database_url: str = Field(default_factory=lambda fields: f"sqlite:///{fields['data_dir'] / 'accel.db'}")
    # Celery's SQLAlchemy transport needs no server, so the embedded default has no Redis; the
    # distributed mode has no default broker (it must be given one) and no result backend.
    broker_url: str = Field(
        default_factory=lambda fields: (
            "" if fields["mode"] == "distributed" else f"sqla+sqlite:///{fields['data_dir'] / 'broker.db'}"
        )
    )
    result_backend: str | None = Field(
        default_factory=lambda fields: (
            None if fields["mode"] == "distributed" else f"db+sqlite:///{fields['data_dir'] / 'results.db'}"
        )
    )
    secret_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    retrain_every_n: int = 200
    heartbeat_interval_s: float = 10.0
    node_lost_after_s: float = 45.0  # silent this long: marked lost, its running items re-queued
    visibility_timeout_s: int = 3600  # above the longest job, or Redis redelivers a running task
    max_item_attempts: int = 3
    # A queued item whose message no idle worker picked up for this long was lost (a broker
    # restart, a worker that took the message and died): it is sent again.
    redispatch_after_s: float = 30.0
    max_body_bytes: int = 2 * 2**20  # request bodies above this are refused with 413
    max_job_items: int = 2000  # items one profiling job may plan (models × workloads × targets)
    # Local checkpoints may be registered only from under here.
    model_root: Path = Field(default_factory=lambda fields: fields["data_dir"] / "models")
    # Uploaded checkpoint folders are stored here (one folder per weights hash), at most this large each.
    upload_dir: Path = Field(default_factory=lambda fields: fields["data_dir"] / "uploads")
    max_upload_bytes: int = 4 * 2**30
    sqlite_busy_timeout_ms: int = 30_000

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, data_dir: Path) -> Path:
        return data_dir.expanduser()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.model_root = self.model_root.expanduser().resolve()
        self.upload_dir = self.upload_dir.expanduser().resolve()
        if self.mode == "distributed" and not self.broker_url:
            raise ConfigError("distributed mode needs ACCEL_BROKER_URL (e.g. redis://host:6379/0)")
        return self

    def check_server_config(self) -> None:
        """What the API server (not a worker, which holds no DB credentials) needs to start."""
        if self.mode != "distributed":
            return
        missing = []
        if self.secret_key is None:
            missing.append("ACCEL_SECRET_KEY")
        if self.database_url.startswith("sqlite"):
            missing.append("ACCEL_DATABASE_URL (PostgreSQL)")
        if missing:
            raise ConfigError(f"the distributed server needs: {', '.join(missing)}")

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def resolved_secret_key(self) -> str:
        """The secret for signing sessions: explicit, else dev's fixed one, else generated once.

        Outside dev mode there is no guessable default: embedded mode generates a random key on
        first use and keeps it (mode 0600) in the data dir; distributed mode requires one.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        if self.mode == "dev":
            return "dev-insecure-secret"
        self.ensure_dirs()
        key_file = self.data_dir / "secret_key"
        if not key_file.exists():
            write_secret_file(key_file, secrets.token_urlsafe(48))
        return key_file.read_text().strip()


def write_secret_file(path: Path, text: str) -> None:
    """Writes a secret readable by its owner only (0600), also when the file existed with wider modes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (text.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


@lru_cache
def get_settings() -> Settings:
    return Settings()
