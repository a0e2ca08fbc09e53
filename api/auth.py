"""Scoped API keys and expiring join tokens, stored as hashes; FastAPI dependencies per scope.

A key reads ``ak_<id>_<secret>``: the id finds the row, the secret is compared with the stored
SHA-256 in constant time. Secrets are 32 random bytes, so a fast hash is enough (nothing to
brute-force), and the plaintext is shown exactly once, when the key is created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import event
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from api.errors import Forbidden, NotFound, Unauthorized, Unprocessable
from profiles.models import ApiKey, JoinToken, utcnow

SCOPES = ("admin", "client", "worker")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(presented: str, prefix: str) -> tuple[str, str] | None:
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != prefix or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def create_api_key(session: Session, scope: str, name: str = "", node_id: str | None = None) -> tuple[ApiKey, str]:
    if scope not in SCOPES:
        raise Unprocessable(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
    row = ApiKey(id=key_id, name=name, scope=scope, key_hash=_hash(secret), node_id=node_id)
    session.add(row)
    session.flush()
    return row, f"ak_{key_id}_{secret}"


def verify_api_key(session: Session, presented: str) -> ApiKey | None:
    parsed = _split(presented, "ak")
    if parsed is None:
        return None
    row = session.get(ApiKey, parsed[0])
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, _hash(parsed[1])):
        return None
    return row


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id!r}")
    row.revoked_at = row.revoked_at or utcnow()
    session.add(row)
    forget_verified_keys(session)
    return row


def create_join_token(
    session: Session, ttl: timedelta, max_uses: int | None = None, note: str = "", labels: dict | None = None
) -> tuple[JoinToken, str]:
    if ttl.total_seconds() <= 0:
        raise Unprocessable("a join token needs a positive lifetime")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
    row = JoinToken(
        id=token_id,
        token_hash=_hash(secret),
        note=note,
        labels=labels or {},
        max_uses=max_uses,
        expires_at=utcnow() + ttl,
    )
    session.add(row)
    session.flush()
    return row, f"jt_{token_id}_{secret}"


def revoke_join_token(session: Session, token_id: str) -> JoinToken:
    row = session.get(JoinToken, token_id)
    if row is None:
        raise NotFound(f"no join token {token_id!r}")
    row.revoked_at = row.revoked_at or utcnow()
    session.add(row)
    return row


def redeem_join_token(session: Session, presented: str) -> JoinToken:
    """Counts one use of a valid token; raises Unauthorized for unknown, expired or used-up ones."""
    parsed = _split(presented, "jt")
    row = session.get(JoinToken, parsed[0]) if parsed else None
    if parsed is None or row is None or not hmac.compare_digest(row.token_hash, _hash(parsed[1])):
        raise Unauthorized("unknown join token")
    if row.revoked_at is not None:
        raise Unauthorized("this join token was revoked")
    if row.expires_at <= utcnow():
        raise Unauthorized("this join token has expired; ask an admin for a new one")
    if row.max_uses is not None and row.uses >= row.max_uses:
        raise Unauthorized("this join token has been used up")
    row.uses += 1
    session.add(row)
    return row


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.created_at))))


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


_last_used: dict[str, datetime] = {}  # key id → last use, written to the store off the request path
_last_used_lock = threading.Lock()


def note_key_use(key_id: str) -> None:
    with _last_used_lock:
        _last_used[key_id] = utcnow()


def flush_key_use(session: Session) -> int:
    """Writes the noted last-use times in one transaction (the background loop calls this)."""
    with _last_used_lock:
        pending = dict(_last_used)
        _last_used.clear()
    for key_id, when in pending.items():
        row = session.get(ApiKey, key_id)
        if row is not None and (row.last_used_at is None or row.last_used_at < when):
            row.last_used_at = when
            session.add(row)
    return len(pending)


# Keys verified recently: the presented key's hash → (the key's row, detached; when it was read). A request
# whose key is here needs neither the store nor a worker thread. A revocation in this process clears
# it at once; one made elsewhere (another API process, the CLI) is seen within VERIFIED_TTL_S.
VERIFIED_TTL_S = 2.0
_verified: dict[str, tuple[ApiKey, float]] = {}


def forget_verified_keys(session: Session | None = None) -> None:
    """Drops every cached verification, now and (with ``session``) again once its revocation commits,
    so a request that read the row before the commit cannot keep the key alive."""
    _verified.clear()
    if session is not None:
        event.listen(session, "after_commit", lambda _s: _verified.clear(), once=True)


def _verify_in_store(presented: str) -> ApiKey | None:
    from profiles.db import read_scope

    with read_scope() as session:
        key = verify_api_key(session, presented)
        if key is not None:
            session.expunge(key)
    return key


async def _verified_key(presented: str) -> ApiKey | None:
    digest = _hash(presented)  # the plaintext is not kept
    cached = _verified.get(digest)
    if cached is not None and time.monotonic() - cached[1] < VERIFIED_TTL_S:
        return cached[0]
    read_at = time.monotonic()
    key = await run_in_threadpool(_verify_in_store, presented)  # a store read: off the event loop
    if key is None:
        _verified.pop(digest, None)
    else:
        if len(_verified) >= 10_000:  # bounded: a flood of distinct valid keys only costs store reads
            _verified.clear()
        _verified[digest] = (key, read_at)
    return key


def require(*scopes: str):
    """Dependency: the caller's key must exist, be unrevoked and have one of ``scopes`` (admin always may).

    Verifying reads only: on SQLite a write per request would serialise every request on the
    store's one write lock, so the last-use time is noted in memory and flushed in the background.
    A key verified in the last VERIFIED_TTL_S is taken from memory (the rows are shared: read-only).
    """

    async def dependency(request: Request) -> ApiKey:
        presented = presented_key(request)
        if not presented:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        key = await _verified_key(presented)
        if key is None:
            raise Unauthorized("invalid or revoked API key")
        if key.scope != "admin" and key.scope not in scopes:
            raise Forbidden(f"a {key.scope!r} key may not do this; needs {' or '.join(scopes)}")
        note_key_use(key.id)
        return key

    # A function attribute (mypy has no type for those), read by the auth-matrix test to cover every protected route.
    dependency.scopes = scopes  # type: ignore[attr-defined]
    return dependency


AdminKey = Annotated[ApiKey, Depends(require("admin"))]
ClientKey = Annotated[ApiKey, Depends(require("client"))]
WorkerKey = Annotated[ApiKey, Depends(require("worker"))]
