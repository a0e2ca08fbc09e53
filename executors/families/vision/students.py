"""The students a distillation search may pick for a vision teacher: the same architecture, smaller.

A genome is a dict of the architecture's own config fields that the search varies (widths and
depths per stage, a ViT's width/blocks/heads); `build` turns it into a freshly initialised
`ImageClassifier` with the teacher's input settings and labels. Genomes above
`max_params × teacher` are never proposed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from executors.families.vision.models import ImageClassifier, build_net, bundle_classifier, count_parameters
from executors.registry import ModelBundle

Genome = dict


@dataclass(frozen=True)
class StudentSpace:
    sample: Callable[[random.Random], Genome]
    mutate: Callable[[Genome, random.Random], Genome]
    build: Callable[[Genome, int], ImageClassifier]


def _choices(values, top):
    return [v for v in values if v <= top] or [min(values)]


def _vit_space(config: dict) -> tuple[Callable, Callable]:
    widths = _choices([32, 48, 64, 96, 128, 192], config["hidden_size"])
    depths = list(range(1, config["num_hidden_layers"] + 1))

    def sample(rng: random.Random) -> Genome:
        width = rng.choice(widths)
        return {
            "hidden_size": width,
            "num_hidden_layers": rng.choice(depths),
            "num_attention_heads": width // 16,
            "intermediate_size": width * rng.choice([2, 3, 4]),
        }

    def mutate(genome: Genome, rng: random.Random) -> Genome:
        child = sample(rng)
        keep = rng.choice(list(genome))
        if keep == "hidden_size":
            child.update(
                hidden_size=genome["hidden_size"],
                num_attention_heads=genome["num_attention_heads"],
                intermediate_size=genome["intermediate_size"],
            )
        else:
            child[keep] = genome[keep]
        return {**genome, **{k: v for k, v in child.items() if rng.random() < 0.5 or k == keep}}

    return sample, mutate


def _stage_space(config: dict, width_key: str, depth_key: str | None) -> tuple[Callable, Callable]:
    """Per-stage widths (and depths): each stage at most the teacher's width, widths non-decreasing."""
    teacher = list(config[width_key])

    def sample(rng: random.Random) -> Genome:
        widths, floor = [], 8
        for top in teacher:
            options = [w for w in range(8, top + 1, 8) if w >= floor] or [top]
            floor = rng.choice(options)
            widths.append(floor)
        genome = {width_key: widths}
        if depth_key:
            genome[depth_key] = [rng.choice([1, 1, 2]) for _ in teacher]
        return genome

    def mutate(genome: Genome, rng: random.Random) -> Genome:
        fresh = sample(rng)
        stage = rng.randrange(len(teacher))
        child = {k: list(v) for k, v in genome.items()}
        for key in child:
            child[key][stage] = fresh[key][stage]
        child[width_key] = [max(child[width_key][: i + 1]) for i in range(len(teacher))]  # keep non-decreasing
        return child

    return sample, mutate


def student_space(bundle: ModelBundle, max_params: float = 0.6) -> StudentSpace:
    teacher = bundle_classifier(bundle)
    config = teacher.net.config.to_dict()
    model_type = teacher.model_type
    if model_type == "vit":
        sample, mutate = _vit_space(config)
    elif model_type == "resnet":
        sample, mutate = _stage_space(config, "hidden_sizes", "depths")
    else:
        sample, mutate = _stage_space(config, "hidden_sizes", None)
    keep = {
        k: v
        for k, v in config.items()
        if not k.startswith("_") and k not in ("architectures", "id2label", "label2id", "transformers_version")
    }
    keep["num_labels"] = teacher.net.config.num_labels  # to_dict() holds the labels only as id2label
    budget = max_params * count_parameters(teacher)

    def build(genome: Genome, seed: int) -> ImageClassifier:
        return ImageClassifier(build_net(model_type, {**keep, **genome}, seed))

    def within_budget(propose: Callable) -> Callable:
        def proposal(*args) -> Genome:
            for _ in range(64):
                genome = propose(*args)
                if count_parameters(build(genome, 0)) <= budget:
                    return genome
            return smallest

        return proposal

    smallest = _smallest(sample, build)
    return StudentSpace(within_budget(sample), within_budget(mutate), build)


def _smallest(sample: Callable, build: Callable) -> Genome:
    """The cheapest of a fixed handful of samples: a fallback that always fits the budget."""
    rng = random.Random(0)
    genomes = [sample(rng) for _ in range(16)]
    return min(genomes, key=lambda g: count_parameters(build(g, 0)))
