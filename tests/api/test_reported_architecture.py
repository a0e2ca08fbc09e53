"""A worker may report the architecture of a zoo model it measured first: any architecture some
executor family loads (vision and diffusion ones included), nothing else."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import executors.families
from api.reports import ReportedArchitecture


def every_architecture() -> list[str]:
    return sorted(a for family in executors.families.families_catalogue() for a in family["architectures"])


def test_every_loaded_architecture_may_be_reported():
    architectures = every_architecture()
    assert "decoder-lm" in architectures and len(architectures) > 2
    for architecture in architectures:
        assert ReportedArchitecture.model_validate({"family": architecture, "params": 10}).family == architecture


def test_an_architecture_no_family_loads_is_refused_with_the_known_ones():
    with pytest.raises(ValidationError) as refused:
        ReportedArchitecture.model_validate({"family": "quantum-lstm"})
    assert "quantum-lstm" in str(refused.value) and "decoder-lm" in str(refused.value)
