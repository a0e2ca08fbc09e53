"""Shared, read-only fixtures: one small generated profile set and one advisor trained on it."""

from __future__ import annotations

import pytest

from advisor.model import fit_advisor
from advisor.synthetic import synthetic_records


@pytest.fixture(scope="session")
def small_records() -> list[dict]:
    return list(synthetic_records(n_models=10, n_workloads=5, n_hardware=4, seed=1))


@pytest.fixture(scope="session")
def small_advisor(small_records):
    model, _table = fit_advisor(small_records, size="small")
    return model
