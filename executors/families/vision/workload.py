"""The `vision-classify` workload: classify a batch of held-out images at one resolution.

`crops=4` is the multi-view input of a high-resolution image (a thumbnail and a 2×2 grid of
crops, each at half the resolution: `models.multi_view`); `crops=1` feeds the image whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.registry import ModelBundle, bounded
from profiles.models import workload_id_for

CLASSIFY_KIND = "vision-classify"
OBJECTIVES = ("latency", "throughput")
CROP_GRIDS = {1: 1, 4: 2}  # crops → crops per side
MAX_BATCH = 1024
MAX_RESOLUTION = 512


@dataclass(frozen=True)
class VisionWorkload:
    batch_size: int = bounded(1, 1, MAX_BATCH)
    resolution: int = bounded(64, 8, MAX_RESOLUTION)
    objective: str = "latency"
    crops: int = bounded(1, 1, 4)

    kind = CLASSIFY_KIND

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")
        if self.crops not in CROP_GRIDS:
            raise ValueError(f"crops must be 1 (the whole image) or 4 (thumbnail + 2×2 crops), not {self.crops}")
        if self.resolution % (2 * CROP_GRIDS[self.crops]):
            raise ValueError(f"resolution {self.resolution} must split evenly into {self.crops} crops")

    @property
    def grid(self) -> int:
        return CROP_GRIDS[self.crops]

    @property
    def view_resolution(self) -> int:
        """The resolution the model sees: the whole image, or each crop and the thumbnail."""
        return self.resolution // self.grid

    def shape(self) -> dict:
        return {
            "kind": CLASSIFY_KIND,
            "batch_size": self.batch_size,
            "resolution": self.resolution,
            "objective": self.objective,
            "crops": self.crops,
        }

    @property
    def id(self) -> str:
        return workload_id_for(self.shape())

    def row(self) -> dict:
        return {
            "id": self.id,
            "kind": CLASSIFY_KIND,
            "batch_size": self.batch_size,
            "image_size": self.resolution,
            "prompt_len": None,
            "gen_len": None,
            "sampling": "greedy",
            "objective": self.objective,
            "params": {"resolution": self.resolution, "crops": self.crops},
        }

    def fits(self, bundle: ModelBundle) -> str | None:
        resolutions = tuple(bundle.spec.extra.get("resolutions", ()))
        if self.view_resolution not in resolutions:
            seen = "its views are" if self.crops > 1 else "it is"
            return (
                f"{bundle.spec.name} was trained at {', '.join(map(str, resolutions))} px; {seen} "
                f"{self.view_resolution} px (accuracy there would measure resolution transfer, not the method)"
            )
        if self.crops > 1 and "vit_tokens" not in bundle.capabilities:
            return "multi-view input (thumbnail + crops) runs on ViT models"
        return None


def parse_grid(text: str) -> list[VisionWorkload]:
    """`batch=1,64 res=32,64 crops=1,4 objective=latency`: one workload per combination that is valid."""
    axes = {"batch": ["1"], "res": ["64"], "crops": ["1"], "objective": ["latency"]}
    for part in text.split():
        key, _, values = part.partition("=")
        if key not in axes:
            raise ValueError(f"unknown vision axis {key!r}; use batch=, res=, crops=, objective=")
        axes[key] = values.split(",")
    out = []
    for batch in axes["batch"]:
        for resolution in axes["res"]:
            for crops in axes["crops"]:
                for objective in axes["objective"]:
                    if int(resolution) % (2 * CROP_GRIDS.get(int(crops), 1)) == 0:
                        out.append(VisionWorkload(int(batch), int(resolution), objective, int(crops)))
    if not out:
        raise ValueError("no valid vision workload in the grid (resolution must split into the crops)")
    return out


def describe(workload: VisionWorkload) -> str:
    views = f" {workload.crops}crops" if workload.crops > 1 else ""
    return f"classify b{workload.batch_size} {workload.resolution}px{views}"


def call_seconds(params: int, workload: VisionWorkload, gflops: float = 20.0) -> float:
    """A rough compute-bound estimate: ~2 FLOPs per parameter per 16 pixels (a patch-4 token)."""
    views = 1 + workload.crops if workload.crops > 1 else 1
    pixels = views * workload.view_resolution**2
    return 2 * params * workload.batch_size * pixels / 16 / (gflops * 1e9)
