"""A client's training run (`POST /v1/runs` on a `train-to-target` workload): one seeded run of
the chosen method with its tuned learning rate, the trained weights saved as a checkpoint.

The checkpoint is a safetensors file with a JSON manifest under `<cache_dir>/checkpoints/<id>/`;
its id is the content hash of the trained weights, so the same run on the same node gives the
same id. The figures returned are that run's: reached or not, time and steps to the target, the
final held-out metric, peak memory; with `measure`, the worker adds the protocol's records.
"""

from __future__ import annotations

import json
import logging
import math

import torch
from safetensors.torch import save_file

from executors.caching import weights_digest
from executors.families.training.harness import TrainSession, calibrate, tune

log = logging.getLogger(__name__)


def train_for_client(bundle, runner, item: dict, stage) -> dict:
    from executors.families import workload_from_json
    from profiles.settings import get_settings

    workload = workload_from_json(item["workload"])
    misfit = workload.fits(bundle)
    if misfit:
        raise ValueError(misfit)
    seed = int(item.get("seed", 0)) + 1  # seed 0 tunes; a client's run is a report seed
    stage("tuning", f"{len(workload.lr_multipliers)} learning rates on seed 0")
    target = workload.target or calibrate(runner, workload)
    tuned = tune(runner, TrainSession(target, "workload" if workload.target else "calibrated"), workload)
    stage("training", f"seed {seed}, learning rate × {tuned.lr_scale:g}")
    kept: list = []
    outcome = runner.train_to_target(
        workload, seed=seed, target=target, lr_scale=tuned.lr_scale, stop_at_target=False, extrapolate=False, keep=kept
    )
    model = kept[0]
    digest = weights_digest(model)
    checkpoint_id = f"ckpt-{digest[:20]}"
    folder = get_settings().cache_dir / "checkpoints" / checkpoint_id
    folder.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if all(tensor.data_ptr() != other.data_ptr() for other in state.values()):  # tied weights once
            state[name] = tensor.detach().contiguous()
    save_file(state, str(folder / "model.safetensors"))
    figures = {
        "reached_target": outcome.reached,
        "target": target,
        "metric": bundle.data.metric,
        "seconds_to_target": outcome.seconds_to_target,
        "steps_to_target": outcome.steps_to_target,
        "final_metric": outcome.final_metric if math.isfinite(outcome.final_metric) else None,
        "steps": outcome.steps,
        "train_seconds": round(outcome.train_seconds, 4),
        "peak_mem_mb": outcome.peak_bytes / 2**20,
        "lr_scale": tuned.lr_scale,
        "seed": seed,
    }
    manifest = {
        "id": checkpoint_id,
        "model": bundle.spec.source,
        "method": runner.stats.get("config"),
        "workload": workload.shape(),
        "weights_sha256": digest,
        "tensors": sorted(state),
        **figures,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    log.info("trained %s with %s: checkpoint %s", bundle.spec.source, runner.plan.name, checkpoint_id)
    return {"checkpoint": {"id": checkpoint_id, "path": str(folder), "format": "safetensors"}, "figures": figures}
