"""The two profiles every notebook runs under, and their checks.

``synthetic`` (default): the generated worlds (``data/synthetic``) and the compact backbone
committed in ``dapo/assets``; runs on a CPU in minutes. Numbers are synthetic, never the paper's.
``paper``: OpenCLIP ViT-L-14-336 / ``openai`` at 518 px and the real benchmarks in their
official layouts. :func:`resolve_profile` checks everything the profile needs *before* any work
starts and stops with one message that lists what to provide.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dapo.util.paths import data_dir

PAPER_DATASETS = ("mvtec", "visa", "mpdd", "mad_sim", "mad_real", "real_iad")
#: Folder of each real dataset under the data root: the six above (the profile's defaults) and the four
#: other benchmarks of ViP²-CLIP's Table 1, read when named in ``target_datasets`` (docs/DATASETS.md).
PAPER_DATASET_DIRS = {"mvtec": "mvtec_ad", "visa": "visa", "mpdd": "mpdd", "mad_sim": "mad_sim",
                      "mad_real": "mad_real", "real_iad": "real_iad", "btad": "btad", "ksdd": "ksdd",
                      "dagm": "dagm", "dtd_synthetic": "dtd_synthetic"}


class ProfileError(RuntimeError):
    """A profile cannot run: the message says what to provide."""


@dataclass(frozen=True)
class ProfileConfig:
    """Everything a notebook needs to know about the run it is part of."""

    profile: str
    backbone: str
    pretrained: str
    image_size: int
    train_dataset: str
    target_datasets: tuple[str, ...]
    dataset_roots: dict = field(default_factory=dict)
    epochs: int | None = None
    smoke: bool = False
    checkpoint: str | None = None

    @property
    def datasets(self) -> tuple[str, ...]:
        """The training dataset, then the targets."""
        return (self.train_dataset, *self.target_datasets)

    def describe(self) -> str:
        """One line naming the backbone and data, for captions and provenance."""
        data = "generated worlds" if self.profile == "synthetic" else "real datasets"
        return f"{self.backbone}/{self.pretrained} @ {self.image_size}px, {data}"


def paper_defaults(data_root: Path) -> dict:
    return dict(backbone="ViT-L-14-336", pretrained="openai", image_size=518, train_dataset="mvtec",
                target_datasets=("visa", "mpdd", "mad_sim", "mad_real", "real_iad"),
                dataset_roots={n: data_root / d for n, d in PAPER_DATASET_DIRS.items()}, epochs=None)


def synthetic_defaults(data_root: Path, smoke: bool) -> dict:
    from dapo.synthetic.worlds import COMPACT_IMAGE_SIZE, SOURCE_WORLD, TARGET_WORLDS, world_root

    roots = {name: world_root(data_root, name, smoke) for name in (SOURCE_WORLD, *TARGET_WORLDS)}
    return dict(backbone="dapo-compact", pretrained="synthetic", image_size=COMPACT_IMAGE_SIZE,
                train_dataset=SOURCE_WORLD, target_datasets=tuple(TARGET_WORLDS), dataset_roots=roots,
                epochs=1 if smoke else 2)


def resolve_profile(profile: str = "synthetic", *, smoke: bool = False, data_root: str | Path | None = None,
                    dataset_roots: dict | None = None, backbone: str | None = None,
                    pretrained: str | None = None, checkpoint: str | Path | None = None,
                    image_size: int | None = None, epochs: int | None = None, train_dataset: str | None = None,
                    target_datasets: tuple[str, ...] | list[str] | None = None, check: bool = True) -> ProfileConfig:
    """Build the profile's configuration; with ``check`` verify that its data and weights exist.

    ``checkpoint`` is a local weights file for ``pretrained`` (offline use of the paper profile:
    the tag still sets OpenAI's QuickGELU and normalisation). ``epochs`` ``None`` means each
    method's own recipe (:class:`~dapo.methods.recipe.TrainConfig`, 5 for DAPO) on the paper profile and
    2 (smoke: 1) on the synthetic one. ``train_dataset`` / ``target_datasets`` swap the roles of
    the profile's datasets (e.g. train on the VisA-style world, test on the MVTec-style one).

    Every argument is checked here (:func:`check_arguments`): a wrong type or range stops with a
    :class:`~dapo.experiments.parameters.ParameterError` naming the parameter, a dataset name that is not the
    profile's nor a known dataset with a folder (a misspelt ``dataset_roots`` key, ``train_dataset``
    or target) with a :class:`ProfileError` naming it, the known names and the closest one.
    """
    check_arguments(profile=profile, smoke=smoke, data_root=data_root, dataset_roots=dataset_roots,
                    backbone=backbone, pretrained=pretrained, checkpoint=checkpoint, image_size=image_size,
                    epochs=epochs, train_dataset=train_dataset, target_datasets=target_datasets, check=check)
    root = Path(data_root) if data_root else data_dir()
    if profile == "synthetic":
        cfg = synthetic_defaults(root, smoke)
    elif profile == "paper":
        cfg = paper_defaults(root)
    else:
        raise ProfileError(f"unknown profile {profile!r}: use 'synthetic' (default) or 'paper'")
    own = tuple(cfg["dataset_roots"])
    if dataset_roots:
        cfg["dataset_roots"] = {**cfg["dataset_roots"], **{k: Path(v) for k, v in dataset_roots.items()}}
    for key, value in (("backbone", backbone), ("pretrained", pretrained), ("image_size", image_size),
                       ("epochs", epochs), ("train_dataset", train_dataset)):
        if value is not None:
            cfg[key] = value
    if target_datasets is not None:
        cfg["target_datasets"] = tuple(target_datasets)
    check_dataset_names(profile, own, cfg["dataset_roots"], cfg["train_dataset"], cfg["target_datasets"])
    if cfg["train_dataset"] in cfg["target_datasets"]:
        raise ProfileError(f"train_dataset {cfg['train_dataset']!r} is also a target: zero-shot targets must be "
                           f"other datasets")
    if not cfg["target_datasets"]:
        raise ProfileError("target_datasets is empty: name at least one dataset to evaluate on")
    resolved = ProfileConfig(profile=profile, smoke=smoke, checkpoint=str(checkpoint) if checkpoint else None, **cfg)
    if check and profile == "paper":
        check_paper_profile(resolved)
    return resolved


def _is_yaml(name: str) -> bool:
    return Path(name).suffix in (".yaml", ".yml")


def check_dataset_names(profile: str, own: tuple[str, ...], roots: dict, train: str, targets: tuple[str, ...]) -> None:
    """Refuse a dataset name nobody can open or nobody uses, naming it, the known names and the closest.

    A ``dataset_roots`` key must be one of the profile's datasets (``own``) or a dataset the run
    uses (``train``/``targets``) that :func:`dapo.data.open_dataset` can open; a used name must
    have a folder. Anything else would be ignored without a word (a misspelt key).
    """
    from dapo.util.suggest import unknown_name

    used = (train, *targets)
    from dapo.data.registry import openable_datasets

    openable = openable_datasets()
    for name in roots:
        if name not in own and name not in used:
            raise ProfileError(f"dataset_roots: {unknown_name('dataset', name, own)} (the {profile!r} profile's "
                               f"datasets; to add another, also name it in train_dataset or target_datasets)")
    for role, name in [("train_dataset", train), *(("target_datasets", n) for n in targets)]:
        if name not in roots:
            raise ProfileError(f"{role}: {unknown_name('dataset', name, roots)} (the {profile!r} profile's "
                               f"datasets and dataset_roots; another dataset needs dataset_roots={{'{name}': '/path'}})")
        if name not in own and name not in openable and not _is_yaml(name):
            raise ProfileError(f"{role}: {unknown_name('dataset', name, (*own, *openable))} (a dataset with a "
                               f"knowledge file in dapo/data/knowledge, 'folder', or the path of a knowledge YAML)")


def check_arguments(**values) -> None:
    """Check the user's values of :func:`resolve_profile` (types and ranges), naming the parameter."""
    from dapo.experiments.parameters import ParameterError, boolean, dataset_list, dataset_name, integer, text

    boolean("smoke", values["smoke"])
    boolean("check", values["check"])
    integer(minimum=1, optional=True)("epochs", values["epochs"])
    integer(minimum=1, optional=True)("image_size", values["image_size"])
    for name in ("backbone", "pretrained"):
        text()(name, values[name])
    dataset_name("train_dataset", values["train_dataset"])
    for name in ("data_root", "checkpoint"):
        if values[name] is not None and not (isinstance(values[name], (str, os.PathLike)) and str(values[name]).strip()):
            raise ParameterError(f"{name}={values[name]!r}: expected a path (str or pathlib.Path) or None")
    dataset_list()("target_datasets", values["target_datasets"])
    roots = values["dataset_roots"]
    if roots is not None and (not isinstance(roots, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, os.PathLike)) and str(v).strip() for k, v in roots.items())):
        raise ParameterError(f"dataset_roots={roots!r}: expected a dict of dataset name -> folder, "
                             f"e.g. {{\"visa\": \"/data/VisA_20220922\"}}")


def check_paper_profile(cfg: ProfileConfig) -> None:
    """Raise one :class:`ProfileError` listing every missing dataset root and missing weights."""
    from dapo.clip.backbone import checkpoint_available

    problems = []
    for name in (cfg.train_dataset, *cfg.target_datasets):
        root = Path(cfg.dataset_roots[name])
        if not root.is_dir():
            problems.append(f"  - dataset {name!r}: no folder at {root} (official release layout expected; "
                            f"pass dataset_roots={{'{name}': '/path/to/{PAPER_DATASET_DIRS.get(name, name)}'}} "
                            f"or data_root='/path/holding/{PAPER_DATASET_DIRS.get(name, name)}')")
    if cfg.checkpoint:
        if not Path(cfg.checkpoint).is_file():
            problems.append(f"  - weights {cfg.backbone}/{cfg.pretrained}: checkpoint file not found: {cfg.checkpoint}")
    else:
        ok, how = checkpoint_available(cfg.backbone, cfg.pretrained)
        if not ok:
            problems.append(f"  - weights {cfg.backbone}/{cfg.pretrained}: {how} "
                            f"(notebooks: -p checkpoint /path/to/weights)")
    if problems:
        raise ProfileError("the 'paper' profile cannot start; provide:\n" + "\n".join(problems)
                           + "\nSee docs/DATASETS.md, 'Using the real datasets'.")
