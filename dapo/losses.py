"""DAPO's training objective (Eq. 7-9).

* global: cross-entropy of the softmax over ``[cos(z_x, z_N), cos(z_x, z_A)] / tau`` (Eq. 7);
* local, per stage i: the (K+1)-channel probabilities ``S_i = softmax(stage logits)`` are
  upsampled (bilinear) to the mask size, then multi-class focal loss against the per-pixel
  defect label + ``Dice(S_i[0], Y[0]) + Dice(1 - S_i[0], 1 - Y[0])`` on the normal channel;
  averaged over the M stages (Eq. 8);
* total = global + lambda * local (Eq. 9, lambda = 4).

Focal loss is the standard form of Lin et al. (``-(1 - p_t)^gamma log p_t``, mean over
pixels, no class weights); Dice is ``1 - (2 sum(p y) + 1) / (sum p + sum y + 1)`` per image,
averaged over the batch (smoothing 1, as in AnomalyCLIP's binary Dice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PROBABILITY_FLOOR = 1e-8


def global_loss(global_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, 2) [normal, abnormal] logits against 0/1 image labels (Eq. 7)."""
    return F.cross_entropy(global_logits.float(), labels.long())


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Multi-class focal loss of probabilities (B, C, H, W) against class ids (B, H, W)."""
    p_true = probs.gather(1, target.long().unsqueeze(1)).squeeze(1).clamp_min(PROBABILITY_FLOOR)
    return (-(1.0 - p_true) ** gamma * torch.log(p_true)).mean()


def dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per image (B, H, W), averaged over the batch."""
    pred, target = pred.flatten(1), target.flatten(1).to(pred.dtype)
    dice = (2.0 * (pred * target).sum(1) + smooth) / (pred.sum(1) + target.sum(1) + smooth)
    return (1.0 - dice).mean()


def stage_probabilities(stage_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Softmax over the K+1 channels at patch resolution, then bilinear upsampling to ``size``."""
    probs = stage_logits.float().softmax(dim=1)
    return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)


def local_loss(stage_logits: list[torch.Tensor], type_masks: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Eq. 8: mean over stages of focal + the two Dice terms on the normal channel."""
    normal = (type_masks == 0).float()
    size = tuple(type_masks.shape[-2:])
    n_channels = stage_logits[0].shape[1]
    if int(type_masks.max()) >= n_channels:
        raise ValueError(f"type_masks hold class id {int(type_masks.max())} but the maps have only "
                         f"{n_channels} channels: masks must index the vocabulary the model was given")
    terms = []
    for logits in stage_logits:
        probs = stage_probabilities(logits, size)
        terms.append(focal_loss(probs, type_masks, gamma) + dice_loss(probs[:, 0], normal)
                     + dice_loss(1.0 - probs[:, 0], 1.0 - normal))
    return torch.stack(terms).mean()


def loss_terms(output, labels: torch.Tensor, type_masks: torch.Tensor, lam: float = 4.0,
               gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """The three terms of Eq. 9 for a :class:`dapo.model.DAPOOutput`: ``global``, ``local``, ``total``."""
    g = global_loss(output.global_logits, labels.to(output.global_logits.device))
    l = local_loss(output.stage_logits, type_masks.to(output.global_logits.device), gamma)
    return {"global": g, "local": l, "total": g + lam * l}


def dapo_loss(output, labels: torch.Tensor, type_masks: torch.Tensor, lam: float = 4.0,
              gamma: float = 2.0) -> torch.Tensor:
    """Total loss, Eq. 9: global + lam * local."""
    return loss_terms(output, labels, type_masks, lam, gamma)["total"]
