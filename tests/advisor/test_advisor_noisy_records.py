"""The advisor's table down-weights records the protocol flagged noisy and ignores uninformative quality."""

from __future__ import annotations

import math

from advisor.features import candidate_key, task_key
from advisor.table import NOISY_WEIGHT, table_from_records


def _record(factory, i, *, speedup, noisy=False, informative=True, node_threads=2):
    record = factory(i, threads=node_threads)
    record.update(speedup=speedup, quality_delta=-0.5)
    record["metrics"] = {**record["metrics"], "noisy": noisy, "quality_informative": informative}
    return record


def cell_of(table, record) -> tuple[int, int]:
    return table.tasks.index(task_key(record)), table.candidates.index(
        candidate_key(record["method_id"], record["config"])
    )


def test_a_cell_with_clean_records_ignores_its_noisy_ones_and_noisy_only_cells_weigh_less(record_factory):
    clean = _record(record_factory, 0, speedup=1.5)
    noisy_twin = {**_record(record_factory, 0, speedup=9.0, noisy=True), "run_id": "twin"}
    noisy_only = _record(record_factory, 1, speedup=2.0, noisy=True)
    table = table_from_records([clean, noisy_twin, noisy_only])
    (i, j), (k, m) = (cell_of(table, r) for r in (clean, noisy_only))
    assert table.values[i, j] == 1.5 and table.weights[i, j] == 1.0
    assert table.values[k, m] == 2.0 and table.weights[k, m] == NOISY_WEIGHT


def test_quality_of_an_uninformative_record_is_unknown_not_no_loss(record_factory):
    record = _record(record_factory, 0, speedup=1.2, informative=False)
    table = table_from_records([record])
    j = table.candidates.index(candidate_key(record["method_id"], record["config"]))
    assert math.isnan(table.extras["quality_delta"][0, j]) and table.values[0, j] == 1.2
