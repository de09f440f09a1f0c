"""``--dataset`` / ``--root`` / ``--split`` of ``dapo train`` and ``dapo evaluate``."""

from __future__ import annotations

import argparse

from dapo.cli.common import argument_errors

FOLDER = "folder"
DATASET_HELP = """\
--dataset folder reads one's own images (one product) in a plain layout:
  ROOT/good/*.png                      normal images
  ROOT/<defect name>/*.png             one folder per defect; the folder name is the defect name
                                       (underscores read as spaces)
  ROOT/masks/<defect name>/<name>.png  optional binary masks mirroring the defect folders
                                       (nonzero = defect; <name>_mask.png also accepted);
                                       training and pixel metrics need them
Subfolders are searched recursively (masks/ mirrors them); hidden files are skipped. The other
datasets are read in their official layouts (docs/DATASETS.md: "Using the real datasets")."""


def dataset_names() -> list[str]:
    """Every name ``--dataset`` accepts: the knowledge-base datasets and ``folder``."""
    from dapo.data.knowledge import available_datasets

    return [*sorted(available_datasets()), FOLDER]


def dataset_argument(text: str) -> str:
    """``--dataset``'s type: a known name, else an error naming the closest known one."""
    from dapo.util.suggest import unknown_name

    if text not in dataset_names():
        raise argparse.ArgumentTypeError(unknown_name("dataset", text, dataset_names()))
    return text


def add_dataset_arguments(parser: argparse.ArgumentParser, *, split_default: str) -> None:
    names = dataset_names()
    group = parser.add_argument_group("dataset")
    group.add_argument("--dataset", required=True, type=dataset_argument, metavar="NAME",
                       help=f"dataset layout: {', '.join(names)}")
    group.add_argument("--root", required=True, metavar="DIR", help="the dataset's folder")
    group.add_argument("--split", default=split_default, choices=("test", "train", "all"),
                       help="benchmark split to read (the paper trains on MVTec-AD's test split); a folder "
                            "dataset has none and gives all its images")


def open_dataset_arguments(args: argparse.Namespace, backbone, **kwargs):
    """The dataset of ``--dataset``/``--root``/``--split`` at the backbone's input size and normalisation;
    a missing root, an empty folder or a layout error is a one-line error naming ``--root``."""
    from dapo.data import open_dataset

    with argument_errors(f"--root {args.root}", OSError, ValueError):
        return open_dataset(args.dataset, args.root, image_size=backbone.image_size, split=args.split,
                            mean=backbone.mean, std=backbone.std, **kwargs)
