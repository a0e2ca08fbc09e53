"""The admin pages under /ui (server-rendered Jinja2) and the partials their scripts re-fetch."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, select

from api.ui import advisor_views, leaderboard, views
from api.ui.routes import render
from api.ui.session import PageSession
from profiles.db import session_scope
from profiles.models import ApiKey, Job, JoinToken, Method, ModelSpec, Node, utcnow

router = APIRouter(prefix="/ui", include_in_schema=False)


def _missing(request: Request, ui: dict, what: str) -> Response:
    response = render(request, "missing", ui, what=what)
    response.status_code = 404
    return response


@router.get("/")
def dashboard_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        return render(request, "dashboard", ui, data=views.dashboard(session))


@router.get("/partials/dashboard")
def dashboard_partial(request: Request, ui: PageSession) -> Response:
    """The dashboard's live part, swapped in by the page every few seconds."""
    with session_scope() as session:
        return render(request, "_dashboard", ui, data=views.dashboard(session))


@router.get("/methods")
def methods_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        rows, extra = views.methods_page(session)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("implemented", "not implemented yet", "not a method")}
    return render(request, "methods", ui, rows=rows, counts=counts, extra=extra)


def _chosen_task(rows: list[dict], model: str, hardware: str, workload: str) -> dict | None:
    """The task the URL names; else the first heatmap row that fits what it does name."""
    wanted = {"model": model, "hardware": hardware, "workload": workload}
    for row in rows:
        if all(not value or row[key] == value for key, value in wanted.items()):
            return row
    if all(wanted.values()):  # a task with no measured speed-up (all not applicable) still has a table
        return {**wanted, "words": workload}
    return None


@router.get("/profiles")
def profiles_page(
    request: Request,
    ui: PageSession,
    model: str = "",
    hardware: str = "",
    workload: str = "",
    kind: str = "",
    task: str = "",
) -> Response:
    if task:  # the task picker's form: answer with the shareable URL that names the task's parts
        model, workload, hardware = (task.split("|") + ["", ""])[:3]
        query = {
            k: v for k, v in (("model", model), ("hardware", hardware), ("workload", workload), ("kind", kind)) if v
        }
        return RedirectResponse(f"/ui/profiles?{urlencode(query)}", status_code=303)
    with session_scope() as session:
        heat = leaderboard.heatmap(session, kind)
        chosen = _chosen_task(heat["rows"], model, hardware, workload)
        rows = (
            leaderboard.leaderboard(session, chosen["model"], chosen["workload"], chosen["hardware"]) if chosen else []
        )
    if chosen:
        chosen = {**chosen, "key": f"{chosen['model']}|{chosen['workload']}|{chosen['hardware']}"}
    export = (
        {"model_id": chosen["model"], "workload_id": chosen["workload"], "hardware_class": chosen["hardware"]}
        if chosen
        else {}
    )
    return render(
        request,
        "profiles",
        ui,
        heat=heat,
        menu=leaderboard.task_menu(heat["rows"]),
        kinds=heat["kinds"],
        kind=kind,
        task=chosen,
        rows=rows,
        columns=leaderboard.COLUMNS,
        throughput_unit=next((r["throughput_unit"] for r in rows if r["throughput_unit"]), ""),
        scatter=leaderboard.pareto(rows),
        export_query=urlencode(export),
    )


@router.get("/advisor")
def advisor_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        return render(request, "advisor", ui, data=advisor_views.advisor_page(session))


@router.get("/advisor/compare")
def compare_page(request: Request, ui: PageSession, a: str = "", b: str = "") -> Response:
    with session_scope() as session:
        versions = advisor_views.numbered_versions(session)
        if not (a and b) and len(versions) >= 2:  # by default: the active version and the one before it
            active = next((i for i, v in enumerate(versions) if v.active), len(versions) - 1)
            other = active - 1 if active > 0 else active + 1
            return RedirectResponse(f"/ui/advisor/compare?a={versions[other].id}&b={versions[active].id}", 303)
        data = advisor_views.compare(session, a, b)
    if data is None:
        return _missing(request, ui, "two advisor versions to compare (train a second one first)")
    return render(request, "compare", ui, data=data)


@router.get("/partials/training")
def training_partial(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        return render(request, "_training", ui, training=advisor_views.training_status(session))


@router.get("/playground")
def playground_page(request: Request, ui: PageSession) -> Response:
    from api.routes.advise import generates_text

    with session_scope() as session:
        models = [m.id for m in session.exec(select(ModelSpec).order_by(ModelSpec.id)) if generates_text(m.family)]
        nodes = [n.model_dump() for n in session.exec(select(Node).where(Node.status == "online").order_by(Node.id))]
        training = advisor_views.training_status(session)  # answers change when it finishes
    return render(request, "playground", ui, models=models, nodes=nodes, training=training)


@router.get("/models")
def models_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        return render(request, "models", ui, models=views.models_page(session))


@router.get("/partials/models")
def models_partial(request: Request, ui: PageSession) -> Response:
    """The list, re-fetched after a registration and every few seconds (a profile count changes)."""
    with session_scope() as session:
        return render(request, "_models", ui, models=views.models_page(session))


@router.get("/jobs")
def jobs_page(request: Request, ui: PageSession) -> Response:
    from executors.zoo import zoo_names

    with session_scope() as session:
        models = sorted({f"zoo:{n}" for n in zoo_names()} | {m.id for m in session.exec(select(ModelSpec))})
        methods = list(session.exec(select(Method.id).order_by(Method.id)))  # the registry's mirror
        jobs = views.recent_jobs(session, 30)
    return render(request, "jobs", ui, models=models, methods=methods, jobs=jobs, cancel=True)


@router.get("/partials/jobs")
def jobs_partial(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        return render(request, "_jobs", ui, jobs=views.recent_jobs(session, 30), cancel=True)


@router.get("/jobs/{job_id}")
def job_page(request: Request, ui: PageSession, job_id: str) -> Response:
    return _job_view(request, ui, job_id, "job")


@router.get("/partials/jobs/{job_id}")
def job_partial(request: Request, ui: PageSession, job_id: str) -> Response:
    return _job_view(request, ui, job_id, "_job")


@router.get("/runs/{job_id}")
def run_page(request: Request, ui: PageSession, job_id: str) -> Response:
    return _job_view(request, ui, job_id, "run")


@router.get("/partials/runs/{job_id}")
def run_partial(request: Request, ui: PageSession, job_id: str) -> Response:
    return _job_view(request, ui, job_id, "_run")


def _job_view(request: Request, ui: dict, job_id: str, template: str) -> Response:
    runs = template.endswith("run")
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or (job.kind == "run") != runs:
            return _missing(request, ui, f"{'run' if runs else 'job'} {job_id}")
        data = views.run_page(session, job) if runs else views.job_page(session, job)
    return render(request, template, ui, data=data)


@router.get("/access")
def access_page(request: Request, ui: PageSession) -> Response:
    return render(request, "access", ui, **_access(ui))


@router.get("/partials/access")
def access_partial(request: Request, ui: PageSession) -> Response:
    return render(request, "_access", ui, **_access(ui))


def _access(ui: dict) -> dict:
    now = utcnow()
    with session_scope() as session:
        keys = [
            {**k.model_dump(mode="json", exclude={"key_hash"}), "mine": k.id == ui["key"].id}
            for k in session.exec(select(ApiKey).order_by(col(ApiKey.created_at).desc()))
        ]
        tokens = [
            {**t.model_dump(mode="json", exclude={"token_hash"}), "state": _token_state(t, now)}
            for t in session.exec(select(JoinToken).order_by(col(JoinToken.created_at).desc()))
        ]
    return {"keys": keys, "tokens": tokens}


def _token_state(token: JoinToken, now) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= now:
        return "expired"
    if token.max_uses is not None and token.uses >= token.max_uses:
        return "used up"
    return "active"
