"""Each loss term against a hand-computed reference on a small tensor (Eq. 7-9)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.losses import (
    dapo_loss,
    dice_loss,
    focal_loss,
    global_loss,
    local_loss,
    loss_terms,
    stage_probabilities,
)

PLAIN = DAPOConfig(focal_smooth=0.0, upsample_align_corners=False)


def test_global_loss_is_cross_entropy_of_the_pair():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert float(global_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_by_hand():
    probs = torch.tensor([[[[0.7, 0.2]], [[0.2, 0.5]], [[0.1, 0.3]]]])  # (1, 3, 1, 2)
    target = torch.tensor([[[0, 2]]])
    p = np.array([0.7, 0.3])
    expected = np.mean(-(1 - p) ** 2 * np.log(p))
    assert float(focal_loss(probs, target, gamma=2.0)) == pytest.approx(expected, rel=1e-6)
    assert float(focal_loss(probs, target, gamma=0.0)) == pytest.approx(np.mean(-np.log(p)), rel=1e-6)


def test_smoothed_focal_loss_is_the_released_formula():
    """Official loss.py:76-85: one-hot clamped to [s/(C-1), 1-s], p_t = sum(onehot * p) + s."""
    probs = torch.tensor([[[[0.7, 0.2]], [[0.2, 0.5]], [[0.1, 0.3]]]])
    target = torch.tensor([[[0, 2]]])
    s = 1e-5
    onehot = np.array([[1 - s, s / 2, s / 2], [s / 2, s / 2, 1 - s]])
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    pt = (onehot * p).sum(1) + s
    expected = np.mean(-(1 - pt) ** 2 * np.log(pt))
    assert float(focal_loss(probs, target, gamma=2.0, smooth=s)) == pytest.approx(expected, rel=1e-6)


def test_dice_loss_by_hand_per_image():
    pred = torch.tensor([[[0.5, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    first = 1 - (2 * 1.5 + 1) / (1.5 + 2 + 1)
    second = 1 - (0 + 1) / (4 + 0 + 1)
    assert float(dice_loss(pred, target)) == pytest.approx((first + second) / 2, rel=1e-6)


def test_upsampled_probabilities_still_sum_to_one():
    for softmax_first in (True, False):
        for corners in (True, False):
            probs = stage_probabilities(torch.randn(2, 3, 2, 2), (8, 8), softmax_first=softmax_first,
                                        align_corners=corners)
            assert probs.shape == (2, 3, 8, 8)
            torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 8, 8))


def test_align_corners_keeps_the_corner_values_and_logits_first_differs():
    logits = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    corners = stage_probabilities(logits, (7, 7), align_corners=True)
    torch.testing.assert_close(corners[..., 0, 0], logits.softmax(1)[..., 0, 0])
    torch.testing.assert_close(corners[..., -1, -1], logits.softmax(1)[..., -1, -1])
    later = stage_probabilities(logits, (7, 7), softmax_first=False, align_corners=True)
    torch.testing.assert_close(later[..., 0, 0], corners[..., 0, 0])  # same at the grid points
    assert not torch.allclose(later[..., 3, 3], corners[..., 3, 3])   # but not in between


def _reference_local(logits: np.ndarray, mask: np.ndarray, gamma: float = 2.0, both: bool = True) -> float:
    """Eq. 8 for one stage at mask resolution, in float64 (``both=False``: MultiADS's one Dice term)."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)
    p_true = np.take_along_axis(s, mask[:, None], axis=1)[:, 0]
    focal = np.mean(-(1 - p_true) ** gamma * np.log(p_true))
    normal, y0 = s[:, 0], (mask == 0).astype(float)

    def dice(a, b):
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        return np.mean(1 - (2 * (a * b).sum(1) + 1) / (a.sum(1) + b.sum(1) + 1))

    return focal + dice(1 - normal, 1 - y0) + (dice(normal, y0) if both else 0.0)


def _stages_and_mask():
    generator = torch.Generator().manual_seed(0)
    stages = [torch.randn(2, 3, 4, 4, generator=generator) for _ in range(2)]
    mask = torch.zeros(2, 4, 4, dtype=torch.int64)
    mask[0, :2, :2], mask[1, 2:, 1:3] = 1, 2
    return stages, mask


def test_local_loss_against_float64_reference_mean_and_sum_over_stages():
    stages, mask = _stages_and_mask()
    per_stage = [_reference_local(s.double().numpy(), mask.numpy()) for s in stages]
    assert float(local_loss(stages, mask, PLAIN)) == pytest.approx(np.mean(per_stage), rel=1e-5)
    summed = PLAIN.with_overrides(local_reduction="sum")
    assert float(local_loss(stages, mask, summed)) == pytest.approx(np.sum(per_stage), rel=1e-5)
    single = PLAIN.with_overrides(dice_terms="abnormal")
    expected = np.mean([_reference_local(s.double().numpy(), mask.numpy(), both=False) for s in stages])
    assert float(local_loss(stages, mask, single)) == pytest.approx(expected, rel=1e-5)


def test_total_is_weighted_global_plus_lambda_local():
    generator = torch.Generator().manual_seed(1)
    output = SimpleNamespace(global_logits=torch.randn(2, 2, generator=generator),
                             stage_logits=[torch.randn(2, 3, 2, 2, generator=generator)])
    labels, masks = torch.tensor([0, 1]), torch.randint(0, 3, (2, 8, 8), generator=generator)
    terms = loss_terms(output, labels, masks)
    torch.testing.assert_close(terms["total"], terms["global"] + 4.0 * terms["local"])
    torch.testing.assert_close(dapo_loss(output, labels, masks), terms["total"])
    no_global = loss_terms(output, labels, masks, DAPOConfig(global_loss_weight=0.0, lam=0.5))
    torch.testing.assert_close(no_global["total"], 0.5 * no_global["local"])


def test_masks_must_index_the_given_vocabulary():
    with pytest.raises(ValueError, match="class id 3"):
        local_loss([torch.randn(1, 3, 2, 2)], torch.full((1, 4, 4), 3))
