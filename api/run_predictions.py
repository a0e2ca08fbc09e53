"""The active advisor's prediction for a run of a named method, kept with the run so its page can set
the measurement beside it — or, where the advisor cannot predict it, the reason, so the page states
why instead of showing nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel import Session

from api.catalog import config_steps, resolve_methods
from api.errors import ApiError

if TYPE_CHECKING:
    from advisor.api import Candidate

KEPT = ("method_id", "node_id", "basis", "speedup", "speedup_interval", "quality_delta", "quality_interval")


def run_prediction(session: Session, item: dict, hardware_class: str | None, objective: str) -> dict:
    """``{"prediction": {...}}`` for the run's own config on its model, workload and target, or
    ``{"no_prediction": why}``.

    The caller chose the method, so no quality floor applies: a method the advisor expects to lose
    quality is still predicted (and the page shows that loss), not dropped as a recommendation would.
    """
    from advisor.api import Candidate, active_advisor
    from advisor.recommend import ANY_QUALITY
    from api.routes.advise import recommend_for  # the route's own answer (advise imports this module)

    config = item["method"]
    method_id = config["method"]
    active = active_advisor(session)
    if active is None:
        return {"no_prediction": "no advisor is trained yet"}
    advisor = active[1]
    profiled = {c.key: c for c in advisor.candidates if c.method_id == method_id}
    if not profiled:
        return {
            "no_prediction": f"the active advisor was trained on no profile of {method_id}, so it cannot predict it;"
            " profile it and retrain"
        }
    candidate = _candidate(profiled, Candidate(method_id, config))
    node = item["target"]["name"] if item["target"]["kind"] == "node" else None
    try:
        found = recommend_for(
            session,
            item["model"],
            item["workload"],
            node,
            hardware_class,
            objective,
            ANY_QUALITY,
            None,
            top_k=None,
            candidates=(candidate,),
        )
    except ApiError as exc:  # no descriptors of the model, an objective this advisor was not trained for, …
        return {"no_prediction": exc.detail}
    # Best first across the target's nodes: a class or the pool is predicted for the node it suits best.
    match = next((c for c in found["candidates"] if c["method_id"] == method_id), None)
    if match is not None:
        return {"prediction": {**{k: match[k] for k in KEPT}, "advisor_version": found["advisor_version"]}}
    reasons = sorted({e["reason"] for e in found["excluded"] if e["method_id"] == method_id})
    unprofiled = "" if candidate.key in profiled else " with these settings, which were never profiled"
    return {
        "no_prediction": f"the active advisor does not predict {method_id}{unprofiled} here: "
        + ("; ".join(reasons) or "it has no figures for it")
    }


def _candidate(profiled: dict[str, Candidate], wanted: Candidate) -> Candidate:
    """The profiled candidate with the run's settings; else the one profiled with no config recorded
    (generated grids record none: the method's defaults) when the run uses the defaults; else the
    run's own settings, predicted as they are (the learner reads a config's knobs)."""
    if wanted.key in profiled:
        return profiled[wanted.key]
    bare = profiled.get(wanted.method_id)  # an empty config's key is the method id alone
    defaults = resolve_methods([[step["method"] for step in config_steps(dict(wanted.config))]])[0]["config"]
    return bare if bare is not None and wanted.config == defaults else wanted
