"""The range guard answers with the training SBS exactly where a task's model size is out of range."""

import dataclasses

import numpy as np

from advisor.baselines import single_best_scores
from advisor.guard import RangeGuard
from advisor.learner import MetaLearner
from advisor.synthetic import synthetic_records
from advisor.table import table_from_records


def _table():
    return table_from_records(synthetic_records(n_models=8, n_workloads=3, n_hardware=2, seed=4))


def test_out_of_range_tasks_get_the_training_single_best_and_the_rest_the_learner():
    table = _table()
    params = table.task_x[:, table.feature_names.index("model.params")]
    middle = (params > np.min(params) + 0.6) & (params < np.max(params) - 0.6)
    train = table.subset(np.flatnonzero(middle))
    guard = RangeGuard(MetaLearner(n_estimators=30, learning_rate=0.1)).fit(train)
    plain = MetaLearner(n_estimators=30, learning_rate=0.1).fit(train)
    outside = guard.outside(table)
    low, high = params[middle].min(), params[middle].max()
    assert outside.tolist() == ((params < low - 0.5) | (params > high + 0.5)).tolist() and outside.any()
    scores = guard.scores(table)
    assert np.allclose(scores[outside], single_best_scores(train))
    assert np.allclose(scores[~outside], plain.scores(table)[~outside])


def test_missing_sizes_and_tables_without_the_feature_are_never_guarded():
    table = _table()
    column = table.feature_names.index("model.params")
    unknown = table.task_x.copy()
    unknown[:, column] = np.nan
    guard = RangeGuard(MetaLearner(n_estimators=20)).fit(table.subset(np.arange(0, len(table.tasks), 3)))
    assert not guard.outside(dataclasses.replace(table, task_x=unknown)).any()
    keep = [i for i in range(len(table.feature_names)) if i != column]
    anonymous = dataclasses.replace(
        table, task_x=table.task_x[:, keep], feature_names=tuple(table.feature_names[i] for i in keep)
    )
    blind = RangeGuard(MetaLearner(n_estimators=20)).fit(anonymous)
    assert blind.support_ == {} and not blind.outside(anonymous).any()


def test_a_model_family_no_training_task_had_is_guarded():
    records = list(synthetic_records(n_models=6, n_workloads=2, n_hardware=2, seed=6))
    first = records[0]["model_id"]
    encoder = [r | {"model": r["model"] | {"family": "encoder"}} for r in records if r["model_id"] == first]
    table = table_from_records([r for r in records if r["model_id"] != first] + encoder)
    families = table.groups["model"] == first
    guard = RangeGuard(MetaLearner(n_estimators=20), margin=100.0).fit(table.subset(np.flatnonzero(~families)))
    assert guard.outside(table).tolist() == families.tolist()
    assert RangeGuard(MetaLearner(n_estimators=20), margin=100.0).fit(table).outside(table).sum() == 0


def test_ranges_are_per_workload_kind_and_an_unseen_kind_is_guarded():
    records = list(synthetic_records(n_models=6, n_workloads=2, n_hardware=2, seed=7))
    smallest = min(records, key=lambda r: r["model"]["params"])["model_id"]
    workload = records[0]["workload_id"]
    # The first workload becomes a serving stream, measured on every model but the smallest.
    streamed = [
        r | {"workload": r["workload"] | {"kind": "lm-stream"}} if r["workload_id"] == workload else r for r in records
    ]
    table = table_from_records(streamed)
    is_stream = np.array([t.split("|")[1] == workload for t in table.tasks])
    small = table.groups["model"] == smallest
    train = table.subset(np.flatnonzero(~(is_stream & small)))
    guard = RangeGuard(MetaLearner(n_estimators=20), margin=0.0).fit(train)
    outside = guard.outside(table)
    assert outside[is_stream & small].all()  # no stream was measured on a model this small
    assert not outside[~is_stream].any()  # the other kind saw every size
    generate_only = RangeGuard(MetaLearner(n_estimators=20)).fit(table.subset(np.flatnonzero(~is_stream)))
    assert generate_only.outside(table).tolist() == is_stream.tolist()  # a kind never trained on
