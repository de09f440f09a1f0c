"""Inference: :class:`Predictor` runs any method of :mod:`dapo.methods` on images.

``Predictor(model, vocabulary)`` encodes the K'+1 state prompts once; each call then runs
only the image encoder and the method's own scoring (:meth:`AnomalyModel.predict`, by default
:func:`dapo.methods.scoring.predict`), which returns a :class:`~dapo.methods.scoring.Prediction`:
``image_score`` (B,), ``anomaly_map`` (B, H, W), ``type_probs`` (B, K'+1, H, W), ``type_mask``
(B, H, W) and ``defect_probs`` (B, K').
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dapo.clip.vocabulary import check_vocabulary
from dapo.methods.contract import AnomalyModel
from dapo.methods.scoring import Prediction
from dapo.util.precision import autocast, resolve_precision


class Predictor:
    """Predictions for one defect vocabulary; the text embeddings are computed once, here.

    ``product`` names the product in handcrafted prompts (MultiADS, CLIP-AC); learned
    prompts are object-agnostic and ignore it. ``precision`` (``"auto"``, ``"fp32"``,
    ``"bf16"``, see :func:`dapo.util.precision.resolve_precision`) sets the compute dtype of the
    encoders; predictions are float32.
    """

    def __init__(self, model: AnomalyModel, vocabulary: Sequence[str], *, product: str | None = None,
                 precision: str = "auto") -> None:
        self.vocabulary = check_vocabulary(vocabulary, source="Predictor vocabulary")
        self.model = model.eval()
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
        return self.model.predict(output, tuple(images.shape[-2:]), len(self.vocabulary))


def inference_vocabulary(model: AnomalyModel, dataset, product: str) -> tuple[str, ...]:
    """The vocabulary a method uses for ``product``: its own types (``"product"``) or all (``"dataset"``)."""
    if model.config.inference_vocabulary == "product":
        return tuple(dataset.vocabulary(product))
    return tuple(dataset.dataset_vocabulary)
