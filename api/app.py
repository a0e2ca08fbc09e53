"""The FastAPI application factory."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text

from api import __version__
from api.errors import install_error_handlers
from api.reaper import start_reaper
from api.routes import access, advise, catalog, jobs, workers
from api.training import train_if_untrained
from api.ui.routes import install_ui
from profiles.db import default_engine
from profiles.migrate import current_revision
from profiles.settings import get_settings

ROUTERS = (access.router, workers.router, catalog.router, jobs.router, advise.router)  # mounted under /v1


def _install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter("accel_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("accel_http_request_seconds", "HTTP request latency", ["route"], registry=registry)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")  # the template, so ids do not explode the labels
        requests.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def _lifespan(_app: FastAPI):
    settings = get_settings()
    stop = start_reaper(settings.node_lost_after_s, every_s=max(1.0, settings.node_lost_after_s / 4))
    train_if_untrained()
    yield
    stop.set()


def create_app() -> FastAPI:
    app = FastAPI(
        title="accel-advisor",
        version=__version__,
        lifespan=_lifespan,
        description="Chooses, predicts and runs model-acceleration methods.",
    )
    install_error_handlers(app)
    _install_metrics(app)
    for router in ROUTERS:
        app.include_router(router, prefix="/v1")
    install_ui(app)  # the admin pages under /ui

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        """Liveness plus a database round trip."""
        engine = default_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__, "schema": current_revision(engine)}

    return app
