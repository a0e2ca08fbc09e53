"""The admin UI's frame: templates and their filters, login/logout, the UI's own static files,
and how it is mounted. The pages themselves are in pages.py, their JSON in actions.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from api.auth import verify_api_key
from api.errors import NotFound
from api.ui import words
from api.ui.leaderboard import cell_colour
from api.ui.session import COOKIE, LoginRequired, close_session, csrf_matches, open_session, read_session
from profiles.db import session_scope

HERE = Path(__file__).parent
STATIC = HERE / "static"
router = APIRouter(prefix="/ui", include_in_schema=False)
PAGES = (
    ("dashboard", "/ui/", "Dashboard"),
    ("methods", "/ui/methods", "Methods"),
    ("profiles", "/ui/profiles", "Profiles"),
    ("advisor", "/ui/advisor", "Advisor"),
    ("playground", "/ui/playground", "Playground"),
    ("models", "/ui/models", "Models"),
    ("jobs", "/ui/jobs", "Jobs"),
    ("access", "/ui/access", "Access"),
)
NAV_OF = {"job": "jobs", "run": "jobs", "compare": "advisor"}  # drill-down pages light up their list's tab


def percent(value: float | None, digits: int = 1) -> str:
    """A relative change as a signed percentage with a real minus sign: "+2.0 %", "−31.5 %"."""
    if value is None:
        return "–"
    text = f"{abs(value) * 100:.{digits}f} %"
    if float(text[:-2]) == 0:  # −0.0 % reads as a loss that is not there
        return text
    return ("+" if value > 0 else "−") + text


def number(value: float | None) -> str:
    """Three significant figures, no exponent: 0.0123, 1.23, 12.3, 123, 1 234."""
    if value is None:
        return "–"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}".replace(",", "\u202f")
    return (
        f"{value:.0f}"
        if size >= 100
        else f"{value:.1f}"
        if size >= 10
        else f"{value:.2f}"
        if size >= 0.1
        else f"{value:.3g}"
    )


def breakable(method_id: str) -> Markup:
    """A method id that may wrap after each "+" of a composite, never inside a name."""
    return Markup("+<wbr>").join(escape(part) for part in method_id.split("+"))


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    colour=cell_colour,
    short_id=words.short_id,
    seconds=words.seconds,
    when=words.when,
    percent=percent,
    number=number,
    breakable=breakable,
    metric_name=words.metric_name,
    selector_name=words.selector_name,
    split_name=words.split_name,
    basis_words=words.basis_words,
)


def _plotly_bundle() -> Path:
    """The minified Plotly.js inside the plotly pip package (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the plotly package is not installed")
    return Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js"


def render(request: Request, page: str, ui: dict | None, **context) -> Response:
    return templates.TemplateResponse(
        request,
        f"{page}.html",
        {
            "page": page,
            "nav": NAV_OF.get(page, page),
            "pages": PAGES,
            "csrf": ui["csrf"] if ui else "",
            "admin": ui["key"] if ui else None,
            **context,
        },
    )


@router.get("/login")
def login_form(request: Request, error: str = "") -> Response:
    return render(request, "login", None, error=error)


@router.post("/login")
def login(request: Request, key: Annotated[str, Form(max_length=300)]) -> Response:
    with session_scope() as session:
        found = verify_api_key(session, key)
        key_id = found.id if found is not None and found.scope == "admin" else None
    if key_id is None:
        return render(request, "login", None, error="That is not a valid admin key.")
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
    from api.ui import actions, pages

    app.include_router(router)
    app.include_router(pages.router)
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
