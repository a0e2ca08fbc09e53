"""Performance tables nobody here made: a long-format CSV, and ASlib scenario directories.

Long CSV: one row per (instance, method) with columns ``instance_id``, ``method``,
``performance``, optionally ``higher_is_better`` (true/false, default false) and any number
of feature columns (numbers, or text that becomes one-hot). Empty cells are missing.

ASlib (Bischl et al., "ASlib: A benchmark library for algorithm selection", 2016): a folder
with description.txt, algorithm_runs.arff, feature_values.arff and cv.arff. Runtime
scenarios are scored by PAR10 (a run that did not finish with status "ok" within the cutoff
costs ten times the cutoff); solution-quality scenarios by their maximize flag. Repetitions
are averaged; missing feature values stay NaN.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from advisor.features import fit_schema, to_matrix
from advisor.table import PerfTable

PAR_FACTOR = 10


def read_arff(path: Path) -> tuple[list[str], list[list[str | None]]]:
    """Attribute names and rows of a dense ARFF file (values as text; '?' is None)."""
    names: list[str] = []
    rows: list[list[str | None]] = []
    in_data = False
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            stripped = line.strip()
            if not stripped or stripped.startswith("%"):
                continue
            lowered = stripped.lower()
            if not in_data and lowered.startswith("@attribute"):
                names.append(
                    next(
                        csv.reader(
                            [stripped[len("@attribute") :].strip()], delimiter=" ", quotechar="'", skipinitialspace=True
                        )
                    )[0]
                )
            elif lowered.startswith("@data"):
                in_data = True
            elif in_data:
                cells = next(csv.reader([stripped], quotechar="'", skipinitialspace=True))
                if len(cells) != len(names):
                    raise ValueError(f"{path.name}: a data row has {len(cells)} values, expected {len(names)}")
                rows.append([None if c.strip() == "?" else c.strip() for c in cells])
    if not names:
        raise ValueError(f"{path.name}: no @attribute lines")
    return names, rows


def read_description(path: Path) -> dict[str, object]:
    """The flat YAML subset ASlib uses: ``key: value``, ``key: [a, b]`` or ``key:`` then ``- item`` lines."""
    description: dict[str, object] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.lstrip().startswith("- ") and current is not None:
            existing = description.get(current)
            items = existing if isinstance(existing, list) else []
            description[current] = items + [line.strip()[2:].strip()]
            continue
        key, _, value = line.partition(":")
        current, value = key.strip(), value.strip()
        if value.startswith("[") and value.endswith("]"):
            description[current] = [v.strip() for v in value[1:-1].split(",") if v.strip()]
        else:
            description[current] = value
    return description


def _first(value) -> str:
    return value[0] if isinstance(value, list) else str(value)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _present(value: str | None, what: str) -> str:
    """An ARFF value the scenario format requires ('?' is missing)."""
    if value is None:
        raise ValueError(f"{what} is missing ('?')")
    return value


def _build(
    name: str,
    instances: list[str],
    features: dict[str, dict],
    methods: list[str],
    cells: dict[tuple[str, str], list[float]],
    measure: str,
    higher_is_better: bool,
    folds: dict[str, int] | None,
) -> PerfTable:
    schema = fit_schema(features.get(i, {}) for i in instances)
    method_schema = fit_schema({"method": m} for m in methods)
    values = np.full((len(instances), len(methods)), np.nan)
    t_index, m_index = {t: i for i, t in enumerate(instances)}, {m: j for j, m in enumerate(methods)}
    for (instance, method), figures in cells.items():
        values[t_index[instance], m_index[method]] = float(np.mean(figures))
    keep = ~np.isnan(values).all(axis=1)  # an instance without any run cannot be scored
    kept = [t for t, k in zip(instances, keep, strict=True) if k]
    return PerfTable(
        name=name,
        tasks=tuple(kept),
        task_x=to_matrix((features.get(i, {}) for i in kept), schema),
        feature_names=tuple(schema.columns),
        candidates=tuple(methods),
        cand_x=to_matrix(({"method": m} for m in methods), method_schema),
        cand_feature_names=tuple(method_schema.columns),
        values=values[keep],
        measure=measure,
        higher_is_better=higher_is_better,
        groups={"random": np.array(kept)},
        folds=None if folds is None else np.array([folds.get(t, -1) for t in kept]),
    )


def load_aslib(directory: Path) -> PerfTable:
    description = read_description(directory / "description.txt")
    measure_name = _first(description.get("performance_measures", "runtime"))
    maximize = _first(description.get("maximize", "false")).lower() == "true"
    is_runtime = _first(description.get("performance_type", "runtime")).lower() == "runtime"
    cutoff = _number(_first(description.get("algorithm_cutoff_time", "?")))
    if is_runtime and cutoff is None:
        raise ValueError(f"{directory.name}: a runtime scenario needs algorithm_cutoff_time")

    names, rows = read_arff(directory / "algorithm_runs.arff")
    col = {n.lower(): i for i, n in enumerate(names)}
    perf_col = col.get(measure_name.lower())
    if perf_col is None:
        raise ValueError(f"{directory.name}: algorithm_runs.arff has no column {measure_name!r}")
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    methods: set[str] = set()
    limit = math.inf if cutoff is None else cutoff  # read only for runtime scenarios, which have one
    for row in rows:
        where = f"{directory.name}: algorithm_runs.arff"
        instance = _present(row[col["instance_id"]], f"{where}: instance_id")
        method = _present(row[col["algorithm"]], f"{where}: algorithm")
        status = (row[col["runstatus"]] or "").lower() if "runstatus" in col else "ok"
        value = _number(row[perf_col])
        methods.add(method)
        if is_runtime:
            if status == "ok" and value is not None and value < limit:
                cells[(instance, method)].append(value)
            else:
                cells[(instance, method)].append(PAR_FACTOR * limit)
        elif value is not None and status in ("ok", ""):
            cells[(instance, method)].append(value)

    feature_names, feature_rows = read_arff(directory / "feature_values.arff")
    skip = {"instance_id", "repetition"}
    features: dict[str, dict] = {}
    for row in feature_rows:
        instance = _present(row[0], f"{directory.name}: feature_values.arff: instance_id")
        features[instance] = {
            f"f.{n}": _number(v) for n, v in zip(feature_names, row, strict=True) if n.lower() not in skip
        }

    folds = None
    if (directory / "cv.arff").exists():
        cv_names, cv_rows = read_arff(directory / "cv.arff")
        fold_col = [n.lower() for n in cv_names].index("fold")
        folds = {
            _present(row[0], "cv.arff: instance_id"): int(float(_present(row[fold_col], "cv.arff: fold")))
            for row in cv_rows
        }
    instances = sorted({i for i, _ in cells})
    measure = "cost" if is_runtime else "score"
    return _build(
        f"aslib:{directory.name}",
        instances,
        features,
        sorted(methods),
        cells,
        measure,
        maximize if not is_runtime else False,
        folds,
    )


def load_long_csv(path: Path) -> PerfTable:
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    features: dict[str, dict] = {}
    directions: set[bool] = set()
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"instance_id", "method", "performance"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path.name}: missing columns {sorted(missing)}")
        for row in reader:
            instance, method = row.pop("instance_id"), row.pop("method")
            value = _number(row.pop("performance"))
            directions.add((row.pop("higher_is_better", "") or "false").strip().lower() in ("true", "1", "yes"))
            if value is not None and math.isfinite(value):
                cells[(instance, method)].append(value)
            parsed = {f"f.{k}": (_number(v) if _number(v) is not None else (v or None)) for k, v in row.items()}
            features.setdefault(instance, parsed)
    if len(directions) > 1:
        raise ValueError(f"{path.name}: higher_is_better must be the same on every row")
    higher = directions.pop() if directions else False
    values = [v for figures in cells.values() for v in figures]
    measure = "cost" if not higher and values and min(values) > 0 else "score"
    return _build(
        f"csv:{path.stem}",
        sorted({i for i, _ in cells}),
        features,
        sorted({m for _, m in cells}),
        cells,
        measure,
        higher,
        None,
    )
