"""What a caller may name: registered methods, known models, valid workloads. Nothing else runs."""

from __future__ import annotations

from sqlmodel import Session, col, select

from api.errors import Unprocessable
from profiles.models import Method, ModelSpec, utcnow


def resolve_methods(entries: list) -> list[dict]:
    """Method ids, config objects or composites → [{"id", "config"}], only through the registry."""
    import executors.methods  # noqa: F401  (importing it registers every method)
    from executors.registry import UnknownMethod, composite_from_json, composite_id, config_to_json

    resolved = []

    def as_config(entry):
        return {"method": entry} if isinstance(entry, str) else entry

    for position, entry in enumerate(entries, start=1):
        data = [as_config(e) for e in entry] if isinstance(entry, list) else as_config(entry)
        try:
            configs = composite_from_json(data)
        except (ValueError, UnknownMethod) as exc:
            raise Unprocessable(f"methods[{position}]: {exc}") from None
        if len(configs) == 1:
            config = config_to_json(configs[0])
        else:
            config = {"method": composite_id(configs), "steps": [config_to_json(c) for c in configs]}
        resolved.append({"id": composite_id(configs), "config": config})
    return resolved


def config_steps(config: dict) -> list[dict]:
    """The list of single-method configs inside a stored (possibly composite) config."""
    return config.get("steps", [config])


def resolve_models(session: Session, names: list[str]) -> list[str]:
    from executors.zoo import zoo_names

    zoo = {f"zoo:{n}" for n in zoo_names()}
    registered = {m.id for m in session.exec(select(ModelSpec).where(col(ModelSpec.id).in_(names)))}
    allowed = zoo | registered
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise Unprocessable(f"unknown models: {', '.join(unknown)}; known: {', '.join(sorted(allowed | zoo))}")
    described = [n for n in names if n.startswith("config:")]  # registered from a config.json alone
    if described:
        raise Unprocessable(
            f"{', '.join(described)}: described by a config.json alone, with no weights to run or measure; "
            "register its folder (POST /v1/models with a path) or upload it (POST /v1/models/upload)"
        )
    return list(dict.fromkeys(names))


def resolve_workloads(shapes: list[dict]) -> list[dict]:
    from executors.families import workload_from_json

    resolved = []
    for position, shape in enumerate(shapes, start=1):
        try:
            workload = workload_from_json(shape)
        except (TypeError, ValueError) as exc:
            raise Unprocessable(f"workloads[{position}]: {exc}") from None
        resolved.append({"id": workload.id, "shape": workload.shape()})
    return resolved


def sync_methods(session: Session) -> int:
    """Mirrors the registry into the Method table (the registry stays the source of truth)."""
    import executors.methods  # noqa: F401
    from executors.registry import method_catalogue

    rows = method_catalogue()
    for row in rows:
        method = session.get(Method, row["id"]) or Method(id=row["id"], family=row["category"])
        method.family, method.phase, method.paper_title = row["category"], row["phase"], row["paper"]
        method.arxiv_id, method.catalogue_row, method.lossless = row["arxiv"], row["catalogue_row"], row["lossless"]
        method.config_schema = row["config_schema"]
        method.requirements = {
            **row["requirements"],
            "composes_with": row["composes_with"],
            "families": row["families"],
            "changes": row["changes"],
        }
        method.updated_at = utcnow()
        session.add(method)
    return len(rows)
