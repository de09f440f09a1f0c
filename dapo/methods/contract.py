"""The contract every method of :mod:`dapo.methods` fulfils, so that the trainer, the evaluators,
:class:`~dapo.engine.inference.Predictor`, the command line, the sweeps and the notebooks drive
any of them without knowing which one they hold.

A method is an :class:`AnomalyModel` (an ``nn.Module`` on a frozen
:class:`~dapo.clip.backbone.Backbone`) configured by a frozen dataclass (:class:`MethodConfig` or
DAPO's own :class:`~dapo.methods.dapo.config.DAPOConfig`). It answers four calls:

* ``encode_text(vocabulary, product)``: the text side for a vocabulary, computed once per
  vocabulary by the predictor (any object ``forward`` accepts as ``text_embeddings``);
* ``forward(images, vocabulary, products=..., text_embeddings=...)`` -> :class:`DAPOOutput`;
* ``loss_terms(output, labels, type_masks)`` -> ``{"total": ..., <named terms>}`` (trainable
  methods; ``type_masks`` index the vocabulary, 0 = normal; binary methods receive 0/1 masks);
* ``predict(output, size, n_defects)`` -> :class:`~dapo.methods.scoring.Prediction` (by default
  :func:`dapo.methods.scoring.predict`, reading the scoring fields of the config).

``learnable_parameters()`` names what training changes and what a checkpoint stores; a method
with none is training-free (WinCLIP, CLIP-AC). ``family`` names the model class in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import torch
from torch import nn

INFERENCE_VOCABULARIES = ("product", "dataset")
GLOBAL_SCORES = ("pair", "states")
MAP_SCORES = ("max", "top3_mean")


@dataclass
class DAPOOutput:
    """Raw model outputs (logits are scaled cosine similarities, channel/state 0 = normal).

    global_logits: (B, 2) [normal, abnormal prototype]. state_logits: (B, K+1) image vs every
    state. stage_logits: M tensors (B, K+1, h, w). image_embedding: (B, C), normalised.
    text_embeddings: (K+1, C), or (B, K+1, C) with per-product or per-image prompts; normalised.
    """

    global_logits: torch.Tensor
    state_logits: torch.Tensor
    stage_logits: list[torch.Tensor]
    image_embedding: torch.Tensor
    text_embeddings: torch.Tensor


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method's configuration has; a method's config subclasses it (frozen dataclass).

    name:
        Display name in tables and figures.
    inference_vocabulary:
        ``"product"``: score each product's own defect types; ``"dataset"``: the dataset-wide list.
    smoothing_sigma, image_score_global_weight, global_score, map_score, softmax_before_upsample,
    upsample_align_corners:
        The default scoring (:func:`dapo.methods.scoring.predict`), as in
        :class:`~dapo.methods.dapo.config.DAPOConfig`.
    seed:
        Seeds the method's initialisation.
    """

    name: str = ""
    inference_vocabulary: str = "product"
    smoothing_sigma: float = 4.0
    image_score_global_weight: float = 1.0
    global_score: str = "pair"
    map_score: str = "max"
    softmax_before_upsample: bool = True
    upsample_align_corners: bool = True
    seed: int = 0

    #: Tuple-typed fields are stored in JSON as lists; ``from_dict`` turns them back.
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        cls = type(self).__name__
        for key, allowed in (("inference_vocabulary", INFERENCE_VOCABULARIES), ("global_score", GLOBAL_SCORES),
                             ("map_score", MAP_SCORES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{cls}.{key}={getattr(self, key)!r}: expected one of {allowed}")
        if not 0.0 <= self.image_score_global_weight <= 1.0:
            raise ValueError(f"{cls}.image_score_global_weight must lie in [0, 1], got {self.image_score_global_weight}")
        if self.smoothing_sigma < 0:
            raise ValueError(f"{cls}.smoothing_sigma must be >= 0, got {self.smoothing_sigma}")

    @property
    def binary(self) -> bool:
        """One abnormal state whatever the vocabulary (the default: every method but DAPO and MultiADS)."""
        return True

    def with_overrides(self, **overrides: Any):
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}")
        values = {k: (tuple(v) if k in cls.TUPLE_FIELDS and v is not None else v) for k, v in data.items()}
        return cls(**values)


class AnomalyModel(nn.Module):
    """Base class of every method: the shared properties and the default loss and scoring."""

    #: Registry name of the model class, written into checkpoints (``dapo.methods.FAMILIES``).
    family: ClassVar[str] = ""
    #: The configuration class this model takes.
    config_class: ClassVar[type] = MethodConfig

    def __init__(self, backbone, config) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.backbone = backbone
        self.config = config

    @property
    def binary(self) -> bool:
        """A single abnormal state (K = 1) whatever the vocabulary."""
        return self.config.binary

    @property
    def uses_product_names(self) -> bool:
        """Whether the text side names the product (``forward`` then needs ``products``)."""
        return False

    @property
    def device(self) -> torch.device:
        return self.backbone.visual.conv1.weight.device

    def seeded_generator(self) -> torch.Generator:
        """A CPU generator seeded with ``config.seed``: every method draws its initial learnable
        tensors from one, so a seed fixes the initialisation on any device."""
        return torch.Generator().manual_seed(self.config.seed)

    @property
    def trainable(self) -> bool:
        """Whether the method has anything to train."""
        return bool(self.learnable_parameters())

    def learnable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters training updates and a checkpoint stores (the backbone is frozen)."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def encode_text(self, vocabulary: Sequence[str] = (), product: str | None = None):
        raise NotImplementedError

    def loss_terms(self, output: DAPOOutput, labels: torch.Tensor, type_masks: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} ({self.config.name}) is training-free: it has no loss")

    def predict(self, output: DAPOOutput, size: tuple[int, int], n_defects: int):
        """Scores, maps and type probabilities of a batch (:func:`dapo.methods.scoring.predict`)."""
        from dapo.methods.scoring import predict

        return predict(self, output, size, n_defects)
