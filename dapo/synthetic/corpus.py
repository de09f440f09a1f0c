"""The captioned pretraining corpus: a deterministic stream of generated images and their views.

Every rendered image yields either its *full view* or several *local views*: patch-aligned
crops (the patch grid kept) whose captions name only the defects they show. Local views cost a fraction of a full view in a ViT and show defects larger relative
to the view (multi-crop training, as in DINO or FLIP's patch dropping); full views teach
the whole-image embedding. A view carries its offset on the patch grid, so the model adds
the positional embeddings of exactly the patches it sees.

Each view also carries per-patch defect labels (for the auxiliary dense loss of
:mod:`dapo.synthetic.pretrain_losses`): 0 for a defect-free patch, ``1 + k`` for defect type
``DEFECT_ORDER[k]`` covering at least ``label_threshold`` of the patch, and ``IGNORE`` for
patches touched by a defect more thinly.

Image ``i`` of a stream depends only on ``(seed, stream, i)``, so the corpus is identical
whatever the batch composition or machine, and held-out streams never share an image with
the training streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dapo.data.images import to_clip_tensor
from dapo.synthetic.captions import CaptionKey, CaptionPolicy, sample_caption
from dapo.synthetic.defects import DEFECTS
from dapo.synthetic.generator import STYLES, SyntheticImage, applicable_defects, generate_image, make_rng
from dapo.synthetic.products import PRODUCTS

FULL_STREAM = "pretrain-full"
LOCAL_STREAM = "pretrain-local"
TEXT_STREAM = "pretrain-text"
HELDOUT_STREAM = "heldout"
DEFECT_ORDER = tuple(sorted(DEFECTS))
IGNORE = -100


def state_index(state: str) -> int:
    """Class index of a state (state head and patch labels): 0 = ``"normal"``, ``1 + k`` = ``DEFECT_ORDER[k]``."""
    return 0 if state == "normal" else 1 + DEFECT_ORDER.index(state)


@dataclass(frozen=True)
class CorpusSpec:
    """What the corpus contains.

    ``p_normal`` / ``p_two``: shares of defect-free images and of images with two defect
    types (the rest have one). Products, styles and defect types are drawn uniformly.
    ``local_views``: ``(crop size in pixels, count)`` of the crops of each image of the local
    stream (sizes are multiples of ``patch_size``); on a defective image every other crop of
    a size is centred on a defect pixel. A local view names a defect when at least
    ``min_visible_pixels`` of its mask lie inside; views smaller than
    ``named_product_min_size`` pixels show too little of an object to name it, so their
    captions (``small_view_captions``) say "object".
    """

    products: tuple[str, ...] = tuple(PRODUCTS)
    styles: tuple[str, ...] = tuple(STYLES)
    p_normal: float = 0.1
    p_two: float = 0.15
    severity: tuple[float, float] = (0.25, 1.0)
    image_size: int = 128
    patch_size: int = 8
    label_threshold: float = 0.2
    local_views: tuple[tuple[int, int], ...] = ((32, 4), (64, 1))
    min_visible_pixels: int = 8
    named_product_min_size: int = 64
    captions: CaptionPolicy = field(default_factory=CaptionPolicy)
    small_view_captions: CaptionPolicy = field(
        default_factory=lambda: CaptionPolicy(generic_object=1.0, product_only=0.0))


@dataclass(frozen=True)
class View:
    """One training view: normalised image, caption and its key, what it shows, patch labels
    and the offset ``(row, col)`` of its top-left patch on the full image's patch grid."""

    image: torch.Tensor
    caption: str
    key: CaptionKey
    product: str
    defects: tuple[str, ...]
    patch_labels: torch.Tensor
    offset: tuple[int, int] = (0, 0)


def sample_image(spec: CorpusSpec, seed: int, stream: str, index: int,
                 product: str | None = None) -> tuple[SyntheticImage, np.random.Generator]:
    """Image ``index`` of a stream (and the generator, positioned after drawing it); ``product``
    overrides the product the stream would draw (everything else is drawn as usual)."""
    rng = make_rng(seed, stream, index)
    drawn = spec.products[int(rng.integers(len(spec.products)))]
    product = product or drawn
    style = spec.styles[int(rng.integers(len(spec.styles)))]
    u = rng.random()
    n_defects = 0 if u < spec.p_normal else (2 if u > 1.0 - spec.p_two else 1)
    options = applicable_defects(product)
    defects = tuple(rng.choice(options, size=n_defects, replace=False)) if n_defects else ()
    image = generate_image(product, defects, rng, size=spec.image_size, style=style, severity=spec.severity)
    return image, rng


def patch_labels(image: SyntheticImage, patch_size: int, threshold: float) -> np.ndarray:
    """Per-patch defect labels ``(H / patch, W / patch)`` int64 (see the module docstring)."""
    size = image.image.shape[0]
    if size % patch_size:
        raise ValueError(f"image size {size} is not a multiple of the patch size {patch_size}")
    grid = size // patch_size
    types = np.zeros((size, size), np.int64)
    for name in image.defects:  # drawing order: a later defect covers an earlier one
        types[image.masks[name]] = state_index(name)
    onehot = np.eye(1 + len(DEFECT_ORDER), dtype=np.float32)[types]
    shares = onehot.reshape(grid, patch_size, grid, patch_size, -1).mean(axis=(1, 3))
    defect_share = 1.0 - shares[..., 0]
    labels = 1 + shares[..., 1:].argmax(-1)
    labels[defect_share == 0] = 0
    labels[(defect_share > 0) & (defect_share < threshold)] = IGNORE
    return labels


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float ``(3, H, W)`` with OpenAI CLIP's mean/std, as the loaders'
    default (the compact CLIP is trained on it, so its ``Backbone`` keeps that default)."""
    return to_clip_tensor(image)


def full_view(spec: CorpusSpec, seed: int, index: int, product: str | None = None) -> View:
    """The full view of image ``index`` of the full-view stream."""
    image, rng = sample_image(spec, seed, FULL_STREAM, index, product)
    caption, key = sample_caption(rng, image.product, image.defects, spec.captions)
    labels = patch_labels(image, spec.patch_size, spec.label_threshold)
    return View(to_tensor(image.image), caption, key, image.product, image.defects, torch.from_numpy(labels))


def _crop_offsets(spec: CorpusSpec, image: SyntheticImage, crop: int, count: int,
                  rng: np.random.Generator) -> list[tuple[int, int]]:
    """Patch-grid offsets of ``count`` crops of ``crop`` patches: on a defective image every
    other crop is centred on a defect pixel; objects keep random crops near the centre so
    that every view shows the product."""
    grid = spec.image_size // spec.patch_size
    margin = 0 if PRODUCTS[image.product].kind == "texture" else min(grid // 8, (grid - crop) // 2)
    offsets = []
    for k in range(count):
        if k % 2 == 0 and image.defects:
            rows, cols = np.nonzero(image.masks[image.defects[int(rng.integers(len(image.defects)))]])
            pick = int(rng.integers(len(rows)))
            centre = (rows[pick] // spec.patch_size - crop // 2, cols[pick] // spec.patch_size - crop // 2)
            offsets.append(tuple(int(np.clip(c, 0, grid - crop)) for c in centre))
        else:
            offsets.append(tuple(int(v) for v in rng.integers(margin, grid - crop - margin + 1, size=2)))
    return offsets


def local_views(spec: CorpusSpec, seed: int, index: int, product: str | None = None) -> list[View]:
    """The local views of image ``index`` of the local-view stream."""
    image, rng = sample_image(spec, seed, LOCAL_STREAM, index, product)
    labels = patch_labels(image, spec.patch_size, spec.label_threshold)
    patch = spec.patch_size
    views = []
    for size, count in spec.local_views:
        crop = size // patch
        for row, col in _crop_offsets(spec, image, crop, count, rng):
            window = (slice(row * patch, (row + crop) * patch), slice(col * patch, (col + crop) * patch))
            shown = tuple(d for d in image.defects
                          if np.count_nonzero(image.masks[d][window]) >= spec.min_visible_pixels)
            crop_labels = labels[row:row + crop, col:col + crop].copy()
            hidden = [state_index(d) for d in image.defects if d not in shown]
            crop_labels[np.isin(crop_labels, hidden)] = IGNORE  # a sliver the caption does not name
            policy = spec.captions if size >= spec.named_product_min_size else spec.small_view_captions
            caption, key = sample_caption(rng, image.product, shown, policy)
            views.append(View(to_tensor(image.image[window]), caption, key, image.product, shown,
                              torch.from_numpy(crop_labels), (row, col)))
    return views


def positive_matrix(keys: Sequence[CaptionKey], products: Sequence[str],
                    defects: Sequence[Sequence[str]]) -> torch.Tensor:
    """``positives[i, j]``: caption ``keys[j]`` truthfully describes image ``i`` (``products[i]``
    with ``defects[i]``)."""
    return torch.tensor([[key.describes(p, d) for key in keys] for p, d in zip(products, defects)])


def collate_views(views: list[View]) -> dict:
    """Stack views of one size: images, patch labels and patch-grid offsets."""
    return {"images": torch.stack([v.image for v in views]), "patch_labels": torch.stack([v.patch_labels for v in views]),
            "offsets": torch.tensor([v.offset for v in views])}
