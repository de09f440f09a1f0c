"""A training run's configuration as data: ``dapo train --set FIELD=VALUE ...`` and ``--config run.yaml``.

A run file is YAML: the command's options by their long names (``method``, ``seed``, ``dataset``,
``root``, ``out``, ``backbone``, ...) and two sections of fields, ``model`` (the method's configuration, e.g. :class:`dapo.methods.dapo.config.DAPOConfig`)
and ``training`` (:class:`dapo.methods.recipe.TrainConfig`), each a subset or all of them::

    method: dapo
    dataset: folder
    root: my_parts
    out: runs/my_parts
    model: {lam: 8.0, n_ctx: 4}
    training: {epochs: 3, lr: 0.0005}

:func:`expand_run_file` reads the file as if its options had been typed right after ``train``, its
fields as ``--set`` items (``epochs``, ``precision``, ``batch_size`` as their options), so what the
command line gives wins. Precedence, lowest first: the method's preset (:func:`dapo.methods.preset`),
the run file, the command line's options, its ``--set`` items (a later item of the same field wins). Every value is checked before any work starts, with the
messages of the notebooks' parameters (:mod:`dapo.experiments.parameters`) and of the config classes' own checks.
``dapo train`` writes the resolved run, every field, as ``run.yaml`` beside its checkpoints
(:func:`write_run_file`); ``dapo train --config that/run.yaml`` repeats the run.
"""

from __future__ import annotations

import ast
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dapo.cli.common import UsageError

RUN_FILE = "run.yaml"
SECTIONS = ("model", "training")
#: Options of ``dapo train`` a run file may hold (argparse destinations), besides the two sections.
OPTIONS = ("method", "seed", "dataset", "root", "split", "backbone", "pretrained", "clip_weights", "image_size",
           "device", "workers", "out")


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lam=8", "betas=(0.9, 0.99)", "aggregation=attention"]`` -> values (Python literals, else text)."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set lam=8 n_ctx=4")
        values[name] = literal(text.strip())  # a later item wins (the run file's come first)
    return values


def literal(text: str) -> Any:
    """A command-line value: a Python literal (8, 1e-3, True, None, (0.5, 0.999)), else the text itself."""
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_run_file(path: str | Path) -> dict[str, Any]:
    """The run file's options and sections (unknown keys, bad YAML and a missing file are one-line errors)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise UsageError(f"--config {path}: cannot be read ({error.strerror or type(error).__name__})") from error
    except yaml.YAMLError as error:
        raise UsageError(f"--config {path}: not valid YAML ({' '.join(str(error).split())})") from error
    if not isinstance(data, Mapping):
        raise UsageError(f"--config {path}: expected a mapping of options and the sections {', '.join(SECTIONS)}")
    unknown = sorted(set(data) - set(OPTIONS) - set(SECTIONS) - {"dapo_version"})
    if unknown:
        raise UsageError(f"--config {path}: unknown key(s) {unknown}; known: {', '.join(OPTIONS + SECTIONS)}")
    for section in SECTIONS:
        if not isinstance(data.get(section) or {}, Mapping):
            raise UsageError(f"--config {path}: '{section}' must be a mapping of fields")
    return dict(data)


#: TrainConfig fields that ``dapo train`` has options for (the run file's values become those options).
AS_OPTIONS = ("epochs", "precision", "batch_size")


def expand_run_file(argv: list[str]) -> list[str]:
    """``argv`` with a ``train --config FILE`` run file's options and fields inserted right after ``train``."""
    if "train" not in argv:
        return argv
    at = argv.index("train")
    rest = argv[at + 1:]
    path = next((rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "--config"), None)
    path = path or next((a.split("=", 1)[1] for a in rest if a.startswith("--config=")), None)
    if path is None:
        return argv
    return [*argv[:at + 1], *run_tokens(read_run_file(path), path), *rest]


def run_tokens(data: Mapping[str, Any], path: str | Path) -> list[str]:
    """A run file's content as ``dapo train`` arguments."""
    tokens: list[str] = []
    for name in OPTIONS:
        if data.get(name) is not None:
            tokens += [f"--{name.replace('_', '-')}", str(data[name])]
    fields_ = {}
    for section in SECTIONS:
        values = dict(data.get(section) or {})
        if "seed" in values and values["seed"] != data.get("seed", 0):
            raise UsageError(f"--config {path}: {section}.seed={values['seed']!r} differs from seed="
                             f"{data.get('seed', 0)!r}: set the top-level 'seed', which seeds both")
        values.pop("seed", None)
        fields_.update(values)
    for name in AS_OPTIONS:
        if fields_.get(name) is not None:
            tokens += [f"--{name.replace('_', '-')}", str(fields_.pop(name))]
    if fields_:
        tokens += ["--set", *(f"{k}={v!r}" for k, v in fields_.items())]
    return tokens


def check_fields(values: Mapping[str, Any], where: str, method: str = "dapo") -> dict[str, Any]:
    """Known fields of ``method``'s configuration or of TrainConfig, each of its field's type (a number
    where a float is expected: ``8`` -> ``8.0``); else a one-line :class:`UsageError` naming ``where``
    and the field."""
    from dapo.experiments.parameters import ParameterError
    from dapo.methods import get
    from dapo.methods.recipe import TrainConfig, split_overrides

    config_class = get(method).model.config_class
    try:
        split_overrides(dict(values), config_class)
    except ValueError as error:
        raise UsageError(f"{where}: {error}") from None
    hints = {**typing.get_type_hints(TrainConfig), **typing.get_type_hints(config_class)}
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = _typed(name, value, hints[name])
        except ParameterError as error:
            raise UsageError(f"{where}: {error}") from None
    return checked


def _typed(name: str, value: Any, hint: Any) -> Any:
    """``value`` as a ``hint`` (a field's annotation), or :class:`ParameterError` in the notebooks' words."""
    from dapo.experiments.parameters import ParameterError, boolean, integer

    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    if hint is bool:
        return boolean(name, value)
    if hint is int:
        return integer()(name, value)
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"{name}={value!r}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParameterError(f"{name}={value!r}: expected a string")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{name}={value!r}: expected a list, e.g. {name}=(0.5, 0.999)")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParameterError(f"{name}={value!r}: expected a mapping")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return value


def resolve(method: str, seed: int, values: Mapping[str, Any], where: str = "--set"):
    """The method's :class:`dapo.methods.Preset` with the fields ``values`` applied, the model fields that
    differ from the preset (what :func:`dapo.methods.make_model` takes) and the training fields."""
    from dapo.methods import config_fields, preset

    if "seed" in values:
        raise UsageError(f"{where} seed: use --seed (it seeds the model and the data order)")
    try:
        base = preset(method, seed=seed)
        chosen = preset(method, seed=seed, **values)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{where}: {error}") from None
    model_fields = config_fields(method)
    changed = {k: v for k, v in values.items() if k in model_fields and getattr(base.model, k) != getattr(chosen.model, k)}
    training = {k: v for k, v in values.items() if k not in model_fields}
    return chosen, changed, training


def run_document(args, config, training, backbone: tuple[str, str | None, int]) -> dict[str, Any]:
    """The resolved run: the command's options (the backbone as chosen: name, weights tag, input size)
    and every model and training field (JSON-ready values)."""
    from dapo import __version__
    from dapo.cli.common import NO_WEIGHTS

    options = {name: _plain(getattr(args, name, None)) for name in OPTIONS}
    name, pretrained, size = backbone
    options.update(backbone=name, pretrained=NO_WEIGHTS if pretrained is None else pretrained, image_size=size)
    return {"dapo_version": __version__, **options,
            "model": json.loads(json.dumps(config.to_dict())), "training": json.loads(json.dumps(training.to_dict()))}


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def write_run_file(out: Path, document: Mapping[str, Any]) -> Path:
    """Write ``out/run.yaml`` atomically, with a header that says how to repeat the run."""
    import yaml

    from dapo.util.atomic import write_text

    header = (f"# The resolved configuration of a `dapo train` run (dapo {document['dapo_version']}).\n"
              f"# Repeat it: dapo train --config {out / RUN_FILE}\n")
    return write_text(out / RUN_FILE, header + yaml.safe_dump(dict(document), sort_keys=False))
