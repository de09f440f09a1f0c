"""How a method is trained: :class:`TrainConfig`, the recipe that presets carry and every checkpoint saves.

The rule for defaults is :mod:`dapo.methods.dapo.config`'s: the DAPO paper where it states a
thing, the authors' released code where it is silent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dapo.util.precision import PRECISIONS

OPTIMIZERS = ("adam",)
MULTI_DEFECT_TRAINING = ("exclude", "as_class")
TRAIN_WORDS = ("knowledge_base", "dapo_official")


@dataclass(frozen=True)
class TrainConfig:
    """How a method is trained: one record that presets carry and every checkpoint saves.

    optimizer, lr, betas, weight_decay:
        Adam with lr 1e-3 (*paper*, Sec. 5.2); betas (0.5, 0.999) as the official DAPO and
        MultiADS training scripts (the paper is silent); no weight decay.
    batch_size, epochs:
        8 and 5 (*paper*). Profiles may train fewer epochs (the synthetic profile: 2); the
        learning rate is constant, so epoch k of a longer run equals a k-epoch run.
    precision:
        ``auto`` | ``fp32`` | ``bf16`` (:mod:`dapo.precision`): autocast dtype of the forward
        pass; learned parameters, optimiser state and losses stay fp32 (the official code
        trains in fp32; ``auto`` uses bf16 where the hardware computes it natively).
    mosaic_prob:
        Probability that a training sample is a 2x2 mosaic of four images of its product
        (MultiADS's augmentation, rate 0.2 in its training script); 0 = none (DAPO).
    multi_defect:
        Training images showing several defect types (MVTec-AD ``combined``): ``"exclude"``
        (MultiADS protocol) or ``"as_class"`` (kept with their own class, as the official DAPO
        training data list does).
    train_words:
        The words training prompts use for the training dataset's defect types:
        ``"knowledge_base"`` (the superclass names, as at test time) or ``"dapo_official"`` (the
        official training script's MVTec-AD words, :mod:`dapo.data.training_words`; identity on
        other datasets).
    seed:
        Seeds the data order of every epoch (and the augmentation); the model's own
        initialisation is seeded by ``DAPOConfig.seed`` (the runners set both from one seed).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 8
    epochs: int = 5
    precision: str = "auto"
    mosaic_prob: float = 0.0
    multi_defect: str = "exclude"
    train_words: str = "knowledge_base"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer={self.optimizer!r}: expected one of {OPTIMIZERS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.multi_defect not in MULTI_DEFECT_TRAINING:
            raise ValueError(f"TrainConfig.multi_defect={self.multi_defect!r}: expected one of {MULTI_DEFECT_TRAINING}")
        if self.train_words not in TRAIN_WORDS:
            raise ValueError(f"TrainConfig.train_words={self.train_words!r}: expected one of {TRAIN_WORDS}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        for key in ("batch_size", "epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{key} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.mosaic_prob <= 1.0:
            raise ValueError(f"TrainConfig.mosaic_prob must lie in [0, 1], got {self.mosaic_prob}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"TrainConfig.seed must be an integer, got {self.seed!r}")

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}")
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The fields that make two trainings the same model (epochs and precision excluded:
        a checkpoint holds every epoch, and precision is recorded, not part of the recipe)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("epochs", "precision")}


def split_overrides(overrides: dict[str, Any], model_config: type | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword overrides into fields of the method's config class (``model_config``, by
    default :class:`~dapo.methods.dapo.config.DAPOConfig`) and TrainConfig fields (unknown names raise)."""
    if model_config is None:
        from dapo.methods.dapo.config import DAPOConfig as model_config
    model_fields = {f.name for f in fields(model_config)}
    train_fields = {f.name for f in fields(TrainConfig)} - {"seed"}
    unknown = sorted(set(overrides) - model_fields - train_fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}: not a field of {model_config.__name__} {sorted(model_fields)} "
                         f"or TrainConfig {sorted(train_fields)}")
    model = {k: v for k, v in overrides.items() if k in model_fields}
    training = {k: v for k, v in overrides.items() if k in train_fields and k not in model_fields}
    return model, training
