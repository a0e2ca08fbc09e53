"""Bounds on what a caller may send: free-form JSON, workload shapes and method parameters.

The executors validate what a workload or a method config means; this module bounds what the
service accepts before that, so no request can queue a job no machine can run, overflow a
number, or store a value the database refuses. Every bound here is published in the OpenAPI.
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

# Workload fields, for every kind that has them: (type, lowest, highest). Limits come from what a
# node of this project can hold (a CPU box profiles in minutes, not days) and from the models
# (the longest context in the zoo is 8 192 tokens; 32 768 leaves room for local checkpoints).
WORKLOAD_LIMITS: dict[str, tuple[type, float, float]] = {
    "batch_size": (int, 1, 256),
    "prompt_len": (int, 1, 32_768),
    "gen_len": (int, 1, 4096),
    "seq_len": (int, 1, 8192),
    "temperature": (float, 0.0, 10.0),
    "requests": (int, 1, 1024),
    "load": (float, 0.0, 100.0),
    "rate": (float, 0.0, 10_000.0),
    "max_batch": (int, 1, 256),
    "prompt_lens": (list, 1, 32_768),
    "gen_lens": (list, 1, 4096),
    "prefix_len": (int, 0, 32_768),
    "prefixes": (int, 1, 64),
    "shared": (float, 0.0, 1.0),
    "seed": (int, 0, 2**32 - 1),
    "probes": (int, 1, 64),
    "ppl_windows": (int, 1, 16),
    "kind": (str, 1, 60),
    "sampling": (str, 1, 30),
    "objective": (str, 1, 30),
}
MAX_LIST_FIELD = 32  # entries of prompt_lens / gen_lens
MAX_TOKENS_PER_STEP = 2**20  # batch_size × (prompt_len + gen_len): activations must fit in memory

# Method parameters are typed by the registry; these coarse bounds apply to every method until
# its config class states its own.
PARAM_INT = (0, 65_536)
PARAM_FLOAT = 1e6
PARAM_STRING = 200
PARAM_LIST = 64


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def _check_field(name: str, value: Any, kind: type, low: float, high: float) -> None:
    if kind is int:
        ok = _is_int(value) and low <= value <= high
        expected = f"an integer from {low} to {high}"
    elif kind is float:
        ok = _is_number(value) and math.isfinite(value) and low <= value <= high
        expected = f"a number from {low:g} to {high:g}"
    elif kind is str:
        ok = isinstance(value, str) and low <= len(value) <= high
        expected = f"a string of {low} to {high} characters"
    else:
        ok = (
            isinstance(value, list)
            and 1 <= len(value) <= MAX_LIST_FIELD
            and all(_is_int(v) and low <= v <= high for v in value)
        )
        expected = f"a list of 1 to {MAX_LIST_FIELD} integers from {low} to {high}"
    if not ok:
        raise ValueError(f"{name} must be {expected}")


def check_workload(shape: dict) -> dict:
    check_json(shape, "workload")
    for name, value in shape.items():
        if name in WORKLOAD_LIMITS:
            _check_field(name, value, *WORKLOAD_LIMITS[name])
    batch = shape.get("batch_size", shape.get("max_batch", 1))
    tokens = shape.get("prompt_len", shape.get("seq_len", 0)) + shape.get("gen_len", 0)
    if batch * tokens > MAX_TOKENS_PER_STEP:
        raise ValueError(f"batch_size × (prompt_len + gen_len) must be at most {MAX_TOKENS_PER_STEP}")
    return shape


def _check_params(where: str, params: Any) -> None:
    if not isinstance(params, dict):
        return  # the registry explains what params must be
    for name, value in params.items():
        label = f"{where}.params.{str(name)[:MAX_KEY]}"
        if _is_int(value):
            if not PARAM_INT[0] <= value <= PARAM_INT[1]:
                raise ValueError(f"{label}: integers must lie in [{PARAM_INT[0]}, {PARAM_INT[1]}]")
        elif _is_number(value):
            if not (math.isfinite(value) and abs(value) <= PARAM_FLOAT):
                raise ValueError(f"{label}: numbers must be finite and at most {PARAM_FLOAT:g} in size")
        elif isinstance(value, str) and len(value) > PARAM_STRING:
            raise ValueError(f"{label}: strings may have at most {PARAM_STRING} characters")
        elif isinstance(value, list) and len(value) > PARAM_LIST:
            raise ValueError(f"{label}: lists may have at most {PARAM_LIST} entries")


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
        elif isinstance(step, dict):
            _check_params(str(step.get("method", "method"))[:MAX_KEY], step.get("params"))
        else:
            raise ValueError("a method is an id, a config object or a list of them")
    return entry


def _workload_schema() -> dict:
    properties = {}
    for name, (kind, low, high) in WORKLOAD_LIMITS.items():
        if kind is int:
            properties[name] = {"type": "integer", "minimum": low, "maximum": high}
        elif kind is float:
            properties[name] = {"type": "number", "minimum": low, "maximum": high}
        elif kind is str:
            properties[name] = {"type": "string", "minLength": low, "maxLength": high}
        else:
            item = {"type": "integer", "minimum": low, "maximum": high}
            properties[name] = {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_LIST_FIELD}
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": True,
        "description": (
            'A workload shape; "kind" picks the class (lm-generate by default, lm-longctx, lm-stream, '
            f"encoder-embed) and each kind takes the fields it defines. batch_size × (prompt_len + gen_len) "
            f"≤ {MAX_TOKENS_PER_STEP}."
        ),
        "example": {"batch_size": 1, "prompt_len": 256, "gen_len": 128},
    }


_METHOD_SCHEMA = {
    "description": (
        'A method id, a config {"method", "version", "params"}, or a list of them (a composite, 1 to 8). '
        f"Integer params lie in [{PARAM_INT[0]}, {PARAM_INT[1]}], numbers are finite and at most {PARAM_FLOAT:g} "
        f"in size, strings have at most {PARAM_STRING} characters; each method's own knobs are in GET /v1/methods."
    ),
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 400},
        {"type": "object"},
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}, "minItems": 1, "maxItems": 8},
    ],
}

WorkloadShape = Annotated[dict[str, Any], AfterValidator(check_workload), WithJsonSchema(_workload_schema())]
MethodEntry = Annotated[Any, AfterValidator(check_method_entry), WithJsonSchema(_METHOD_SCHEMA)]
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
