"""The registry of methods: name -> :class:`Method` (model class, configuration, training recipe).

open_clip's pattern (name -> config -> model): every method module registers its presets with
:func:`register`; :func:`make_model` builds one on a backbone and :func:`preset` gives its
configuration and recipe with overrides applied. A checkpoint names its model ``family``;
:data:`FAMILIES` maps it back to the class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from dapo.methods.contract import AnomalyModel
from dapo.methods.recipe import TrainConfig, split_overrides
from dapo.util.suggest import unknown_name


@dataclass(frozen=True)
class Method:
    """A named method: its model class, configuration, training recipe and origin.

    ``fit(config, backbone, overrides)`` adapts a configuration to a backbone (a fixed depth of
    ViT-L/14 scaled to a smaller tower) unless ``overrides`` set the field explicitly.
    ``table3`` is the method's row name in DAPO's Table 3 (``None``: not in it).
    """

    name: str
    model: type[AnomalyModel]
    config: Callable[[], Any]
    training: Callable[[], TrainConfig] = TrainConfig
    training_free: bool = False
    paper: str = ""
    table3: str | None = None
    fit: Callable[[Any, Any, dict], Any] | None = None


@dataclass(frozen=True)
class Preset:
    """A named method's model configuration and its training recipe."""

    model: Any
    training: TrainConfig


#: The rows of DAPO's Table 3, in the paper's order (its method names, as in ``dapo/reference``).
TABLE3_ROWS = ("CLIP-AC", "CoCoOp", "WinCLIP", "AprilGAN", "AnomalyCLIP", "AdaCLIP", "MultiADS", "DAPO")

METHODS: dict[str, Method] = {}
FAMILIES: dict[str, type[AnomalyModel]] = {}


def register(method: Method) -> Method:
    """Add ``method`` (its name must be new) and its model family."""
    if method.table3 is not None and method.table3 not in TABLE3_ROWS:
        raise ValueError(f"{method.name}: table3={method.table3!r} is not a row of DAPO's Table 3 {TABLE3_ROWS}")
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    family = method.model.family
    if not family or FAMILIES.get(family, method.model) is not method.model:
        raise ValueError(f"{method.model.__name__} needs a family name of its own, got {family!r}")
    METHODS[method.name] = method
    FAMILIES[family] = method.model
    return method


def available() -> list[str]:
    """Every registered method name, sorted."""
    return sorted(METHODS)


def table3_methods() -> dict[str, str]:
    """``{row name: method name}`` for every registered method of DAPO's Table 3, in the paper's row order."""
    rows = {spec.table3: name for name, spec in METHODS.items() if spec.table3}
    unknown = sorted(set(rows) - set(TABLE3_ROWS))
    if unknown:
        raise ValueError(f"table3 row names {unknown} are not rows of DAPO's Table 3 {TABLE3_ROWS}")
    return {row: rows[row] for row in TABLE3_ROWS if row in rows}


def get(name: str) -> Method:
    """The registered method ``name`` (``ValueError`` naming the known ones otherwise)."""
    if name not in METHODS:
        raise ValueError(unknown_name("method", name, METHODS))
    return METHODS[name]


def config_for(method: str, **overrides):
    """The named model configuration with field overrides (e.g. ``seed=1``, ``text_depth=6``)."""
    return get(method).config().with_overrides(**overrides)


def training_for(method: str, **overrides) -> TrainConfig:
    """The named method's training recipe with TrainConfig field overrides (e.g. ``epochs=2``)."""
    return get(method).training().with_overrides(**overrides)


def config_fields(method: str) -> set[str]:
    """The field names of ``method``'s configuration class."""
    return {f.name for f in fields(get(method).model.config_class)}


def preset(method: str, *, seed: int = 0, **overrides) -> Preset:
    """Model and training configuration of ``method``; ``overrides`` may name fields of either
    (a name in both, such as ``seed``, is not allowed: ``seed`` seeds both)."""
    model, training = split_overrides(overrides, get(method).model.config_class)
    return Preset(config_for(method, seed=seed, **model), training_for(method, seed=seed, **training))


def make_model(method: str, backbone, **overrides) -> AnomalyModel:
    """Build the named method on a backbone (configuration fields in ``overrides``)."""
    spec = get(method)
    config = config_for(method, **overrides)
    if spec.fit is not None:
        config = spec.fit(config, backbone, overrides)
    return spec.model(backbone, config)
