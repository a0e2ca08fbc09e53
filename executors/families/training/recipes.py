"""The training zoo: each entry is a recipe (a model, its data and the reference hyper-parameters)
that `train-to-target` workloads train, plus the tiny fixtures the registry suite trains.

Text recipes train a byte-level decoder on Python source or English prose, from scratch or
continuing from a decoder pre-trained on the other domain (built once, deterministically, into
the zoo cache as safetensors); vision recipes train a small CNN with batch norm or a small ViT
on 16 × 16 digits. Capabilities say what a method may change: transformer blocks, batch norm,
a dropout head, a text pool larger than the reference's training set, a pre-trained start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from executors.families.training import data
from executors.families.training.models import CNNConfig, ViTConfig, byte_lm_config, parameter_count
from executors.families.training.tasks import FULL, ImageTask, Recipe, TokenTask, cross_entropy
from executors.families.training.workload import TrainWorkload
from executors.registry import ModelBundle, ModelSpec
from executors.training import Schedule, train

ARCHITECTURES = {"lm": "train-decoder-lm", "cnn": "train-cnn", "vit": "train-vit"}
TEXT = frozenset({"transformer_blocks", "attention", "next_token_loss", "text_pool", "variable_shape"})
VISION = frozenset({"images", "dropout_head", "variable_shape"})


@dataclass(frozen=True)
class Entry:
    name: str
    architecture: str  # lm, cnn, vit
    config: Any
    recipe: Recipe
    domain: str  # code, prose, digits
    upstream: str | None = None  # the domain a continual recipe's start was pre-trained on
    pretrain_steps: int = 0
    note: str = ""


TEXT_LM = byte_lm_config(dim=32, layers=4, heads=4, ffn=64, context=64)
TEXT_RECIPE = Recipe(lr=3e-3, warmup=0.05, weight_decay=0.1, betas=(0.9, 0.95), clip=1.0)
# A continuation starts from trained weights: the reference decays from its peak at once (no
# warm-up), the plain AdamW + cosine; re-warming is a method (train.schedule.rewarm).
CONTINUAL_RECIPE = Recipe(lr=1e-3, warmup=0.0, weight_decay=0.1, betas=(0.9, 0.95), clip=1.0)
VISION_RECIPE = Recipe(lr=3e-3, warmup=0.05, weight_decay=0.05, betas=(0.9, 0.999), clip=None, augment=1.0)
CNN_RECIPE = Recipe(lr=1e-2, warmup=0.05, weight_decay=0.05, betas=(0.9, 0.999), clip=None, augment=1.0)

ENTRIES = {
    e.name: e
    for e in (
        Entry("train-lm-code", "lm", TEXT_LM, TEXT_RECIPE, "code", note="byte LM (50 k) from scratch on Python source"),
        Entry(
            "train-lm-prose", "lm", TEXT_LM, TEXT_RECIPE, "prose", note="byte LM (50 k) from scratch on English prose"
        ),
        Entry(
            "train-lm-code-to-prose",
            "lm",
            TEXT_LM,
            CONTINUAL_RECIPE,
            "prose",
            upstream="code",
            pretrain_steps=300,
            note="byte LM pre-trained on Python source, continuing on English prose",
        ),
        Entry(
            "train-lm-prose-to-code",
            "lm",
            TEXT_LM,
            CONTINUAL_RECIPE,
            "code",
            upstream="prose",
            pretrain_steps=300,
            note="byte LM pre-trained on English prose, continuing on Python source",
        ),
        Entry(
            "train-cnn-digits",
            "cnn",
            CNNConfig(width=8),
            CNN_RECIPE,
            "digits",
            note="3-stage CNN with batch norm (6 k) on 16 × 16 digits",
        ),
        Entry(
            "train-vit-digits",
            "vit",
            ViTConfig(dim=32, layers=4, heads=4, ffn=64),
            VISION_RECIPE,
            "digits",
            note="4-block ViT (37 k, 4 × 4 patches) on 16 × 16 digits",
        ),
    )
}


def pretrain(entry: Entry, seed: int = 0) -> dict:
    """The start of a continual recipe: the reference recipe on the upstream domain, one thread, fixed seed."""
    assert entry.upstream is not None
    task = TokenTask(entry.name, data.token_domain(entry.upstream), entry.config, TEXT_RECIPE)
    model = task.new_model(seed)
    workload = TrainWorkload(
        batch_size=16,
        seq_len=32,
        budget_steps=entry.pretrain_steps,
        eval_every=min(50, entry.pretrain_steps),
        data_tokens=data.POOL_TOKENS // 2,
    )
    source = task.training_data(workload)

    def step_loss(step, generator):
        return cross_entropy(task, model, task.batch(source, generator, workload, step, FULL))

    schedule = Schedule(
        TEXT_RECIPE.lr,
        entry.pretrain_steps,
        warmup=int(0.05 * entry.pretrain_steps),
        weight_decay=0.1,
        betas=(0.9, 0.95),
        clip=1.0,
    )
    result = train(model.parameters(), step_loss, schedule, seed=seed, modules=[model], name=entry.name, log_every=100)
    return {
        "state": {k: v.contiguous() for k, v in model.state_dict().items()},
        "upstream_heldout_loss": round(task.evaluate(model, workload), 4),
        "train_seconds": round(result.seconds, 1),
    }


def build_entry(name: str):
    def build_it(folder: Path, _root: Path | None) -> dict:
        entry = ENTRIES[name]
        made = pretrain(entry)
        state = {k: v for k, v in made.pop("state").items() if k != "output.weight"}  # tied to the embeddings
        save_file(state, str(folder / "start.safetensors"))
        return {
            "name": name,
            "source": f"zoo:{name}",
            "params": entry.config.parameter_count,
            "upstream": entry.upstream,
            "pretrain_steps": entry.pretrain_steps,
            **made,
        }

    return build_it


def task_of(entry: Entry, start: dict | None = None):
    if entry.architecture == "lm":
        upstream = data.token_domain(entry.upstream) if entry.upstream else None
        return TokenTask(entry.name, data.token_domain(entry.domain), entry.config, entry.recipe, start, upstream)
    return ImageTask(entry.name, data.digits(), entry.config, entry.recipe, entry.architecture)


def bundle_of(entry: Entry, task, source: str) -> ModelBundle:
    model = task.new_model(0)
    capabilities = TEXT if task.modality == "tokens" else VISION
    capabilities |= {"pretrained_start"} if task.start is not None else {"from_scratch"}
    if entry.architecture == "cnn":
        capabilities |= {"batch_norm"}
    if entry.architecture == "vit":
        capabilities |= {"transformer_blocks", "attention"}
    config = asdict(entry.config)
    spec = ModelSpec(
        source=source,
        name=entry.name,
        architecture=ARCHITECTURES[entry.architecture],
        params=parameter_count(model),
        layers=config.get("n_layers") or config.get("layers"),
        width=config.get("dim") or config.get("width"),
        heads=config.get("n_heads") or config.get("heads"),
        vocab=config.get("vocab_size"),
        context=config.get("max_seq_len"),
        extra={
            "domain": entry.domain,
            "start": f"pretrained:{entry.upstream}" if entry.upstream else "scratch",
            "metric": task.metric,
            "recipe_lr": entry.recipe.lr,
        },
    )
    return ModelBundle(model.eval(), "training", spec, capabilities=frozenset(capabilities), data=task)


def load_entry(folder: Path, source: str) -> ModelBundle:
    entry = ENTRIES[source.removeprefix("zoo:")]
    start = None
    if entry.upstream is not None:
        state = load_file(str(folder / "start.safetensors"))
        state["output.weight"] = state["tok_embeddings.weight"]
        start = state
    return bundle_of(entry, task_of(entry, start), source)


# The registry suite's fixtures: seconds to build, a handful of steps to train.
FIXTURE_LM = byte_lm_config(dim=16, layers=2, heads=2, ffn=32, context=32)
FIXTURES = {
    "lm": Entry("fixture-lm", "lm", FIXTURE_LM, TEXT_RECIPE, "code"),
    "continual": Entry(
        "fixture-lm-continual", "lm", FIXTURE_LM, CONTINUAL_RECIPE, "prose", upstream="code", pretrain_steps=20
    ),
    "cnn": Entry("fixture-cnn", "cnn", CNNConfig(width=4), CNN_RECIPE, "digits"),
}


@cache
def fixture_bundle(which: str) -> ModelBundle:
    entry = FIXTURES[which]
    start = pretrain(entry)["state"] if entry.upstream else None
    return bundle_of(entry, task_of(entry, start), f"fixture:{entry.name}")
