"""Bounds on what a caller may send as free-form JSON (records, outputs, workload shapes, method
configs): finite numbers of sane size, bounded strings, lists and nesting, no NUL characters.

What a workload's or a method's fields may hold is the executors' to say (each kind's and each
config's fields carry their limits); the API turns their ValueErrors into 422s and publishes
their limits in the OpenAPI (api/openapi.py). This module keeps what is left: no request can
overflow a number or store a value the database refuses.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

MAX_DEPTH = 8
MAX_ITEMS = 1000  # entries of one JSON list or object
MAX_STRING = 100_000
MAX_KEY = 120
MAX_INT = 2**53  # beyond this JSON numbers lose precision in most clients
MAX_FLOAT = 1e15
REGISTRY_SCHEMA = "x-registry-schema"  # a placeholder api/openapi.py replaces with the registries' schema


def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError(f"{where}: integer out of range (at most {MAX_INT} in size)")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_FLOAT:
            raise ValueError(f"{where}: numbers must be finite and at most {MAX_FLOAT:g} in size")
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"{where}: string longer than {MAX_STRING} characters")
        if "\x00" in value:
            raise ValueError(f"{where}: NUL characters are not allowed")
    else:
        raise ValueError(f"{where}: not a JSON value")


def check_json(value: Any, where: str = "value", depth: int = 0) -> Any:
    """Finite numbers of sane size, bounded strings, lists and nesting; raises ValueError (never echoes)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (list, tuple, dict)) and len(value) > MAX_ITEMS:
        raise ValueError(f"{where}: more than {MAX_ITEMS} entries")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_KEY or "\x00" in key:
                raise ValueError(f"{where}: keys must be strings of at most {MAX_KEY} characters, without NUL")
            check_json(item, f"{where}.{key}", depth + 1)
    else:
        _check_scalar(value, where)
    return value


def check_workload(shape: dict) -> dict:
    """Plain, bounded JSON; what each field of each kind may hold is the executors' to check
    (executors/families: the kinds' fields and their limits), and the OpenAPI states it."""
    return check_json(shape, "workload")


def check_method_entry(entry: Any) -> Any:
    """A method id, a config object or a composite (a list of them), within the bounds above."""
    check_json(entry, "method")
    steps = entry if isinstance(entry, list) else [entry]
    if not 1 <= len(steps) <= 8:
        raise ValueError("a composite has 1 to 8 methods")
    for step in steps:
        if isinstance(step, str):
            if not 1 <= len(step) <= 400:
                raise ValueError("a method id has 1 to 400 characters")
        elif not isinstance(step, dict):  # a config's params are the registry's to check
            raise ValueError("a method is an id, a config object or a list of them")
    return entry


# The schemas of these two are built from the family and method registries when the OpenAPI
# document is made (api/openapi.py), so every kind's fields and every method's knobs appear with
# their limits; a reference here keeps importing this module free of the executors.
WorkloadShape = Annotated[dict[str, Any], AfterValidator(check_workload), WithJsonSchema({REGISTRY_SCHEMA: "Workload"})]
MethodEntry = Annotated[Any, AfterValidator(check_method_entry), WithJsonSchema({REGISTRY_SCHEMA: "MethodEntry"})]
BoundedJson = Annotated[dict[str, Any], AfterValidator(check_json)]


def refuse_nul(value: Any, where: str = "body") -> None:
    """PostgreSQL text cannot hold NUL characters: refused in every string and key of a request body."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: NUL characters are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key, where)
            refuse_nul(item, f"{where}.{str(key)[:MAX_KEY]}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            refuse_nul(item, f"{where}[{i}]")
