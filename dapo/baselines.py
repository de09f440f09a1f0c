"""DAPO, its ablations and the baselines as named configurations of the same model.

Every method is a :class:`Preset`: a :class:`~dapo.config.DAPOConfig` (the model) and a
:class:`~dapo.config.TrainConfig` (how it is trained); :func:`make_model` builds the model on a
backbone, :func:`preset` gives both with overrides applied.
Differences from the original baselines are stated in each docstring (the paper quotes the
baselines' numbers from their papers; these re-implementations serve the synthetic profile
and the notebooks' comparisons).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dapo.backbone import Backbone
from dapo.config import DAPOConfig, TrainConfig, split_overrides
from dapo.model import DAPO


def dapo() -> DAPOConfig:
    """DAPO with the paper's defaults (progressive tuning at full depth, CLIP-space init)."""
    return DAPOConfig()


def dapo_naive() -> DAPOConfig:
    """Ablation (appendix 11.1): naive deep prefix tuning, no progressive carry-over."""
    return DAPOConfig(name="DAPO (naive prefix)", tuning="naive")


def dapo_attention() -> DAPOConfig:
    """Ablation (appendix 11): attention-weighted abnormal prototype instead of the mean."""
    return DAPOConfig(name="DAPO (attention)", aggregation="attention")


def dapo_random_init() -> DAPOConfig:
    """Ablation (appendix 10.2): tokens drawn from N(0, 1)."""
    return DAPOConfig(name="DAPO (random init)", init="random")


def dapo_offset_init() -> DAPOConfig:
    """Ablation (appendix 10.2): abnormal context shifted by 5 sigma from the CLIP-space mean."""
    return DAPOConfig(name="DAPO (offset init)", init="offset")


def clip_ac() -> DAPOConfig:
    """CLIP-AC: no training; ensembles of "a photo of a normal/damaged [cls]" over templates.

    Binary; patch maps from CLIP's own projection of ``ln_post``-normalised patch tokens;
    image score = global score only; CLIP's own logit scale. Templates come from the
    knowledge base (``multiads_templates``).
    """
    return DAPOConfig(name="CLIP-AC", text_prompts="handcrafted_binary", normal_states=("normal {}",),
                      abnormal_states=("damaged {}",), text_depth=0, vision_depth=0, train_adapters=False,
                      temperature=None, image_score_global_weight=1.0, smoothing_sigma=0.0)


def multiads() -> DAPOConfig:
    """MultiADS: handcrafted defect-aware prompts (knowledge-base states x templates, product names).

    Trainable linear adapters (default ``nn.Linear`` init), no prompt learning; image score =
    mean of the global score (1 - normal probability over all K+1 states) and the map maximum;
    inference on the dataset-wide vocabulary (no filtering). Trained with DAPO's local loss
    (focal + both Dice terms); its global term carries no gradient here (handcrafted text,
    frozen image encoder), as MultiADS does not tune the global score.
    """
    return DAPOConfig(name="MultiADS", text_prompts="handcrafted_defects", text_depth=0, vision_depth=0,
                      adapter_init="random", global_score="states", inference_vocabulary="dataset")


def multiads_f() -> DAPOConfig:
    """MultiADS-F: MultiADS with product-irrelevant defect types filtered out at inference."""
    return multiads().with_overrides(name="MultiADS-F", inference_vocabulary="product")


def anomalyclip() -> DAPOConfig:
    """AnomalyCLIP-style: object-agnostic learned binary prompts with deep text tokens.

    ``[V1..V12] object`` / ``[W1..W12] damaged object`` (one prompt per state), 4 deep text
    tokens replacing (naive) in the first 9 text layers (capped at the encoder's depth), no vision tokens, frozen projection for
    the patch maps, image score = global score only, lambda = 1 (its CE + focal + Dice).
    Not included: AnomalyCLIP's DPAM (diagonally prominent attention) in the vision encoder.
    """
    return DAPOConfig(name="AnomalyCLIP", text_prompts="object_agnostic", n_prompts=1, n_ctx=12, normal_word="",
                      abnormal_word="damaged", tuning="naive", text_depth=9, vision_depth=0,
                      train_adapters=False, image_score_global_weight=1.0, lam=1.0)


METHODS: dict[str, Callable[[], DAPOConfig]] = {
    "dapo": dapo,
    "dapo_naive": dapo_naive,
    "dapo_attention": dapo_attention,
    "dapo_random_init": dapo_random_init,
    "dapo_offset_init": dapo_offset_init,
    "clip_ac": clip_ac,
    "multiads": multiads,
    "multiads_f": multiads_f,
    "anomalyclip": anomalyclip,
}


#: Training recipes that differ from :class:`TrainConfig`'s defaults (DAPO's).
TRAINING: dict[str, Callable[[], TrainConfig]] = {}


@dataclass(frozen=True)
class Preset:
    """A named method: its model configuration and its training recipe."""

    model: DAPOConfig
    training: TrainConfig


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {sorted(METHODS)}")


def config_for(method: str, **overrides) -> DAPOConfig:
    """The named model configuration, with DAPOConfig field overrides (e.g. ``seed=1``, ``text_depth=6``)."""
    _check_method(method)
    return METHODS[method]().with_overrides(**overrides)


def training_for(method: str, **overrides) -> TrainConfig:
    """The named method's training recipe, with TrainConfig field overrides (e.g. ``epochs=2``)."""
    _check_method(method)
    return TRAINING.get(method, TrainConfig)().with_overrides(**overrides)


def preset(method: str, *, seed: int = 0, **overrides) -> Preset:
    """Model and training configuration of ``method``; ``overrides`` may name fields of either
    (a name in both, such as ``seed``, is not allowed: ``seed`` seeds both)."""
    model, training = split_overrides(overrides)
    return Preset(config_for(method, seed=seed, **model), training_for(method, seed=seed, **training))


def make_model(method: str, backbone: Backbone, **overrides) -> DAPO:
    """Build a named method on a backbone.

    A method's own fixed text depth (AnomalyCLIP's 9) is capped at the encoder's depth;
    an explicit ``text_depth`` override is used as given.
    """
    config = config_for(method, **overrides)
    n_text_layers = len(backbone.text_blocks)
    if "text_depth" not in overrides and config.text_depth is not None and config.text_depth > n_text_layers:
        config = config.with_overrides(text_depth=n_text_layers)
    return DAPO(backbone, config)
