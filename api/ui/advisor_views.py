"""The advisor's pages: every selector's evaluation in words, versions with their scores, two
versions side by side, feature importance, and the training that is running now."""

from __future__ import annotations

from sqlmodel import Session, col, func, select

from api.ui.words import METRICS, SELECTORS, selector_name, split_name
from profiles.models import AdvisorVersion, Job, ProfileRun, utcnow

# The selector a version deploys, as its evaluation report names it (advisor.evaluate.PLAIN, spelled
# out so a page does not load scikit-learn): the guarded learner; versions evaluated before retrains
# judged it alone carry only the inner-CV choice, "lightgbm".
DEPLOYED = ("lightgbm_plain", "lightgbm")
SCORE_METRICS = ("gap_closed", "top1_tol", "top1", "mean_regret", "ndcg3")


def scores(version: AdvisorVersion | None) -> dict:
    """The advisor's own selector on each evaluated split: split → metric → mean."""
    if version is None:
        return {}
    found = {}
    for split, selectors in (version.evaluation or {}).get("splits", {}).items():
        own = next((selectors[name] for name in DEPLOYED if name in selectors), None)
        if own is not None:
            found[split] = {m: own[m]["mean"] for m in SCORE_METRICS if m in own}
    return found


def active_score(version: AdvisorVersion | None) -> list[dict]:
    """The dashboard's line per split: gap closed and top-1 within 3 %, named as on the Advisor page."""
    return [
        {"split": split_name(split), "gap_closed": s.get("gap_closed"), "top1_tol": s.get("top1_tol")}
        for split, s in scores(version).items()
    ]


def evaluation_tables(version: AdvisorVersion | None) -> dict[str, list[dict]]:
    """Split → one row per selector (in words), the advisor first and the oracle last."""
    order = {name: i for i, name in enumerate(SELECTORS)}
    tables = {}
    for split, selectors in ((version.evaluation or {}).get("splits", {}) if version else {}).items():
        deployed = next((name for name in DEPLOYED if name in selectors), None)
        rows = [
            {
                "key": name,
                "ours": name == deployed,
                "name": selector_name(name),
                "about": SELECTORS.get(name, ("", ""))[1],
                **{m: sel[m]["mean"] for m in SCORE_METRICS if m in sel},
            }
            for name, sel in selectors.items()
            if not name.startswith("_")
        ]
        tables[split] = sorted(rows, key=lambda r: order.get(r["key"], 50))
    return tables


def numbered_versions(session: Session) -> list[AdvisorVersion]:
    """Oldest first, so a version's number (v1, v2, …) never changes."""
    return list(session.exec(select(AdvisorVersion).order_by(col(AdvisorVersion.created_at))))


def version_row(version: AdvisorVersion, number: int, active: AdvisorVersion | None) -> dict:
    mine, theirs = scores(version), scores(active)
    activated = (version.params or {}).get("activated_at") or []
    return {
        "id": version.id,
        "number": number,
        "created_at": version.created_at,
        "n_profiles": version.n_profiles,
        "learner": version.learner,
        "active": version.active,
        "data_hash": (version.params or {}).get("data_hash", ""),
        "scores": mine,
        "gate": (version.evaluation or {}).get("gate"),  # compared with the version active when it was trained
        "last_activated": max(activated) if activated else None,
        "older_than_active": active is not None and version.created_at < active.created_at,
        # worse than the active one on a split both report: the page warns before activating it
        "worse": any(
            s.get("gap_closed") is not None and s["gap_closed"] < theirs.get(split, {}).get("gap_closed", -1e9)
            for split, s in mine.items()
        ),
    }


def advisor_page(session: Session) -> dict:
    versions = numbered_versions(session)
    active = next((v for v in versions if v.active), None)
    rows = [version_row(v, i, active) for i, v in enumerate(versions, start=1)]
    earlier = [r for r in rows if not r["active"] and r["last_activated"]]
    numbers = {r["id"]: r["number"] for r in rows}
    for row in rows:
        row["gate_against"] = numbers.get((row["gate"] or {}).get("against"))
    return {
        "versions": list(reversed(rows)),
        "active": next((r for r in rows if r["active"]), None),
        "previous": max(earlier, key=lambda r: r["last_activated"]) if earlier else None,  # what a roll back returns to
        "tables": evaluation_tables(active),
        "splits": {s: split_name(s) for s in evaluation_tables(active)},
        "metrics": [(m, *METRICS[m]) for m in SCORE_METRICS],
        "importance": feature_importance(session) if active else [],
        "training": training_status(session),
        "evaluation": active.evaluation if active else {},
    }


def compare(session: Session, first: str, second: str) -> dict | None:
    """Two versions side by side, selector by selector, and whether their folds were the same."""
    versions = numbered_versions(session)
    active = next((v for v in versions if v.active), None)
    by_id = {v.id: (i, v) for i, v in enumerate(versions, start=1)}
    if first not in by_id or second not in by_id:
        return None
    (na, a), (nb, b) = by_id[first], by_id[second]
    tables_a, tables_b = evaluation_tables(a), evaluation_tables(b)
    splits = [s for s in tables_a if s in tables_b]
    side_by_side = {}
    for split in splits:
        theirs = {r["key"]: r for r in tables_b[split]}
        side_by_side[split] = [
            {"name": r["name"], "key": r["key"], "ours": r["ours"], "a": r, "b": theirs.get(r["key"], {})}
            for r in tables_a[split]
        ]
    same_data = (a.params or {}).get("data_hash") == (b.params or {}).get("data_hash")
    same_folds = same_data and (a.evaluation or {}).get("n_folds") == (b.evaluation or {}).get("n_folds")
    return {
        "paired": _paired(session, a, b, na, nb),
        "a": version_row(a, na, active),
        "b": version_row(b, nb, active),
        "splits": {s: split_name(s) for s in splits},
        "tables": side_by_side,
        "same_folds": same_folds,
        "metrics": [(m, *METRICS[m]) for m in ("gap_closed", "top1_tol", "mean_regret")],
        "choices": [version_row(v, i, active) for i, v in enumerate(versions, start=1)],
    }


def _paired(session: Session, a: AdvisorVersion, b: AdvisorVersion, na: int, nb: int) -> dict:
    """The two versions on the same folds: scored later by an admin (on the profiles stored then) or,
    failing that, the gate's comparison when one was trained while the other was active."""
    (n_new, newer), (n_old, older) = sorted(((na, a), (nb, b)), key=lambda pair: pair[1].created_at, reverse=True)
    pair = {"new": n_new, "old": n_old, "newer_id": newer.id, "older_id": older.id}
    evaluation = newer.evaluation or {}
    scored = evaluation.get("same_folds", {}).get(older.id)
    if scored:
        stored_now = session.exec(select(func.count()).select_from(ProfileRun)).one()
        stale = scored["n_profiles"] != stored_now
        return {**pair, **scored, "how": "scored", "stale": stale, "stored_now": stored_now}
    gate = evaluation.get("gate")
    if gate and gate.get("against") == older.id and "candidate" in gate:
        return {**pair, **gate, "how": "gate", "newer": gate["candidate"], "older": gate["active"]}
    return {**pair, "how": None}


def training_status(session: Session) -> dict | None:
    """The advisor training running now: its stage, time so far, and an estimate from the last one."""
    job = session.exec(select(Job).where(Job.kind == "train", Job.state == "running")).first()
    if job is None:
        return None
    report = (job.result.get("items", {}).get("0") or {}).get("progress") or {}
    elapsed = (utcnow() - (job.started_at or job.created_at)).total_seconds()
    last = session.exec(
        select(Job).where(Job.kind == "train", Job.state == "succeeded").order_by(col(Job.finished_at).desc())
    ).first()
    estimate = None
    if last is not None and last.started_at and last.finished_at:
        took = (last.finished_at - last.started_at).total_seconds()
        stored = session.exec(select(func.count()).select_from(ProfileRun)).one()
        scale = stored / last.result["n_profiles"] if last.result.get("n_profiles") else 1.0
        estimate = {
            "took_s": took,
            "n_profiles": last.result.get("n_profiles"),
            "left_s": max(0.0, took * scale - elapsed),
        }
    return {
        "id": job.id,
        "stage": report.get("stage", "starting"),
        "detail": report.get("detail"),
        "elapsed_s": elapsed,
        "estimate": estimate,
    }


def feature_importance(session: Session, top: int = 15) -> list[dict]:
    """Total split gain per feature of the active advisor's speed-up model."""
    from advisor.api import active_advisor
    from api.ui.words import feature_words

    found = active_advisor(session)
    if found is None or "log_speedup" not in found[1].learners:
        return []
    booster = found[1].learners["log_speedup"].boosters_["point"]
    gains = booster.feature_importance(importance_type="gain")
    total = float(gains.sum()) or 1.0
    ranked = sorted(zip(booster.feature_name(), gains, strict=True), key=lambda pair: -pair[1])[:top]
    return [{"feature": name, "words": feature_words(name), "share": float(gain) / total} for name, gain in ranked]
