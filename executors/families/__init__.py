"""The family registry: each kind of model the executors run, its workload kinds and its zoo.

A family is one folder here (`lm/`, `longctx/`, `stream/`, `encoder/`, …) that holds its model
code, zoo entries, workload kinds, the reference each kind's speed-ups divide by, its hook on
the measurement protocol (`executors/protocol.py`), its quality metrics and the tiny fixture
its tests use, and registers them with `register_family`. Nothing outside a family's folder
branches on its name or its kinds: the CLI, the grid, the worker, the API catalogue and the
advisor read kinds, references, harnesses and zoo entries from here. `docs/architecture.md`
has the step-by-step guide for adding one.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from executors import protocol
from executors.protocol import KindHarness, Prepared
from executors.registry import (
    ANY_FAMILY,
    MethodConfig,
    ModelBundle,
    Runner,
    composite_families,
    default_config,
    method_of,
    short_repr,
    validate_fields,
)


def row_words(row: Mapping[str, Any]) -> str:
    """The wording of a workload row from its common columns ("batch 1 · 32-token prompt · 32 new
    tokens"): what a kind without words of its own is called."""
    parts = [f"batch {row.get('batch_size') or 1}"]
    if row.get("prompt_len"):
        parts.append(f"{row['prompt_len']}-token prompt")
    if row.get("gen_len"):
        parts.append(f"{row['gen_len']} new tokens")
    if row.get("image_size"):
        parts.append(f"{row['image_size']} px images")
    if row.get("steps"):
        parts.append(f"{row['steps']} steps")
    if row.get("sampling") and row["sampling"] != "greedy":
        parts.append(str(row["sampling"]))
    return " · ".join(parts)


@dataclass(frozen=True)
class WorkloadKind:
    """One shape of task a family's models run, and how it is measured."""

    name: str  # the workload's "kind" in JSON and in the store
    family: str
    workload: type  # frozen dataclass: from its JSON fields; .shape(), .row(), .id, .fits(bundle)
    reference: str  # the method every speed-up of this kind divides by
    harness: KindHarness
    models: tuple[str, ...] = ()  # families whose models it runs on (empty: its own family's)
    keyword: str | None = None  # the CLI grid keyword (`embed batch=1,8`); None for the default kind
    parse: Callable[[str], list] | None = None  # the CLI grid text after the keyword → workloads
    default: bool = False  # the kind a workload without "kind" has
    describe: Callable[[Any], str] = repr  # a short label (progress lines, CLI)
    # A stored workload row (kind, batch_size, prompt_len, …, params) as a person would say it (UI)
    words: Callable[[Mapping[str, Any]], str] = row_words
    call_seconds: Callable[[int, Any], float] | None = None  # rough cost of one call, params × workload

    @property
    def model_families(self) -> tuple[str, ...]:
        return self.models or (self.family,)


@dataclass(frozen=True)
class ZooEntry:
    """A model the zoo can build (train or convert) into its cache, or that ships in a pip package."""

    name: str
    family: str
    note: str
    load: Callable[[Path, str], ModelBundle]  # (built folder, source) → bundle
    build: Callable[[Path, Path | None], dict] | None = (
        None  # (folder, zoo root) → trains/converts, returns the manifest
    )
    params: int | None = None  # known before building, for listings

    @property
    def source(self) -> str:
        return f"zoo:{self.name}"


@dataclass(frozen=True)
class ConfigReader:
    """How a family reads a Hugging Face checkpoint's `config.json`, without loading any weight."""

    model_types: tuple[str, ...]  # the config's "model_type" values the family loads
    # config → the store's ModelSpec fields (family = the architecture, params, layers, width, heads,
    # kv_heads, vocab, context, descriptors); ValueError naming what it cannot load
    describe: Callable[[dict], dict]
    needs: tuple[str, ...] = ()  # files a weights folder must hold besides config.json and the weights
    # (config, {tensor name: shape} of the safetensors headers) → ValueError where they do not fit
    check_weights: Callable[[dict, dict[str, list[int]]], None] | None = None


def check_fit(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> None:
    """A ConfigReader's `check_weights` verdict: ValueError naming the tensors missing, unexpected or
    of the wrong shape, where a checkpoint's tensors do not fill the model its config describes."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(found[k]) != tuple(expected[k]))
    problems = [
        f"{what}: {', '.join(names[:4])}{' …' if len(names) > 4 else ''}"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if names
    ]
    if problems:
        raise ValueError(f"the weights do not fit the config ({'; '.join(problems)})")


class UnsupportedArchitecture(ValueError):
    """A checkpoint no family loads; the message lists the model types that are loaded."""


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    runner_protocol: str  # the call every runner of the family offers: generate, embed, serve, classify, …
    kinds: tuple[WorkloadKind, ...]
    quality_metrics: tuple[str, ...]
    # (model, stats) → the family's plain runner over a (transformed) model; None for a family
    # whose kinds run on another family's models (their bundles carry that family's name).
    runner: Callable[..., Runner] | None = None
    architectures: tuple[str, ...] = ()  # the ModelSpec.family values of the models it loads (decoder-lm, …)
    zoo: tuple[ZooEntry, ...] = ()
    fixture: Callable[[Path], ModelBundle] | None = None  # the tiny model of its tests and the registry suite
    local_loader: Callable[[Path, str], ModelBundle | None] | None = None  # a user's folder, if of this family
    config_reader: ConfigReader | None = None  # a user's Hugging Face config.json, for registering it
    # Family-specific helpers methods call generically (e.g. "recovery": the objective a
    # transformed copy is retrained with), so a method never branches on the family itself.
    hooks: Mapping[str, Callable] = field(default_factory=dict)


_FAMILIES: dict[str, Family] = {}
_KINDS: dict[str, WorkloadKind] = {}
_KIND_OF_CLASS: dict[type, WorkloadKind] = {}
_ZOO: dict[str, ZooEntry] = {}


def register_family(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    for kind in family.kinds:
        if kind.name in _KINDS:
            raise ValueError(f"workload kind {kind.name!r} already belongs to family {_KINDS[kind.name].family!r}")
        if kind.family != family.name:
            raise ValueError(f"kind {kind.name!r} says family {kind.family!r}, registered by {family.name!r}")
    for entry in family.zoo:
        if entry.name in _ZOO:
            raise ValueError(f"zoo model {entry.name!r} already belongs to family {_ZOO[entry.name].family!r}")
    if family.kinds and any(k.default for k in family.kinds) and any(k.default for k in _KINDS.values()):
        raise ValueError(f"family {family.name!r} declares a default kind; one is already registered")
    _FAMILIES[family.name] = family
    for kind in family.kinds:
        _KINDS[kind.name] = kind
        _KIND_OF_CLASS[kind.workload] = kind
    _ZOO.update({entry.name: entry for entry in family.zoo})
    return family


def unregister_family(name: str) -> None:
    """Takes a family out again (tests that register a throw-away family clean up with it)."""
    family = _FAMILIES.pop(name)
    for kind in family.kinds:
        _KINDS.pop(kind.name, None)
        _KIND_OF_CLASS.pop(kind.workload, None)
    for entry in family.zoo:
        _ZOO.pop(entry.name, None)


def _unknown(what: str, name: str, known: Sequence[str]) -> KeyError:
    close = difflib.get_close_matches(str(name)[:100], list(known), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return KeyError(f"unknown {what} {short_repr(name)}{hint} (known: {', '.join(sorted(known))})")


def families() -> list[Family]:
    return list(_FAMILIES.values())


def get_family(name: str) -> Family:
    if name not in _FAMILIES:
        raise _unknown("family", name, list(_FAMILIES))
    return _FAMILIES[name]


def kinds() -> list[WorkloadKind]:
    return list(_KINDS.values())


def get_kind(name: str) -> WorkloadKind:
    if name not in _KINDS:
        raise ValueError(str(_unknown("workload kind", name, list(_KINDS)).args[0]))
    return _KINDS[name]


def kind_of(workload) -> WorkloadKind:
    try:
        return _KIND_OF_CLASS[type(workload)]
    except KeyError:
        raise TypeError(f"{type(workload).__name__} is not a registered workload class") from None


def default_kind() -> WorkloadKind:
    return next(k for k in _KINDS.values() if k.default)


def workload_from_json(data: Any):
    """The workload object for a JSON shape; its "kind" picks the class (default: the default kind)."""
    if not isinstance(data, dict):
        raise ValueError("a workload is a JSON object")
    kind = get_kind(data["kind"]) if "kind" in data else default_kind()
    fields = {k: v for k, v in data.items() if k != "kind"}
    return kind.workload(**validate_fields(f"workload {kind.name}", kind.workload, fields))


def parse_grid(text: str) -> list:
    """A CLI grid: `<keyword> axis=v1,v2 …` for a kind with that keyword, or the default kind's axes."""
    words = text.split()
    for kind in _KINDS.values():
        if kind.keyword and words[:1] == [kind.keyword] and kind.parse is not None:
            return kind.parse(text.split(None, 1)[1] if len(words) > 1 else "")
    default = default_kind()
    if default.parse is None:
        raise ValueError(f"the default kind {default.name} has no grid syntax")
    return default.parse(text)


def zoo_entries() -> list[ZooEntry]:
    return list(_ZOO.values())


def zoo_entry(name: str) -> ZooEntry:
    if name not in _ZOO:
        raise _unknown("zoo model", name, list(_ZOO))
    return _ZOO[name]


def default_runner(bundle: ModelBundle, model: nn.Module, stats: dict | None = None) -> Runner:
    """The plain runner of the bundle's family over `model` (a weight transform's result)."""
    runner = get_family(bundle.family).runner
    if runner is None:
        raise TypeError(f"family {bundle.family!r} has no plain runner: its models belong to another family")
    return runner(model, stats or {})


def family_of_architecture(architecture: str) -> Family:
    """The family that loads models of a stored architecture (the API knows models by their rows)."""
    for family in _FAMILIES.values():
        if architecture in family.architectures:
            return family
    known = sorted(a for f in _FAMILIES.values() for a in f.architectures)
    raise KeyError(f"no family loads {architecture!r} models (known: {', '.join(known)})")


def supported_model_types() -> dict[str, str]:
    """Every Hugging Face model type some family loads → that family."""
    return {t: f.name for f in _FAMILIES.values() if f.config_reader for t in f.config_reader.model_types}


def config_reader_for(config: Mapping) -> tuple[Family, ConfigReader]:
    """The family that loads checkpoints of this config.json, or UnsupportedArchitecture listing those loaded."""
    model_type = config.get("model_type")
    owner = supported_model_types().get(model_type) if isinstance(model_type, str) else None
    if owner is None:
        loaded = ", ".join(sorted(supported_model_types()))
        said = f"model type {short_repr(model_type)}" if model_type is not None else "a config.json without model_type"
        raise UnsupportedArchitecture(f"{said} is not an architecture this installation loads (supported: {loaded})")
    family = _FAMILIES[owner]
    assert family.config_reader is not None  # supported_model_types lists only families with one
    return family, family.config_reader


def family_hook(bundle: ModelBundle, name: str) -> Callable | None:
    return get_family(bundle.family).hooks.get(name)


def misapplied(configs: Sequence[MethodConfig], kind: WorkloadKind, model_family: str) -> str | None:
    """Why a method (or composite) does not accelerate this kind of workload, or None.

    A method for any family (the plain reference) runs where the model family's plain runner
    offers the call the kind needs (it does not serve a request stream)."""
    accelerated = composite_families(configs)
    if kind.family in accelerated:
        return None
    if accelerated == (ANY_FAMILY,):
        needs, offers = get_family(kind.family).runner_protocol, get_family(model_family).runner_protocol
        if needs == offers and get_family(model_family).runner is not None:
            return None
        return f"{method_of(configs[0]).id} runs a plain {offers} runner; a {kind.name} task needs {needs}"
    names = " + ".join(method_of(c).id for c in configs)
    return (
        f"{names} accelerates {', '.join(accelerated) or 'no family in common'}; "
        f"a {kind.name} task belongs to the {kind.family} family"
    )


def reference_of(workload) -> str:
    return kind_of(workload).reference


def measure(bundle: ModelBundle, workload, methods: Sequence[Prepared], node: dict, **options) -> list[dict]:
    """Profiles every prepared method and the kind's reference on one task (executors/protocol.py)."""
    return protocol.measure(bundle, workload, methods, node, kind=kind_of(workload), **options)


def prepare_reference(bundle: ModelBundle, workload, device) -> Prepared:
    return protocol.prepare(bundle, [default_config(reference_of(workload))], device)


def families_catalogue() -> list[dict]:
    """What `accel-advisor families --json` prints."""
    from executors.registry import method_catalogue

    methods = method_catalogue()
    rows = []
    for family in _FAMILIES.values():
        rows.append(
            {
                "name": family.name,
                "description": family.description,
                "runner_protocol": family.runner_protocol,
                "architectures": list(family.architectures),
                "quality_metrics": list(family.quality_metrics),
                "kinds": [
                    {
                        "name": k.name,
                        "reference": k.reference,
                        "harness": f"{type(k.harness).__module__}.{type(k.harness).__name__}",
                        "models": list(k.model_families),
                        "default": k.default,
                        "keyword": k.keyword,
                        "fields": workload_fields(k.workload),
                    }
                    for k in family.kinds
                ],
                "zoo": [{"name": e.name, "note": e.note, "params": e.params} for e in family.zoo],
                "fixture": family.fixture is not None,
                "methods": [m["id"] for m in methods if family.name in m["families"]],
            }
        )
    return rows


def workload_fields(cls: type) -> dict:
    """Each field of a workload class with its default and limits (the API's schema says them too)."""
    from executors.registry import field_limits

    out = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        out[f.name] = {"type": type(default).__name__, "default": default, **field_limits(f)}
    return out


# The families this installation runs, in the order their loaders are tried: an explicit list,
# like the method registry's. Imported last: each registers itself with the functions above.
from executors.families import lm  # noqa: E402, I001
from executors.families import longctx  # noqa: E402
from executors.families import stream  # noqa: E402
from executors.families import encoder  # noqa: E402
from executors.families import vision  # noqa: E402
from executors.families import diffusion  # noqa: E402
from executors.families import training  # noqa: E402

__all__ = ["lm", "longctx", "stream", "encoder", "vision", "training", "diffusion"]
