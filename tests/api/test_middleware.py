"""The API's ASGI middleware: URLs with NUL characters or undocumented query parameters are a 422 in
the one error format, before any route runs, and every request is counted in /metrics by route."""

from __future__ import annotations


def test_nul_and_unknown_query_parameters_are_422_and_counted(client, keys):
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    nul = client.get("/v1/profiles?model=a%00b", headers=headers)
    assert nul.status_code == 422 and nul.json() == {
        "detail": "NUL characters are not allowed in a URL",
        "code": "invalid_request",
    }
    unknown = client.get("/v1/profiles?limit=5&colour=red", headers=headers)
    assert unknown.status_code == 422 and unknown.json()["detail"] == "unknown query parameters: colour"
    assert client.get("/v1/profiles?limit=5", headers=headers).status_code == 200
    metrics = client.get("/metrics").text
    assert 'route="/v1/profiles",status="422"' in metrics and 'route="/v1/profiles",status="200"' in metrics
