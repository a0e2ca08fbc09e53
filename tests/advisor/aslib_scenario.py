"""Writes a small ASlib scenario with a known answer (shared by the external-table and CLI tests)."""

import numpy as np

CUTOFF = 100.0


def write_scenario(directory, n=60, maximize=None):
    """Runtime scenario: algorithm 'fast_small' wins when f1 < 0.5, 'fast_large' otherwise; 'slow' never."""
    rng = np.random.default_rng(0)
    directory.mkdir()
    runtime = maximize is None
    (directory / "description.txt").write_text(
        "scenario_id: mini\nperformance_measures:\n  - "
        + ("runtime" if runtime else "score")
        + f"\nmaximize:\n  - {'false' if runtime else str(maximize).lower()}\n"
        f"performance_type:\n  - {'runtime' if runtime else 'solution_quality'}\n"
        f"algorithm_cutoff_time: {CUTOFF}\nalgorithms_deterministic: [fast_small, fast_large, slow]\n"
        "features_deterministic: [f1, f2]\nnumber_of_feature_steps: 1\n"
    )
    runs = [
        "@RELATION mini",
        "@ATTRIBUTE instance_id STRING",
        "@ATTRIBUTE repetition NUMERIC",
        "@ATTRIBUTE algorithm STRING",
        f"@ATTRIBUTE {'runtime' if runtime else 'score'} NUMERIC",
        "@ATTRIBUTE runstatus {ok, timeout, crash}",
        "@DATA",
    ]
    features = [
        "@RELATION mini_features",
        "@ATTRIBUTE instance_id STRING",
        "@ATTRIBUTE repetition NUMERIC",
        "@ATTRIBUTE f1 NUMERIC",
        "@ATTRIBUTE f2 NUMERIC",
        "@DATA",
    ]
    cv = [
        "@RELATION mini_cv",
        "@ATTRIBUTE instance_id STRING",
        "@ATTRIBUTE repetition NUMERIC",
        "@ATTRIBUTE fold NUMERIC",
        "@DATA",
    ]
    for i in range(n):
        f1 = rng.random()
        small, large = (5.0, 60.0) if f1 < 0.5 else (70.0, 8.0)
        slow_status = "timeout" if i % 2 else "crash"
        rows = [("fast_small", small, "ok"), ("fast_large", large, "ok"), ("slow", CUTOFF, slow_status)]
        for algorithm, value, status in rows:
            runs.append(f"'inst {i}',1,{algorithm},{value if runtime else CUTOFF - value},{status}")
        f2 = "?" if i % 5 == 0 else f"{rng.random():.3f}"  # missing feature values are part of the format
        features.append(f"'inst {i}',1,{f1:.4f},{f2}")
        cv.append(f"'inst {i}',1,{i % 3 + 1}")
    for name, lines in (("algorithm_runs", runs), ("feature_values", features), ("cv", cv)):
        (directory / f"{name}.arff").write_text("% written by the test\n" + "\n".join(lines) + "\n")
    return directory
