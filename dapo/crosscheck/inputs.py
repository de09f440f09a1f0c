"""Fixed synthetic inputs of a cross-check: images, labels, masks and per-image defect ids.

Synthetic: seeded noise with a brighter rectangle where an image is defective (the numbers mean
nothing about real images; they only have to be the same on both sides).
"""

from __future__ import annotations

import torch

#: defect id (1-based into the release's training words) of each anomalous image
DEFAULT_TYPE_IDS = (0, 15, 11, 6)  # normal, then train.py's 15th, 11th and 6th words (scratch, hole, crack)


def synthetic_batch(image_size: int, type_ids: tuple[int, ...] = DEFAULT_TYPE_IDS, seed: int = 0) -> dict:
    """``images`` (B, 3, S, S) float32, ``labels`` (B,), ``masks`` (B, 1, S, S) 0/1, ``type_ids`` (B,).

    Image ``b`` with ``type_ids[b] > 0`` gets a rectangle (its own place and size) in its mask and
    a brightened patch of the image there; ``type_ids[b] == 0`` is normal (empty mask).
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(type_ids)
    images = torch.randn((n, 3, image_size, image_size), generator=generator) * 0.5
    masks = torch.zeros((n, 1, image_size, image_size))
    for b, k in enumerate(type_ids):
        if k > 0:
            top, left = (b * 7) % (image_size // 2), (b * 13) % (image_size // 2)
            height, width = image_size // 4 + 3 * b, image_size // 3 - 2 * b
            masks[b, 0, top:top + height, left:left + width] = 1.0
            images[b, :, top:top + height, left:left + width] += 1.5
    return {"images": images, "labels": torch.tensor([int(k > 0) for k in type_ids]), "masks": masks,
            "type_ids": torch.tensor(type_ids)}
