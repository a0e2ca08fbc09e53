"""Profile import/export: self-contained records (a run plus its model, workload and node).

A record is everything the advisor needs to learn from one measurement, so a file exported
on one installation imports into another. Import is one transaction: the first bad row
rejects the whole file (with its row number and reason) and nothing is written; a run id
that is already stored is skipped, so importing a file twice adds nothing.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pydantic import ValidationError
from sqlmodel import Session, SQLModel, col, select

from profiles.models import RUN_STATUSES, ModelSpec, Node, ProfileRun, Workload

NestedRow = ModelSpec | Workload | Node
NESTED: dict[str, type[NestedRow]] = {"model": ModelSpec, "workload": Workload, "node": Node}
RUN_JSON_FIELDS = ("config", "metrics", "environment")
FORMATS = ("jsonl", "csv")
Row = TypeVar("Row", bound=SQLModel)


class ImportRejected(ValueError):
    def __init__(self, row: int, reason: str):
        super().__init__(f"row {row}: {reason}")
        self.row = row
        self.reason = reason


@dataclass(frozen=True)
class ImportResult:
    added: int
    skipped: int


def _plain(obj: SQLModel) -> dict[str, Any]:
    return obj.model_dump(mode="json")


def record_of(run: ProfileRun, model: ModelSpec, workload: Workload, node: Node) -> dict:
    record = _plain(run)
    record.update(model=_plain(model), workload=_plain(workload), node=_plain(node))
    return record


def iter_records(session: Session, statement=None) -> Iterator[dict]:
    if statement is None:
        statement = select(ProfileRun).order_by(col(ProfileRun.created_at), col(ProfileRun.run_id))
    models: dict[str, ModelSpec] = {}
    workloads: dict[str, Workload] = {}
    nodes: dict[str, Node] = {}
    for run in session.exec(statement):
        model = _cached(session, models, ModelSpec, run.model_id)
        workload = _cached(session, workloads, Workload, run.workload_id)
        node = _cached(session, nodes, Node, run.node_id)
        yield record_of(run, model, workload, node)


def _cached(session: Session, cache: dict[str, Row], table: type[Row], key: str) -> Row:
    """A run's model, workload or node, read once per export (a foreign key: it exists)."""
    if key not in cache:
        cache[key] = session.get_one(table, key)
    return cache[key]


def write_records(records: Iterable[dict], out: TextIO, fmt: str) -> int:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    count = 0
    if fmt == "jsonl":
        for record in records:
            out.write(json.dumps(record, sort_keys=True) + "\n")
            count += 1
        return count
    writer = None
    for record in records:
        flat = {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in record.items()}
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=sorted(flat), lineterminator="\n")
            writer.writeheader()
        writer.writerow({k: "" if v is None else v for k, v in flat.items()})
        count += 1
    return count


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def read_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Yields (row number, raw record); the format follows the suffix (.jsonl/.csv, optionally .gz)."""
    name = path.name.removesuffix(".gz")
    if not name.endswith((".jsonl", ".csv")):
        raise ImportRejected(0, f"{path.name}: unknown file type, expected .jsonl or .csv (optionally .gz)")
    with _open_text(path) as handle:
        if name.endswith(".jsonl"):
            for row, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ImportRejected(row, f"not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise ImportRejected(row, "a record must be a JSON object")
                yield row, record
            return
        for row, flat in enumerate(csv.DictReader(handle), start=2):  # row 1 is the header
            yield row, _unflatten_csv(row, flat)


def _unflatten_csv(row: int, flat: dict[str, str]) -> dict:
    record: dict[str, Any] = {}
    for key, value in flat.items():
        if key is None:
            raise ImportRejected(row, "more cells than header columns")
        if value == "" or value is None:
            record[key] = None
        elif key in NESTED or key in RUN_JSON_FIELDS:
            try:
                record[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ImportRejected(row, f"column {key!r} is not valid JSON ({exc.msg})") from None
        else:
            record[key] = value
    return record


def _validate(row: int, raw: dict) -> tuple[ProfileRun, dict[str, NestedRow]]:
    parts: dict[str, NestedRow] = {}
    for key, table in NESTED.items():
        value = raw.get(key)
        if not isinstance(value, dict):
            raise ImportRejected(row, f"missing {key!r} object")
        parts[key] = _build(row, table, value, key)
    fields = {k: v for k, v in raw.items() if k not in NESTED and v is not None}
    fields.update(model_id=parts["model"].id, workload_id=parts["workload"].id, node_id=parts["node"].id)
    run = _build(row, ProfileRun, fields, "run")
    if run.status not in RUN_STATUSES:
        raise ImportRejected(row, f"status {run.status!r} is not one of {', '.join(RUN_STATUSES)}")
    # A training run where the method or the reference missed the target has no speed-up: a miss, not a number.
    missed = run.speedup is None and "reached_target" in (raw.get("metrics") or {})
    if run.status == "ok" and not missed and (run.speedup is None or not run.speedup > 0):
        raise ImportRejected(row, "an 'ok' run needs a positive speedup (or, for a training run, a missed target)")
    if run.status != "ok" and not run.reason:
        raise ImportRejected(row, f"a {run.status!r} run needs a reason")
    for key in ("model_id", "workload_id", "node_id"):
        if key in raw and raw[key] not in (None, getattr(run, key)):
            raise ImportRejected(row, f"{key} {raw[key]!r} does not match the nested object's id")
    return run, parts


def _build(row: int, table: type[Row], value: dict, label: str) -> Row:
    try:
        return table.model_validate({k: v for k, v in value.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ImportRejected(row, f"{label}.{where}: {first['msg']}") from None


def add_records(session: Session, rows: Iterable[tuple[int, dict]]) -> ImportResult:
    """Validates and stages every record in ``session``; raises ImportRejected on the first bad one.

    The caller owns the transaction, so a rejection leaves nothing behind once it rolls back.
    """
    added = skipped = 0
    seen: set[str] = set()
    for row, raw in rows:
        run, parts = _validate(row, raw)
        if run.run_id in seen or session.get(ProfileRun, run.run_id) is not None:
            skipped += 1
            continue
        for part in parts.values():
            if session.get(type(part), part.id) is None:
                if isinstance(part, Node):
                    # A node from a file ran elsewhere: it is history, never a live member of this pool,
                    # and the same host may join under that id later.
                    part.status, part.last_heartbeat = "imported", None
                session.add(part)
        session.flush()  # without ORM relationships the unit of work does not order by foreign key
        session.add(run)
        session.flush()
        seen.add(run.run_id)
        added += 1
    return ImportResult(added=added, skipped=skipped)


def import_file(session: Session, path: Path) -> ImportResult:
    return add_records(session, read_records(path))
