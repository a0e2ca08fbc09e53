"""Domain errors mapped to HTTP once: every error body is {"detail": str, "code": str}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from profiles.transfer import ImportRejected

log = logging.getLogger(__name__)
MAX_DETAIL = 1000  # an error names what was wrong; it never echoes a large input back
MAX_LOC_PART = 60


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class NotFound(ApiError):
    status_code, code = 404, "not_found"


class Conflict(ApiError):
    status_code, code = 409, "conflict"


class Unauthorized(ApiError):
    status_code, code = 401, "unauthorized"


class Forbidden(ApiError):
    status_code, code = 403, "forbidden"


class Unprocessable(ApiError):
    status_code, code = 422, "invalid_request"


class TooLarge(ApiError):
    status_code, code = 413, "too_large"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _body(detail: str, code: str) -> dict:
    return {"detail": _clip(detail, MAX_DETAIL), "code": code}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(_clip(str(p), MAX_LOC_PART) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where or 'body'}: {_clip(message, 300)}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(_body(exc.detail, exc.code), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_body(_validation_message(exc), "invalid_request"), status_code=422)

    @app.exception_handler(ImportRejected)
    async def _rejected(_request: Request, exc: ImportRejected) -> JSONResponse:
        return JSONResponse(_body(str(exc), "rejected"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every documented method (Starlette's own names only the first route's)
            headers["Allow"] = request.app.state.operations.allowed(request.url.path) or headers.get("Allow", "")
        return JSONResponse(_body(str(exc.detail), code), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: logged with its traceback (never the request body), counted in /metrics.
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal error; the server log has the details", "internal"), status_code=500)
