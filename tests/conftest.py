"""Shared fixtures: every test gets its own data dir, settings and SQLite store."""

from __future__ import annotations

import os

# Triton decorates its own language helpers when triton.language is first imported, as interpreted
# or as compiled functions by this variable: it must be set before any test module imports a
# library that imports triton (diffusers does), or the CPU kernel tests' interpreted kernels call
# compiled helpers and fail. The kernels themselves run on CUDA only, so nothing else changes.
os.environ.setdefault("TRITON_INTERPRET", "1")

import uuid

import pytest
from sqlalchemy import text

from profiles.db import default_engine, make_engine
from profiles.migrate import upgrade
from profiles.models import run_id_for, workload_id_for
from profiles.settings import get_settings


def _clear_caches() -> None:
    get_settings.cache_clear()
    default_engine.cache_clear()


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Points ACCEL_DATA_DIR at a fresh folder so no test sees another's store or cache."""
    monkeypatch.setenv("ACCEL_DATA_DIR", str(tmp_path / "accel-data"))
    for name in (
        "ACCEL_DATABASE_URL",
        "ACCEL_MODE",
        "ACCEL_SECRET_KEY",
        "ACCEL_BROKER_URL",
        "ACCEL_RESULT_BACKEND",
        "ACCEL_CACHE_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    yield tmp_path / "accel-data"
    _clear_caches()


def postgres_admin_url() -> str | None:
    return os.environ.get("ACCEL_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty database per test: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    admin_url = postgres_admin_url()
    if admin_url is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide ACCEL_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)")
        pytest.skip("no PostgreSQL server: set ACCEL_TEST_POSTGRES_URL (e.g. as .ci/run does)")
    name = f"accel_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def engine(db_url):
    """A migrated store on the parametrised backend."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def make_record(i: int = 0, *, method: str = "quant.int8_dynamic", status: str = "ok", threads: int = 2) -> dict:
    """One self-contained profile record as `profiles.transfer` exports it."""
    shape = {"kind": "lm-generate", "batch_size": 1 + i % 3, "prompt_len": 32, "gen_len": 32}
    workload_id = workload_id_for(shape)
    node_id = f"cpu-test-t{threads}"
    model_id = f"zoo:lm-{i % 2}"
    config = {"method": method, "version": 1, "params": {"i": i}}
    record = {
        "run_id": run_id_for(model_id, workload_id, method, config, node_id),
        "model_id": model_id,
        "workload_id": workload_id,
        "node_id": node_id,
        "hardware_class": node_id,
        "method_id": method,
        "config": config,
        "status": status,
        "reason": None if status == "ok" else "needs CUDA",
        "speedup": 1.25 + i / 100 if status == "ok" else None,
        "latency_p50_s": 0.01,
        "latency_p10_s": 0.009,
        "latency_p90_s": 0.012,
        "quality_metric": "perplexity",
        "quality_baseline": 3.0,
        "quality_value": 3.03,
        "quality_delta": -0.01,
        "setup_s": 0.5,
        "repeats": 5,
        "metrics": {"throughput_unit": "tok/s"},
        "environment": {"torch": "2.13.0"},
        "model": {
            "id": model_id,
            "family": "decoder-lm",
            "params": 1_000_000 * (1 + i % 2),
            "layers": 4,
            "width": 128,
            "heads": 4,
            "kv_heads": 4,
            "vocab": 259,
            "context": 1024,
            "source": f"zoo:lm-{i % 2}",
            "descriptors": {},
        },
        "workload": {"id": workload_id, **shape, "sampling": "greedy", "objective": "latency", "params": {}},
        "node": {
            "id": node_id,
            "name": "test",
            "hardware_class": node_id,
            "threads": threads,
            "cores": 2,
            "cpu_model": "test cpu",
            "fingerprint": {"threads": threads},
        },
    }
    return record


@pytest.fixture
def records() -> list[dict]:
    return [make_record(i) for i in range(6)] + [
        make_record(99, method="quant.weight_only_int4", status="not-applicable")
    ]


@pytest.fixture
def record_factory():
    return make_record
