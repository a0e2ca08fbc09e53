"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import text

from api import __version__
from profiles.db import default_engine
from profiles.migrate import current_revision


def create_app() -> FastAPI:
    app = FastAPI(title="accel-advisor", version=__version__,
                  description="Chooses, predicts and runs model-acceleration methods.")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        """Liveness plus a database round trip."""
        engine = default_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__, "schema": current_revision(engine)}

    return app
