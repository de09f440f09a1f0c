"""DAPO's training objective (Eq. 7-9), with the switches of the baselines and the released code.

* global: cross-entropy of the softmax over ``[cos(z_x, z_N), cos(z_x, z_A)] / tau`` (Eq. 7);
* local, per stage i: the (K+1)-channel probabilities ``S_i`` upsampled (bilinear) to the mask
  size, multi-class focal loss against the per-pixel defect label, plus
  ``Dice(S_i[0], Y[0]) + Dice(1 - S_i[0], 1 - Y[0])`` on the normal channel; averaged over the
  M stages (Eq. 8);
* total = global + lambda * local (Eq. 9, lambda = 4).

:class:`~dapo.methods.dapo.config.DAPOConfig` selects the variants: ``local_reduction`` (``"sum"`` over the
stages, as the official ``train.py:261-274``), ``dice_terms`` (``"abnormal"``: MultiADS's single
Dice term), ``global_loss_weight`` (0: MultiADS), ``focal_smooth`` (the official focal loss
smooths the one-hot target: ``loss.py:76-80``), ``softmax_before_upsample`` and
``upsample_align_corners``. Dice is ``1 - (2 sum(p y) + 1) / (sum p + sum y + 1)`` per image,
averaged over the batch (smoothing 1, official ``loss.py:92-109``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.scoring import stage_probabilities

PROBABILITY_FLOOR = 1e-8


def global_loss(global_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, 2) [normal, abnormal] logits against 0/1 image labels (Eq. 7)."""
    return F.cross_entropy(global_logits.float(), labels.long())


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 0.0) -> torch.Tensor:
    """Multi-class focal loss ``-(1 - p_t)^gamma log p_t`` of probabilities (B, C, H, W) against
    class ids (B, H, W), the mean over pixels.

    ``smooth > 0`` is the released code's form: the one-hot target is clamped to
    ``[smooth / (C - 1), 1 - smooth]`` and ``p_t = sum_c onehot_c p_c + smooth``.
    """
    p_true = probs.gather(1, target.long().unsqueeze(1)).squeeze(1)
    if smooth > 0:
        n_classes = probs.shape[1]
        low = smooth / (n_classes - 1)
        p_true = (1.0 - smooth) * p_true + low * (probs.sum(1) - p_true) + smooth
    else:
        p_true = p_true.clamp_min(PROBABILITY_FLOOR)
    return (-(1.0 - p_true) ** gamma * torch.log(p_true)).mean()


def dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per image (B, H, W), averaged over the batch."""
    pred, target = pred.flatten(1), target.flatten(1).to(pred.dtype)
    dice = (2.0 * (pred * target).sum(1) + smooth) / (pred.sum(1) + target.sum(1) + smooth)
    return (1.0 - dice).mean()


def config_probabilities(config: DAPOConfig, stage_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`stage_probabilities` with the upsampling options of ``config``."""
    return stage_probabilities(stage_logits, size, softmax_first=config.softmax_before_upsample,
                               align_corners=config.upsample_align_corners)


def local_loss(stage_logits: list[torch.Tensor], type_masks: torch.Tensor, config: DAPOConfig | None = None
               ) -> torch.Tensor:
    """Eq. 8: over the stages, focal + the Dice terms on the normal channel (mean, or sum)."""
    config = config or DAPOConfig()
    normal = (type_masks == 0).float()
    size = tuple(type_masks.shape[-2:])
    n_channels = stage_logits[0].shape[1]
    if int(type_masks.max()) >= n_channels:
        raise ValueError(f"type_masks hold class id {int(type_masks.max())} but the maps have only "
                         f"{n_channels} channels: masks must index the vocabulary the model was given")
    terms = []
    for logits in stage_logits:
        probs = config_probabilities(config, logits, size)
        term = focal_loss(probs, type_masks, config.focal_gamma, config.focal_smooth)
        term = term + dice_loss(1.0 - probs[:, 0], 1.0 - normal)
        if config.dice_terms == "both":
            term = term + dice_loss(probs[:, 0], normal)
        terms.append(term)
    stacked = torch.stack(terms)
    return stacked.sum() if config.local_reduction == "sum" else stacked.mean()


def loss_terms(output, labels: torch.Tensor, type_masks: torch.Tensor, config: DAPOConfig | None = None
               ) -> dict[str, torch.Tensor]:
    """The terms of Eq. 9 for a :class:`dapo.methods.dapo.model.DAPOOutput`: ``global``, ``local`` and
    ``total = global_loss_weight * global + lam * local``."""
    config = config or DAPOConfig()
    device = output.global_logits.device
    g = global_loss(output.global_logits, labels.to(device))
    local = local_loss(output.stage_logits, type_masks.to(device), config)
    return {"global": g, "local": local, "total": config.global_loss_weight * g + config.lam * local}


def dapo_loss(output, labels: torch.Tensor, type_masks: torch.Tensor, config: DAPOConfig | None = None
              ) -> torch.Tensor:
    """Total loss, Eq. 9 (``config`` defaults to DAPO's)."""
    return loss_terms(output, labels, type_masks, config)["total"]
