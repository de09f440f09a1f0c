"""Every hyperparameter of DAPO and its baselines, with its source.

One frozen dataclass, :class:`DAPOConfig`, configures the whole model; the baselines of
:mod:`dapo.methods` are instances of it with other values, and :class:`TrainConfig` holds
how a method is trained. The rule for defaults: where the DAPO paper states a thing, follow it
(*paper*); where it is silent, follow the authors' released code (*official*, file:line of
boschresearch/defect-aware-prompt-optimization at ad2ceab); where the two disagree, follow the
paper and offer the code's behaviour as a value (the ``dapo_official`` preset uses them all).
``docs/FIDELITY.md`` lists every difference with its measured effect. Configs travel inside
every checkpoint as JSON (:meth:`DAPOConfig.to_dict` / :meth:`DAPOConfig.from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from dapo.methods.contract import MethodConfig

TEXT_PROMPT_KINDS = ("defect_aware", "object_agnostic", "handcrafted_defects", "handcrafted_binary")
LEARNED_PROMPT_KINDS = ("defect_aware", "object_agnostic")
BINARY_PROMPT_KINDS = ("object_agnostic", "handcrafted_binary")


@dataclass(frozen=True)
class DAPOConfig(MethodConfig):
    """Configuration of a DAPO-style model (DAPO itself with the defaults).

    Prompts
    -------
    text_prompts:
        ``"defect_aware"`` (DAPO, Eq. 1-2: ``[W1..Wl] <defect words> anomaly object`` per defect,
        ``[V1..Vl] normal object``); ``"object_agnostic"`` (AnomalyCLIP: one learned abnormal
        state ``[W1..Wl] <abnormal_word> object``, binary); ``"handcrafted_defects"`` (MultiADS:
        knowledge-base state phrases x templates per defect); ``"handcrafted_binary"`` (CLIP-AC).
    n_prompts, n_ctx:
        E prompt sets per state and l learnable context tokens per prompt (*paper* Sec. 5.2: 10, 5).
    normal_word, abnormal_word, object_word, prompt_suffix:
        Literal words (*paper* Eq. 1-2: "normal", "anomaly", "object"; the official code writes
        "flawless" for normal, ``learnable_prompt.py:20``). ``prompt_suffix`` ends every learned
        prompt (AnomalyCLIP's prompts end in ".").
    init:
        Initialisation of the text-side tokens (context and deep text tokens; appendix 10.2):
        ``"clip"`` N(mean, std) of the frozen token-embedding table per dimension (*paper* =
        *official* ``learnable_prompt.py:24-39``), ``"random"`` N(0, 1) (also for the vision deep
        tokens), ``"offset"`` like ``"clip"`` with the abnormal context shifted by
        ``offset_sigmas`` std (5 in the paper), ``"small"`` N(0, 0.02^2) (AnomalyCLIP's
        ``prompt_ensemble.py``).
    vision_token_init:
        The vision deep tokens (the vision tower has no token table; the paper is silent):
        ``"vpt_uniform"`` U(+-sqrt(6 / (3 * patch_h * patch_w + width))), 0.061 for ViT-L/14
        (*official* ``visual_prompt_tuning.py:17-23``, VPT's rule); ``"ln_pre"`` N(ln_pre.bias,
        |ln_pre.weight|) (this project's earlier choice).
    templates, normal_states, abnormal_states, defect_states:
        Handcrafted prompt lists; ``None`` reads them from :mod:`dapo.data.knowledge`.
        States hold a ``{}`` placeholder for the product name (``"object"`` when unknown).
    state_mean:
        How the E prompt embeddings of a state become one (Eq. 5-6): ``"raw"`` mean of the raw
        embeddings, then normalised (*paper* Eq. 5 = *official* ``open_clip/model.py:324``);
        ``"normalized"`` normalise each prompt first (MultiADS's ``prompt_ensemble``).
    text_layout:
        ``"clip"``: deep text tokens occupy placeholder positions right after ``[SOT]`` inside
        the tokenised prompt, causal attention, pooling at the true end-of-text token (the
        paper's design; CLIP's text tower). ``"official"``: as the released code
        (``open_clip/transformer.py:379-399``, ``open_clip/model.py:310-318``): the deep tokens
        are inserted after ``[SOT]`` after the positional embedding (context and words keep
        their positions), no causal mask, and pooling at the template's EOT index, which the
        insertion shifts to the token 4 places before the real EOT (most likely a bug).

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
    text_deep_layout:
        ``"prefix"``: deep text tokens in their own positions after ``[SOT]``, from layer 1
        (DAPO); ``"context"``: they overwrite the first context tokens from layer 2 up to
        ``text_depth`` (AnomalyCLIP's ``compound_prompts_text``, ``AnomalyCLIP.py:237-251``).
    alpha0, alpha_decay:
        ``a_j = alpha0 * alpha_decay**(j - 2)`` for layers j >= 2. The paper asks for a "small
        decaying parameter" without values; the official code uses a constant 0.01
        (``open_clip/transformer.py:389,418``). Default: decaying (paper) from the code's
        magnitude, 0.01 * 0.9^(j-2) (*choice* of the rate); the official constant is
        ``alpha_decay=1.0``.

    Image side and scores
    ---------------------
    patch_ln_post:
        Intermediate patch tokens pass through the frozen ``ln_post`` before their adapter
        (AprilGAN's choice); ``False`` = the raw residual stream (*official*
        ``open_clip/transformer.py:432-436``, and MultiADS).
    adapter_init, train_adapters:
        ``"random"``: PyTorch's default ``nn.Linear`` initialisation (*official* ``adapter.py:8``);
        ``"projection"``: start at CLIP's own frozen visual projection (an untrained adapter
        reproduces CLIP's dense zero-shot map). Frozen adapters (``train_adapters=False``: CLIP-AC,
        AnomalyCLIP) must be the projection.
    dpam_layers:
        AnomalyCLIP's DPAM (:mod:`dapo.methods.dapo.dpam`): the number of last vision layers that also run a
        v-v attention path without MLP, from which patch taps at or after its first layer are
        read; 0 = off (DAPO). AnomalyCLIP covers the last 19 of 24 layers (layers 6-24,
        ``DAPM_replace(DPAM_layer=20)``); the ``anomalyclip`` preset scales that to the backbone.
    temperature:
        tau in ``logits = cos / tau`` for maps and global scores (*official* 0.07,
        ``train.py:35,240``; MultiADS 0.01; ``None`` uses the backbone's learned logit scale).
    aggregation:
        Abnormal prototype for the global score (appendix 11): ``"mean"`` of the K defect
        embeddings (*paper* default) or ``"attention"`` (softmax of their similarity to the image).
    global_score:
        Global anomaly score: ``"pair"`` = softmax over [normal, abnormal prototype] (Eq. 7);
        ``"states"`` = 1 - softmax over all K+1 states at the normal state (MultiADS).
    image_score_global_weight, map_score:
        Image score = w * global score + (1 - w) * a statistic of the anomaly map: ``"max"`` or
        ``"top3_mean"`` (MultiADS's ``test.py``). The paper is silent; the official code scores
        an image by the global score alone (*official* ``test.py:327,344``: w = 1).
    smoothing_sigma:
        Gaussian smoothing (pixels) of the binary anomaly map at inference; 0 = none (*official*:
        none; AnomalyCLIP: 4).
    softmax_before_upsample, upsample_align_corners:
        Per-stage maps: softmax at patch resolution, then bilinear upsampling (*official*
        ``train.py:32-45``, ``align_corners=True``); MultiADS upsamples the logits first.
    inference_vocabulary:
        Defect vocabulary of *binary* detection: ``"product"``, a product's own defect types
        (*paper* Sec. 4.5; MultiADS-F); ``"dataset"``, every type of the dataset (the official
        DAPO ``test.py:44-88`` and MultiADS). Multi-type evaluation always uses a product's own
        types (both official codes).

    Loss (Eq. 7-9)
    --------------
    lam:
        Weight of the local loss (*paper*: 4.0).
    local_reduction:
        ``"mean"`` over the M stages (*paper* Eq. 8) or ``"sum"`` (*official* ``train.py:261-274``:
        4x the weight).
    dice_terms:
        ``"both"``: Dice(S[0], Y[0]) + Dice(1 - S[0], 1 - Y[0]) (*paper* Eq. 8); ``"abnormal"``:
        Dice(1 - S[0], 1 - Y[0]) only (MultiADS Eq. 2).
    global_loss_weight:
        Weight of the global CE (1; MultiADS has no global term: 0).
    focal_gamma, focal_smooth:
        Focal exponent 2 and the label smoothing of the one-hot target (*official* ``loss.py:24-89``:
        gamma 2, smooth 1e-5; 0 = plain focal loss with a 1e-8 floor).
    seed:
        Seeds the initialisation of every learned parameter.
    """

    name: str = "DAPO"
    text_prompts: str = "defect_aware"
    n_prompts: int = 10
    n_ctx: int = 5
    normal_word: str = "normal"
    abnormal_word: str = "anomaly"
    object_word: str = "object"
    prompt_suffix: str = ""
    init: str = "clip"
    offset_sigmas: float = 5.0
    vision_token_init: str = "vpt_uniform"
    templates: tuple[str, ...] | None = None
    normal_states: tuple[str, ...] | None = None
    abnormal_states: tuple[str, ...] | None = None
    defect_states: dict[str, tuple[str, ...]] | None = None
    state_mean: str = "raw"
    text_layout: str = "clip"
    tuning: str = "progressive"
    text_deep_tokens: int = 4
    text_depth: int | None = None
    text_deep_layout: str = "prefix"
    vision_deep_tokens: int = 4
    vision_depth: int | None = None
    alpha0: float = 0.01
    alpha_decay: float = 0.9
    patch_ln_post: bool = False
    adapter_init: str = "random"
    train_adapters: bool = True
    dpam_layers: int = 0
    temperature: float | None = 0.07
    aggregation: str = "mean"
    smoothing_sigma: float = 0.0
    lam: float = 4.0
    local_reduction: str = "mean"
    dice_terms: str = "both"
    global_loss_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_smooth: float = 1e-5

    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("templates", "normal_states", "abnormal_states")

    def __post_init__(self) -> None:
        super().__post_init__()  # name, scoring and vocabulary fields (MethodConfig)
        choices = {
            "text_prompts": TEXT_PROMPT_KINDS,
            "init": ("clip", "random", "offset", "small"),
            "vision_token_init": ("vpt_uniform", "ln_pre"),
            "state_mean": ("raw", "normalized"),
            "text_layout": ("clip", "official"),
            "tuning": ("progressive", "naive"),
            "text_deep_layout": ("prefix", "context"),
            "adapter_init": ("projection", "random"),
            "aggregation": ("mean", "attention"),
            "local_reduction": ("mean", "sum"),
            "dice_terms": ("both", "abnormal"),
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
        if isinstance(self.dpam_layers, bool) or not isinstance(self.dpam_layers, int) or self.dpam_layers < 0:
            raise ValueError(f"DAPOConfig.dpam_layers must be an integer >= 0 (0 = no DPAM), got {self.dpam_layers!r}")
        for key in ("text_depth", "vision_depth"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"DAPOConfig.{key} must be None (every layer) or >= 0, got {value}")
        if not 0.0 <= self.alpha0 < 1.0 or not 0.0 < self.alpha_decay <= 1.0:
            raise ValueError(f"need 0 <= alpha0 < 1 and 0 < alpha_decay <= 1, got {self.alpha0}, {self.alpha_decay}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (or None for the backbone's logit scale), got {self.temperature}")
        for key in ("lam", "global_loss_weight", "focal_gamma"):
            if getattr(self, key) < 0:
                raise ValueError(f"DAPOConfig.{key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.focal_smooth < 0.5:
            raise ValueError(f"DAPOConfig.focal_smooth must lie in [0, 0.5), got {self.focal_smooth}")
        if not self.train_adapters and self.adapter_init != "projection":
            raise ValueError("frozen adapters (train_adapters=False) must be CLIP's projection: set "
                             "adapter_init='projection'")
        if self.handcrafted and self.uses_text_deep_tokens:
            raise ValueError("handcrafted prompts have no learned text: set text_depth=0 (or text_deep_tokens=0)")
        if self.text_deep_layout == "context" and self.uses_text_deep_tokens and self.text_deep_tokens > self.n_ctx:
            raise ValueError(f"text_deep_layout='context' overwrites context tokens: text_deep_tokens "
                             f"({self.text_deep_tokens}) must not exceed n_ctx ({self.n_ctx})")
        if self.text_layout == "official" and (self.text_deep_layout != "prefix" or not self.learned_prompts):
            raise ValueError("text_layout='official' applies to learned prompts with text_deep_layout='prefix'")

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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DAPOConfig:
        """Inverse of :meth:`to_dict` (:meth:`MethodConfig.from_dict`, and ``defect_states``' lists
        back to tuples); unknown keys raise ``ValueError``."""
        if data.get("defect_states") is not None:
            data = {**data, "defect_states": {k: tuple(v) for k, v in data["defect_states"].items()}}
        return super().from_dict(data)
