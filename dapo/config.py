"""Every hyperparameter of DAPO and its baselines, with the paper's defaults.

One frozen dataclass, :class:`DAPOConfig`, configures the whole model; the baselines of
:mod:`dapo.baselines` are instances of it with other values. Values marked *paper* come from
the DAPO paper (sections 4-5, appendix 10-11); values marked *choice* are not given there and
were chosen here (the reasons are in the field comments). The config travels inside every
checkpoint as JSON (:meth:`DAPOConfig.to_dict` / :meth:`DAPOConfig.from_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dapo.precision import PRECISIONS

TEXT_PROMPT_KINDS = ("defect_aware", "object_agnostic", "handcrafted_defects", "handcrafted_binary")
LEARNED_PROMPT_KINDS = ("defect_aware", "object_agnostic")
BINARY_PROMPT_KINDS = ("object_agnostic", "handcrafted_binary")


@dataclass(frozen=True)
class DAPOConfig:
    """Configuration of a DAPO-style model (DAPO itself with the defaults).

    Prompts
    -------
    text_prompts:
        ``"defect_aware"`` (DAPO, Eq. 1-2: ``[W1..Wl] <defect words> anomaly object`` per defect,
        ``[V1..Vl] normal object``); ``"object_agnostic"`` (AnomalyCLIP: one learned abnormal
        state ``[W1..Wl] <abnormal_word> object``, binary); ``"handcrafted_defects"`` (MultiADS:
        knowledge-base state phrases x templates per defect); ``"handcrafted_binary"`` (CLIP-AC).
    n_prompts, n_ctx:
        E prompt sets per state and l learnable context tokens per prompt (*paper*: 10 and 5).
    normal_word, abnormal_word, object_word:
        Literal anchor words (*paper*: "normal", "anomaly", "object").
    init:
        Context and deep-token initialisation (appendix 10.2): ``"clip"`` draws from the
        per-dimension mean and std of the frozen token-embedding table (*paper* default),
        ``"random"`` from N(0, 1), ``"offset"`` like ``"clip"`` with the abnormal context
        shifted by ``offset_sigmas`` standard deviations (5 in the paper).
    templates, normal_states, abnormal_states, defect_states:
        Handcrafted prompt lists; ``None`` reads them from :mod:`dapo.data.knowledge`.
        States hold a ``{}`` placeholder for the product name (``"object"`` when unknown).

    Progressive tuning (Eq. 10)
    ---------------------------
    tuning:
        ``"progressive"``: layer j > 1 receives ``(1 - a_j) U_j + a_j O_{j-1}``; ``"naive"``:
        plain deep prefix tuning, ``U_j`` replaces the previous output.
    text_deep_tokens, vision_deep_tokens:
        Learnable tokens per layer (*paper*: 4).
    text_depth, vision_depth:
        N_d, the number of layers (from the first) that receive tokens; ``None`` = every layer
        (*paper*: full depth), ``0`` = no deep tokens.
    alpha0, alpha_decay:
        *choice*: the paper asks for a small, decaying a; here ``a_j = alpha0 * alpha_decay**(j-2)``
        for layers j >= 2 (0.1 at layer 2, 0.01 at layer 24 of ViT-L).

    Image side and scores
    ---------------------
    patch_ln_post:
        *choice* (as AprilGAN/MultiADS): intermediate patch tokens pass through the frozen
        ``ln_post`` before their adapter.
    adapter_init, train_adapters:
        *choice*: ``"projection"`` starts each linear adapter at CLIP's own frozen visual
        projection (so an untrained adapter reproduces CLIP's dense zero-shot map);
        ``"random"`` is PyTorch's default ``nn.Linear`` initialisation. Frozen adapters
        (``train_adapters=False``) keep the projection (CLIP-AC, AnomalyCLIP).
    temperature:
        tau in ``logits = cos / tau`` for maps and global scores (*choice*: 0.07 as AnomalyCLIP;
        ``None`` uses the backbone's own learned CLIP logit scale).
    aggregation:
        Abnormal prototype for the global score (appendix 11): ``"mean"`` of the K defect
        embeddings (*paper* default) or ``"attention"`` (softmax of their similarity to the image).
    global_score:
        Global anomaly score: ``"pair"`` = softmax over [normal, abnormal prototype] (Eq. 7);
        ``"states"`` = 1 - softmax over all K+1 states at the normal state (MultiADS).
    image_score_global_weight:
        Image score = w * global score + (1 - w) * max of the anomaly map (*choice* 0.5: the
        paper combines both; MultiADS averages them).
    smoothing_sigma:
        Gaussian smoothing (pixels) of the binary anomaly map at inference (*choice*: 4, as
        AnomalyCLIP; 0 disables it).
    inference_vocabulary:
        ``"product"``: a product's own defect types (DAPO, MultiADS-F); ``"dataset"``: every
        type of the dataset (MultiADS without filtering).

    Loss (Eq. 7-9)
    --------------
    lam: weight of the local loss (*paper*: 4.0). focal_gamma: focal exponent (*choice*: 2,
    the focal-loss default). seed: seeds the initialisation of every learned parameter.
    """

    name: str = "DAPO"
    text_prompts: str = "defect_aware"
    n_prompts: int = 10
    n_ctx: int = 5
    normal_word: str = "normal"
    abnormal_word: str = "anomaly"
    object_word: str = "object"
    init: str = "clip"
    offset_sigmas: float = 5.0
    templates: tuple[str, ...] | None = None
    normal_states: tuple[str, ...] | None = None
    abnormal_states: tuple[str, ...] | None = None
    defect_states: dict[str, tuple[str, ...]] | None = None
    tuning: str = "progressive"
    text_deep_tokens: int = 4
    text_depth: int | None = None
    vision_deep_tokens: int = 4
    vision_depth: int | None = None
    alpha0: float = 0.1
    alpha_decay: float = 0.9
    patch_ln_post: bool = True
    adapter_init: str = "projection"
    train_adapters: bool = True
    temperature: float | None = 0.07
    aggregation: str = "mean"
    global_score: str = "pair"
    image_score_global_weight: float = 0.5
    smoothing_sigma: float = 4.0
    inference_vocabulary: str = "product"
    lam: float = 4.0
    focal_gamma: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {
            "text_prompts": TEXT_PROMPT_KINDS,
            "init": ("clip", "random", "offset"),
            "tuning": ("progressive", "naive"),
            "adapter_init": ("projection", "random"),
            "aggregation": ("mean", "attention"),
            "global_score": ("pair", "states"),
            "inference_vocabulary": ("product", "dataset"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"DAPOConfig.{key}={getattr(self, key)!r}: expected one of {allowed}")
        for key in ("n_prompts", "n_ctx"):
            if getattr(self, key) < 1:
                raise ValueError(f"DAPOConfig.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("text_deep_tokens", "vision_deep_tokens"):
            if getattr(self, key) < 0:
                raise ValueError(f"DAPOConfig.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("text_depth", "vision_depth"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"DAPOConfig.{key} must be None (every layer) or >= 0, got {value}")
        if not 0.0 <= self.alpha0 < 1.0 or not 0.0 < self.alpha_decay <= 1.0:
            raise ValueError(f"need 0 <= alpha0 < 1 and 0 < alpha_decay <= 1, got {self.alpha0}, {self.alpha_decay}")
        if not 0.0 <= self.image_score_global_weight <= 1.0:
            raise ValueError(f"image_score_global_weight must lie in [0, 1], got {self.image_score_global_weight}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (or None for the backbone's logit scale), got {self.temperature}")
        if self.handcrafted and self.uses_text_deep_tokens:
            raise ValueError("handcrafted prompts have no learned text: set text_depth=0 (or text_deep_tokens=0)")

    @property
    def learned_prompts(self) -> bool:
        """Whether the text side has learnable context tokens."""
        return self.text_prompts in LEARNED_PROMPT_KINDS

    @property
    def handcrafted(self) -> bool:
        return not self.learned_prompts

    @property
    def binary(self) -> bool:
        """One abnormal state whatever the vocabulary (AnomalyCLIP, CLIP-AC)."""
        return self.text_prompts in BINARY_PROMPT_KINDS

    @property
    def uses_text_deep_tokens(self) -> bool:
        return self.text_deep_tokens > 0 and self.text_depth != 0

    @property
    def uses_vision_deep_tokens(self) -> bool:
        return self.vision_deep_tokens > 0 and self.vision_depth != 0

    def with_overrides(self, **overrides: Any) -> "DAPOConfig":
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DAPOConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DAPOConfig keys {unknown}")
        values = dict(data)
        for key in ("templates", "normal_states", "abnormal_states"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if values.get("defect_states") is not None:
            values["defect_states"] = {k: tuple(v) for k, v in values["defect_states"].items()}
        return cls(**values)


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
        pass; learned parameters, optimiser state and losses stay fp32.
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
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 8
    epochs: int = 5
    precision: str = "fp32"
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

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}")
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The fields that make two trainings the same model (epochs and precision excluded:
        a checkpoint holds every epoch, and precision is recorded, not part of the recipe)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("epochs", "precision")}


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword overrides into DAPOConfig fields and TrainConfig fields (unknown names raise)."""
    model_fields = {f.name for f in fields(DAPOConfig)}
    train_fields = {f.name for f in fields(TrainConfig)} - {"seed"}
    unknown = sorted(set(overrides) - model_fields - train_fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}: not a field of DAPOConfig {sorted(model_fields)} "
                         f"or TrainConfig {sorted(train_fields)}")
    model = {k: v for k, v in overrides.items() if k in model_fields}
    training = {k: v for k, v in overrides.items() if k in train_fields and k not in model_fields}
    return model, training
