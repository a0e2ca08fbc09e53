"""Early stopping by learning-curve extrapolation (Hestness et al., "Deep learning scaling is
predictable, empirically", 2017: held-out error follows a power law plus an irreducible term).

The curve is fitted as metric ≈ a + b · x^(−c) where x is the learning-rate area (the sum of
the learning-rate factors applied so far) rather than the step: under a decaying schedule the
late steps move the weights less, and the area is what the schedule still has to give (the
step count would credit the last, nearly frozen steps of a cosine as much as the first). The fit
is a grid over c with a non-negative linear least-squares fit of (a, b) per c — no optimiser, no
dependency, the same answer on every machine. A run stops when, past `min_fraction` of its
budget, the curve predicts a final value worse than the target by more than `margin`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

EXPONENTS = tuple(0.05 * k for k in range(1, 41))  # c in (0, 2]


@dataclass(frozen=True)
class Fit:
    a: float
    b: float
    c: float
    rmse: float

    def predict(self, x: float) -> float:
        return self.a + self.b * x ** (-self.c)


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """The least-squares a + b·x^(−c) with b ≥ 0 over the exponent grid; None with under 3 points."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and math.isfinite(y)]
    if len(points) < 3:
        return None
    best: Fit | None = None
    for c in EXPONENTS:
        us = [x ** (-c) for x, _ in points]
        vs = [y for _, y in points]
        mean_u, mean_v = sum(us) / len(us), sum(vs) / len(vs)
        spread = sum((u - mean_u) ** 2 for u in us)
        b = max(0.0, sum((u - mean_u) * (v - mean_v) for u, v in zip(us, vs, strict=True)) / spread) if spread else 0.0
        a = mean_v - b * mean_u
        rmse = math.sqrt(sum((a + b * u - v) ** 2 for u, v in zip(us, vs, strict=True)) / len(us))
        if best is None or rmse < best.rmse:
            best = Fit(a, b, c, rmse)
    return best


@dataclass(frozen=True)
class StopRule:
    min_fraction: float = 0.4  # of the step budget, before any prediction counts
    min_points: int = 4  # evaluations since the last change of model (a growth stage)
    margin: float = 0.05  # relative: predicted final must exceed target · (1 + margin) to stop

    def predicted(self, xs: Sequence[float], ys: Sequence[float], x_end: float) -> float | None:
        fit = fit_power_law(xs, ys)
        return None if fit is None else fit.predict(x_end)

    def says_stop(self, predicted: float | None, target: float, fraction: float, points: int) -> bool:
        if predicted is None or fraction < self.min_fraction or points < self.min_points:
            return False
        return predicted > target * (1 + self.margin) + 1e-12


def error_summary(audits: Sequence[dict]) -> dict:
    """The extrapolation's measured error on runs allowed to finish: each audit holds the
    predictions made along the run, the final metric and whether the target was reached."""
    errors, stops, false_stops, missed_stops = [], 0, 0, 0
    for audit in audits:
        final = audit["final"]
        for point in audit["predictions"]:
            errors.append(abs(point["predicted"] - final) / max(abs(final), 1e-9))
        would_stop = audit.get("would_stop_at") is not None
        stops += would_stop
        false_stops += would_stop and audit["reached"]
        missed_stops += (not would_stop) and not audit["reached"]
    return {
        "audited_runs": len(audits),
        "predictions": len(errors),
        "median_relative_error": sorted(errors)[len(errors) // 2] if errors else None,
        "max_relative_error": max(errors) if errors else None,
        "would_stop": stops,
        "false_stops": false_stops,  # would have stopped a run that went on to reach the target
        "missed_stops": missed_stops,  # ran to the end without reaching and the rule never fired
    }
