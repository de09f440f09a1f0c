"""The notebooks' papermill parameters: one definition, one validator.

Every notebook's ``parameters`` cell is generated from :data:`COMMON` plus the notebook's own
entries in :data:`EXTRAS` (``python -m dapo.experiments.parameters`` rewrites the cells; a test checks that
they match), so notebooks cannot drift apart. :func:`validate` checks every value up front
(type, range, known names) and raises :class:`ParameterError` with a one-line message naming the
parameter and what is allowed; the notebooks, the command line and the API share it.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dapo.methods.dapo.switches import DEFAULT_SWITCHES
from dapo.util.precision import PRECISIONS

HEADER = "# Parameters (papermill: -p NAME VALUE). Defaults run the synthetic profile on a CPU."
PAPERMILL_MARKER = "# Parameters"  # first line of the cell papermill injects
PROFILES = ("synthetic", "paper")
ALIGN_LIMIT = 60  # parameters cell: longer assignments get their comment on the line above


class ParameterError(ValueError):
    """A notebook or API parameter has a value that is not allowed."""


# ----------------------------------------------------------------------------- checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choice(*allowed: str) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if value not in allowed:
            raise ParameterError(f"{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")
        return value
    return check


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"{name}={value!r}: expected True or False")
    return value


def integer(minimum: int | None = None, optional: bool = False) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not _is_int(value):
            raise ParameterError(f"{name}={value!r}: expected an integer{' or None' if optional else ''}")
        if minimum is not None and value < minimum:
            raise ParameterError(f"{name}={value}: must be >= {minimum}")
        return value
    return check


def text(optional: bool = True) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ParameterError(f"{name}={value!r}: expected a non-empty string{' or None' if optional else ''}")
        return value
    return check


def existing_file(name: str, value: Any) -> Any:
    if value is None:
        return None
    text()(name, value)
    if not Path(value).expanduser().is_file():
        raise ParameterError(f"{name}={value!r}: no such file")
    return value


def _check_dataset_name(name: str, value: str) -> None:
    """Refuse a dataset name no loader opens (a knowledge-base name, ``folder`` or a knowledge YAML path),
    naming the closest known name; whether the profile uses it is :func:`dapo.experiments.profiles.resolve_profile`'s check."""
    from dapo.data.registry import openable_datasets
    from dapo.util.suggest import unknown_name

    if value not in openable_datasets() and Path(value).suffix not in (".yaml", ".yml"):
        raise ParameterError(f"{name}: {unknown_name('dataset', value, openable_datasets())}")


def dataset_name(name: str, value: Any) -> Any:
    """A known dataset name or None (the profile's default)."""
    if value is None:
        return None
    text()(name, value)
    _check_dataset_name(name, value)
    return value


def dataset_roots_dict(name: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ParameterError(f"{name}={value!r}: expected a dict of dataset name -> folder, "
                             f"e.g. {{\"visa\": \"/data/VisA_20220922\"}}")
    for key, folder in value.items():
        _check_dataset_name(f"{name}[{key!r}]", key)
        if not folder.strip():
            raise ParameterError(f"{name}[{key!r}]={folder!r}: expected a folder")
    return dict(value)


def device_name(name: str, value: Any) -> Any:
    from dapo.util.precision import DeviceUnavailableError, resolve_device

    if not isinstance(value, str):
        raise ParameterError(f"{name}={value!r}: expected 'auto', 'cpu' or 'cuda[:N]'")
    try:
        resolve_device(value)
    except DeviceUnavailableError as error:
        raise ParameterError(f"{name}: {error}") from None
    return value


def seed_list(name: str, value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(s) and s >= 0 for s in value):
        raise ParameterError(f"{name}={value!r}: expected a non-empty list of integers >= 0, e.g. [0, 1, 2]")
    if len(set(value)) != len(value):
        raise ParameterError(f"{name}={value!r}: seeds must be distinct")
    return list(value)


def dataset_list(optional: bool = True) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
            raise ParameterError(f"{name}={value!r}: expected a non-empty list of dataset names")
        for index, item in enumerate(value):
            _check_dataset_name(f"{name}[{index}]", item)
        if len(set(value)) != len(value):
            raise ParameterError(f"{name}={value!r}: a dataset is named twice")
        return list(value)
    return check


def epoch_list(name: str, value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(e) and e >= 1 for e in value):
        raise ParameterError(f"{name}={value!r}: expected a non-empty list of epochs >= 1, e.g. [1, 2, 5]")
    return sorted(set(value))


def sweep_grid(name: str, value: Any) -> Any:
    """A sweep grid: {field: [values...]} over DAPOConfig/TrainConfig fields; each value must build."""
    from dapo.methods.dapo.config import DAPOConfig
    from dapo.methods.recipe import TrainConfig, split_overrides
    if not isinstance(value, Mapping) or not value:
        raise ParameterError(f"{name}={value!r}: expected a dict of setting -> list of values, e.g. {{\"lam\": [1, 4]}}")
    try:
        model_fields, training_fields = split_overrides(dict(value))
    except ValueError as error:
        raise ParameterError(f"{name}: {error}") from None
    for field, values in value.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ParameterError(f"{name}[{field!r}]={values!r}: expected a non-empty list of values")
        for item in values:
            try:
                if field in model_fields:
                    DAPOConfig(**{field: item})
                else:
                    TrainConfig(**{field: item})
            except (TypeError, ValueError) as error:
                raise ParameterError(f"{name}[{field!r}] value {item!r}: {error}") from None
    return {field: list(values) for field, values in value.items()}


def field_values(field: str, minimum: int = 1) -> Callable[[str, Any], Any]:
    """A non-empty list of distinct values of one DAPOConfig/TrainConfig ``field``, each of which builds
    DAPO's preset, at least ``minimum`` of them (a sweep axis: ``lam_values = [1.0, 4.0, 16.0]``)."""
    def check(name: str, value: Any) -> Any:
        try:
            grid = sweep_grid(name, {field: value})[field]
        except ParameterError as error:
            raise ParameterError(str(error).replace(f"{name}[{field!r}]", name)) from None
        if len(grid) < minimum or len({json.dumps(v) for v in grid}) != len(grid):
            raise ParameterError(f"{name}={value!r}: expected at least {minimum} distinct values")
        return grid
    return check


def fraction_list(allow_zero: bool) -> Callable[[str, Any], Any]:
    """Fractions of an encoder's depth (``[0.25, 0.5, 1.0]``): each in (0, 1], or [0, 1] with ``allow_zero``."""
    def check(name: str, value: Any) -> Any:
        low = "[0, 1]" if allow_zero else "(0, 1]"
        if (not isinstance(value, (list, tuple)) or not value
                or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in value)
                or not all((0 <= f if allow_zero else 0 < f) and f <= 1 for f in value)):
            raise ParameterError(f"{name}={value!r}: expected a non-empty list of fractions of the encoder's depth "
                                 f"in {low}, e.g. [0.25, 0.5, 1.0]")
        return [float(f) for f in value]
    return check


@dataclass(frozen=True)
class Parameter:
    """One papermill parameter: its default, the comment shown in the cell, and its check."""

    name: str
    default: Any
    comment: str
    check: Callable[[str, Any], Any]

    def line(self, width: int) -> str:
        return f"{f'{self.name} = {_literal(self.default)}':<{width}}# {self.comment}"


def _literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


COMMON: tuple[Parameter, ...] = (
    Parameter("profile", "synthetic", '"synthetic" (generated worlds + compact backbone) or "paper" '
              "(ViT-L-14-336/openai + real data)", choice(*PROFILES)),
    Parameter("smoke", False, "tiny sizes (what `make test` runs)", boolean),
    Parameter("seed", 0, "seeds the synthetic worlds, sampling and (single-seed notebooks) training",
              integer(minimum=0)),
    Parameter("data_root", None, "folder holding the datasets; default $DAPO_DATA or data/", text()),
    Parameter("dataset_roots", None, 'per-dataset folders, e.g. {"visa": "/data/VisA_20220922"}', dataset_roots_dict),
    Parameter("backbone", None, "OpenCLIP model name; default: the profile's", text()),
    Parameter("pretrained", None, 'OpenCLIP tag ("openai"), "synthetic", or "random"; default: the profile\'s',
              text()),
    Parameter("checkpoint", None, 'local weights file for `pretrained` (paper profile offline), '
              'e.g. "/models/open_clip_ViT-L-14-336_openai.safetensors"', existing_file),
    Parameter("device", "auto", '"auto": CUDA when present, else CPU', device_name),
    Parameter("precision", "auto", '"auto" (bf16 on CUDA and bf16-capable CPUs, else fp32), "fp32" or "bf16"',
              choice(*PRECISIONS)),
    Parameter("epochs", None, "training epochs; default: the profile's", integer(minimum=1, optional=True)),
    Parameter("train_dataset", None, 'training dataset; default: the profile\'s (paper: "mvtec")', dataset_name),
    Parameter("target_datasets", None, "zero-shot test datasets; default: the profile's", dataset_list()),
    Parameter("output_dir", None, "tables; default results/<profile>", text()),
    Parameter("figures_dir", None, "figures; default figures/<profile>", text()),
)

SEEDS = Parameter("seeds", [0, 1, 2], "training seeds of every compared method (tables: mean ± std)", seed_list)


def settings_list(method: str) -> Callable[[str, Any], Any]:
    """A list of settings, each a dict of DAPOConfig/TrainConfig fields that builds ``method``'s preset."""
    def check(name: str, value: Any) -> Any:
        from dapo.methods import preset

        if not isinstance(value, (list, tuple)) or not value:
            raise ParameterError(f"{name}={value!r}: expected a non-empty list of settings, e.g. [{{\"alpha_decay\": 1.0}}]")
        for index, setting in enumerate(value):
            if not isinstance(setting, Mapping) or not setting or "seed" in setting:
                raise ParameterError(f"{name}[{index}]={setting!r}: expected a non-empty dict of fields (not 'seed')")
            try:
                preset(method, **setting)
            except (TypeError, ValueError) as error:
                raise ParameterError(f"{name}[{index}]={setting!r}: {error}") from None
        return [dict(setting) for setting in value]
    return check


#: Parameters of single notebooks, after the common ones (keyed by the notebook's file stem).
EXTRAS: dict[str, tuple[Parameter, ...]] = {
    "03_multitype": (SEEDS,),
    "04_binary": (SEEDS, Parameter("reverse", True, "also train on the first target dataset and test on the training "
                                   "dataset (paper: VisA -> MVTec-AD)", boolean)),
    "13_seed_systems": (SEEDS, Parameter("reverse", True, "also train on the first target dataset and test on the "
                                         "training dataset (ViP²-CLIP Table 1's MVTec-AD row: trained on VisA)", boolean)),
    "05_multilabel": (SEEDS, Parameter("contrast", True, "also evaluate MultiADS (handcrafted defect prompts) beside "
                                       "DAPO, the only method of Table 11", boolean)),
    "10_topology": (SEEDS,),
    "11_fidelity": (SEEDS, Parameter("switches", [dict(s) for s in DEFAULT_SWITCHES], "settings, each trained (or, inference-only "
                                     "fields, evaluated) alone against the DAPO default (dapo.experiments.fidelity)",
                                     settings_list("dapo"))),
    "12_diagnosis": (SEEDS, Parameter("eval_epochs", [1, 2, 5], "epochs evaluated in (d) (training runs to the last)",
                                      epoch_list)),
    "14_efficiency": (Parameter("repeats", 10, "timed repetitions per method and phase, after 2 warm-up ones "
                                "(median ± std); smoke: 2 after 1", integer(minimum=1)),
                      Parameter("variants", False, "also measure the variant presets (<method>_<variant>: "
                                "ablations, release twins, inference variants)", boolean)),
    # Ablations (Figs. 5-8, Tables 6-7). Defaults: the fewest points that test each claim (3 values per
    # axis bracketing the default 4x, both tunings at half and full depth), 3 seeds each: 81 training
    # epochs and 57 evaluations for 06-09 together, the default DAPO runs shared. The comments name the
    # issue's full grids (-p NAME VALUE).
    "06_ablation_lambda_length": (
        SEEDS,
        Parameter("lam_values", [1.0, 4.0, 16.0], "Fig. 5(a) grid of the local-loss weight lambda (default 4); "
                  "full: [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]", field_values("lam", 2)),
        Parameter("n_ctx_values", [1, 5, 16], "Fig. 5(b) grid of the prompt length l (default 5); "
                  "full: [1, 2, 5, 8, 12, 16]", field_values("n_ctx", 2))),
    "07_ablation_init": (
        SEEDS,
        Parameter("inits", ["random", "clip", "offset"], "Fig. 6: N(0, 1), CLIP space (default), abnormal "
                  "context offset by 5 sigma", field_values("init", 2)),
        Parameter("eval_epochs", [1, 2, 3], "epochs evaluated (training runs to the last); paper and full: "
                  "[1, 2, 3, 4, 5]",
                  epoch_list),
        Parameter("best_by", "image_auroc", "metric (seed mean) that picks each initialisation's best epoch",
                  choice("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro_official"))),
    "08_ablation_aggregation": (
        SEEDS,
        Parameter("aggregations", ["mean", "attention"], "Table 6: mean (default) vs attention-weighted abnormal "
                  "prototype; the first is the baseline", field_values("aggregation", 2))),
    "09_ablation_depth": (
        SEEDS,
        Parameter("depth_fractions", [0.25, 0.5, 0.75, 1.0], "Fig. 7: N_d of both encoders as fractions of "
                  "their depth (four depths, so the figure shows a trend)", fraction_list(allow_zero=False)),
        Parameter("tunings", ["progressive", "naive"], "Fig. 7 / Table 7: progressive carry-over (default) "
                  "vs naive prefix", field_values("tuning", 2)),
        Parameter("text_depth_fractions", [0.25, 0.5, 0.75, 1.0], "Fig. 8: text N_d (vision at full "
                  "depth); 0.0 adds the text side without deep tokens", fraction_list(allow_zero=True))),
}


def parameters_for(notebook: str) -> tuple[Parameter, ...]:
    """The parameters of a notebook (its file stem, e.g. ``"03_multitype"``): common, then its own."""
    return COMMON + EXTRAS.get(notebook, ())


def parameters_cell(notebook: str) -> str:
    """The source of a notebook's ``parameters`` cell."""
    params = parameters_for(notebook)
    assignments = {p.name: f"{p.name} = {_literal(p.default)}" for p in params}
    width = max([len(a) for a in assignments.values() if len(a) <= ALIGN_LIMIT] + [22]) + 2
    lines = [p.line(width) if len(assignments[p.name]) <= ALIGN_LIMIT else f"# {p.comment}\n{assignments[p.name]}"
             for p in params]  # a long default (a list of settings) carries its comment on the line above
    return "\n".join([HEADER, *lines])


def defaults(notebook: str) -> dict[str, Any]:
    return {p.name: p.default for p in parameters_for(notebook)}


def _guesses(unknown: list[str], known) -> str:
    """``" (did you mean 'epochs'?)"`` for the unknown names that are close to a known one."""
    from dapo.util.suggest import closest

    pairs = [(name, closest(name, known)) for name in unknown]
    said = ", ".join(f"{guess!r} for {name!r}" for name, guess in pairs if guess)
    return f" (did you mean {said}?)" if said else ""


def validate(notebook: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``values`` (missing names take their defaults; unknown names are refused)."""
    params = {p.name: p for p in parameters_for(notebook)}
    unknown = sorted(set(values) - set(params))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for {notebook}{_guesses(unknown, params)}; "
                             f"known: {', '.join(params)}")
    checked = {}
    for name, param in params.items():
        checked[name] = param.check(name, _from_text(param, values.get(name, param.default)))
    return checked


def _from_text(param: Parameter, value: Any) -> Any:
    """``papermill -p seeds "[0, 1]"`` passes a list (or dict) as its text: read such text as the
    Python literal it spells for a parameter whose default is not a string; other text is left
    for the parameter's check to judge."""
    if not isinstance(value, str) or isinstance(param.default, str):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    return parsed if isinstance(parsed, (list, tuple, dict)) else value


def injected_names(history: list[str] | None) -> set[str]:
    """Names assigned in the cell papermill injected (found in IPython's ``In`` history)."""
    names: set[str] = set()
    for source in history or []:
        if source.splitlines()[:1] != [PAPERMILL_MARKER]:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names |= {target.id for node in tree.body if isinstance(node, ast.Assign)
                  for target in node.targets if isinstance(target, ast.Name)}
    return names


def from_namespace(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """A notebook's validated parameters read from its namespace (``globals()``).

    Names papermill injected that are not parameters of this notebook are refused, so a
    mistyped ``-p epoch 3`` stops the run instead of being ignored.
    """
    known = {p.name for p in parameters_for(notebook)}
    unknown = sorted(injected_names(namespace.get("In")) - known)
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for {notebook}{_guesses(unknown, known)}; "
                             f"known: {', '.join(sorted(known))}")
    return validate(notebook, {name: namespace[name] for name in known if name in namespace})


# ----------------------------------------------------------------------------- notebook files


def notebook_cells(path: Path) -> tuple[dict, int]:
    """A notebook's JSON and the index of its ``parameters``-tagged cell."""
    nb = json.loads(Path(path).read_text())
    for index, cell in enumerate(nb["cells"]):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return nb, index
    raise ValueError(f"{path} has no cell tagged 'parameters'")


def write_parameters_cells(paths: list[Path]) -> list[Path]:
    """Rewrite the ``parameters`` cell of each notebook from this module; returns those changed."""
    changed = []
    for path in paths:
        nb, index = notebook_cells(path)
        source = parameters_cell(Path(path).stem)
        if "".join(nb["cells"][index]["source"]) != source:
            nb["cells"][index]["source"] = source.splitlines(keepends=True)
            Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(Path(path))
    return changed


def main(argv: list[str] | None = None) -> int:
    import argparse

    from dapo.util.paths import REPO_ROOT

    argparse.ArgumentParser(prog="python -m dapo.experiments.parameters",
                            description="Rewrite the parameters cell of every notebooks/NN_*.ipynb from COMMON and "
                                        "EXTRAS (only the cells that differ are written).").parse_args(argv)
    paths = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in write_parameters_cells(paths):
        print(f"rewrote the parameters cell of {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
