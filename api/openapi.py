"""The OpenAPI document says what the API really answers: every error status a route can give
(in the one error shape), the auth scheme and scope, the export's media types, and the links a
client (or a stateful fuzzer) follows from a created object to the routes that take its id."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ERRORS = {
    "400": "the request cannot be read",
    "401": "no key, an unknown key or a revoked one",
    "403": "the key's scope may not do this",
    "404": "no such object",
    "409": "the object's state does not allow this now",
    "413": "the request body is too large",
    "422": "the input is invalid; the detail says which field and why",
}
PUBLIC_ERRORS = ("400", "404", "409", "413", "422")
# (operation, status) → {link name: (target path, method, {parameter: expression})}
LINKS = {
    ("/v1/keys", "post", "201"): {"RevokeKey": ("/v1/keys/{key_id}", "delete", {"key_id": "$response.body#/id"})},
    ("/v1/join-tokens", "post", "201"): {
        "RevokeToken": ("/v1/join-tokens/{token_id}", "delete", {"token_id": "$response.body#/id"})
    },
    ("/v1/profiling-jobs", "post", "201"): {
        "GetProfilingJob": ("/v1/profiling-jobs/{job_id}", "get", {"job_id": "$response.body#/id"}),
        "CancelProfilingJob": ("/v1/profiling-jobs/{job_id}", "delete", {"job_id": "$response.body#/id"}),
        "GetJob": ("/v1/jobs/{job_id}", "get", {"job_id": "$response.body#/id"}),
        "ProfilesOfJob": ("/v1/profiles", "get", {"job_id": "$response.body#/id"}),
    },
    ("/v1/runs", "post", "202"): {
        "GetRun": ("/v1/runs/{run_id}", "get", {"run_id": "$response.body#/id"}),
        "GetJob": ("/v1/jobs/{job_id}", "get", {"job_id": "$response.body#/id"}),
    },
    ("/v1/advisor/train", "post", "202"): {"GetJob": ("/v1/jobs/{job_id}", "get", {"job_id": "$response.body#/id"})},
    ("/v1/workers", "get", "200"): {
        "RemoveNode": ("/v1/workers/{node_id}", "delete", {"node_id": "$response.body#/0/id"})
    },
}
MEDIA = {("/v1/profiles/export", "get"): ("text/csv", "application/x-ndjson")}


def _scopes(route: APIRoute) -> tuple[str, ...] | None:
    for dependency in route.dependant.dependencies:
        scopes = getattr(dependency.call, "scopes", None)
        if scopes:
            return scopes
    return None


def _operation_ids(schema: dict) -> dict[tuple[str, str], str]:
    return {
        (path, method): operation["operationId"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if "operationId" in operation
    }


def document_errors(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["ErrorBody"] = {
            "type": "object",
            "required": ["detail", "code"],
            "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
        }
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        components["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "ak_<id>_<secret>"}
        }
        protected = {(r.path, m.lower()): _scopes(r) for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
        ids = _operation_ids(schema)
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                scopes = protected.get((path, method))
                statuses = ERRORS if scopes else {k: ERRORS[k] for k in PUBLIC_ERRORS}
                if path == "/v1/workers/join":
                    statuses = {**statuses, "401": "unknown, expired, revoked or used-up join token"}
                responses = operation.setdefault("responses", {})
                for status, description in statuses.items():
                    responses[status] = {
                        "description": description,
                        "content": {"application/json": {"schema": ERROR_REF}},
                    }
                if scopes:
                    operation["security"] = [{"apiKey": []}]
                    operation["description"] = (
                        operation.get("description", "") + f"\n\nScope: {' or '.join(scopes)} (admin may always)."
                    ).strip()
                for media in MEDIA.get((path, method), ()):
                    ok = responses.setdefault("200", {"description": "OK"})
                    ok.setdefault("content", {}).pop("text/plain", None)
                    ok["content"][media] = {"schema": {"type": "string"}}
                for (source, source_method, status), links in LINKS.items():
                    if (source, source_method) == (path, method) and status in responses:
                        responses[status]["links"] = {
                            name: {"operationId": ids[(target, target_method)], "parameters": parameters}
                            for name, (target, target_method, parameters) in links.items()
                            if (target, target_method) in ids
                        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
