"""The registry is the allow-list: duplicates, unknown ids, config validation, composites."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from executors.registry import (
    Method,
    MethodConfig,
    UnknownMethod,
    composite_from_json,
    composite_id,
    config_from_json,
    get_method,
    register_method,
)


def test_duplicate_ids_are_refused():
    @dataclass(frozen=True)
    class Other(MethodConfig):
        knob: int = 1

    with pytest.raises(ValueError, match="already registered"):
        register_method("baseline", Other, category="x", families=("lm",), changes=("outputs",), paper="y")(
            type("Again", (Method,), {})
        )


def test_configs_must_be_frozen_method_configs():
    @dataclass(frozen=True)
    class NotAMethodConfig:
        knob: int = 1

    with pytest.raises(TypeError, match="frozen MethodConfig"):
        register_method("test.unrelated", NotAMethodConfig, category="x", families=("lm",), changes=(), paper="y")  # type: ignore[arg-type]  # the wrong config class is the point


def test_unknown_ids_list_close_matches():
    with pytest.raises(UnknownMethod, match="did you mean quant.int8_dynamic"):
        get_method("quant.int8_dynamc")


def test_bad_configs_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="must be int"):
        config_from_json({"method": "quant.weight_only_int4", "params": {"group_size": "64"}})
    with pytest.raises(ValueError, match="must be bool"):
        config_from_json({"method": "quant.int8_dynamic", "params": {"per_channel": 1}})
    with pytest.raises(ValueError, match="unexpected keys"):
        config_from_json({"method": "baseline", "code": "import os"})
    with pytest.raises(ValueError, match='{"method"'):
        config_from_json(["baseline"])
    with pytest.raises(UnknownMethod):
        config_from_json({"method": "os.system"})


def test_composites_apply_in_order_and_only_where_compatible():
    int8 = {"method": "quant.int8_dynamic", "params": {}}
    swift = {"method": "lm.spec.swift", "params": {}}
    configs = composite_from_json([int8, swift])
    assert composite_id(configs) == "quant.int8_dynamic+lm.spec.swift"
    with pytest.raises(ValueError, match="must come before"):
        composite_from_json([swift, int8])
    with pytest.raises(ValueError, match="does not compose"):
        composite_from_json([swift, {"method": "lm.spec.medusa", "params": {}}])
    with pytest.raises(ValueError, match="appears twice"):
        composite_from_json([int8, int8])
    with pytest.raises(ValueError, match="does not compose"):
        composite_from_json([int8, {"method": "quant.weight_only_int4", "params": {}}])
