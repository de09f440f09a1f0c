"""The default scoring of the method contract: from a :class:`~dapo.methods.contract.DAPOOutput`
to a :class:`Prediction`.

Every method whose raw output has per-stage (K'+1)-channel similarity maps and global logits
uses it (a method may override :meth:`~dapo.methods.contract.AnomalyModel.predict`):

* ``type_probs`` (B, K'+1, H, W): per-stage softmax maps upsampled to the input size and
  averaged over the M stages (the paper sums them; the argmax is the same);
* ``type_mask`` (B, H, W): pixel-wise argmax (0 = normal, k = vocabulary[k-1]);
* ``anomaly_map`` (B, H, W): ``1 - type_probs[:, 0]`` (= mean over stages of UP(1 - S_i[0])),
  Gaussian-smoothed with ``config.smoothing_sigma`` pixels;
* ``image_score`` (B,): ``w * global + (1 - w) * stat(anomaly_map)`` with
  ``w = config.image_score_global_weight`` (1 for DAPO: the official code scores images by the
  global score alone) and ``stat = config.map_score`` (max, or MultiADS's top-3 mean); the
  global score is the abnormal probability of Eq. 7 (``"pair"``) or 1 - the normal
  probability over all states (``"states"``, MultiADS);
* ``defect_probs`` (B, K'): Eq. 11, ``sigmoid(logit(z_x, z_Dk) - logit(z_x, z_N))``.

Binary configurations (one abnormal state) spread the abnormal probability evenly over the
K' defect channels, so shapes always follow the vocabulary while the binary map is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F


@dataclass
class Prediction:
    """Predictions for a batch (tensors on the model's device); also readable as ``pred["key"]``."""

    image_score: torch.Tensor
    anomaly_map: torch.Tensor
    type_probs: torch.Tensor
    type_mask: torch.Tensor
    defect_probs: torch.Tensor

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]


def _reflect_indices(size: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of scipy's ``mode="reflect"`` extension (``d c b a | a b c d | d c b a``) for any radius."""
    index = torch.arange(-radius, size + radius, device=device).remainder(2 * size)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of every ``(H, W)`` map of ``(..., H, W)`` maps; ``sigma`` 0 returns ``maps``.

    Equal to ``scipy.ndimage.gaussian_filter(map, sigma, mode="reflect", truncate=4.0)`` per map
    (kernel radius ``int(4 sigma + 0.5)``, half-sample symmetric borders, repeated for maps
    smaller than the kernel), which AnomalyCLIP's ``test.py`` applies to each map (sigma 4).
    Computed in float32 (float64 for float64 maps) and returned in the maps' dtype.
    """
    if sigma < 0:
        raise ValueError(f"smoothing sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return maps
    if maps.ndim < 2:
        raise ValueError(f"maps must have shape (..., H, W), got shape {tuple(maps.shape)}")
    height, width = maps.shape[-2:]
    radius = int(4.0 * sigma + 0.5)
    dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(device=maps.device, dtype=dtype)
    x = maps.to(dtype).reshape(-1, 1, height, width)
    x = F.conv2d(x.index_select(3, _reflect_indices(width, radius, maps.device)), kernel.view(1, 1, 1, -1))
    x = F.conv2d(x.index_select(2, _reflect_indices(height, radius, maps.device)), kernel.view(1, 1, -1, 1))
    return x.reshape(maps.shape).to(maps.dtype)


def stage_probabilities(stage_logits: torch.Tensor, size: tuple[int, int], *, softmax_first: bool = True,
                        align_corners: bool = True) -> torch.Tensor:
    """(B, K+1, H, W) probabilities of one stage at ``size``: softmax over the channels at patch
    resolution, then bilinear upsampling (``softmax_first=False``: upsample the logits first)."""
    logits = stage_logits.float()
    if softmax_first:
        return F.interpolate(logits.softmax(dim=1), size=size, mode="bilinear", align_corners=align_corners)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners).softmax(dim=1)


def type_probabilities(stage_logits: list[torch.Tensor], size: tuple[int, int], config=None) -> torch.Tensor:
    """Mean over stages of the upsampled per-stage probability maps: (B, S, H, W), with the
    upsampling options of ``config`` (``softmax_before_upsample``, ``upsample_align_corners``;
    both ``True`` without one)."""
    softmax_first = getattr(config, "softmax_before_upsample", True)
    align_corners = getattr(config, "upsample_align_corners", True)
    return torch.stack([stage_probabilities(logits, size, softmax_first=softmax_first, align_corners=align_corners)
                        for logits in stage_logits]).mean(dim=0)


def map_statistic(anomaly_map: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image statistic of (B, H, W) maps: ``"max"``, or ``"top3_mean"`` (MultiADS ``test.py``)."""
    flat = anomaly_map.flatten(1)
    if kind == "max":
        return flat.amax(1)
    return flat.topk(min(3, flat.shape[1]), dim=1).values.mean(1)


def global_anomaly_score(output, mode: str) -> torch.Tensor:
    """Image-level score from the global embedding: ``"pair"`` (Eq. 7) or ``"states"`` (MultiADS)."""
    if mode == "pair":
        return output.global_logits.float().softmax(dim=-1)[:, 1]
    return 1.0 - output.state_logits.float().softmax(dim=-1)[:, 0]


def predict(model, output, size: tuple[int, int], n_defects: int) -> Prediction:
    """Turn raw outputs into a :class:`Prediction` for a vocabulary of ``n_defects`` names."""
    config = model.config
    probs = type_probabilities(output.stage_logits, size, config)
    state_logits = output.state_logits.float()
    defect_logits = state_logits[:, 1:] - state_logits[:, :1]
    if model.binary:
        probs = torch.cat([probs[:, :1], (probs[:, 1:] / n_defects).expand(-1, n_defects, -1, -1)], dim=1)
        defect_logits = defect_logits.expand(-1, n_defects)
    anomaly_map = gaussian_smooth(1.0 - probs[:, 0], config.smoothing_sigma)
    w = config.image_score_global_weight
    image_score = w * global_anomaly_score(output, config.global_score)
    if w < 1.0:
        image_score = image_score + (1.0 - w) * map_statistic(anomaly_map, config.map_score)
    return Prediction(image_score=image_score, anomaly_map=anomaly_map, type_probs=probs,
                      type_mask=probs.argmax(dim=1), defect_probs=torch.sigmoid(defect_logits))
