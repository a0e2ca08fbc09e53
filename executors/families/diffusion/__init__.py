"""The `diffusion` family: class-conditional image generation with diffusers' UNet2DModel and
DiTTransformer2DModel, trained here on digits (32×32) and synthetic shapes (64×64), sampled
with diffusers' DDIM / DDPM / DPM-Solver++ schedulers and classifier-free guidance
(`diffusion-sample`; reference: the plain sampler, DDIM at 50 steps with guidance by default).

data.py the image sets · networks.py the denoisers and their hooks · sampler.py the runner
protocol (`sample`) and the plan methods change · zoo.py training and loading · quality.py the
FID proxy, class accuracy and PSNR · workload.py the workload · harness.py the protocol hook.
"""

from __future__ import annotations

from pathlib import Path

from executors.families import Family, WorkloadKind, ZooEntry, register_family
from executors.families.diffusion import zoo
from executors.families.diffusion.harness import SampleHarness, observe
from executors.families.diffusion.sampler import Sampler
from executors.families.diffusion.workload import KIND, SampleWorkload, call_seconds, describe, parse_grid

TINY = "diff-dit-tiny"


def fixture(root: Path):
    """A 64-token DiT on 16×16 digits, trained in seconds into `root`'s zoo cache."""
    from executors.zoo import build, load_bundle

    build(TINY, root)
    return load_bundle(f"zoo:{TINY}", root, build_missing=False)


SAMPLE = WorkloadKind(
    name=KIND,
    family="diffusion",
    workload=SampleWorkload,
    reference="baseline",
    harness=SampleHarness(),
    keyword="sample",
    parse=parse_grid,
    describe=describe,
    call_seconds=call_seconds,
)

register_family(
    Family(
        name="diffusion",
        description="class-conditional image generation (diffusers UNet / DiT on digits and shapes), guided sampling",
        runner_protocol="sample",
        runner=lambda model, stats=None: Sampler(model, dict(stats or {})),
        kinds=(SAMPLE,),
        quality_metrics=("fid_proxy", "class_accuracy", "psnr_to_reference"),
        zoo=tuple(
            ZooEntry(name, "diffusion", recipe.note, zoo.load_zoo, zoo.build_recipe(name))
            for name, recipe in zoo.RECIPES.items()
        ),
        architectures=("diffusion-unet", "diffusion-dit"),
        fixture=fixture,
        local_loader=zoo.load_local,
        hooks={"observe": observe},
    )
)
