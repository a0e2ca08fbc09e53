"""The OpenAPI document says what the API really answers: every error status a route can give
(in the one error shape), the auth scheme and scope, the export's media types, and the links a
client (or a stateful fuzzer) follows from a created object to the routes that take its id."""

from __future__ import annotations

import re
from functools import cached_property

from fastapi import APIRouter, FastAPI
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


def document_errors(app: FastAPI, routers: tuple[APIRouter, ...], prefix: str) -> None:
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
        protected = {
            (prefix + route.path.replace(":path}", "}"), method.lower()): _scopes(route)  # as the schema names it
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute)
            for method in route.methods or ()
        }
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
        schemas.update(registry_schemas())
        _link_registry_schemas(schema)
        _no_nul_strings(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "tuple": "array"}


def _field_schema(info: dict) -> dict:
    """One field of a workload kind or a method config (as the registries publish it) in JSON Schema."""
    limits = {"minimum": info["min"]} if "min" in info else {}
    limits |= {"maximum": info["max"]} if "max" in info else {}
    if info["type"] != "tuple":
        return {"type": JSON_TYPES.get(info["type"], "string"), **limits} if info["type"] in JSON_TYPES else {}
    sample = next(iter(info.get("default") or ()), 0)
    items = {"type": JSON_TYPES.get(type(sample).__name__, "number"), **limits}
    return {"type": "array", "items": items, "maxItems": info.get("max_items", 64)}


def registry_schemas() -> dict[str, dict]:
    """`Workload` (one schema per registered kind) and `MethodEntry` (an id, a config with each
    method's knobs and their limits, or a composite), from the registries: the API states every
    limit the executors enforce, and nothing the executors would refuse is called valid."""
    import executors.families as families
    import executors.methods  # noqa: F401  (importing it registers every method)
    from executors.registry import method_catalogue

    kinds = []
    for kind in families.kinds():
        fields = {name: _field_schema(info) for name, info in families.workload_fields(kind.workload).items()}
        body = {
            "type": "object",
            "title": kind.name,
            "properties": {"kind": {"const": kind.name}, **fields},
            "additionalProperties": False,
        }
        kinds.append(body if kind.default else {**body, "required": ["kind"]})
    methods = method_catalogue()
    ids = {"type": "string", "enum": [m["id"] for m in methods]}
    configs = [
        {
            "type": "object",
            "title": m["id"],
            "properties": {
                "method": {"const": m["id"]},
                "version": {"const": m["version"]},
                "params": {
                    "type": "object",
                    "properties": {k: _field_schema(v) for k, v in m["config_schema"].items()},
                    "additionalProperties": False,
                },
            },
            "required": ["method"],
            "additionalProperties": False,
        }
        for m in methods
    ]
    # oneOf, not anyOf: the branches are disjoint (a string, or one object per method const), and a
    # JSON-Schema engine need not intersect every pair of them to know so — with 60 methods anyOf
    # outgrows schemathesis' canonicaliser and no request body referencing it can be generated.
    step = {"oneOf": [ids, *configs]}
    return {
        "Workload": {
            "anyOf": kinds,
            "description": 'A workload shape: "kind" picks one (the default kind needs none) with its own fields.',
        },
        "MethodEntry": {
            "oneOf": [*step["oneOf"], {"type": "array", "items": step, "minItems": 1, "maxItems": 8}],
            "description": "A method id, a config with its params, or a composite (a list, applied in order).",
        },
    }


def _link_registry_schemas(node: object) -> None:
    """Points every placeholder (api.limits.REGISTRY_SCHEMA) at the registry schema it names."""
    from api.limits import REGISTRY_SCHEMA

    if isinstance(node, dict):
        for key, value in list(node.items()):
            if isinstance(value, dict) and REGISTRY_SCHEMA in value:
                node[key] = {"$ref": f"#/components/schemas/{value[REGISTRY_SCHEMA]}"}
            else:
                _link_registry_schemas(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, dict) and REGISTRY_SCHEMA in value:
                node[i] = {"$ref": f"#/components/schemas/{value[REGISTRY_SCHEMA]}"}
            else:
                _link_registry_schemas(value)


NO_NUL = "^[^\u0000]*$"


def _no_nul_strings(node: object) -> None:
    """Says in the schema what the API enforces: no string (parameter or body field) holds a NUL character."""
    if isinstance(node, dict):
        free_text = node.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(node)
        if free_text:
            node["pattern"] = NO_NUL
        for value in node.values():
            _no_nul_strings(value)
    elif isinstance(node, list):
        for value in node:
            _no_nul_strings(value)


class Operations:
    """Matches a request to its documented route: the template (for metric labels, so ids do not
    explode them), the methods the path allows (the Allow header of a 405) and the query
    parameters the operation declares (others are refused, as the schema promises). Built from the
    routes themselves, so no request waits for the OpenAPI document to be generated."""

    def __init__(self, app: FastAPI, routers: tuple[APIRouter, ...], prefix: str):
        self.app, self.routers, self.prefix = app, routers, prefix

    @cached_property
    def _routes(self) -> list[tuple[re.Pattern, str, dict[str, set[str]]]]:
        mine = [r for router in self.routers for r in router.routes if isinstance(r, APIRoute)]
        documented = [(self.prefix + r.path, r) for r in mine]
        documented += [(r.path, r) for r in self.app.routes if isinstance(r, APIRoute)]
        by_template: dict[str, dict[str, set[str]]] = {}
        for template, route in documented:
            if route.include_in_schema:
                methods = by_template.setdefault(template, {})
                for method in route.methods or ():
                    methods[method] = _query_names(route.dependant)
        compiled = []
        for template, methods in by_template.items():
            pattern = re.sub(r"\\\{[^/]+:path\\\}", ".+", re.escape(template))  # {id:path}: an id with slashes
            pattern = re.sub(r"\\\{[^/]+\\\}", "[^/]+", pattern)
            compiled.append((re.compile(f"^{pattern}$"), template, methods))
        return compiled

    def match(self, path: str) -> tuple[str, dict[str, set[str]]] | None:
        for pattern, template, methods in self._routes:
            if pattern.match(path):
                return template, methods
        return None

    def allowed(self, path: str) -> str | None:
        found = self.match(path)
        return ", ".join(sorted(m for m in found[1] if m != "HEAD")) if found else None

    def unknown_query(self, path: str, method: str, names: list[str]) -> list[str]:
        found = self.match(path)
        declared = found[1].get(method.upper()) if found else None
        if declared is None:
            return []
        return [n for n in dict.fromkeys(names) if n not in declared]


def _query_names(dependant) -> set[str]:
    names = {q.alias for q in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
