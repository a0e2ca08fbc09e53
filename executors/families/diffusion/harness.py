"""The diffusion family's hook on the measurement protocol: one `sample` call per timed repetition.

A timed call generates `batch_size` images (classes 0, 1, … in turn) from the workload's seed.
Quality is measured once per (model, method config, sampling settings) on a separate set of
`QUALITY_IMAGES` images — balanced classes, fixed seeds, generated through the method's own
runner in chunks — and cached on disk (`diffusion-quality`), so the records of every batch size
and thread count of those settings share it. The reference generates the same set, which gives
the same-seed PSNR.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import cast

import torch

from executors.caching import cached_tensors
from executors.families.diffusion.quality import QUALITY_IMAGES, image_quality, pixel_distance, to_uint8
from executors.families.diffusion.sampler import Sampler, Samples, Settings, diffusion_model
from executors.families.diffusion.workload import SampleWorkload
from executors.protocol import KindHarness, Prepared, Quality
from executors.registry import ModelBundle

QUALITY_SEED = 10_000  # quality sets never reuse a timed call's noise
QUALITY_VERSION = 1
OBSERVE = Settings(steps=20, guidance_scale=3.0, scheduler="ddim")


@dataclass(frozen=True)
class Session:
    labels: torch.Tensor
    settings: Settings


def chunk_size(resolution: int) -> int:
    return 125 if resolution <= 32 else 50  # per-image cost is lowest near these batches on a 2-core CPU


def quality_set(prepared: Prepared, bundle: ModelBundle, settings: Settings, seed: int,
                images: int = QUALITY_IMAGES) -> dict:  # fmt: skip
    """The method's `images` generated images (uint8), their labels, cost and figures, cached on disk."""
    key = ("set", settings, seed, images)
    if key in prepared.quality:
        return prepared.quality[key]
    info = diffusion_model(bundle.model).info
    runner = cast(Sampler, prepared.runner)
    labels = torch.arange(images) % info.classes
    chunk = chunk_size(info.resolution)

    def build():
        started, generated, nfe, effective = time.perf_counter(), [], 0.0, 0.0
        for index, start in enumerate(range(0, images, chunk)):
            out = runner.sample(labels[start : start + chunk], settings, QUALITY_SEED + 1000 * seed + index)
            generated.append(to_uint8(out.images))
            nfe, effective = nfe + out.nfe * len(out.images), effective + out.effective_nfe * len(out.images)
        meta = {"nfe": nfe / images, "effective_nfe": effective / images,
                "generate_s": round(time.perf_counter() - started, 2), "threads": torch.get_num_threads()}  # fmt: skip
        return {"images": torch.cat(generated), "labels": labels}, meta

    config = {"method": prepared.config_json, "settings": dataclasses.asdict(settings), "images": images,
              "seed": seed, "version": QUALITY_VERSION}  # fmt: skip
    cached = cached_tensors("diffusion-quality", bundle.model, config, build)
    result = {**cached.tensors, **cached.meta}
    result.update(image_quality(result["images"], result["labels"], info.dataset, info.resolution))
    prepared.quality[key] = result
    return result


class SampleHarness(KindHarness):
    unit = "img/s"

    def session(self, bundle, workload: SampleWorkload, device, baseline, warmup):
        return Session(
            torch.arange(workload.batch_size) % diffusion_model(bundle.model).info.classes, workload.settings
        )

    def call(self, runner, session: Session, workload: SampleWorkload, seed):
        return runner.sample(session.labels, session.settings, workload.seed + seed)

    def misfit(self, prepared: Prepared, workload: SampleWorkload) -> str | None:
        return diffusion_model(cast(Sampler, prepared.runner).model).plan.requirement(workload.settings)

    def working_bytes(self, bundle, workload: SampleWorkload, outputs: list) -> int:
        """The latents of the guided batch, one layer's activations and whatever the method cached."""
        info, spec = diffusion_model(bundle.model).info, bundle.spec
        rows = workload.batch_size * (2 if workload.guidance_scale > 1 else 1)
        pixels = info.channels * info.resolution**2
        if spec.extra.get("tokens"):
            tokens, width = spec.extra["tokens"], spec.width or 0
            layer = tokens * width * 6 + (spec.heads or 1) * tokens**2
        else:
            layer = 3 * (spec.width or 0) * info.resolution**2
        cached = max((o.stats.get("cache_bytes", 0) for o in outputs), default=0)
        return 4 * rows * (3 * pixels + layer) + cached

    def quality(self, prepared, baseline, bundle, workload: SampleWorkload, session, outputs) -> Quality:
        mine = quality_set(prepared, bundle, workload.settings, workload.seed)
        base = quality_set(baseline, bundle, workload.settings, workload.seed)
        figures = {k: mine[k] for k in ("fid_proxy_stderr", "fid_proxy_floor", "fid_proxy_images",
                                         "fid_proxy_real_images", "classifier_heldout_accuracy")}  # fmt: skip
        figures.update(
            pixel_distance(mine["images"], base["images"]),
            fid_proxy_baseline=base["fid_proxy"],
            class_accuracy=mine["class_accuracy"],
            class_accuracy_baseline=base["class_accuracy"],
            class_accuracy_delta=mine["class_accuracy"] - base["class_accuracy"],
            quality_nfe=mine["nfe"],
            quality_effective_nfe=mine["effective_nfe"],
            quality_generate_s=mine["generate_s"],
            quality_basis=f"{QUALITY_IMAGES} images (balanced classes, fixed seeds) generated by the method's runner",
        )
        classes = diffusion_model(bundle.model).info.classes
        informative = mine["classifier_heldout_accuracy"] > 0.5 and base["class_accuracy"] > 1.5 / classes
        fid, reference = mine["fid_proxy"], base["fid_proxy"]
        delta = (reference - fid) / reference if reference > 0 else 0.0
        return Quality("fid_proxy", reference, fid, delta, informative=informative, metrics=figures)

    def metrics(self, prepared, baseline, bundle, workload, session, outputs) -> dict:
        mine: Samples = outputs[prepared.method_id][-1]
        base: Samples = outputs[baseline.method_id][-1]
        return {
            "nfe_per_image": round(mine.nfe, 3),
            "effective_nfe_per_image": round(mine.effective_nfe, 3),
            "baseline_nfe_per_image": round(base.nfe, 3),
            "nfe_ratio": round(base.nfe / mine.nfe, 4) if mine.nfe else None,
            "effective_nfe_ratio": round(base.effective_nfe / mine.effective_nfe, 4) if mine.effective_nfe else None,
            "peak_mem_basis": "weights + latents, one layer's activations and the method's cache (estimate)",
            **prepared.runner.stats,
            **{f"sampler_{k}": v for k, v in mine.stats.items() if isinstance(v, (int, float, str, bool))},
        }


def observe(runner, bundle) -> dict:
    """What the registry suite compares: two guided 20-step DDIM samples and their weighted evaluations."""
    out = runner.sample(torch.tensor([0, 1]), OBSERVE, seed=0)
    return {"outputs": out.images, "forward_passes": round(out.effective_nfe, 4)}
