"""The losses of the compact-CLIP pretraining (:mod:`dapo.synthetic.pretrain`) and the discarded heads they train.

Image stage: product and state heads on the image embedding (state classes weighted by
:func:`state_class_weights`) and a dense head on the patch tokens of one vision block
(:class:`PatchTap`, :func:`balanced_patch_loss`). Text stage: CLIP's symmetric loss with
every true caption a positive (:func:`multi_positive_clip_loss`) and a hard-negative state loss
(:func:`state_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dapo.synthetic.corpus import DEFECT_ORDER, IGNORE, CorpusSpec, View, state_index


def multi_positive_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                             positives: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy with targets uniform over each row's (column's) positives.

    ``positives[i, j]``: caption ``j`` describes image ``i``; every row and column needs one.
    """
    logits = logit_scale * image_features @ text_features.t()
    targets = positives.float()
    if not bool((targets.sum(1) > 0).all() and (targets.sum(0) > 0).all()):
        raise ValueError("every image and every caption needs at least one positive")
    image_loss = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_loss = -(targets.t() / targets.t().sum(1, keepdim=True) * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return (image_loss + text_loss) / 2


def balanced_patch_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over patches, defective and defect-free patches weighted half each.

    ``logits`` ``(N, C)``, ``labels`` ``(N,)`` with 0 = defect-free and ``IGNORE`` (< 0)
    skipped; a batch without defective (or defect-free) patches uses the other half alone.
    """
    losses = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    parts = [losses[labels == 0], losses[labels > 0]]
    means = [part.mean() for part in parts if part.numel()]
    return torch.stack(means).mean() if means else logits.sum() * 0.0


def state_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
               candidates: list[list[int]], targets: list[int]) -> torch.Tensor:
    """Hard-negative cross-entropy: each image against the captions of every state of its
    subject (NegCLIP-style negatives that differ from the truth only in the defect named).

    ``image_features`` ``(B, D)`` and ``text_features`` ``(T, D)`` normalised; row ``b``'s
    candidates are ``candidates[b]`` (indices into the texts), its truth
    ``candidates[b][targets[b]]``.
    """
    width = max(len(c) for c in candidates)
    index = torch.tensor([c + [c[0]] * (width - len(c)) for c in candidates], device=image_features.device)
    valid = torch.tensor([[k < len(c) for k in range(width)] for c in candidates], device=image_features.device)
    logits = logit_scale * (image_features[:, None, :] * text_features[index]).sum(-1)
    logits = logits.masked_fill(~valid, float("-inf"))
    return F.cross_entropy(logits, torch.tensor(targets, device=image_features.device))


def state_class_weights(spec: CorpusSpec) -> torch.Tensor:
    """Weights of the state classes (normal + ``DEFECT_ORDER``): 1 for every defect type,
    and for normal the corpus share of an average single-defect type over the normal share,
    so that normal counts as much as one defect type (the held-out evaluation shows every
    state equally often)."""
    single = 1.0 - spec.p_normal - spec.p_two
    weights = torch.ones(1 + len(DEFECT_ORDER))
    weights[0] = single / len(DEFECT_ORDER) / spec.p_normal
    return weights


def global_targets(views: list[View], products: tuple[str, ...], named_min_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the global heads: product index (``IGNORE`` for views under
    ``named_min_size`` pixels) and state index (0 = normal, ``1 + k`` = ``DEFECT_ORDER[k]``,
    ``IGNORE`` for views with two defect types)."""
    product = [products.index(v.product) if v.image.shape[-1] >= named_min_size else IGNORE for v in views]
    state = [IGNORE if len(v.defects) > 1 else state_index(v.defects[0] if v.defects else "normal") for v in views]
    return torch.tensor(product), torch.tensor(state)


class PatchTap:
    """Keeps the output of one vision block during the forward pass (a forward hook)."""

    def __init__(self, model: torch.nn.Module, layer: int) -> None:
        blocks = model.visual.transformer.resblocks
        if not 1 <= layer <= len(blocks):
            raise ValueError(f"aux_layer={layer} must lie in 1..{len(blocks)}")
        self.output: torch.Tensor | None = None
        self.handle = blocks[layer - 1].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.output = output

    def patches(self) -> torch.Tensor:
        """Patch tokens ``(B, N, D)`` of the last forward pass (class token dropped)."""
        return self.output[:, 1:]


def make_aux_heads(model: torch.nn.Module, seed: int, products: tuple[str, ...]) -> torch.nn.ModuleDict:
    """The discarded heads: ``dense`` (LayerNorm + Linear, vision width -> 1 + defect types)
    and the global heads ``product`` and ``state`` (Linear, embedding -> products and
    embedding -> normal + defect types)."""
    torch.manual_seed(seed + 1)
    width = model.visual.conv1.out_channels
    return torch.nn.ModuleDict({
        "dense": torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 1 + len(DEFECT_ORDER))),
        "product": torch.nn.Linear(model.visual.output_dim, len(products)),
        "state": torch.nn.Linear(model.visual.output_dim, 1 + len(DEFECT_ORDER)),
    })
