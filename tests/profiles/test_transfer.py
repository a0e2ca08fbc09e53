"""Profile import/export: round trips, idempotence, all-or-nothing rejection."""

from __future__ import annotations

import gzip
import io
import json

import pytest
from sqlmodel import Session, func, select

from profiles.models import ModelSpec, ProfileRun
from profiles.transfer import ImportRejected, add_records, import_file, iter_records, write_records


def _count(engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(ProfileRun)).one()


def _store(engine, records) -> None:
    with Session(engine) as session:
        add_records(session, enumerate(records, start=1))
        session.commit()


def _export(engine, fmt: str) -> str:
    out = io.StringIO()
    with Session(engine) as session:
        write_records(iter_records(session), out, fmt)
    return out.getvalue()


def _normalised(records):
    drop = {"created_at"}
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in records), key=lambda r: r["run_id"])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_round_trip_through_a_file_into_another_store(engine, records, tmp_path, fmt):
    _store(engine, records)
    path = tmp_path / f"profiles.{fmt}"
    path.write_text(_export(engine, fmt))

    from profiles.db import make_engine
    from profiles.migrate import upgrade

    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    with Session(other) as session:
        result = import_file(session, path)
        session.commit()
    assert (result.added, result.skipped) == (len(records), 0)

    with Session(engine) as a, Session(other) as b:
        assert _normalised(iter_records(a)) == _normalised(iter_records(b))


def test_importing_the_same_file_twice_adds_nothing(engine, records, tmp_path):
    path = tmp_path / "profiles.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    for expected_added in (len(records), 0):
        with Session(engine) as session:
            result = import_file(session, path)
            session.commit()
        assert result.added == expected_added
    assert _count(engine) == len(records)
    with Session(engine) as session:  # shared models were stored once, not per run
        assert len(session.exec(select(ModelSpec)).all()) == 2


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda r: r.update(speedup="fast"), "speedup"),
        (lambda r: r.update(status="great"), "status 'great'"),
        (lambda r: r.update(speedup=None), "positive speedup"),
        (lambda r: r.pop("node"), "missing 'node'"),
        (lambda r: r["model"].pop("id"), "model.id"),
        (lambda r: r.update(model_id="zoo:other"), "does not match"),
    ],
)
def test_a_bad_row_rejects_the_file_with_its_row_number_and_writes_nothing(engine, records, tmp_path, corrupt, reason):
    _store(engine, records[:2])
    new = [dict(r, model=dict(r["model"])) for r in records[2:]]
    corrupt(new[2])
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in new))
    with Session(engine) as session:
        with pytest.raises(ImportRejected) as excinfo:
            import_file(session, path)
        session.rollback()
    assert excinfo.value.row == 3 and reason in str(excinfo.value)
    assert _count(engine) == 2  # the two good rows before it were not written either


def test_malformed_json_and_csv_cells_are_rejected(engine, records, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(records[0]) + "\n{not json\n")
    with Session(engine) as session, pytest.raises(ImportRejected, match="row 2: not valid JSON"):
        import_file(session, path)
    csv_path = tmp_path / "broken.csv"
    csv_path.write_text("run_id,model\nabc,{oops\n")
    with Session(engine) as session, pytest.raises(ImportRejected, match="row 2: column 'model'"):
        import_file(session, csv_path)
    with Session(engine) as session, pytest.raises(ImportRejected, match="unknown file type"):
        import_file(session, tmp_path / "profiles.xml")
    assert _count(engine) == 0


def test_imported_nodes_are_history_not_live_pool_members(engine, records):
    from profiles.models import Node, utcnow

    for record in records:  # the file claims its hosts are online, as an export of a live store does
        record["node"].update(status="online", last_heartbeat=utcnow().isoformat())
    _store(engine, records)
    with Session(engine) as session:
        nodes = session.exec(select(Node)).all()
        assert nodes and {(n.status, n.last_heartbeat) for n in nodes} == {("imported", None)}
        live = nodes[0]
        live.status = "online"
        session.add(live)
        session.commit()
        live_id = live.id
    for record in records:
        record["run_id"] += "-again"
    _store(engine, records)  # a later file never rewrites a node this store already knows
    with Session(engine) as session:
        assert session.get(Node, live_id).status == "online"


def test_a_training_run_that_missed_its_target_imports_without_a_speedup(engine, records, tmp_path):
    missed = dict(records[0], speedup=None, metrics={**(records[0].get("metrics") or {}), "reached_target": False})
    path = tmp_path / "missed.jsonl"
    path.write_text(json.dumps(missed) + "\n")
    with Session(engine) as session:
        assert import_file(session, path).added == 1
        session.commit()
    with Session(engine) as session:
        assert session.exec(select(ProfileRun)).one().speedup is None
