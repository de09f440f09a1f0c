"""What each step of the compact-CLIP pretraining (:mod:`dapo.synthetic.pretrain`) sees.

Image stage: the views of a step, a pure function of the seed and the step (:func:`step_views`),
optionally generated ahead in worker processes (:func:`image_step_loader`). Text stage: images
encoded once by the locked tower (:func:`locked_images`) and, per step, captions of every state
of their products for the state loss (:func:`state_texts`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from dapo.synthetic.captions import CaptionPolicy, exact_caption, product_words
from dapo.synthetic.compact_model import locked_features
from dapo.synthetic.corpus import IGNORE, TEXT_STREAM, View, full_view, local_views, sample_image, state_index
from dapo.synthetic.generator import applicable_defects
from dapo.synthetic.pretrain_config import PretrainConfig
from dapo.util.progress import tqdm

#: Offset between an image index and its replacements when the image shows a held-out type
#: (far beyond any index a pretraining reaches, so a replacement never repeats another step's image).
REPLACEMENT_STRIDE = 10**9
MAX_REPLACEMENTS = 1000


def _without_heldout(make, index: int, heldout: frozenset[str]):
    """``make(index)``, or where its image shows a type of ``heldout``, ``make`` of the next
    replacement index (``index + k * REPLACEMENT_STRIDE``) whose image shows none."""
    for k in range(MAX_REPLACEMENTS):
        views = make(index + k * REPLACEMENT_STRIDE)
        shown = {d for v in (views if isinstance(views, list) else [views]) for d in v.defects}
        if not heldout or not shown & heldout:
            return views
    raise RuntimeError(f"no image without the held-out types {sorted(heldout)} in {MAX_REPLACEMENTS} tries "
                       f"from index {index}: hold out fewer types")


def _ignore_heldout(view: View, heldout: frozenset[str]) -> View:
    """A local view's patch labels with any sliver of a held-out type set to ``IGNORE``."""
    ids = [state_index(d) for d in heldout]
    labels = view.patch_labels.clone()
    labels[torch.isin(labels, torch.tensor(ids, dtype=labels.dtype))] = IGNORE
    return replace(view, patch_labels=labels)


def step_views(config: PretrainConfig, step: int) -> list[View]:
    """Full and local views of image-tower step ``step`` (a pure function of the seed and the step).

    With a :class:`dapo.synthetic.pretrain_config.HeldoutPretrainConfig`, no view names a held-out
    defect type and no patch label is one (images showing one are replaced, see there)."""
    spec, seed = config.corpus, config.seed
    heldout = frozenset(getattr(config, "heldout_defects", ()))
    full = [_without_heldout(lambda i: full_view(spec, seed, i), step * config.full_per_step + j, heldout)
            for j in range(config.full_per_step)]
    local = [v for j in range(config.local_images_per_step)
             for v in _without_heldout(lambda i: local_views(spec, seed, i), step * config.local_images_per_step + j,
                                       heldout)]
    if heldout:
        full = [_ignore_heldout(v, heldout) for v in full]
        local = [_ignore_heldout(v, heldout) for v in local]
    return full + local


def _by_size(views: list[View]) -> list[list[View]]:
    sizes = sorted({v.image.shape[-1] for v in views}, reverse=True)
    return [[v for v in views if v.image.shape[-1] == size] for size in sizes]


class ImageStepViews(torch.utils.data.Dataset):
    """The views of every image-tower step, grouped by size (index = step), so that a
    ``DataLoader`` worker can generate the next steps while the current one trains."""

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config

    def __len__(self) -> int:
        return self.config.image_steps

    def __getitem__(self, step: int) -> list[list[View]]:
        return _by_size(step_views(self.config, step))


def _keep_as_is(item):
    return item


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


def image_step_loader(config: PretrainConfig, start: int, workers: int) -> torch.utils.data.DataLoader:
    """Steps ``start .. image_steps - 1`` in order; ``workers`` > 0 generates them in
    background processes (the same views, so the same model, as ``workers=0``)."""
    steps = range(start, config.image_steps)
    return torch.utils.data.DataLoader(ImageStepViews(config), batch_size=None, sampler=steps, num_workers=workers,
                                       collate_fn=_keep_as_is, worker_init_fn=_one_thread if workers else None,
                                       prefetch_factor=4 if workers else None, persistent_workers=False)


@dataclass
class LockedImages:
    """The text stage's images: what they show and their locked features (class token after
    ``ln_post``, before the trainable projection; with ``text_tunes_last_block`` all tokens
    entering the last vision block)."""

    features: torch.Tensor
    products: list[str]
    defects: list[tuple[str, ...]]


@torch.no_grad()
def locked_images(model, config: PretrainConfig, device, batch_size: int = 64) -> LockedImages:
    """Generate the ``text_images`` images of the text stage and encode them once."""
    spec, features, products, defects = config.corpus, [], [], []
    for start in tqdm(range(0, config.text_images, batch_size), desc="locked image features", leave=False):
        images = [sample_image(spec, config.seed, TEXT_STREAM, i)[0]
                  for i in range(start, min(start + batch_size, config.text_images))]
        features.append(locked_features(model, [image.image for image in images], batch_size, device,
                                        config.precision, config.text_tunes_last_block))
        products += [image.product for image in images]
        defects += [image.defects for image in images]
    return LockedImages(torch.cat(features), products, defects)


def state_texts(rng: np.random.Generator, products: list[str], defects: list[tuple[str, ...]],
                policy: CaptionPolicy) -> tuple[list[str], list[int], list[list[int]], list[int]]:
    """Captions of every state (normal or one defect type) of the products of the images
    with at most one defect type. Returns the texts, the indices of those images, per image
    the indices of its candidate texts (one per state of its product), and per image the
    position of its true state among its candidates."""
    texts, rows, scored = [], {}, []
    for index, (product, shown) in enumerate(zip(products, defects)):
        if len(shown) > 1:
            continue
        if product not in rows:
            states = ("normal", *applicable_defects(product))
            rows[product] = {state: len(texts) + k for k, state in enumerate(states)}
            texts += [exact_caption(rng, product_words(product), () if state == "normal" else (state,), policy)
                      for state in states]
        scored.append((index, rows[product], shown[0] if shown else "normal"))
    candidates = [list(states.values()) for _, states, _ in scored]
    targets = [list(states).index(state) for _, states, state in scored]
    return texts, [index for index, _, _ in scored], candidates, targets
