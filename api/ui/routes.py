"""The admin pages under /ui (server-rendered Jinja2), login/logout, and the UI's own static files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import select

from api.auth import verify_api_key
from api.errors import NotFound
from api.ui import actions, views
from api.ui.session import (
    COOKIE,
    LoginRequired,
    PageSession,
    close_session,
    csrf_matches,
    open_session,
    read_session,
)
from profiles.db import session_scope
from profiles.models import ApiKey, JoinToken, Method, ModelSpec, Node

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["colour"] = views.cell_colour
router = APIRouter(prefix="/ui", include_in_schema=False)
PAGES = (
    ("dashboard", "/ui/", "Dashboard"),
    ("methods", "/ui/methods", "Methods"),
    ("profiles", "/ui/profiles", "Profiles"),
    ("advisor", "/ui/advisor", "Advisor"),
    ("playground", "/ui/playground", "Playground"),
    ("jobs", "/ui/jobs", "Jobs"),
    ("access", "/ui/access", "Access"),
)


def _plotly_bundle() -> Path:
    """The minified Plotly.js inside the plotly pip package (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    return Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js"


def _render(request: Request, page: str, ui: dict | None, **context) -> Response:
    return templates.TemplateResponse(
        request,
        f"{page}.html",
        {"page": page, "pages": PAGES, "csrf": ui["csrf"] if ui else "", "admin": ui["key"] if ui else None, **context},
    )


@router.get("/login")
def login_form(request: Request, error: str = "") -> Response:
    return _render(request, "login", None, error=error)


@router.post("/login")
def login(request: Request, key: Annotated[str, Form(max_length=300)]) -> Response:
    with session_scope() as session:
        found = verify_api_key(session, key)
        key_id = found.id if found is not None and found.scope == "admin" else None
    if key_id is None:
        return _render(request, "login", None, error="That is not a valid admin key.")
    response = RedirectResponse("/ui/", status_code=303)
    open_session(response, request, key_id)
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    found = read_session(request)
    response = RedirectResponse("/ui/login", status_code=303)
    if found is None or csrf_matches(found, csrf):  # a forged logout form cannot end a session
        close_session(response)
    return response


@router.get("/")
def dashboard_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        return _render(request, "dashboard", ui, data=views.dashboard(session))


@router.get("/partials/dashboard")
def dashboard_partial(request: Request, ui: PageSession) -> Response:
    """The dashboard's live part, swapped in by the page every few seconds."""
    with session_scope() as session:
        return _render(request, "_dashboard", ui, data=views.dashboard(session))


@router.get("/partials/jobs")
def jobs_partial(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        return _render(request, "_jobs", ui, jobs=views.recent_jobs(session, 30), cancel=True)


@router.get("/methods")
def methods_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        rows, extra = views.methods_page(session)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("implemented", "not implemented yet", "not a method")}
    return _render(request, "methods", ui, rows=rows, counts=counts, extra=extra)


@router.get("/profiles")
def profiles_page(
    request: Request,
    ui: PageSession,
    model_id: str = "",
    method_id: str = "",
    hardware_class: str = "",
    workload_id: str = "",
) -> Response:
    filters = {
        k: v
        for k, v in (
            ("model_id", model_id),
            ("method_id", method_id),
            ("hardware_class", hardware_class),
            ("workload_id", workload_id),
        )
        if v
    }
    with session_scope() as session:
        runs = views.filtered_runs(session, filters)
        return _render(
            request,
            "profiles",
            ui,
            filters=filters,
            options=views.filter_options(session),
            n_runs=len(runs),
            heatmap=views.heatmap(runs, views.workload_labels(session)),
            scatter=views.pareto(runs),
        )


@router.get("/advisor")
def advisor_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        return _render(request, "advisor", ui, data=views.advisor_page(session))


@router.get("/playground")
def playground_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        models = [m.id for m in session.exec(select(ModelSpec).order_by(ModelSpec.id))]
        nodes = [n.model_dump() for n in session.exec(select(Node).where(Node.status == "online").order_by(Node.id))]
    return _render(request, "playground", ui, models=models, nodes=nodes)


@router.get("/jobs")
def jobs_page(request: Request, ui: PageSession) -> Response:
    from executors.zoo import ZOO_NAMES

    with session_scope() as session:
        models = sorted({f"zoo:{n}" for n in ZOO_NAMES} | {m.id for m in session.exec(select(ModelSpec))})
        methods = list(session.exec(select(Method.id).order_by(Method.id)))  # the registry's mirror
        jobs = views.recent_jobs(session, 30)
    return _render(request, "jobs", ui, models=models, methods=methods, jobs=jobs)


@router.get("/access")
def access_page(request: Request, ui: PageSession) -> Response:
    with session_scope() as session:
        keys = [
            k.model_dump(mode="json", exclude={"key_hash"})
            for k in session.exec(select(ApiKey).order_by(ApiKey.created_at))
        ]
        tokens = [
            t.model_dump(mode="json", exclude={"token_hash"})
            for t in session.exec(select(JoinToken).order_by(JoinToken.created_at))
        ]
    return _render(request, "access", ui, keys=keys, tokens=tokens)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The UI's own files and the Plotly bundle; nothing is fetched from a CDN."""
    if name == "plotly.min.js":
        path = _plotly_bundle()
    else:
        path = STATIC / name
        if path.name != name or not path.is_file():  # a bare file name: no way out of the folder
            raise NotFound(f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


def install_ui(app: FastAPI) -> None:
    """Mounts the pages and their JSON; a page asked for without a session redirects to the login."""
    app.include_router(router)
    app.include_router(actions.router)

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, _exc: LoginRequired) -> Response:
        response = RedirectResponse("/ui/login", status_code=303)
        if COOKIE in request.cookies:
            close_session(response)  # stale or revoked: drop it so the login page starts clean
        return response

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/ui/", status_code=307)
