"""Making advice for a registered model sure: the cheapest profiling job that turns its answer from
predicted into measured, and the retrain when that job finishes.

The advisor's cold-start probes (advisor.landmarks) are not features of the trained advisor yet
(docs/advisor.md, "Not done yet"), so measuring them would not change its answer; what does is
measuring the candidates it ranks first, on the task asked about: a measured cell *is* the answer
for that task after a retrain. So the job is the predicted top-k and the baseline, on the
workload asked (or the model family's cheapest one), on the hardware classes a run could go to
(the pool's online ones in the answer). Its items are ordinary profiling items; the workers'
records land like any others; the last report starts a retrain, whose version is activated if
the advisor's gate finds it not worse (else it waits, inactive, for an admin).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session

from api.errors import Conflict
from api.jobs import FINISHED, locked_job
from profiles.models import ModelSpec

log = logging.getLogger(__name__)
BASELINE = "baseline"


def cheapest_workload(model: ModelSpec) -> dict:
    """The default shape of the workload kind of the model's own family (for a decoder: batch 1,
    a 32-token prompt, 32 generated tokens — the landmark probes' workload)."""
    from executors.families import family_of_architecture, kinds

    family = family_of_architecture(model.family)
    kind = next(k for k in kinds() if k.family == family.name)
    return kind.workload().shape()


def needs_weights(model: ModelSpec) -> None:
    if model.descriptors.get("origin") == "config":
        raise Conflict(
            f"{model.id} is described by its config.json alone and has no weights to measure; "
            "register its folder (POST /v1/models with a path) or upload it (POST /v1/models/upload)"
        )


def top_candidates(answer: dict, top_k: int) -> list[dict]:
    """The first `top_k` candidates other than the baseline, one per method configuration."""
    chosen, seen = [], set()
    for candidate in answer["candidates"]:
        key = repr(entry(candidate))
        if candidate["method_id"] != BASELINE and key not in seen:
            seen.add(key)
            chosen.append(candidate)
        if len(chosen) == top_k:
            break
    return chosen


def entry(candidate: dict):
    """A candidate as a profiling job names it: its config (a composite's steps), or its id."""
    config = candidate["config"]
    return config.get("steps", config) if config else candidate["method_id"]


def classes_to_measure(answer: dict, chosen: list[dict]) -> list[str]:
    """The hardware classes the answer could send a run to (its online nodes'), else those the chosen
    candidates were ranked on: measured there, the answer is sure wherever it is acted on."""
    online = {c["hardware_class"] for c in answer["candidates"] if c.get("node_status") == "online"}
    return sorted(online or {c["hardware_class"] for c in chosen or answer["candidates"]})


def unmeasured(answer: dict, chosen: list[dict]) -> list[dict]:
    """The answer's rows of the chosen configurations (on every class) that are predicted, not measured."""
    keys = {repr(entry(c)) for c in chosen}
    return [c for c in answer["candidates"] if repr(entry(c)) in keys and c["basis"] != "measured"]


def has_weights(model: ModelSpec) -> bool:
    """Whether a worker has something to load: a registered folder or upload, a zoo model (built on
    demand) or a local path. A config.json alone, or a model known only from imported profiles of
    elsewhere (synthetic, another store's), has none."""
    return model.descriptors.get("origin") in ("folder", "upload") or model.source.startswith(("zoo:", "local:"))


def offer(model: ModelSpec | None, answer: dict, shape: dict, top_k: int = 3) -> dict | None:
    """What a recommendation offers to make itself sure: the profiling call, when a top candidate is
    not measured yet and the model has weights to measure."""
    if model is None or not has_weights(model):
        return None
    chosen = top_candidates(answer, top_k)
    if not chosen or not unmeasured(answer, chosen):
        return None
    return {
        "method": "POST",
        "path": f"/v1/models/{model.id}/profile",
        "body": {"workload": shape, "top_k": top_k},
        "measures": [BASELINE, *(c["method_id"] for c in chosen)],
        "hardware_classes": classes_to_measure(answer, chosen),
        "why": "measures the top candidates and the baseline on this task; after the retrain that follows, "
        "the answer for them is the measurement",
    }


def what_is_known(model: ModelSpec, advisor, answer: dict, shape: dict) -> dict:
    """Whether the advisor has any record of this model (else its answer is zero-shot, from descriptors
    alone, and says so) and the profiling call that would make the answer sure."""
    known = model.id in advisor.facts.get("models", ())
    said: dict[str, Any] = {"zero_shot": not known, "make_sure": offer(model, answer, shape)}
    if not known:
        said["warnings"] = [
            "zero-shot: the advisor has no record of this model; every figure is predicted from its "
            "descriptors (family, size, shape) and the profiled models it resembles"
            + ("" if said["make_sure"] is None else "; make_sure names the profiling job that would measure them")
        ]
    return said


def retrain_if_finished(session: Session, job_id: str) -> bool:
    """True once, when a job that asked for it has just finished with records: the caller retrains."""
    job = locked_job(session, job_id)
    purpose = job.spec.get("purpose") or {}
    if not purpose.get("retrain_when_done") or job.state not in FINISHED or job.result.get("retrain_started"):
        return False
    job.result = {**job.result, "retrain_started": True}
    session.add(job)
    log.info("profiling job %s for %s finished: retraining the advisor", job_id, purpose.get("model"))
    return job.done > 0
