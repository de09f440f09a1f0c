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
