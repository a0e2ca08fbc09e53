"""What a worker's report may store: records of the claimed item only, with the server's own rows.

A worker measures; it does not decide what the measurement is about. Every record must be for
the item's model and workload, one of the item's methods (or the task's reference) with the
item's config, on the reporting node and its hardware class, under the run id those imply. The
nested model, workload and node objects that travel in a record are replaced by the store's own
rows, so a report can never register a model, re-describe a workload or rewrite a node. The one
thing a report may add is the architecture of a zoo model measured for the first time: its id
and source are the zoo's (the zoo is the registry of built-in models), the numbers the worker's.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlmodel import Session

from api.errors import Forbidden, Unprocessable
from api.limits import BoundedJson
from profiles.models import Job, ModelSpec, Node, canonical_json, run_id_for

Size = Annotated[int, Field(ge=0, le=10**13)]
Dim = Annotated[int, Field(ge=0, le=10**7)]


class ReportedArchitecture(BaseModel):
    """The architecture numbers a worker reports for a zoo model it loaded."""

    model_config = ConfigDict(extra="ignore", strict=True)

    family: str = Field(default="decoder-lm", max_length=64)  # an architecture some executor family loads
    params: Size = 0
    layers: Dim | None = None
    width: Dim | None = None
    heads: Dim | None = None
    kv_heads: Dim | None = None
    vocab: Dim | None = None
    context: Dim | None = None
    descriptors: BoundedJson = Field(default_factory=dict)

    @field_validator("family")
    @classmethod
    def _loaded_architecture(cls, architecture: str) -> str:
        from executors.families import family_of_architecture

        try:
            family_of_architecture(architecture)
        except KeyError as exc:  # pydantic turns only ValueErrors into validation errors (a 422 below)
            raise ValueError(exc.args[0]) from None
        return architecture


def _model_row(session: Session, model_id: str, reported: object) -> dict:
    stored = session.get(ModelSpec, model_id)
    if stored is not None:
        return stored.model_dump(mode="json")
    if not model_id.startswith("zoo:"):
        raise Forbidden(f"model {model_id!r} is not registered; an admin registers models (POST /v1/models)")
    try:
        facts = ReportedArchitecture.model_validate(reported if isinstance(reported, dict) else {})
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise Unprocessable(f"the reported architecture of {model_id} is invalid at {where}") from None
    return {**facts.model_dump(), "descriptors": {**facts.descriptors, "source": model_id}} | {
        "id": model_id,
        "source": model_id,
    }


def _expected_configs(job: Job, item: dict, workload) -> tuple[dict[str, dict], set[str]]:
    """(method id → config the item asked for, method ids that must be reported)."""
    import executors.methods  # noqa: F401  (registers every method, the references included)
    from executors.families import reference_of
    from executors.registry import config_to_json, default_config

    if job.kind == "run":
        planned = {item["method"]["method"]: item["method"]}
        reference = reference_of(workload) if item.get("measure") else None
    else:
        planned = {config["method"]: config for config in item["methods"]}
        reference = reference_of(workload)
    allowed = dict(planned)
    if reference is not None:
        allowed.setdefault(reference, config_to_json(default_config(reference)))
    return allowed, set(planned) if job.kind != "run" or item.get("measure") else set()


def checked_records(
    session: Session, job: Job, item: dict, node: Node, records: list[dict], outputs: dict | None
) -> list[dict]:
    from executors.families import workload_from_json

    if outputs is not None and job.kind != "run":
        raise Unprocessable("only a run reports outputs")
    workload = workload_from_json(item["workload"])
    allowed, required = _expected_configs(job, item, workload)
    if len(records) > len(allowed):
        raise Unprocessable(f"this item has {len(allowed)} methods to record, not {len(records)}")
    model = _model_row(session, item["model"], records[0].get("model") if records else None)
    node_row = node.model_dump(mode="json")
    rows, seen = [], set()
    for number, record in enumerate(records, start=1):
        method_id = record.get("method_id")
        method_id = method_id if isinstance(method_id, str) else ""  # names none of the item's methods
        config = allowed.get(method_id)
        mismatch = (
            "its method is not one of this item's"
            if config is None
            else "its config is not the item's"
            if canonical_json(record.get("config")) != canonical_json(config)
            else "it is for another model"
            if record.get("model_id") != item["model"]
            else "it is for another workload"
            if record.get("workload_id") != workload.id
            else f"it claims another node than {node.id}"
            if record.get("node_id") != node.id or (record.get("node") or {}).get("id") != node.id
            else f"it claims another hardware class than {node.hardware_class}"
            if record.get("hardware_class") != node.hardware_class
            else "its run id does not follow from its task, method and node"
            if record.get("run_id") != run_id_for(item["model"], workload.id, method_id, config, node.id)
            else None
        )
        if mismatch:
            raise Forbidden(f"record {number}: {mismatch}")
        seen.add(method_id)
        rows.append({**record, "job_id": job.id, "model": model, "workload": workload.row(), "node": node_row})
    missing = required - seen
    if missing:
        raise Unprocessable(f"no record for {', '.join(sorted(missing))}; report every planned method or an error")
    return rows
