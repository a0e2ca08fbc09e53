"""The API's own middleware, as plain ASGI callables.

Starlette's ``@app.middleware("http")`` (BaseHTTPMiddleware) runs every request through a task
group and a memory stream; two of them cost more than a cached recommendation answer itself.
These do the same work on the ASGI messages directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def _answer(send: Send, status: int, detail: str, code: str) -> None:
    payload = json.dumps({"detail": detail, "code": code}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class StrictUrls:
    """422 for a NUL character anywhere in the URL (PostgreSQL text cannot hold one: refused here,
    for every route and store alike) and for query parameters the operation does not document."""

    def __init__(self, app: ASGIApp, unknown_query: Callable[[str, str, list[str]], list[str]]):
        self.app, self.unknown_query = app, unknown_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        params = QueryParams(scope.get("query_string", b""))
        if "\x00" in path or any("\x00" in k + v for k, v in params.multi_items()):
            return await _answer(send, 422, "NUL characters are not allowed in a URL", "invalid_request")
        unknown = self.unknown_query(path, scope["method"], list(params)) if params else []
        if unknown:
            names = ", ".join(n[:40] for n in unknown[:5])
            return await _answer(send, 422, f"unknown query parameters: {names}", "invalid_request")
        await self.app(scope, receive, send)


class RequestMetrics:
    """Counts each request by method, route template and status, and observes its latency.

    ``observe(method, path, status, seconds)`` records one; ``route_of(path)`` names the template.
    An exception escaping the app is counted as the 500 the server answers with outside this.
    """

    def __init__(
        self,
        app: ASGIApp,
        route_of: Callable[[Scope], str],
        observe: Callable[[str, str, int, float], None],
    ):
        self.app, self.route_of, self.observe = app, route_of, observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            self.observe(scope["method"], self.route_of(scope), status, time.perf_counter() - start)
