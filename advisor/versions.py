"""Trained advisors as AdvisorVersion rows: train, gate, store artefacts, keep exactly one active.

Artefacts live in ``<data_dir>/advisors/<version id>/`` (manifest JSON + LightGBM model text +
``snapshot.json``, the run ids it was trained on). Training is deterministic (single-threaded
LightGBM, fixed seeds, records in a fixed order), so retraining on the same stored profiles
reproduces the same model files, and a version's snapshot says which profiles those were.

A new version is activated only if it is not worse than the active one **on the same folds**
(advisor.gate): both are cross-validated on today's profiles, each trained on its own snapshot
within every training fold, and compared by the deployed selector's mean regret on the
held-out models. An admin may force it; the comparison is stored with the version either way.
Every activation is stamped in the version's params, so ``rollback`` returns to the one before.
Any two versions can be compared the same way later (``compare_versions``), on the profiles stored
then; the result is kept in the newer version's evaluation under ``same_folds``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlmodel import Session, select

from advisor.evaluate import PLAIN, SPLITS, evaluate_table
from advisor.gate import compare_on_same_folds, compare_snapshots
from advisor.intervals import calibration_folds, coverage
from advisor.model import QUANTILE_ROUNDS, AdvisorModel, fit_advisor
from advisor.table import PerfTable, table_from_records
from profiles.models import AdvisorVersion, utcnow
from profiles.settings import get_settings
from profiles.transfer import iter_records

log = logging.getLogger(__name__)
LEARNER_NAME = "lightgbm-pooled"
SNAPSHOT = "snapshot.json"
ACTIVATE_CHOICES = ("if-not-worse", "force", "never")
CALIBRATION_FOLDS = 3  # for the splits the stored evaluation did not cover
MAX_JUDGED_TASKS = 1500


def train_advisor(
    session: Session,
    *,
    size: str = "full",
    seed: int = 0,
    evaluate_splits: tuple[str, ...] = ("model",),
    seeds: int = 1,
    activate: str | bool = "if-not-worse",
    artefact_root: Path | None = None,
    text_embedding: bool = False,
    records: list[dict] | None = None,
    selectors: tuple[str, ...] | None = (PLAIN, "knn", "isac"),
    on_stage: Callable[[str], None] = lambda stage: None,
) -> AdvisorVersion:
    """Trains on every stored profile, evaluates it, gates it against the active version and stores it.

    ``activate``: "if-not-worse" (default; True means the same), "force", or "never" (False).
    A caller that passes ``records`` (read in an earlier, short transaction) keeps ``session``
    idle until the version is written, so a SQLite store is not locked for the whole training.
    ``selectors``: which to evaluate beside the SBS and the oracle (default: the deployed learner, whose
    scores a version carries, and two cheap classic selectors, nearest neighbours and ISAC, so the
    Advisor page sets it against more than the SBS; None: every one, as ``advisor evaluate`` does). The evaluation,
    the gate and the interval calibration judge at most MAX_JUDGED_TASKS tasks (a fixed sample, the
    same for both versions the gate compares), so a retrain on 100 k records stays within a minute
    or two; the advisor itself is fitted on every record.
    ``on_stage`` hears each stage's name as it starts (the UI shows it beside the elapsed time).
    """
    mode = {True: "if-not-worse", False: "never"}.get(activate, activate)  # type: ignore[arg-type]
    if mode not in ACTIVATE_CHOICES:
        raise ValueError(f"activate must be one of {', '.join(ACTIVATE_CHOICES)}, not {activate!r}")
    records = sorted(iter_records(session) if records is None else records, key=lambda r: r["run_id"])
    if not records:
        raise ValueError("no stored profiles to train on; import or measure some first")
    on_stage(f"fitting on {len(records)} profiles")
    model, table = fit_advisor(records, size=size, seed=seed, text_embedding=text_embedding)
    evaluation: dict = {}
    judged = sampled(table, MAX_JUDGED_TASKS)
    if evaluate_splits:
        on_stage("evaluating on held-out models")
        usable = tuple(s for s in evaluate_splits if len(set(judged.groups[s])) >= 2)
        evaluation = evaluate_table(judged, splits=usable, seeds=seeds, size=size, selectors=selectors)
        evaluation["judged_tasks"] = len(judged.tasks)
    current = _active_snapshot(session)
    if current is not None and mode != "never":
        on_stage("comparing with the active version on the same folds")
        evaluation["gate"] = compare_on_same_folds(
            judged, records, current[1], current[0], size=size, seeds=max(1, seeds)
        )
    on_stage("calibrating the intervals")
    model = replace(model, facts={**model.facts, "calibration": _calibration(judged, size, evaluation)})
    on_stage("storing")
    version_id = f"adv-{utcnow():%Y%m%dT%H%M%S%f}-{model.params['data_hash'][:10]}"
    root = artefact_root or get_settings().data_dir / "advisors"
    model.save(root / version_id)
    (root / version_id / SNAPSHOT).write_text(json.dumps([r["run_id"] for r in records]))
    version = AdvisorVersion(
        id=version_id,
        n_profiles=len(records),
        feature_schema_version=model.task_schema.version,
        learner=LEARNER_NAME,
        artefact_path=str(root / version_id),
        params=dict(model.params),
        evaluation=evaluation,
        active=False,
    )
    session.add(version)
    session.flush()
    gate = evaluation.get("gate")
    if mode == "force" or (mode == "if-not-worse" and (gate is None or gate["not_worse"])):
        activate_version(session, version_id)
    elif mode == "if-not-worse" and gate is not None:
        log.warning("advisor %s not activated: %s (an admin may force it)", version_id, gate["reason"])
    log.info("trained advisor %s on %d profiles (active: %s)", version_id, len(records), version.active)
    return version


def sampled(table: PerfTable, limit: int) -> PerfTable:
    """At most ``limit`` tasks, drawn with a fixed seed, in their table order."""
    if len(table.tasks) <= limit:
        return table
    return table.subset(np.sort(np.random.default_rng(0).choice(len(table.tasks), limit, replace=False)))


def _calibration(table, size: str, evaluation: dict) -> dict[str, dict[str, float]]:
    """figure → regime (the split a question resembles) → conformal offset, from out-of-fold residuals."""
    offsets: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        if len(set(table.groups[split].tolist())) < 2:
            continue
        found = evaluation.get("splits", {}).get(split, {}).get("_coverage")
        if found is None:
            found = coverage(table, calibration_folds(table, split, 0, CALIBRATION_FOLDS), QUANTILE_ROUNDS[size])
        for figure, figures in found.items():
            offsets.setdefault(figure, {})[split] = figures["offset"]
    return offsets


def _active_snapshot(session: Session) -> tuple[str, set[str] | None] | None:
    """The active version's id and snapshot, read without opening a transaction in an idle session.

    On SQLite every transaction takes the write lock (BEGIN IMMEDIATE): a session left open through
    the gate's cross-validation would lock every writer out for its whole length.
    """

    def read(reader: Session):
        current = reader.exec(select(AdvisorVersion).where(AdvisorVersion.active)).first()
        return None if current is None else (current.id, _snapshot(current))

    if session.in_transaction():
        return read(session)
    with Session(session.get_bind()) as peek:
        return read(peek)


def compare_versions(records: list[dict], first: AdvisorVersion, second: AdvisorVersion, seeds: int = 1) -> dict:
    """Two stored versions on the same folds of ``records`` (the profiles stored now), newer against older.

    Both are fitted with the newer one's learner size, as the gate fits a retrain and the version it
    would replace. Pure computation: the caller reads the records and versions in one short
    transaction and keeps the result (``keep_comparison``) in another, so no store lock is held
    through the cross-validation.
    """
    if first.id == second.id:
        raise ValueError("a version compared with itself: pick two different versions")
    newer, older = sorted((first, second), key=lambda v: v.created_at, reverse=True)
    size = (newer.params or {}).get("size", "full")
    ordered = sorted(records, key=lambda r: r["run_id"])
    judged = sampled(table_from_records(ordered, name="stored"), MAX_JUDGED_TASKS)
    result = compare_snapshots(
        judged, ordered, (newer.id, _snapshot(newer)), (older.id, _snapshot(older)), size=size, seeds=seeds
    )
    return {**result, "scored_at": utcnow().isoformat()}


def keep_comparison(session: Session, comparison: dict) -> None:
    """Stores a comparison in the newer version's evaluation, replacing an earlier one of the same pair."""
    newer = session.get(AdvisorVersion, comparison["newer_id"])
    if newer is None:
        raise KeyError(f"no advisor version {comparison['newer_id']!r}")
    evaluation = dict(newer.evaluation or {})
    # A new dict, so the JSON column is written (SQLAlchemy does not see in-place changes).
    evaluation["same_folds"] = {**evaluation.get("same_folds", {}), comparison["older_id"]: comparison}
    newer.evaluation = evaluation
    session.add(newer)
    session.flush()


def _snapshot(version: AdvisorVersion) -> set[str] | None:
    path = Path(version.artefact_path) / SNAPSHOT
    return set(json.loads(path.read_text())) if path.exists() else None


def activate_version(session: Session, version_id: str) -> AdvisorVersion:
    """Makes one version the active one; in one transaction, so readers see the old or the new one."""
    target = session.get(AdvisorVersion, version_id)
    if target is None:
        raise KeyError(f"no advisor version {version_id!r}")
    for version in session.exec(select(AdvisorVersion).where(AdvisorVersion.active)):
        version.active = False
        session.add(version)
    session.flush()
    target.active = True
    # A new dict, so the JSON column is written (SQLAlchemy does not see in-place changes).
    target.params = {**target.params, "activated_at": [*target.params.get("activated_at", []), utcnow().isoformat()]}
    session.add(target)
    session.flush()
    return target


def rollback(session: Session) -> AdvisorVersion:
    """Re-activates the version that was active before the current one."""
    versions = list(session.exec(select(AdvisorVersion)))
    current = next((v for v in versions if v.active), None)
    earlier = [
        (max(v.params.get("activated_at") or [""]), v)
        for v in versions
        if v is not current and v.params.get("activated_at")
    ]
    if not earlier:
        raise KeyError("no earlier active advisor version to roll back to")
    return activate_version(session, max(earlier, key=lambda pair: pair[0])[1].id)


def active_advisor(session: Session) -> tuple[AdvisorVersion, AdvisorModel] | None:
    version = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).first()
    if version is None:
        return None
    return version, _load(version.id, version.artefact_path)


def scores(version: AdvisorVersion) -> dict:
    """The deployed learner's figures per split, and the gate's comparison, for version lists and the UI."""
    evaluation = version.evaluation or {}
    out: dict = {"splits": {}}
    for split, results in evaluation.get("splits", {}).items():
        learner = results.get("lightgbm_plain") or results.get("lightgbm") or {}  # the deployed learner
        out["splits"][split] = {m: learner[m]["mean"] for m in ("gap_closed", "top1", "mean_regret") if m in learner}
    if "gate" in evaluation:
        out["gate"] = evaluation["gate"]
    return out


@lru_cache(maxsize=4)
def _load(version_id: str, path: str) -> AdvisorModel:
    # Keyed by id and path: a version's artefacts never change once written.
    return AdvisorModel.load(Path(path))
