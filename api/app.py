"""The FastAPI application factory."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text

from api import __version__
from api.dispatch import Sender, set_sender
from api.embedded import local_worker_state
from api.errors import install_error_handlers
from api.jobs import active_jobs, online_nodes, waiting_targets
from api.middleware import RequestMetrics, StrictUrls
from api.openapi import Operations, document_errors
from api.reaper import start_background
from api.routes import access, advise, catalog, jobs, models, workers
from api.training import train_if_untrained
from api.ui.routes import install_ui
from profiles.db import default_engine, read_scope
from profiles.migrate import current_revision
from profiles.settings import get_settings

ROUTERS = (
    access.router,
    workers.router,
    catalog.router,
    models.router,
    jobs.router,
    advise.router,
)  # mounted under /v1


def _refuse_odd_urls(app: FastAPI) -> None:
    app.add_middleware(StrictUrls, unknown_query=app.state.operations.unknown_query)


def _install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter("accel_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("accel_http_request_seconds", "HTTP request latency", ["route"], registry=registry)

    def route_of(scope) -> str:
        found = app.state.operations.match(scope["path"])
        return found[0] if found else getattr(scope.get("route"), "path", "unmatched")

    def observe(method: str, route: str, status: int, seconds: float) -> None:
        requests.labels(method, route, str(status)).inc()
        latency.labels(route).observe(seconds)

    app.add_middleware(RequestMetrics, route_of=route_of, observe=observe)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class BodyLimit:
    """Refuses request bodies above ``limit`` bytes with 413 before the app reads any of it.

    A declared Content-Length is checked at once; a chunked body is read up to the limit, then
    handed to the app whole, so no route ever sees a body larger than the limit. The paths in
    ``streamed`` (uploads) have limits of their own and are passed through as they arrive, counted:
    once over, the app's answer is dropped and the 413 sent instead.
    """

    def __init__(self, app, limit: int, streamed: dict[str, int] | None = None):
        self.app, self.limit, self.streamed = app, limit, streamed or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.streamed.get(scope.get("path", ""), self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self._refuse(send, limit)
        if scope.get("path", "") in self.streamed:
            return await self._counted(scope, receive, send, limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message], receive), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await self._refuse(send, limit)
            if not message.get("more_body"):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await self.app(scope, _replay([body], receive), send)

    async def _counted(self, scope, receive, send, limit: int) -> None:
        state = {"size": 0, "over": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["size"] += len(message.get("body", b""))
                if state["size"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is replaced
            return message

        async def guarded_send(message):
            if not state["over"]:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"]:
            await self._refuse(send, limit)

    async def _refuse(self, send, limit: int) -> None:
        payload = json.dumps({"detail": f"request body larger than {limit} bytes", "code": "too_large"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[dict], receive):
    async def replay():
        return messages.pop(0) if messages else await receive()

    return replay


def health() -> dict:
    """Liveness, a database round trip, and whether every queue that has work has a worker."""
    engine = default_engine()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with read_scope() as session:
        online = online_nodes(session)
        unserved: dict[str, int] = {}
        for counts in waiting_targets(active_jobs(session), online).values():
            for target, n in counts.items():
                unserved[target] = unserved.get(target, 0) + n
    local = local_worker_state()
    degraded = bool(unserved) or local not in (None, "running")
    body = {
        "status": "degraded" if degraded else "ok",
        "version": __version__,
        "schema": current_revision(engine),
        "workers_online": len(online),
        "unserved": [{"target": t, "queued_items": n} for t, n in sorted(unserved.items())],
    }
    if local is not None:
        body["local_worker"] = local
    return body


@asynccontextmanager
async def _lifespan(_app: FastAPI):
    settings = get_settings()
    sender = Sender().start()
    set_sender(sender)
    background = start_background(settings)  # its first pass is the start-up reconciliation
    train_if_untrained()
    yield
    background.stop()
    set_sender(None)
    sender.stop()


def create_app() -> FastAPI:
    app = FastAPI(
        title="accel-advisor",
        version=__version__,
        lifespan=_lifespan,
        description="Chooses, predicts and runs model-acceleration methods.",
    )
    install_error_handlers(app)
    app.state.operations = Operations(app, ROUTERS, prefix="/v1")
    _refuse_odd_urls(app)
    settings = get_settings()
    uploads = {"/v1/models/upload": settings.max_upload_bytes}
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, streamed=uploads)
    _install_metrics(app)  # outermost: refused bodies and queries are counted too
    for router in ROUTERS:
        app.include_router(router, prefix="/v1")
    install_ui(app)  # the admin pages under /ui

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        """Liveness plus a database round trip; "degraded" (still 200) when a queue with work has no
        worker, naming the targets that wait, or when the embedded local worker is down."""
        return health()

    document_errors(app, ROUTERS, prefix="/v1")
    return app
