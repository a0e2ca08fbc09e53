"""Recommendations from the active advisor, runs of the chosen configuration, advisor versions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from fastapi import APIRouter
from sqlmodel import Session, col, select
from starlette.responses import Response

from api import model_profiling
from api.answers import ANSWERS
from api.auth import AdminKey, ClientKey
from api.catalog import resolve_methods, resolve_models, resolve_workloads
from api.dispatch import dispatch
from api.errors import Conflict, NotFound, Unprocessable
from api.jobs import job_public, new_job, sends_of
from api.run_predictions import run_prediction
from api.schemas import JobPublic, RecommendationRequest, RunCreate
from api.training import start_training
from profiles.db import read_scope, session_scope
from profiles.models import AdvisorVersion, Job, ModelSpec, Node, ProfileRun

if TYPE_CHECKING:
    from advisor.api import Candidate

router = APIRouter(tags=["advisor"])


def _active(session: Session):
    from advisor.api import active_advisor

    found = active_advisor(session)
    if found is None:
        raise Conflict("no advisor is trained yet: import profiles and POST /v1/advisor/train")
    return found


def _nodes(session: Session, node_id: str | None, hardware_class: str | None) -> list[dict]:
    if node_id:
        node = session.get(Node, node_id)
        if node is None:
            raise Unprocessable(f"unknown node {node_id!r}")
        nodes = [node]
    elif hardware_class:
        nodes = list(session.exec(select(Node).where(Node.hardware_class == hardware_class)))
        if not nodes:
            raise Unprocessable(f"no node of hardware class {hardware_class!r} is known")
    else:  # the whole pool: online nodes, else every node we have measured on
        nodes = list(session.exec(select(Node).where(Node.status == "online"))) or list(session.exec(select(Node)))
        if not nodes:
            raise Unprocessable("the pool has no nodes yet")
    return [n.model_dump(mode="json") for n in nodes]


@lru_cache(maxsize=64)
def _supported(kind: str):
    """The registry's allow-list, and the catalogue's families: a method is ranked only for a workload
    kind of a family it applies to ("*": every family).

    The registry is fixed for the life of the process, so each answer is computed once per kind and method.
    """
    import executors.methods  # noqa: F401  (importing it registers every method)
    from executors.families import get_kind
    from executors.registry import UnknownMethod, get_method, method_catalogue

    families = {row["id"]: row.get("families") or ["*"] for row in method_catalogue()}
    try:
        family = get_kind(kind).family
    except ValueError:
        family = None  # a kind no family registers: the stored records decide (advisor.recommend)

    @lru_cache(maxsize=1024)
    def check(method_id: str) -> str | None:
        try:
            for part in method_id.split("+"):
                get_method(part)
        except UnknownMethod as exc:
            return str(exc)
        for part in method_id.split("+"):
            applies_to = families.get(part, ["*"])
            if family is not None and "*" not in applies_to and family not in applies_to:
                return f"{part} applies to family {' / '.join(applies_to)}, not to {kind} workloads"
        return None

    return check


def _plain(answer) -> dict:
    """A flat dataclass as a dict without dataclasses.asdict's deep copies (a third of the route's time)."""
    return {f.name: getattr(answer, f.name) for f in dataclasses.fields(answer)}


def recommend_for(
    session: Session,
    model_id: str,
    shape: dict,
    node_id: str | None,
    hardware_class: str | None,
    objective: str,
    quality_floor: float | None,
    budget: float | None,
    top_k: int | None,
    candidates: Sequence[Candidate] | None = None,
) -> dict:
    """The active advisor's answer: ``candidates`` narrows it to those (a run's own method), all when None."""
    from advisor.api import DEFAULT_QUALITY_FLOOR, recommend
    from executors.families import workload_from_json

    resolved = resolve_workloads([shape])[0]["shape"]
    workload = workload_from_json(resolved).row()  # bad input first: a 422 either way
    version, advisor = _active(session)
    model = session.get(ModelSpec, model_id)
    if model is None:
        raise Unprocessable(
            f"no descriptors for model {model_id!r}: register it (POST /v1/models), profile it, "
            "or import profiles that include it"
        )
    nodes = _nodes(session, node_id, hardware_class)
    by_id = {n["id"]: n for n in nodes}
    try:
        result = recommend(
            advisor,
            model.model_dump(mode="json"),
            workload,
            nodes,
            candidates=candidates,
            supports=_supported(workload.get("kind") or "lm-generate"),
            quality_floor=DEFAULT_QUALITY_FLOOR if quality_floor is None else quality_floor,
            budget=budget,
            objective=objective,
            top_k=top_k,
        )
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    ranked = [
        {
            **_plain(r),
            "hardware_class": by_id[r.node_id]["hardware_class"],
            "node_status": by_id[r.node_id]["status"],
        }
        for r in result.recommendations
    ]
    answer = {
        "advisor_version": version.id,
        "model": model_id,
        "workload": workload,
        "candidates": ranked,
        "excluded": [_plain(e) for e in result.excluded],
    }
    return {**answer, **model_profiling.what_is_known(model, advisor, answer, resolved)}


def recommendation(session: Session, body: RecommendationRequest) -> dict:
    """The active advisor's answer to one question (the route serves repeats from api.answers)."""
    return recommend_for(
        session,
        body.model,
        body.workload,
        body.node,
        body.hardware_class,
        body.objective,
        body.quality_floor,
        body.budget,
        body.top_k,
    )


@router.post("/recommendations", response_model=dict)
async def recommendations(body: RecommendationRequest, _key: ClientKey) -> Response:
    return await ANSWERS.respond(body.model_dump_json(), body.model, lambda session: recommendation(session, body))


def _estimated_shape(session: Session, body: RunCreate) -> dict:
    """The workload shape of a run, for the advisor and the measurement (batch 1 per prompt)."""
    model = session.get(ModelSpec, body.model)
    byte_level = model is None or (model.vocab or 0) <= 512
    prompts = body.prompts or []  # a run without prompts trains a recipe and never gets here
    longest = max(len(p.encode()) for p in prompts)
    prompt_len = longest if byte_level else max(1, longest // 4)  # ~4 bytes per BPE token
    context = (model.context if model and model.context else 2048) - body.max_new_tokens
    return {
        "batch_size": 1,
        "prompt_len": max(8, min(prompt_len, context)),
        "gen_len": body.max_new_tokens,
        "sampling": body.sampling,
    }


def generates_text(architecture: str) -> bool:
    from executors.families import family_of_architecture

    try:
        return family_of_architecture(architecture).runner_protocol == "generate"
    except KeyError:
        return False


def trains(session: Session, model_id: str) -> bool:
    """Whether a model's family runs it by training it (a family with a `run` hook: a recipe trained to a
    target), known from its stored descriptors or, for a zoo recipe never profiled, from the zoo."""
    from executors.families import family_of_architecture, get_family, zoo_entry

    spec = session.get(ModelSpec, model_id)
    try:
        family = family_of_architecture(spec.family) if spec else get_family(zoo_entry(model_id[4:]).family)
    except KeyError:
        return False
    return "run" in family.hooks


def _training_shape(model_id: str, body: RunCreate) -> dict:
    """A training run's workload, checked against the recipe's family (a 422 names what is wrong)."""
    from executors.families import kind_of, workload_from_json, zoo_entry

    if body.workload is None:
        raise Unprocessable(f"a run of {model_id} trains it: give a workload (kind train-to-target), not prompts")
    shape = resolve_workloads([body.workload])[0]["shape"]
    kind = kind_of(workload_from_json(shape))
    if model_id.startswith("zoo:") and zoo_entry(model_id[4:]).family not in kind.model_families:
        raise Unprocessable(f"a {kind.name} workload does not run on {model_id}")
    return shape


def _run_target(session: Session, body: RunCreate, chosen_node: str | None) -> dict:
    node_id = body.node or chosen_node
    if node_id:
        node = session.get(Node, node_id)
        if node is None or node.status != "online":
            raise Unprocessable(f"node {node_id!r} is not online")
        return {"kind": "node", "name": node_id}
    if body.hardware_class:
        if session.exec(select(Node).where(Node.hardware_class == body.hardware_class)).first() is None:
            raise Unprocessable(f"no worker of hardware class {body.hardware_class!r} has joined")
        return {"kind": "class", "name": body.hardware_class}
    return {"kind": "pool", "name": "pool"}


@router.post("/runs", status_code=202)
def create_run(body: RunCreate, _key: ClientKey) -> dict:
    with session_scope() as session:
        model = resolve_models(session, [body.model])[0]
        spec = session.get(ModelSpec, model)
        training = trains(session, model)
        if training:
            shape = _training_shape(model, body)
        elif body.prompts is None:
            raise Unprocessable(f"a run of {model} generates text: give prompts, not a workload")
        elif spec is not None and not generates_text(spec.family):
            raise Unprocessable(f"a run generates text from prompts; {model} is a {spec.family} model")
        else:
            shape = _estimated_shape(session, body)
        chosen = None
        if body.method == "auto":
            found = recommend_for(
                session,
                model,
                shape,
                body.node,
                body.hardware_class,
                body.objective,
                body.quality_floor,
                body.budget,
                top_k=50,
            )
            online = [c for c in found["candidates"] if c["node_status"] == "online"]
            if not online:
                raise Conflict("no candidate passes the constraints on an online node")
            chosen = online[0]
            config = chosen["config"]
            method = resolve_methods([config.get("steps", config) if config else chosen["method_id"]])[0]
        else:
            method = resolve_methods([body.method])[0]
        target = _run_target(session, body, chosen["node_id"] if chosen else None)
        item = {
            "kind": "run",
            "model": model,
            "prompts": body.prompts or [],
            "method": method["config"],
            "max_new_tokens": body.max_new_tokens,
            "sampling": body.sampling,
            "seed": body.seed,
            "measure": body.measure,
            "workload": shape if training else resolve_workloads([shape])[0]["shape"],
            "target": target,
        }
        job_spec = {"recommendation": chosen, "method_id": method["id"]}
        if chosen is None:  # a named method: the advisor's prediction for it (or why none), for its page
            job_spec |= run_prediction(session, item, body.hardware_class, body.objective)
        job = new_job(session, "run", [item], job_spec)
        public, sends = run_public(session, job), sends_of(job)
    dispatch(sends)  # after commit: the worker must find the item
    return public


def run_public(session: Session, job: Job) -> dict:
    figures = [
        {
            k: getattr(r, k)
            for k in (
                "run_id",
                "method_id",
                "hardware_class",
                "node_id",
                "speedup",
                "latency_p50_s",
                "baseline_latency_p50_s",
                "throughput",
                "peak_mem_mb",
                "quality_metric",
                "quality_delta",
                "metrics",
            )
        }
        for r in session.exec(select(ProfileRun).where(ProfileRun.job_id == job.id))
    ]
    return {
        **job_public(job, session),
        "method": job.spec.get("method_id"),
        "recommendation": job.spec.get("recommendation"),
        "prediction": job.spec.get("prediction"),
        "no_prediction": job.spec.get("no_prediction"),
        "node": job.result.get("node"),
        "outputs": job.result.get("outputs"),
        "figures": figures,
    }


@router.get("/runs/{run_id}")
def get_run(run_id: str, _key: ClientKey) -> dict:
    with session_scope() as session:
        job = session.get(Job, run_id)
        if job is None or job.kind != "run":
            raise NotFound(f"no run {run_id!r}")
        return run_public(session, job)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: str, _key: ClientKey) -> dict:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job_public(job, session)


@router.get("/advisor/versions")
def advisor_versions(_key: ClientKey) -> list[dict]:
    """Every trained version (newest first) with its scores and its gate verdict against the version it followed."""
    from advisor.api import version_scores

    with session_scope() as session:
        versions = session.exec(select(AdvisorVersion).order_by(col(AdvisorVersion.created_at).desc()))
        return [
            {**v.model_dump(mode="json", exclude={"evaluation", "artefact_path"}), "scores": version_scores(v)}
            for v in versions
        ]


@router.post("/advisor/versions/{version_id}/activate")
def activate_advisor_version(version_id: str, _admin: AdminKey) -> dict:
    """Makes a stored version the one every recommendation uses (an admin's override of the gate)."""
    from advisor.api import activate_version

    with session_scope() as session:
        try:
            version = activate_version(session, version_id)
        except KeyError:
            raise NotFound(f"no advisor version {version_id!r}") from None
        return {"id": version.id, "active": version.active}


@router.post("/advisor/rollback")
def rollback_advisor(_admin: AdminKey) -> dict:
    """Re-activates the version that was active before the current one."""
    from advisor.api import rollback

    with session_scope() as session:
        try:
            version = rollback(session)
        except KeyError as exc:
            raise Conflict(str(exc.args[0])) from None
        return {"id": version.id, "active": version.active}


@router.post("/advisor/versions/{version_id}/compare/{other_id}")
def compare_advisor_versions(version_id: str, other_id: str, _admin: AdminKey) -> dict:
    """Scores two stored versions on the same folds of the profiles stored now, newer against older.

    Admin only: it cross-validates both (seconds of CPU on the shipped grid). The result is kept in
    the newer version's evaluation (``same_folds``), where the admin UI's comparison reads it.
    """
    from advisor.api import compare_versions, keep_comparison
    from profiles.transfer import iter_records

    with read_scope() as session:
        first, second = session.get(AdvisorVersion, version_id), session.get(AdvisorVersion, other_id)
        if first is None or second is None:
            raise NotFound(f"no advisor version {version_id if first is None else other_id!r}")
        records = list(iter_records(session))
        session.expunge_all()  # the versions kept as read: the cross-validation below runs outside any transaction
    try:
        comparison = compare_versions(records, first, second)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    with session_scope() as session:
        keep_comparison(session, comparison)
    return comparison


@router.get("/advisor/evaluation")
def advisor_evaluation(_key: ClientKey) -> dict:
    with session_scope() as session:
        version = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).first()
        if version is None:
            raise NotFound("no active advisor")
        return {"advisor_version": version.id, "n_profiles": version.n_profiles, "evaluation": version.evaluation}


@router.post("/advisor/train", status_code=202, response_model=JobPublic)
def advisor_train(_admin: AdminKey, force: bool = False) -> dict:
    """Retrains in the background; the new version is activated only if it is not worse (or ``force``)."""
    return start_training(force=force)
