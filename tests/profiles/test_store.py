"""The store on SQLite and PostgreSQL: migrations, CRUD of every table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import Session, SQLModel, select

from profiles.migrate import current_revision, head_revision
from profiles.models import (
    AdvisorVersion,
    Job,
    Method,
    ModelSpec,
    Node,
    ProfileRun,
    Workload,
    run_id_for,
    utcnow,
    workload_id_for,
)

TABLES = {"method", "modelspec", "workload", "node", "profilerun", "job", "advisorversion", "apikey", "jointoken"}


def test_migration_from_empty_creates_every_table_at_head(engine):
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert current_revision(engine) == head_revision()


def test_migrations_match_the_models(engine):
    """A model change without a migration shows up here as a schema diff."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def _graph(session: Session) -> ProfileRun:
    method = Method(
        id="quant.int8_dynamic", family="quant", paper_title="EdgeQAT", lossless=False, config_schema={"bits": 8}
    )
    model = ModelSpec(id="zoo:lm-8m", family="decoder-lm", params=8_000_000, layers=6, width=384)
    shape: dict[str, Any] = {"kind": "lm-generate", "batch_size": 4, "prompt_len": 256, "gen_len": 32}
    workload = Workload(id=workload_id_for(shape), **shape)
    node = Node(id="cpu-x-t1", hardware_class="cpu-x-t1", threads=1, fingerprint={"cpu": "x"}, last_heartbeat=utcnow())
    config = {"method": method.id, "version": 1, "params": {}}
    run = ProfileRun(
        run_id=run_id_for(model.id, workload.id, method.id, config, node.id),
        model_id=model.id,
        workload_id=workload.id,
        node_id=node.id,
        hardware_class=node.hardware_class,
        method_id=method.id,
        config=config,
        status="ok",
        speedup=1.8,
        metrics={"acceptance_rate": 0.5},
    )
    session.add_all([method, model, workload, node])
    session.flush()  # parents first: the tables have foreign keys but no ORM relationships
    session.add(run)
    session.commit()
    return run


def test_create_read_update_every_table(engine):
    with Session(engine) as session:
        run = _graph(session)
        session.add(Job(id="job-1", kind="profiling", total=10, spec={"grid": [1, 2]}))
        session.add(AdvisorVersion(id="adv-1", n_profiles=7, evaluation={"top1": 0.9}, active=True))
        session.commit()
        run_id = run.run_id

    with Session(engine) as session:
        run = session.get_one(ProfileRun, run_id)
        assert run.speedup == 1.8 and run.metrics == {"acceptance_rate": 0.5}
        assert session.get(Method, "quant.int8_dynamic").config_schema == {"bits": 8}
        assert session.get(ModelSpec, "zoo:lm-8m").width == 384
        assert session.exec(select(Workload)).one().batch_size == 4
        node = session.get(Node, "cpu-x-t1")
        assert node.last_heartbeat is not None and node.last_heartbeat.tzinfo is not None  # stored as UTC
        assert session.get(Job, "job-1").spec == {"grid": [1, 2]}
        assert session.get(AdvisorVersion, "adv-1").evaluation["top1"] == 0.9

        run.status, run.reason = "failed", "worker lost"
        node.status, node.last_heartbeat = "lost", node.last_heartbeat - timedelta(minutes=5)
        job = session.get(Job, "job-1")
        job.state, job.done = "running", 3
        session.commit()

    with Session(engine) as session:
        assert session.get(ProfileRun, run_id).reason == "worker lost"
        assert session.get(Node, "cpu-x-t1").status == "lost"
        assert session.get(Job, "job-1").done == 3


def test_run_id_is_deterministic_and_config_sensitive():
    a = run_id_for("m", "w", "quant.int8_dynamic", {"params": {"x": 1, "y": 2}}, "n")
    b = run_id_for("m", "w", "quant.int8_dynamic", {"params": {"y": 2, "x": 1}}, "n")
    c = run_id_for("m", "w", "quant.int8_dynamic", {"params": {"x": 2, "y": 2}}, "n")
    d = run_id_for("m", "w", "quant.int8_dynamic", {"params": {"x": 1, "y": 2}}, "other-node")
    assert a == b and len({a, c, d}) == 3
