"""The method contract and registry: the allow-list of what an executor may run.

A method is a class registered with its frozen config dataclass. Configs travel as JSON
`{"method": id, "version": n, "params": {...}}` and are only ever built here, so nothing a
caller sends can name code outside the registry. A composite (e.g. int8 + speculative
decoding) is a list of such configs applied in order and checked for compatibility.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from executors.lm import DecoderLM


@dataclass(frozen=True)
class MethodConfig:
    version: int = 1


class Tokenizer(Protocol):
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model plus what methods and workloads need to use it."""

    model: DecoderLM
    tokenizer: Tokenizer
    spec: dict  # name, params, dim, layers, heads, kv_heads, vocab, context, family, source
    calibration_texts: tuple[str, ...] = ()  # training split: for calibration and head training
    heldout_texts: tuple[str, ...] = ()  # never trained on: prompts and quality measurement


@dataclass
class Generation:
    tokens: torch.Tensor  # [B, max_new_tokens]: exactly that many, no early stop on EOS
    forward_passes: int
    stats: dict = field(default_factory=dict)  # acceptance_rate, mean_accepted_len, …


class Runner(Protocol):
    model: torch.nn.Module  # the (possibly transformed) model, for perplexity and memory figures

    def generate(
        self,
        prompts: torch.Tensor,
        max_new_tokens: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        seed: int = 0,
    ) -> Generation: ...


class Method:
    """Base class of every registered method; the decorator fills the class attributes."""

    id: str = ""
    config_class: type[MethodConfig] = MethodConfig
    family: str = ""
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

    def supports(self, bundle: ModelBundle, device: torch.device) -> str | None:
        """A reason when the method does not apply; None when it does."""
        return None

    def apply(self, bundle: ModelBundle, config: MethodConfig, calibration: torch.Tensor | None) -> Runner:
        raise NotImplementedError


_REGISTRY: dict[str, Method] = {}
_CONFIG_IDS: dict[type, str] = {}


class UnknownMethod(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_method(
    method_id: str,
    config_class: type[MethodConfig],
    *,
    family: str,
    paper: str,
    arxiv: str | None = None,
    catalogue_row: int | None = None,
    lossless: bool = False,
    phase: str = "inference",
) -> Callable[[type], type]:
    if not (
        dataclasses.is_dataclass(config_class)
        and issubclass(config_class, MethodConfig)
        and config_class.__dataclass_params__.frozen
    ):
        raise TypeError(f"{method_id}: config must be a frozen MethodConfig dataclass")

    def decorate(cls: type) -> type:
        if method_id in _REGISTRY:
            raise ValueError(
                f"method id {method_id!r} is already registered by {type(_REGISTRY[method_id]).__qualname__}"
            )
        if config_class in _CONFIG_IDS:
            raise ValueError(f"{config_class.__name__} already belongs to {_CONFIG_IDS[config_class]!r}")
        cls.id, cls.config_class, cls.family, cls.paper = method_id, config_class, family, paper
        cls.arxiv, cls.catalogue_row, cls.lossless, cls.phase = arxiv, catalogue_row, lossless, phase
        _REGISTRY[method_id] = cls()
        _CONFIG_IDS[config_class] = method_id
        return cls

    return decorate


def get_method(method_id: str) -> Method:
    try:
        return _REGISTRY[method_id]
    except KeyError:
        close = difflib.get_close_matches(method_id, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownMethod(
            f"unknown method {method_id!r}{hint} (registered: {', '.join(sorted(_REGISTRY))})"
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
        raise ValueError(f"unexpected keys in a method config: {', '.join(sorted(extra))}")
    method = get_method(data["method"])
    cls = method.config_class
    expected = cls().version
    version = data.get("version", expected)
    if version != expected:
        raise ValueError(f"{method.id}: config version {version!r} is not supported (expected {expected})")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError(f"{method.id}: params must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "version"}
    unknown = set(params) - set(fields)
    if unknown:
        raise ValueError(
            f"{method.id}: unknown params {', '.join(sorted(unknown))} (known: {', '.join(sorted(fields)) or 'none'})"
        )
    values = {name: _coerce(method.id, name, value, getattr(cls(), name)) for name, value in params.items()}
    return cls(**values)


def _coerce(method_id: str, name: str, value: Any, default: Any) -> Any:
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
        raise ValueError(f"{method_id}: param {name!r} must be {kind.__name__}, got {value!r}")
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
    for earlier, later in zip(methods, methods[1:]):
        if earlier.order > later.order:
            raise ValueError(f"{later.id} must come before {earlier.id} (apply order)")
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            if b.id not in a.composes_with and a.id not in b.composes_with:
                raise ValueError(f"{a.id} does not compose with {b.id}")


def composite_id(configs: Sequence[MethodConfig]) -> str:
    return "+".join(method_of(c).id for c in configs)


def method_catalogue() -> list[dict]:
    """What `accel-advisor methods --json` prints and the Method table mirrors."""
    rows = []
    for method_id in method_ids():
        method = _REGISTRY[method_id]
        defaults = method.config_class()
        schema = {
            f.name: {"type": type(getattr(defaults, f.name)).__name__, "default": getattr(defaults, f.name)}
            for f in dataclasses.fields(defaults)
            if f.name != "version"
        }
        rows.append(
            {
                "id": method.id,
                "family": method.family,
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


def apply_composite(bundle: ModelBundle, configs: Sequence[MethodConfig], calibration: torch.Tensor | None) -> Runner:
    """Applies each method to the model the previous one produced; the last one decodes."""
    validate_composite(configs)
    runner = None
    for config in configs:
        if runner is not None:
            bundle = dataclasses.replace(bundle, model=runner.model)
        runner = method_of(config).apply(bundle, config, calibration)
    return runner
