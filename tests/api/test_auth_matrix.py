"""Every protected route × {no key, wrong key, wrong scope} → 401/401/403; the right scope passes auth."""

from __future__ import annotations

from collections import defaultdict

import pytest
from fastapi.routing import APIRoute

from api.app import ROUTERS
from profiles.db import session_scope

SAMPLE = {"key_id": "0000", "token_id": "0000", "run_id": "x", "job_id": "x", "index": 0, "node_id": "ghost"}


def _protected_routes():
    out = []
    for route in (r for router in ROUTERS for r in router.routes):
        if not isinstance(route, APIRoute):
            continue
        scopes = [getattr(dep.call, "scopes", None) for dep in route.dependant.dependencies]
        scopes = [s for s in scopes if s]
        if scopes:
            for method in route.methods:
                # Any id a route takes that SAMPLE does not name is "x": these calls never reach an object.
                path = route.path.replace(":path}", "}")  # {model_id:path}: an id with slashes
                out.append((method, "/v1" + path.format_map(defaultdict(lambda: "x", SAMPLE)), scopes[0]))
    return sorted(out)


PROTECTED = _protected_routes()


def test_the_matrix_covers_the_api():
    paths = {path for _m, path, _s in PROTECTED}
    assert {
        "/v1/keys",
        "/v1/join-tokens",
        "/v1/workers",
        "/v1/profiles",
        "/v1/methods",
        "/v1/workers/heartbeat",
    } <= paths


def _wrong_scope(scopes) -> str:
    return "worker" if "worker" not in scopes else "client"


@pytest.mark.parametrize("method, path, scopes", PROTECTED)
def test_protected_route_rejects_missing_wrong_and_underprivileged_keys(client, keys, method, path, scopes):
    def call(headers):
        return client.request(method, path, headers=headers, json={})

    missing = call({})
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
    forged = call({"Authorization": "Bearer ak_0123456789abcdef_not-the-secret"})
    assert forged.status_code == 401
    garbage = call({"Authorization": "Bearer nonsense"})
    assert garbage.status_code == 401
    wrong = call({"Authorization": f"Bearer {keys[_wrong_scope(scopes)]}"})
    assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
    assert scopes[0] in wrong.json()["detail"]
    allowed = call({"Authorization": f"Bearer {keys[scopes[0]]}"})
    assert allowed.status_code not in (401, 403)


def test_a_revoked_key_stops_working(client, keys):
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    made = client.post("/v1/keys", json={"scope": "client", "name": "temp"}, headers=headers).json()
    assert client.get("/v1/methods", headers={"X-API-Key": made["key"]}).status_code == 200
    assert client.delete(f"/v1/keys/{made['id']}", headers=headers).status_code == 200
    assert client.get("/v1/methods", headers={"X-API-Key": made["key"]}).status_code == 401


def test_a_key_revoked_elsewhere_stops_working_within_the_ttl(client, keys, monkeypatch):
    """A revocation this process did not make (the CLI, another API process) is seen once the
    remembered verification is older than VERIFIED_TTL_S; until then the key is served from memory."""
    from api import auth
    from profiles.models import ApiKey, utcnow

    headers = {"Authorization": f"Bearer {keys['client']}"}
    assert client.get("/v1/methods", headers=headers).status_code == 200
    key_id = keys["client"].split("_")[1]
    with session_scope() as session:  # revoked behind this process's back
        row = session.get_one(ApiKey, key_id)
        row.revoked_at = utcnow()
        session.add(row)
    monkeypatch.setattr(auth, "VERIFIED_TTL_S", 3600.0)
    assert client.get("/v1/methods", headers=headers).status_code == 200  # remembered: no store read
    monkeypatch.setattr(auth, "VERIFIED_TTL_S", 0.0)
    assert client.get("/v1/methods", headers=headers).status_code == 401
