"""Inference: image scores, binary and multi-type maps, multi-label defect probabilities.

``Predictor(model, vocabulary)`` encodes the K'+1 state prompts once; each call then runs
only the image encoder. For a batch of images it returns a :class:`Prediction`:

* ``type_probs`` (B, K'+1, H, W): per-stage softmax maps upsampled to the input size and
  averaged over the M stages (the paper sums them; the argmax is the same);
* ``type_mask`` (B, H, W): pixel-wise argmax (0 = normal, k = vocabulary[k-1]);
* ``anomaly_map`` (B, H, W): ``1 - type_probs[:, 0]`` (= mean over stages of UP(1 - S_i[0])),
  Gaussian-smoothed with ``config.smoothing_sigma`` pixels;
* ``image_score`` (B,): ``w * global + (1 - w) * max(anomaly_map)`` with
  ``w = config.image_score_global_weight``; the global score is the abnormal probability of
  Eq. 7 (``"pair"``) or 1 - the normal probability over all states (``"states"``, MultiADS);
* ``defect_probs`` (B, K'): Eq. 11, ``sigmoid(logit(z_x, z_Dk) - logit(z_x, z_N))``.

Binary configurations (one abnormal state) spread the abnormal probability evenly over the
K' defect channels, so shapes always follow the vocabulary while the binary map is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from dapo.losses import stage_probabilities
from dapo.model import DAPO, DAPOOutput
from dapo.precision import autocast, resolve_precision


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


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps (kernel radius 4 sigma, reflected borders)."""
    if sigma <= 0:
        return maps
    radius = min(int(4.0 * sigma + 0.5), maps.shape[-1] - 1, maps.shape[-2] - 1)
    if radius < 1:
        return maps
    offsets = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = maps.unsqueeze(1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def type_probabilities(stage_logits: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Mean over stages of the upsampled per-stage softmax maps: (B, S, H, W)."""
    return torch.stack([stage_probabilities(logits, size) for logits in stage_logits]).mean(dim=0)


def global_anomaly_score(output: DAPOOutput, mode: str) -> torch.Tensor:
    """Image-level score from the global embedding: ``"pair"`` (Eq. 7) or ``"states"`` (MultiADS)."""
    if mode == "pair":
        return output.global_logits.float().softmax(dim=-1)[:, 1]
    return 1.0 - output.state_logits.float().softmax(dim=-1)[:, 0]


def predict(model: DAPO, output: DAPOOutput, size: tuple[int, int], n_defects: int) -> Prediction:
    """Turn raw outputs into a :class:`Prediction` for a vocabulary of ``n_defects`` names."""
    config = model.config
    probs = type_probabilities(output.stage_logits, size)
    state_logits = output.state_logits.float()
    defect_logits = state_logits[:, 1:] - state_logits[:, :1]
    if model.binary:
        probs = torch.cat([probs[:, :1], (probs[:, 1:] / n_defects).expand(-1, n_defects, -1, -1)], dim=1)
        defect_logits = defect_logits.expand(-1, n_defects)
    anomaly_map = gaussian_smooth(1.0 - probs[:, 0], config.smoothing_sigma)
    w = config.image_score_global_weight
    image_score = w * global_anomaly_score(output, config.global_score) + (1.0 - w) * anomaly_map.flatten(1).amax(1)
    return Prediction(image_score=image_score, anomaly_map=anomaly_map, type_probs=probs,
                      type_mask=probs.argmax(dim=1), defect_probs=torch.sigmoid(defect_logits))


class Predictor:
    """Predictions for one defect vocabulary; the text embeddings are computed once, here.

    ``product`` names the product in handcrafted prompts (MultiADS, CLIP-AC); learned
    prompts are object-agnostic and ignore it. ``precision`` (``"auto"``, ``"fp32"``,
    ``"bf16"``, see :func:`dapo.precision.resolve_precision`) sets the compute dtype of the
    encoders; predictions are float32.
    """

    def __init__(self, model: DAPO, vocabulary: Sequence[str], *, product: str | None = None,
                 precision: str = "auto") -> None:
        self.model = model.eval()
        self.vocabulary = tuple(vocabulary)
        if not self.vocabulary:
            raise ValueError("Predictor needs at least one defect name")
        self.product = product
        self.precision = resolve_precision(precision, model.device)
        with torch.no_grad(), autocast(model.device, self.precision):
            self.text_embeddings = model.encode_text(self.vocabulary, product).float()

    @property
    def class_names(self) -> tuple[str, ...]:
        """Channel names of ``type_probs``: normal, then the vocabulary."""
        return ("normal", *self.vocabulary)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Prediction:
        images = images.to(self.model.device)
        with autocast(self.model.device, self.precision):
            output = self.model(images, text_embeddings=self.text_embeddings)
        return predict(self.model, output, tuple(images.shape[-2:]), len(self.vocabulary))


def inference_vocabulary(model: DAPO, dataset, product: str) -> tuple[str, ...]:
    """The vocabulary a method uses for ``product``: its own types (``"product"``) or all (``"dataset"``)."""
    if model.config.inference_vocabulary == "product":
        return tuple(dataset.vocabulary(product))
    return tuple(dataset.dataset_vocabulary)
