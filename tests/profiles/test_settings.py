"""Settings: env prefix, derived defaults, no insecure secrets outside dev mode."""

from __future__ import annotations

import stat

import pytest

from profiles.settings import ConfigError, Settings


def test_defaults_derive_from_the_data_dir(isolated_data_dir):
    settings = Settings()
    assert settings.mode == "embedded"
    assert settings.database_url == f"sqlite:///{isolated_data_dir / 'accel.db'}"
    assert settings.cache_dir == isolated_data_dir / "cache"
    assert settings.broker_url.startswith("sqla+sqlite:///")  # embedded: no Redis


def test_env_prefix_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCEL_DATABASE_URL", "postgresql+psycopg://u@db/accel")
    monkeypatch.setenv("ACCEL_PORT", "9001")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ACCEL_RETRAIN_EVERY_N=7\n")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u@db/accel"
    assert settings.port == 9001 and settings.retrain_every_n == 7


def test_distributed_mode_refuses_missing_secrets_and_sqlite(monkeypatch):
    monkeypatch.setenv("ACCEL_MODE", "distributed")
    with pytest.raises(ConfigError, match="ACCEL_BROKER_URL"):
        Settings()
    monkeypatch.setenv("ACCEL_BROKER_URL", "redis://127.0.0.1:6379/0")
    worker_settings = Settings()  # a worker needs only the broker: no DB credentials, no secret
    with pytest.raises(ConfigError) as excinfo:
        worker_settings.check_server_config()
    assert "ACCEL_SECRET_KEY" in str(excinfo.value) and "PostgreSQL" in str(excinfo.value)
    monkeypatch.setenv("ACCEL_SECRET_KEY", "s3cret-from-the-operator")
    monkeypatch.setenv("ACCEL_DATABASE_URL", "postgresql+psycopg://u@db/accel")
    server_settings = Settings()
    server_settings.check_server_config()
    assert server_settings.resolved_secret_key() == "s3cret-from-the-operator"


def test_serve_refuses_to_start_a_distributed_server_without_a_secret(monkeypatch):
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("ACCEL_MODE", "distributed")
    monkeypatch.setenv("ACCEL_BROKER_URL", "redis://127.0.0.1:6379/0")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code != 0 and "ACCEL_SECRET_KEY" in str(result.exception)


def test_embedded_secret_is_random_private_and_stable(isolated_data_dir):
    first = Settings().resolved_secret_key()
    assert len(first) >= 40 and first != "dev-insecure-secret"
    key_file = isolated_data_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Settings().resolved_secret_key() == first  # kept across restarts


def test_another_installation_gets_another_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_DATA_DIR", str(tmp_path / "a"))
    a = Settings().resolved_secret_key()
    monkeypatch.setenv("ACCEL_DATA_DIR", str(tmp_path / "b"))
    assert Settings().resolved_secret_key() != a


def test_only_dev_mode_has_the_fixed_secret(monkeypatch):
    monkeypatch.setenv("ACCEL_MODE", "dev")
    assert Settings().resolved_secret_key() == "dev-insecure-secret"
