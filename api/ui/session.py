"""The UI's session: a signed cookie naming the admin key it was opened with, re-checked per request.

The cookie holds the key id (never the secret) and a CSRF token; it is HttpOnly, SameSite=Lax and
Secure over https. Every state-changing request must echo the CSRF token (a form field or the
``X-CSRF-Token`` header), so a cross-site page can neither read nor replay it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from api.errors import Forbidden, Unauthorized
from profiles.db import session_scope
from profiles.models import ApiKey, utcnow
from profiles.settings import get_settings

COOKIE = "accel_ui"
MAX_AGE_S = 12 * 3600


class LoginRequired(Exception):
    """A page was asked for without a valid session: the handler redirects to the login page."""


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(get_settings().resolved_secret_key(), salt="accel-ui-session")


def open_session(response, request: Request, key_id: str) -> None:
    value = _serializer().dumps({"key_id": key_id, "csrf": secrets.token_urlsafe(24)})
    response.set_cookie(
        COOKIE, value, max_age=MAX_AGE_S, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/"
    )


def close_session(response) -> None:
    response.delete_cookie(COOKIE, path="/")


def read_session(request: Request) -> dict | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        return _serializer().loads(raw, max_age=MAX_AGE_S)
    except BadSignature:
        return None


def _live_admin_key(key_id: str) -> ApiKey | None:
    """The key still exists, is unrevoked and is an admin key: revoking it ends its sessions."""
    with session_scope() as session:
        key = session.get(ApiKey, key_id)
        if key is None or key.revoked_at is not None or key.scope != "admin":
            return None
        key.last_used_at = utcnow()
        session.add(key)
        session.flush()
        session.expunge(key)
        return key


def page_session(request: Request) -> dict:
    """Dependency for pages: the session (with its key), else a redirect to the login page."""
    found = read_session(request)
    key = _live_admin_key(found["key_id"]) if found else None
    if found is None or key is None:
        raise LoginRequired()
    return {**found, "key": key}


def api_session(request: Request) -> ApiKey:
    """Dependency for /ui/api: a live session, and the CSRF header on anything that changes state."""
    found = read_session(request)
    key = _live_admin_key(found["key_id"]) if found else None
    if found is None or key is None:
        raise Unauthorized("no UI session: log in at /ui/login")
    if request.method not in ("GET", "HEAD") and not csrf_matches(found, request.headers.get("x-csrf-token")):
        raise Forbidden("missing or wrong X-CSRF-Token")
    return key


def csrf_matches(found: dict, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(found["csrf"], presented)


PageSession = Annotated[dict, Depends(page_session)]
UiKey = Annotated[ApiKey, Depends(api_session)]
