"""The registry suite's checks: a method changes what it claims to change (its `changes`), on the
tiny fixture of every family it accelerates, against that family's reference on the same model.

A family's `observe` hook says what its runners compute (logits, embeddings, tokens, forward
passes, a schedule); the weights, their bytes, the parameter count and compilation are read here
for every family alike. `claim_failures` returns what a method claims but does not do, so the
suite and its canary (a method that returns the reference unchanged) share one judgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from executors.caching import weights_digest
from executors.families import get_family
from executors.protocol import model_bytes
from executors.registry import ANY_FAMILY, Method, ModelBundle, Runner, default_config, get_method, unwrap


@dataclass(frozen=True)
class Case:
    """One (method, family) pair of the suite: where the method is applied and what it is compared with."""

    method_id: str
    family: str

    @property
    def id(self) -> str:
        return f"{self.method_id}@{self.family}"


def reference_of_family(family: str) -> str:
    return get_family(family).kinds[0].reference


def model_family(family: str) -> str:
    """The family whose fixture a family's kinds run on (its own, or e.g. lm for stream)."""
    return get_family(family).kinds[0].model_families[0]


def cases(method_ids: list[str]) -> list[Case]:
    """Every non-reference method on every family it accelerates that has a fixture to run on."""
    from executors.families import families, misapplied

    out = []
    for method_id in method_ids:
        method = get_method(method_id)
        names = [f.name for f in families()] if method.families == (ANY_FAMILY,) else method.families
        for family in names:
            kind = get_family(family).kinds[0]
            runs_here = misapplied([default_config(method_id)], kind, model_family(family)) is None
            if runs_here and get_family(model_family(family)).fixture is not None and kind.reference != method_id:
                out.append(Case(method_id, family))
    return out


def fixture(family: str, root: Path, cache: dict, method_id: str | None = None) -> ModelBundle:
    """The family's tiny fixture, or — where its methods need different models (a CNN with batch norm,
    a pre-trained start) — the one its `fixture_for` hook picks for the method."""
    name = model_family(family)
    pick = get_family(name).hooks.get("fixture_for") if method_id else None
    key = (name, method_id) if pick else name
    if key not in cache and pick and method_id:
        cache[key] = pick(get_method(method_id), root)
    elif key not in cache:
        build = get_family(name).fixture
        assert build is not None, f"family {name} has no tiny fixture"  # cases() leaves such families out
        cache[key] = build(root)
    return cache[key]


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in unwrap(model).parameters()}.values())


def is_compiled(model: torch.nn.Module) -> bool:
    from torch._dynamo.eval_frame import OptimizedModule

    return isinstance(model, OptimizedModule)


def observe(family: str, runner: Runner, bundle: ModelBundle) -> dict:
    seen = {
        "weights": weights_digest(unwrap(runner.model)),
        "weight_bytes": model_bytes(runner.model) + sum(model_bytes(m) for m in getattr(runner, "extra_modules", ())),
        "params": parameter_count(runner.model),
        "graph": is_compiled(runner.model),
    }
    seen.update(get_family(family).hooks["observe"](runner, bundle))
    return seen


SMALLER = ("weight_bytes", "params", "train_memory")  # effects that claim a smaller figure, not just another


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    return a == b


def claim_failures(method: Method, family: str, runner: Runner, reference: Runner, bundle: ModelBundle) -> list[str]:
    """The claimed effects a method does not show against the reference (empty: every claim holds)."""
    mine, base = observe(family, runner, bundle), observe(family, reference, bundle)
    failures = []
    for effect in sorted(method.changes):
        if effect not in mine or effect not in base:
            failures.append(f"{effect}: the {family} family cannot observe it")
        elif effect == "graph" and not mine["graph"]:
            failures.append("graph: the runner's model is not compiled")
        elif effect in SMALLER and not mine[effect] < base[effect]:
            failures.append(f"{effect}: {mine[effect]} is not below the reference's {base[effect]}")
        elif effect not in ("graph", *SMALLER) and _same(mine[effect], base[effect]):
            failures.append(f"{effect}: identical to the reference's")
    if method.lossless and "tokens" in mine and not _same(mine["tokens"], base["tokens"]):
        failures.append("lossless: its greedy tokens differ from the reference's")
    return failures


def apply_case(case: Case, bundle: ModelBundle) -> tuple[Runner, Runner]:
    method = get_method(case.method_id)
    reference = get_method(reference_of_family(case.family)).apply(
        bundle, default_config(reference_of_family(case.family))
    )
    return method.apply(bundle, default_config(case.method_id)), reference
