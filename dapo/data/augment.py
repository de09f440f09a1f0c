"""Training-time augmentation: MultiADS's 2x2 mosaic of four images of one product.

The released MultiADS training script (``dataset.py``, ``combine_img``, applied with
``aug_rate=0.2``) replaces a sample, with probability ``p``, by a 2x2 mosaic of four random
test images of the same product (a defect folder drawn uniformly, ``good`` included, then a
file), masks tiled the same way, the whole resized to the model input. Here the four samples
are already at the input size ``S``; each is resized to ``S/2`` (bilinear, antialiased; masks
nearest) and tiled. The mosaic's label is anomalous when any tile is (the released script kept
the first image's label; its README says that bug was fixed). Draws are seeded by
``(seed, epoch, index)``: :func:`dapo.engine.train.train` calls :meth:`MosaicDataset.set_epoch`.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class MosaicDataset(Dataset):
    """``dataset`` with MultiADS's mosaic augmentation at rate ``p`` (attributes pass through)."""

    def __init__(self, dataset, p: float, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mosaic probability must lie in [0, 1], got {p}")
        self.dataset, self.p, self.seed, self.epoch = dataset, float(p), int(seed), 0
        self._by_product: dict[str, dict[tuple, list[int]]] = {}
        for index, record in enumerate(dataset.records):
            folders = self._by_product.setdefault(record.product, {})
            folders.setdefault(tuple(record.native), []).append(index)

    def __getattr__(self, name: str):
        if name == "dataset":  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        sample = self.dataset[index]
        if rng.random() >= self.p:
            return sample
        folders = self._by_product[sample["product"]]
        keys = sorted(folders)
        tiles = [self.dataset[rng.choice(folders[rng.choice(keys)])] for _ in range(4)]
        return mosaic(tiles, sample)


def mosaic(tiles: list[dict], template: dict) -> dict:
    """Tile four samples (row-major) into one sample of the same size as ``template``."""
    size = template["image"].shape[-1]
    half = size // 2
    image = torch.zeros_like(template["image"])
    types = torch.zeros_like(template["type_mask"])
    for i, tile in enumerate(tiles):
        top, left = (i // 2) * half, (i % 2) * half
        image[:, top:top + half, left:left + half] = F.interpolate(
            tile["image"][None], size=(half, half), mode="bilinear", antialias=True, align_corners=False)[0]
        types[top:top + half, left:left + half] = F.interpolate(
            tile["type_mask"][None, None].float(), size=(half, half), mode="nearest")[0, 0].long()
    defects = tuple(sorted({d for tile in tiles for d in tile["defects"]}))
    return {**template, "image": image, "type_mask": types, "mask": (types > 0).float(),
            "label": int(bool(types.any()) or any(tile["label"] for tile in tiles)), "defects": defects,
            "path": "mosaic:" + "|".join(tile["path"] for tile in tiles)}
