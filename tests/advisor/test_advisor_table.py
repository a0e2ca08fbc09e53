import math

import numpy as np
import pytest

from advisor.table import objective_value, table_from_records


def test_unavailable_cells_median_of_repeats_and_quality_floor(small_records):
    task = list(small_records[:7])
    pruner = next(r for r in task if r["method_id"] == "prune.struct.adapt_pruner")
    second_node = dict(
        pruner,
        run_id="again",
        speedup=pruner["speedup"] * 3,
        node_id="node-other",
        node={**pruner["node"], "id": "node-other"},
    )
    table = table_from_records(task + [second_node])
    j = table.candidates.index("prune.struct.adapt_pruner")
    assert table.values[0, j] == pytest.approx(np.median([pruner["speedup"], pruner["speedup"] * 3]))
    for record in task:
        column = table.candidates.index(record["method_id"])
        assert math.isnan(table.values[0, column]) == (record["status"] != "ok")
    floored = table_from_records(task, quality_floor=-0.02)
    assert math.isnan(floored.values[0, j])  # the pruner costs ~4 % quality in the generator
    assert floored.values[0, 0] == 1.0 and floored.candidates[0] == "baseline"


def test_objectives_read_the_matching_ratio(small_records):
    record = next(r for r in small_records if r["status"] == "ok" and "int8" in r["method_id"])
    assert objective_value(record, "latency") == record["speedup"]
    assert objective_value(record, "memory") == pytest.approx(record["baseline_peak_mem_mb"] / record["peak_mem_mb"])
    assert objective_value(record, "throughput") == pytest.approx(record["throughput"] / record["baseline_throughput"])
    memory = table_from_records(small_records[:70], objective="memory")
    assert np.nanmax(memory.values[:, memory.candidates.index("quant.int8_dynamic")]) > 2
    with pytest.raises(ValueError, match="objective"):
        objective_value(record, "vibes")


def test_no_records_is_an_error():
    with pytest.raises(ValueError, match="no profile records"):
        table_from_records([])
