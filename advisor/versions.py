"""Trained advisors as AdvisorVersion rows: train, store artefacts, keep exactly one active.

Artefacts live in ``<data_dir>/advisors/<version id>/`` (manifest JSON + LightGBM model text).
Training is deterministic (single-threaded LightGBM, fixed seeds, records in a fixed order),
so retraining on the same stored profiles reproduces the same model files.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from sqlmodel import Session, select

from advisor.evaluate import evaluate_table
from advisor.model import AdvisorModel, fit_advisor
from profiles.models import AdvisorVersion, utcnow
from profiles.settings import get_settings
from profiles.transfer import iter_records

log = logging.getLogger(__name__)
LEARNER_NAME = "lightgbm-pooled"


def train_advisor(
    session: Session,
    *,
    size: str = "full",
    seed: int = 0,
    evaluate_splits: tuple[str, ...] = ("model",),
    seeds: int = 1,
    activate: bool = True,
    artefact_root: Path | None = None,
    text_embedding: bool = False,
    records: list[dict] | None = None,
) -> AdvisorVersion:
    """Trains on every stored profile, evaluates against the baselines, stores and (by default) activates it.

    A caller that passes ``records`` (read in an earlier, short transaction) keeps ``session``
    idle until the version is written, so a SQLite store is not locked for the whole training.
    """
    records = sorted(iter_records(session) if records is None else records, key=lambda r: r["run_id"])
    if not records:
        raise ValueError("no stored profiles to train on; import or measure some first")
    model, table = fit_advisor(records, size=size, seed=seed, text_embedding=text_embedding)
    evaluation = {}
    if evaluate_splits:
        usable = tuple(s for s in evaluate_splits if len(set(table.groups[s])) >= 2)
        evaluation = evaluate_table(table, splits=usable, seeds=seeds, size=size)
    version_id = f"adv-{utcnow():%Y%m%dT%H%M%S%f}-{model.params['data_hash'][:10]}"
    root = artefact_root or get_settings().data_dir / "advisors"
    model.save(root / version_id)
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
    if activate:
        activate_version(session, version_id)
    log.info("trained advisor %s on %d profiles", version_id, len(records))
    return version


def activate_version(session: Session, version_id: str) -> AdvisorVersion:
    target = session.get(AdvisorVersion, version_id)
    if target is None:
        raise KeyError(f"no advisor version {version_id!r}")
    for version in session.exec(select(AdvisorVersion).where(AdvisorVersion.active)):
        version.active = False
        session.add(version)
    session.flush()
    target.active = True
    session.add(target)
    session.flush()
    return target


def active_advisor(session: Session) -> tuple[AdvisorVersion, AdvisorModel] | None:
    version = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).first()
    if version is None:
        return None
    return version, _load(version.id, version.artefact_path)


@lru_cache(maxsize=4)
def _load(version_id: str, path: str) -> AdvisorModel:
    # Keyed by id and path: a version's artefacts never change once written.
    return AdvisorModel.load(Path(path))
