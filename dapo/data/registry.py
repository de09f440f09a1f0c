"""Open any dataset by name: the ten benchmarks and synthetic worlds in their layouts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dapo.data.base import AnomalyDataset
from dapo.data.btad import BTAD
from dapo.data.dagm import DAGM
from dapo.data.dtd_synthetic import DTDSynthetic
from dapo.data.folder import FolderDataset
from dapo.data.knowledge import load_knowledge
from dapo.data.ksdd import KSDD
from dapo.data.mad import MADReal, MADSim
from dapo.data.mpdd import MPDD
from dapo.data.mvtec import MVTecAD
from dapo.data.real_iad import RealIAD
from dapo.data.visa import VisA

LOADERS: dict[str, type[AnomalyDataset]] = {
    "mvtec": MVTecAD,
    "visa": VisA,
    "mpdd": MPDD,
    "mad_sim": MADSim,
    "mad_real": MADReal,
    "real_iad": RealIAD,
    "btad": BTAD,
    "ksdd": KSDD,
    "dagm": DAGM,
    "dtd_synthetic": DTDSynthetic,
    "folder": FolderDataset,
}
FOLDER = "folder"  # one's own images (dapo.data.folder): no knowledge file, defects = folder names


def open_dataset(
    name: str | Path,
    root: str | Path,
    *,
    image_size: int,
    split: str = "test",
    vocab_scope: str = "product",
    exclude_multi_defect: bool = False,
    products: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> AnomalyDataset:
    """Open dataset ``name`` stored at ``root``.

    ``name`` is a knowledge-base name (``"mvtec"``, ``"visa"``, ``"mpdd"``, ``"mad_sim"``,
    ``"mad_real"``, ``"real_iad"``, ``"btad"``, ``"ksdd"``, ``"dagm"``, ``"dtd_synthetic"``,
    ``"synthetic_<world>"``) or the path of a knowledge
    YAML file; its ``layout`` picks the loader. ``"folder"``: one's own images in the plain
    layout of :mod:`dapo.data.folder` (no knowledge file; the defects are the folder names).
    ``mean``/``std``: the image normalisation (default OpenAI CLIP's; pass
    ``backbone.mean``/``backbone.std``). Other arguments: :class:`AnomalyDataset`.
    """
    if str(name) == FOLDER:
        return FolderDataset(root, image_size=image_size, split=split, vocab_scope=vocab_scope,
                             exclude_multi_defect=exclude_multi_defect, products=products, mean=mean, std=std)
    knowledge = load_knowledge(name)
    loader = LOADERS[knowledge.layout]
    return loader(
        root,
        image_size=image_size,
        split=split,
        vocab_scope=vocab_scope,
        exclude_multi_defect=exclude_multi_defect,
        products=products,
        knowledge=knowledge,
        mean=mean,
        std=std,
    )


def openable_datasets() -> tuple[str, ...]:
    """Every dataset name :func:`dapo.data.open_dataset` accepts besides a knowledge YAML path."""
    from dapo.data.knowledge import available_datasets

    return (*available_datasets(), FOLDER)
