import math

import numpy as np
import pytest

from advisor.features import (
    FEATURE_SCHEMA_VERSION,
    FeatureSchema,
    candidate_features,
    candidate_key,
    fit_schema,
    task_features,
    to_matrix,
)


def test_schema_one_hot_encodes_text_and_keeps_missing_numbers_nan():
    rows: list[dict[str, float | str | None]] = [{"size": 3.0, "kind": "cpu"}, {"size": None, "kind": "cuda"}]
    schema = fit_schema(rows)
    assert schema.columns == ["size", "kind=cpu", "kind=cuda"]
    matrix = to_matrix(rows + [{"kind": "tpu"}], schema)
    assert matrix[0].tolist() == [3.0, 1.0, 0.0]
    assert math.isnan(matrix[1, 0]) and matrix[1, 1:].tolist() == [0.0, 1.0]
    assert matrix[2, 1:].tolist() == [0.0, 0.0]  # an unseen category sets no column


def test_schema_round_trips_and_refuses_another_version():
    schema = fit_schema([{"a": 1.0, "b": "x"}])
    assert FeatureSchema.from_json(schema.to_json()) == schema
    stale = schema.to_json() | {"version": FEATURE_SCHEMA_VERSION + 1}
    with pytest.raises(ValueError, match="retrain"):
        FeatureSchema.from_json(stale)


def test_a_feature_cannot_be_both_number_and_text():
    with pytest.raises(ValueError, match="both numeric and text"):
        fit_schema([{"a": 1.0}, {"a": "one"}])


def test_task_features_scale_sizes_and_derive_ratios(small_records):
    features = task_features(small_records[0])
    model = small_records[0]["model"]
    assert features["model.width"] == pytest.approx(np.log2(1 + model["width"]))
    assert features["node.flops_per_byte"] == pytest.approx(
        small_records[0]["node"]["fp32_gflops"] / small_records[0]["node"]["mem_bw_gbs"]
    )
    probe = features["node.fp.probe_matmul_gflops"]
    assert isinstance(probe, float) and probe > 0  # probe figures from the fingerprint are used
    assert features["model.family"] == "decoder-lm"


def test_composite_candidates_expose_their_parts_and_config_knobs():
    features = candidate_features("quant.int8+lm.spec.swift", {"draft_len": 4, "mode": "tree"})
    assert features["method.part=quant.int8"] == features["method.part=lm.spec.swift"] == 1.0
    assert features["method.n_parts"] == 2.0 and features["cfg.draft_len"] == 4.0
    assert "cfg.mode" not in features  # only numeric knobs become features
    assert candidate_key("m", {}) == "m" and candidate_key("m", {"b": 1, "a": 2}) == 'm{"a":2,"b":1}'


def test_registry_config_envelopes_expose_their_params():
    envelope = {"method": "lm.spec.swift", "version": 1, "params": {"skip_ratio": 0.5, "mode": "x"}}
    assert candidate_features("lm.spec.swift", envelope)["cfg.skip_ratio"] == 0.5
    composite = {"parts": [{"method": "quant.int8", "version": 1, "params": {"bits": 8}}, envelope]}
    features = candidate_features("quant.int8+lm.spec.swift", composite)
    assert features["cfg.quant.int8.bits"] == 8.0 and features["cfg.lm.spec.swift.skip_ratio"] == 0.5
