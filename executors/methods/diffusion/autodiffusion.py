"""`diff.steps.evo_search`: AutoDiffusion (Li et al., arXiv 2309.10438, catalogue row 10).

Training-free search of the sampler's time-step sequence and of a compressed architecture
(units dropped per step) under a budget of `steps` network evaluations per branch, scored by the
FID proxy of the images each candidate generates (`eval_images`, fixed seeds and classes). The
paper's two-stage evolutionary algorithm: stage 1 evolves the time-step subset with the full
network; stage 2 evolves time steps and per-step dropped units together, keeping at least
`block_budget` of the droppable (step, unit) evaluations. Candidates are bred by crossover of
two top-half parents and mutation (time steps jittered, a dropped unit toggled). The search runs
once per (guidance scale, solver, steps) and is cached; its wall time is the record's setup.
DiT units are its blocks; a UNet's only droppable unit is its mid block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executors.caching import Cached
from executors.families import default_runner
from executors.families.diffusion.quality import image_quality, to_uint8
from executors.families.diffusion.sampler import TRAIN_TIMESTEPS, Settings, sample, uniform_timesteps
from executors.methods.diffusion.engine import PerSchedule, base_of, note_artefact
from executors.registry import Method, MethodConfig, bounded, register_method

Genome = tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]  # (time steps, dropped units per step)


@dataclass(frozen=True)
class EvoSearchConfig(MethodConfig):
    steps: int = bounded(10, 2, 1000)  # the budget: time steps searched (at most the workload's)
    population: int = bounded(6, 2, 256)
    generations: int = bounded(3, 1, 1000)  # per stage
    eval_images: int = bounded(48, 8, 5000)
    block_budget: float = bounded(0.9, 0.1, 1.0)  # share of droppable (step, unit) evaluations kept in stage 2
    mutation: float = bounded(0.3, 0.0, 1.0)
    seed: int = 0
    version: int = 1


@dataclass(frozen=True)
class FixedSchedule:
    """A searched sequence: these time steps, these units dropped at each."""

    timesteps: tuple[int, ...]
    drops: tuple[tuple[int, ...], ...]

    def build(self, model, settings, solver):
        return list(self.timesteps), [frozenset(d) for d in self.drops]


class Search:
    def __init__(self, model, settings: Settings, config: EvoSearchConfig):
        self.model, self.settings, self.config = model, settings, config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.labels = torch.arange(config.eval_images) % model.info.classes
        self.droppable = model.net.droppable
        self.scores: dict[Genome, float] = {}

    def fitness(self, genome: Genome) -> float:
        if genome not in self.scores:
            plain = {"solver": None, "max_steps": None, "guidance": None, "features": None, "attention": None}
            candidate = self.model.with_plan(**plain, schedule=FixedSchedule(*genome))
            out = sample(candidate, self.labels, self.settings, self.config.seed + 99)
            info = self.model.info
            self.scores[genome] = image_quality(to_uint8(out.images), self.labels, info.dataset, info.resolution)[
                "fid_proxy"
            ]
        return self.scores[genome]

    def jitter(self, timesteps: tuple[int, ...]) -> tuple[int, ...]:
        spread = TRAIN_TIMESTEPS / (2 * len(timesteps))
        moved = [
            int(t + torch.randn((), generator=self.generator).item() * spread)
            if torch.rand((), generator=self.generator).item() < self.config.mutation
            else t
            for t in timesteps
        ]
        return self.valid(moved, len(timesteps))

    def valid(self, timesteps, count: int) -> tuple[int, ...]:
        """Distinct, descending, in range; refilled with unused steps if collisions removed some."""
        chosen = sorted({min(TRAIN_TIMESTEPS - 1, max(0, t)) for t in timesteps}, reverse=True)
        while len(chosen) < count:
            candidate = int(torch.randint(0, TRAIN_TIMESTEPS, (), generator=self.generator))
            if candidate not in chosen:
                chosen = sorted([*chosen, candidate], reverse=True)
        return tuple(chosen[:count])

    def cross(self, a: Genome, b: Genome, with_drops: bool) -> Genome:
        pick = torch.rand(len(a[0]), generator=self.generator) < 0.5
        timesteps = self.jitter(
            self.valid([x if p else y for x, y, p in zip(a[0], b[0], pick, strict=True)], len(a[0]))
        )
        drops = tuple(x if p else y for x, y, p in zip(a[1], b[1], pick, strict=True))
        if with_drops and self.droppable:
            drops = self.toggle(drops)
        return timesteps, drops

    def toggle(self, drops: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
        step = int(torch.randint(0, len(drops), (), generator=self.generator))
        unit = self.droppable[int(torch.randint(0, len(self.droppable), (), generator=self.generator))]
        changed = list(drops)
        changed[step] = tuple(sorted(set(drops[step]) ^ {unit}))
        allowed = int((1 - self.config.block_budget) * len(drops) * len(self.droppable))
        return tuple(changed) if sum(len(d) for d in changed) <= allowed else drops

    def evolve(self, population: list[Genome], with_drops: bool) -> list[Genome]:
        for _ in range(self.config.generations):
            ranked = sorted(set(population), key=self.fitness)
            parents = ranked[: max(2, len(ranked) // 2)]
            children: list[Genome] = []
            while len(parents) + len(children) < self.config.population:
                i, j = torch.randint(0, len(parents), (2,), generator=self.generator).tolist()
                children.append(self.cross(parents[i], parents[j], with_drops))
            population = parents + children
        return sorted(set(population), key=self.fitness)

    def run(self) -> Genome:
        count = self.settings.steps
        uniform = tuple(uniform_timesteps(self.settings.scheduler, count))
        nothing = tuple(() for _ in range(count))
        population: list[Genome] = [(uniform, nothing)]
        population += [(self.jitter(uniform), nothing) for _ in range(self.config.population - 1)]
        population = self.evolve(population, with_drops=False)  # stage 1: time steps
        return self.evolve(population, with_drops=True)[0]  # stage 2: time steps and dropped units


def search(model, settings: Settings, config: EvoSearchConfig) -> tuple[dict, dict]:
    finder = Search(model, settings, config)
    timesteps, drops = finder.run()
    mask = torch.zeros(len(timesteps), max(model.net.units, 1), dtype=torch.bool)
    for step, units in enumerate(drops):
        mask[step, list(units)] = True
    uniform_fid = finder.fitness((tuple(uniform_timesteps(settings.scheduler, settings.steps)),
                                  tuple(() for _ in timesteps)))  # fmt: skip
    meta = {"fid_proxy_searched": finder.fitness((timesteps, drops)), "fid_proxy_uniform": uniform_fid,
            "candidates": len(finder.scores), "dropped_units": int(mask.sum())}  # fmt: skip
    return {"timesteps": torch.tensor(timesteps), "dropped": mask}, meta


class SearchedSchedule:
    def __init__(self, config: EvoSearchConfig):
        self.config = config
        key = {k: getattr(config, k) for k in ("steps", "population", "generations", "eval_images", "block_budget",
                                               "mutation", "seed")}  # fmt: skip
        self.searches = PerSchedule("diffusion-evo-search", key, lambda model, s: search(model, s, config))

    def build(self, model, settings: Settings, solver: str):
        budget = Settings(min(settings.steps, self.config.steps), settings.guidance_scale, solver)
        cached = self.searches.get(model, budget)
        self.last: Cached | None = cached
        drops = [frozenset(torch.nonzero(row).flatten().tolist()) for row in cached.tensors["dropped"]]
        return cached.tensors["timesteps"].tolist(), drops

    def note(self, run) -> None:
        if getattr(self, "last", None) is not None:
            note_artefact(run, "search", self.last)  # type: ignore[arg-type]
            run.stats["search_fid_proxy"] = round(self.last.meta["fid_proxy_searched"], 3)  # type: ignore[union-attr]
            run.stats["search_fid_proxy_uniform"] = round(self.last.meta["fid_proxy_uniform"], 3)  # type: ignore[union-attr]


@register_method(
    "diff.steps.evo_search",
    EvoSearchConfig,
    category="sampling",
    families=("diffusion",),
    changes=("outputs", "forward_passes"),
    paper="AutoDiffusion: Training-Free Optimization of Time Steps and Architectures for Automated Diffusion "
    "Model Acceleration",
    arxiv="2309.10438",
    catalogue_row=10,
)
class AutoDiffusion(Method):
    order = 30
    composes_with = frozenset({"quant.ptq.diffusion_timestep_calib", "quant.int8_dynamic"})

    def supports(self, bundle, device):
        return None if "denoiser" in bundle.capabilities else "searches diffusion sampling schedules"

    def apply(self, bundle, config):
        return default_runner(bundle, base_of(bundle.model).with_plan(schedule=SearchedSchedule(config)))
