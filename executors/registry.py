"""The method contract and registry: the allow-list of what an executor may run.

A method is a class registered with its frozen config dataclass. Configs travel as JSON
`{"method": id, "version": n, "params": {...}}` and are only ever built here, so nothing a
caller sends can name code outside the registry. A composite (e.g. int8 + speculative
decoding) is a list of such configs applied in order and checked for compatibility.

A method declares the families whose workloads it accelerates (`executors.families`) and the
effects it claims (`EFFECTS`); the registry suite checks each claim against the family's
reference on the family's tiny fixture, so a method that changes nothing cannot pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import torch
from torch import nn


@dataclass(frozen=True)
class MethodConfig:
    version: int = 1


# What a method may claim to change; tests/executors/conformance.py observes each one.
EFFECTS = {
    "outputs": "what the model computes differs from the reference's (tokens, logits, embeddings, labels)",
    "weights": "the weights differ from the reference's (values or storage format)",
    "weight_bytes": "the weights take fewer bytes",
    "params": "the model has fewer parameters",
    "forward_passes": "another number of full-model forward passes for the same output",
    "schedule": "the serving schedule differs (iterations, prefill chunks, prefix-cache hits)",
    "graph": "the model runs as a compiled graph",
    "train_memory": "training keeps fewer bytes (weights, gradients, optimizer state, saved activations)",
}


@dataclass(frozen=True)
class ModelSpec:
    """A loaded model in the store's terms (the ModelSpec row of every profile record).

    `architecture` is what the store calls the model's family (decoder-lm, encoder, vit, …);
    the executor family that loaded it is `ModelBundle.family`. `extra` holds the family's own
    descriptors (FFN width, pooling, image and patch size, …).
    """

    source: str  # zoo:<name> or local:/path — the model's id in the store
    name: str
    architecture: str
    params: int
    layers: int | None = None
    width: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    vocab: int | None = None
    context: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def descriptors(self) -> dict:
        return {
            "name": self.name,
            "params": self.params,
            "dim": self.width,
            "layers": self.layers,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "vocab": self.vocab,
            "context": self.context,
            **self.extra,
            "family": self.architecture,
            "source": self.source,
        }

    def row(self) -> dict:
        return {
            "id": self.source,
            "family": self.architecture,
            "params": self.params,
            "layers": self.layers,
            "width": self.width,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "vocab": self.vocab,
            "context": self.context,
            "source": self.source,
            "descriptors": self.descriptors(),
        }


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model plus what methods and workloads need to use it.

    `capabilities` say what the model offers a method (a KV cache that can be cropped, linear
    layers, a tokenizer, …): `supports()` reads them instead of probing types.
    """

    model: nn.Module
    family: str  # the registered executor family that loaded it (executors.families)
    spec: ModelSpec
    tokenizer: Any = None
    capabilities: frozenset[str] = frozenset()
    calibration_texts: tuple[str, ...] = ()  # training split: for calibration and head training
    heldout_texts: tuple[str, ...] = ()  # never trained on: prompts and quality measurement
    data: Any = None  # a family's own calibration / held-out data (images and labels, …)


class Runner(Protocol):
    """What every runner has; each family adds its call (generate, embed, serve, classify, …)."""

    model: nn.Module  # the (possibly transformed) model, for quality and memory figures


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a torch.compile wrapper (its config, cache and weights)."""
    return getattr(model, "_orig_mod", model)


def model_device(bundle: ModelBundle) -> torch.device:
    """Where the bundle's model is (the grid moves it to the device it measures on)."""
    return next(iter(bundle.model.parameters())).device


def context_length(model: nn.Module) -> int:
    """The positions a token model takes, from its config. Duck-typed on purpose: a workload's `fits`
    sees any family's model before the protocol turns away one of a family it does not run on."""
    config: Any = unwrap(model).config  # each family's own config dataclass
    return config.max_seq_len


class TransformerBlock(nn.Module):
    """What the `transformer_blocks` capability promises of every item of a model's `layers`: an
    attention and a feed-forward submodule whose linear layers a method may swap, slice or retrain,
    and the attention probabilities the block computes. Each family's block class derives from it."""

    attention: nn.Module
    feed_forward: nn.Module

    def attention_map(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The attention probabilities [B, H, T, T] of the block on its input (the family's arguments)."""
        raise NotImplementedError


BlockT = TypeVar("BlockT", bound=TransformerBlock)

if TYPE_CHECKING:

    class BlockList(nn.ModuleList, Generic[BlockT]):
        """What a family model's `layers` is to the type checker: torch's stubs type a ModuleList's
        items as plain Modules, and every item of this one is the family's block (methods swap
        modules inside a block, never a whole block)."""

        def __iter__(self) -> Iterator[BlockT]: ...

        @overload
        def __getitem__(self, idx: slice) -> nn.ModuleList: ...

        @overload
        def __getitem__(self, idx: int) -> BlockT: ...

        def __getitem__(self, idx: int | slice) -> BlockT | nn.ModuleList: ...


def transformer_blocks(model: nn.Module) -> list[TransformerBlock]:
    """The blocks of a model with the `transformer_blocks` capability, in order."""
    blocks = []
    for block in unwrap(model).get_submodule("layers").children():
        if not isinstance(block, TransformerBlock):
            raise TypeError(f"{type(block).__name__} in {type(model).__name__}.layers is not a TransformerBlock")
        blocks.append(block)
    return blocks


class Method:
    """Base class of every registered method; the decorator fills the class attributes."""

    id: str = ""
    config_class: type[MethodConfig] = MethodConfig
    category: str = ""  # the technique (quantization, speculative, serving, …): the store's Method.family
    families: tuple[str, ...] = ()  # executor families whose workloads it accelerates
    changes: frozenset[str] = frozenset()  # keys of EFFECTS; empty only for a family's reference
    paper: str = ""
    arxiv: str | None = None
    catalogue_row: int | None = None
    lossless: bool = False
    phase: str = "inference"
    # Composition: methods apply in increasing `order` (weight transforms < graph compile <
    # decoding strategy); `composes_with` names the ids this method may be stacked with.
    order: int = 0
    composes_with: frozenset[str] = frozenset()
    requirements: dict = {}

    def supports(self, bundle: ModelBundle, device) -> str | None:
        """A reason when the method does not apply; None when it does."""
        return None

    def apply(self, bundle: ModelBundle, config: MethodConfig) -> Runner:
        raise NotImplementedError


_REGISTRY: dict[str, Method] = {}
_CONFIG_IDS: dict[type, str] = {}


MethodClass = TypeVar("MethodClass", bound=type[Method])


class UnknownMethod(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_method(
    method_id: str,
    config_class: type[MethodConfig],
    *,
    category: str,
    families: Sequence[str],
    changes: Sequence[str],
    paper: str,
    arxiv: str | None = None,
    catalogue_row: int | None = None,
    lossless: bool = False,
    phase: str = "inference",
) -> Callable[[MethodClass], MethodClass]:
    if not (
        dataclasses.is_dataclass(config_class)
        and issubclass(config_class, MethodConfig)
        and config_class.__dataclass_params__.frozen  # type: ignore[attr-defined]
    ):
        raise TypeError(f"{method_id}: config must be a frozen MethodConfig dataclass")
    if not families:
        raise ValueError(f"{method_id}: a method names the families whose workloads it accelerates")
    unknown = set(changes) - set(EFFECTS)
    if unknown:
        raise ValueError(f"{method_id}: unknown effects {sorted(unknown)}; known: {', '.join(EFFECTS)}")

    def decorate(cls: MethodClass) -> MethodClass:
        if method_id in _REGISTRY:
            raise ValueError(
                f"method id {method_id!r} is already registered by {type(_REGISTRY[method_id]).__qualname__}"
            )
        if config_class in _CONFIG_IDS:
            raise ValueError(f"{config_class.__name__} already belongs to {_CONFIG_IDS[config_class]!r}")
        cls.id, cls.config_class, cls.category, cls.paper = method_id, config_class, category, paper
        cls.families, cls.changes = tuple(families), frozenset(changes)
        cls.arxiv, cls.catalogue_row, cls.lossless, cls.phase = arxiv, catalogue_row, lossless, phase
        _REGISTRY[method_id] = cls()
        _CONFIG_IDS[config_class] = method_id
        return cls

    return decorate


def unregister_method(method_id: str) -> None:
    """Takes a method out again (tests that register throw-away methods clean up with it)."""
    method = _REGISTRY.pop(method_id)
    _CONFIG_IDS.pop(method.config_class, None)


def get_method(method_id: str) -> Method:
    try:
        return _REGISTRY[method_id]
    except KeyError:
        close = difflib.get_close_matches(method_id, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownMethod(
            f"unknown method {short_repr(method_id)}{hint} (registered: {', '.join(sorted(_REGISTRY))})"
        ) from None


def method_ids() -> list[str]:
    return sorted(_REGISTRY)


def method_of(config: MethodConfig) -> Method:
    return get_method(_CONFIG_IDS[type(config)])


def default_config(method_id: str) -> MethodConfig:
    return get_method(method_id).config_class()


def config_to_json(config: MethodConfig) -> dict:
    params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "version"}
    return {"method": _CONFIG_IDS[type(config)], "version": config.version, "params": params}


def config_from_json(data: Any) -> MethodConfig:
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise ValueError('a method config is {"method": id, "version": n, "params": {...}}')
    extra = set(data) - {"method", "version", "params"}
    if extra:
        raise ValueError(f"unexpected keys in a method config: {short_repr(sorted(extra))}")
    method = get_method(data["method"])
    cls = method.config_class
    expected = cls().version
    version = data.get("version", expected)
    if version != expected:
        raise ValueError(f"{method.id}: config version {short_repr(version)} is not supported (expected {expected})")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError(f"{method.id}: params must be an object")
    return cls(**validate_fields(method.id, cls, params, skip=("version",), noun="param"))


def validate_fields(
    owner: str, cls: type, data: Mapping[str, Any], skip: Sequence[str] = (), noun: str = "field"
) -> dict:
    """A caller's JSON fields for a config or workload dataclass, checked against each field's
    default type and limits: unknown names, wrong types, non-finite or out-of-range numbers and
    over-long lists are refused with a message naming the field."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = set(data) - set(fields)
    if unknown:
        names = sorted(unknown)
        shown = ", ".join(n[:40] for n in names[:5]) + (", …" if len(names) > 5 else "")
        raise ValueError(f"{owner}: unknown {noun}s {shown} (known: {', '.join(sorted(fields)) or 'none'})")
    defaults = cls()
    values = {}
    for name, value in data.items():
        values[name] = _coerce(f"{owner}: {noun}", name, value, getattr(defaults, name))
        _check_bounds(f"{owner}: {noun}", name, values[name], fields[name])
    return values


def bounded(default: Any, low: float | None = None, high: float | None = None, *, items: int | None = None):
    """A config field with limits a caller's JSON must respect (`config_from_json` checks them;
    `method_catalogue` publishes them). `items` bounds the length of a tuple field."""
    return field(default=default, metadata={"min": low, "max": high, "max_items": items})


def field_limits(config_field: dataclasses.Field) -> dict:
    return {k: v for k, v in config_field.metadata.items() if v is not None}


# Without a declared bound, numbers from a caller still stay in a range no method needs more of.
DEFAULT_NUMBER_BOUND = 1e6
DEFAULT_MAX_ITEMS = 64


def _check_bounds(where: str, name: str, value: Any, config_field: dataclasses.Field) -> None:
    limits = config_field.metadata
    values = value if isinstance(value, tuple) else (value,)
    most = limits.get("max_items") or DEFAULT_MAX_ITEMS
    if len(values) > most:
        raise ValueError(f"{where} {name!r} holds {len(values)} items, at most {most}")
    for number in values:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            continue
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"{where} {name!r} must be a finite number, got {short_repr(number)}")
        low, high = limits.get("min"), limits.get("max")
        if low is not None and number < low or high is not None and number > high:
            raise ValueError(f"{where} {name!r} must lie in [{low}, {high}], got {short_repr(number)}")
        if low is None and high is None and abs(number) > DEFAULT_NUMBER_BOUND:
            raise ValueError(
                f"{where} {name!r} = {short_repr(number)} is out of range (|x| ≤ {DEFAULT_NUMBER_BOUND:g})"
            )


def short_repr(value: Any) -> str:
    """A caller's value in an error message, cut short: errors never echo large input."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(where: str, name: str, value: Any, default: Any) -> Any:
    """Checks a JSON value against the type of the field's default (JSON has no int/float split)."""
    kind = type(default)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is tuple:
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok else value
    else:
        ok = default is None or isinstance(value, kind)
    if not ok:
        raise ValueError(f"{where} {name!r} must be {kind.__name__}, got {short_repr(value)}")
    return value


def composite_from_json(data: Any) -> tuple[MethodConfig, ...]:
    """A single config object or a list of them; a list is validated as a composite."""
    configs = tuple(config_from_json(item) for item in (data if isinstance(data, list) else [data]))
    validate_composite(configs)
    return configs


def validate_composite(configs: Sequence[MethodConfig]) -> None:
    if not configs:
        raise ValueError("a composite needs at least one method")
    methods = [method_of(c) for c in configs]
    ids = [m.id for m in methods]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a method appears twice in {' + '.join(ids)}")
    for earlier, later in zip(methods, methods[1:], strict=False):
        if earlier.order > later.order:
            raise ValueError(f"{later.id} must come before {earlier.id} (apply order)")
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            if b.id not in a.composes_with and a.id not in b.composes_with:
                raise ValueError(f"{a.id} does not compose with {b.id}")


def composite_id(configs: Sequence[MethodConfig]) -> str:
    return "+".join(method_of(c).id for c in configs)


ANY_FAMILY = "*"  # a method (the plain reference) that runs in any family whose runner it is


def composite_families(configs: Sequence[MethodConfig]) -> tuple[str, ...]:
    """The families every part of a composite accelerates (a composite applies where all parts do)."""
    shared: list[str] = [ANY_FAMILY]
    for config in configs:
        mine = list(method_of(config).families)
        if shared == [ANY_FAMILY]:
            shared = mine
        elif mine != [ANY_FAMILY]:
            shared = [f for f in shared if f in mine]
    return tuple(shared)


def method_catalogue() -> list[dict]:
    """What `accel-advisor methods --json` prints and the Method table mirrors."""
    rows = []
    for method_id in method_ids():
        method = _REGISTRY[method_id]
        defaults = method.config_class()
        schema = {
            f.name: {
                "type": type(getattr(defaults, f.name)).__name__,
                "default": getattr(defaults, f.name),
                **field_limits(f),
            }
            for f in dataclasses.fields(defaults)
            if f.name != "version"
        }
        rows.append(
            {
                "id": method.id,
                "category": method.category,
                "families": list(method.families),
                "changes": sorted(method.changes),
                "phase": method.phase,
                "paper": method.paper,
                "arxiv": method.arxiv,
                "catalogue_row": method.catalogue_row,
                "lossless": method.lossless,
                "version": defaults.version,
                "config_schema": schema,
                "composes_with": sorted(method.composes_with),
                "requirements": method.requirements,
            }
        )
    return rows


def apply_composite(bundle: ModelBundle, configs: Sequence[MethodConfig]) -> Runner:
    """Applies each method to the model the previous one produced; the last one decides the runner."""
    validate_composite(configs)
    runner = None
    for config in configs:
        if runner is not None:
            bundle = dataclasses.replace(bundle, model=runner.model)
        runner = method_of(config).apply(bundle, config)
    assert runner is not None
    return runner
