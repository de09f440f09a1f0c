"""The two profiles every notebook runs under, and their checks.

``synthetic`` (default): the generated worlds (``data/synthetic``) and the compact backbone
committed in ``dapo/assets``; runs on a CPU in minutes. Numbers are synthetic, never the paper's.
``paper``: OpenCLIP ViT-L-14-336 / ``openai`` at 518 px and the real benchmarks in their
official layouts. :func:`resolve_profile` checks everything the profile needs *before* any work
starts and stops with one message that lists what to provide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dapo.paths import data_dir

PAPER_DATASETS = ("mvtec", "visa", "mpdd", "mad_sim", "mad_real", "real_iad")
PAPER_DATASET_DIRS = {"mvtec": "mvtec_ad", "visa": "visa", "mpdd": "mpdd", "mad_sim": "mad_sim",
                      "mad_real": "mad_real", "real_iad": "real_iad"}


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
    method's own recipe (:class:`~dapo.config.TrainConfig`, 5 for DAPO) on the paper profile and
    2 (smoke: 1) on the synthetic one. ``train_dataset`` / ``target_datasets`` swap the roles of
    the profile's datasets (e.g. train on the VisA-style world, test on the MVTec-style one).
    """
    root = Path(data_root) if data_root else data_dir()
    if profile == "synthetic":
        cfg = synthetic_defaults(root, smoke)
    elif profile == "paper":
        cfg = paper_defaults(root)
    else:
        raise ProfileError(f"unknown profile {profile!r}: use 'synthetic' (default) or 'paper'")
    if dataset_roots:
        cfg["dataset_roots"] = {**cfg["dataset_roots"], **{k: Path(v) for k, v in dataset_roots.items()}}
    for key, value in (("backbone", backbone), ("pretrained", pretrained), ("image_size", image_size),
                       ("epochs", epochs), ("train_dataset", train_dataset)):
        if value is not None:
            cfg[key] = value
    if target_datasets is not None:
        cfg["target_datasets"] = tuple(target_datasets)
    known = sorted(cfg["dataset_roots"])
    for name in (cfg["train_dataset"], *cfg["target_datasets"]):
        if name not in cfg["dataset_roots"]:
            raise ProfileError(f"dataset {name!r} is not part of the {profile!r} profile; known: {known} "
                               f"(other folders: dataset_roots={{'{name}': '/path'}})")
    if cfg["train_dataset"] in cfg["target_datasets"]:
        raise ProfileError(f"train_dataset {cfg['train_dataset']!r} is also a target: zero-shot targets must be "
                           f"other datasets")
    if not cfg["target_datasets"]:
        raise ProfileError("target_datasets is empty: name at least one dataset to evaluate on")
    resolved = ProfileConfig(profile=profile, smoke=smoke, checkpoint=str(checkpoint) if checkpoint else None, **cfg)
    if check and profile == "paper":
        check_paper_profile(resolved)
    return resolved


def check_paper_profile(cfg: ProfileConfig) -> None:
    """Raise one :class:`ProfileError` listing every missing dataset root and missing weights."""
    from dapo.backbone import checkpoint_available

    problems = []
    for name in (cfg.train_dataset, *cfg.target_datasets):
        root = Path(cfg.dataset_roots[name])
        if not root.is_dir():
            problems.append(f"  - dataset {name!r}: no folder at {root} (official release layout expected; "
                            f"pass dataset_roots={{'{name}': '/path/to/{PAPER_DATASET_DIRS[name]}'}} "
                            f"or data_root='/path/holding/{PAPER_DATASET_DIRS[name]}')")
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
