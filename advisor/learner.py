"""The meta-learner: gradient-boosted trees on (task features ++ candidate features) rows.

One pooled model over every (task, candidate) pair, rather than one model per method, so
what is learnt about a method's parts and knobs transfers to composites and to methods with
few runs. Objectives: "regression" on utility (log speed-up) — optionally relative to the
task's best, which removes how fast the task is overall from what the trees must learn — or
"lambdarank" grouped by task. Quantile boosters give the prediction interval. Boosters are
kept and saved as LightGBM model text, never pickled.
"""

from __future__ import annotations

import numpy as np

from advisor.table import PerfTable

OBJECTIVES = ("regression", "lambdarank")
RANK_LEVELS = 10  # lambdarank needs integer relevance: per-task scaled utility in 0..RANK_LEVELS


def pair_matrix(task_x: np.ndarray, cand_x: np.ndarray) -> np.ndarray:
    """Row t·m + c holds task t's features followed by candidate c's features."""
    n, m = len(task_x), len(cand_x)
    return np.hstack([np.repeat(task_x, m, axis=0), np.tile(cand_x, (n, 1))])


def relevance_levels(utility: np.ndarray) -> np.ndarray:
    low = np.nanmin(utility, axis=1, keepdims=True)
    span = np.nanmax(utility, axis=1, keepdims=True) - low
    scaled = (utility - low) / np.where(span > 0, span, 1.0)
    return np.rint(np.nan_to_num(scaled) * RANK_LEVELS).astype(int)


class MetaLearner:
    def __init__(
        self,
        objective: str = "regression",
        relative: bool = True,
        target: str | None = None,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 10,
        extra_trees: bool = True,
        feature_fraction: float = 0.5,
        quantiles: tuple[float, ...] = (),
        risk_aversion: float = 0.0,
        with_point: bool = True,
        quantile_rounds: int | None = None,
        seed: int = 0,
    ):
        self.objective = objective
        self.relative = relative
        self.target = target  # None: the table's utility; else a name in table.extras
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.extra_trees = extra_trees
        self.feature_fraction = feature_fraction
        self.quantiles = quantiles
        # > 0: select by point − risk_aversion × (interval width), so a candidate the model is
        # unsure about (e.g. a composite never measured on a model of this size) needs a clearly
        # better prediction to be chosen. Needs two quantiles.
        self.risk_aversion = risk_aversion
        self.with_point = with_point  # False: only the quantile models (interval calibration needs no more)
        self.quantile_rounds = quantile_rounds  # None: as many as the point model
        self.seed = seed

    def _params(self, objective: str, **extra) -> dict:
        # One thread and deterministic mode: retraining on the same profiles gives the same model text.
        # Extremely randomised split points and feature subsampling: hardware and model features
        # take few distinct values, and exact thresholds between them extrapolate badly to an
        # unseen machine (measured: SBS→VBS gap closed on unseen hardware 0.81 → 0.99, docs/advisor.md).
        # Row-wise histograms: each bin still sums its rows' gradients in row order, so the trees are
        # the ones column-wise histograms give (checked on the seed grid and LCDB), ~20 % faster here.
        return {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "extra_trees": self.extra_trees,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "seed": self.seed,
            "num_threads": 1,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            **extra,
        }

    def _target(self, table: PerfTable) -> np.ndarray:
        values = table.utility if self.target is None else table.extras[self.target]
        if self.relative:
            values = values - np.nanmax(values, axis=1, keepdims=True)
        return values

    def fit(self, table: PerfTable) -> MetaLearner:
        # keep_training_booster below: lgb.train would otherwise copy each booster through its model text.
        import lightgbm as lgb

        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} is not one of {OBJECTIVES}")
        target = self._target(table)
        observed = (~np.isnan(target)).ravel()
        if not observed.any():
            raise ValueError("no observed values to learn from")
        features = pair_matrix(table.task_x, table.cand_x)[observed]
        names = [_safe(n) for n in (*table.feature_names, *table.cand_feature_names)]
        self.feature_names_ = tuple(names)
        self.boosters_: dict[str, lgb.Booster] = {}
        if self.objective == "lambdarank":
            labels = relevance_levels(target).ravel()[observed]
            groups = (~np.isnan(target)).sum(axis=1)
            data = lgb.Dataset(features, labels, group=groups[groups > 0], feature_name=names, free_raw_data=False)
            params = self._params("lambdarank", label_gain=list(range(RANK_LEVELS + 1)), eval_at=[1, 3])
            self.boosters_["point"] = lgb.train(
                params, data, num_boost_round=self.n_estimators, keep_training_booster=True
            )
            return self
        weight = None if table.weights is None else table.weights.ravel()[observed]  # noisy cells count less
        data = lgb.Dataset(features, target.ravel()[observed], weight=weight, feature_name=names, free_raw_data=False)
        if self.with_point:
            self.boosters_["point"] = lgb.train(
                self._params("regression"), data, num_boost_round=self.n_estimators, keep_training_booster=True
            )
        for q in self.quantiles:
            self.boosters_[f"q{q:g}"] = lgb.train(
                self._params("quantile", alpha=q),
                data,
                num_boost_round=self.quantile_rounds or self.n_estimators,
                keep_training_booster=True,
            )
        return self

    def predict(self, task_x: np.ndarray, cand_x: np.ndarray, which: str = "point") -> np.ndarray:
        rows = pair_matrix(task_x, cand_x)
        return np.asarray(self.boosters_[which].predict(rows, num_threads=1)).reshape(len(task_x), len(cand_x))

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        """Per-feature SHAP contributions of the point model for pair rows: n_rows × (features + bias).

        About 25 ms per row for 600 trees, so callers explain only the rows they show.
        """
        return np.asarray(self.boosters_["point"].predict(rows, pred_contrib=True, num_threads=1))

    def scores(self, table: PerfTable) -> np.ndarray:
        point = self.predict(table.task_x, table.cand_x)
        if not self.risk_aversion:
            return point
        low, high = (
            self.predict(table.task_x, table.cand_x, f"q{q:g}") for q in (min(self.quantiles), max(self.quantiles))
        )
        return point - self.risk_aversion * np.abs(high - low)

    def model_texts(self) -> dict[str, str]:
        return {name: booster.model_to_string() for name, booster in self.boosters_.items()}

    @classmethod
    def from_texts(cls, texts: dict[str, str], **params) -> MetaLearner:
        import lightgbm as lgb

        learner = cls(**params)
        learner.boosters_ = {name: lgb.Booster(model_str=text) for name, text in texts.items()}
        learner.feature_names_ = tuple(learner.boosters_["point"].feature_name())
        return learner


def _safe(name: str) -> str:
    # LightGBM rejects some JSON special characters in feature names.
    return "".join(c if c.isalnum() or c in "._=-+" else "_" for c in name)
