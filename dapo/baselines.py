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
from dapo.dpam import OFFICIAL_DPAM_LAYERS, OFFICIAL_VISION_LAYERS, scaled_dpam_layers
from dapo.model import DAPO


def dapo() -> DAPOConfig:
    """DAPO: the paper where it states a thing, the released code where the paper is silent
    (progressive tuning at full depth, CLIP-space text init, raw patch tokens, global image score)."""
    return DAPOConfig()


def dapo_official() -> DAPOConfig:
    """DAPO as the released code runs it, quirks included (``docs/FIDELITY.md``): "flawless" as the
    normal word, a constant carry-over alpha = 0.01, the official text layout (deep tokens without
    positional embedding, no causal mask, pooling 4 tokens before EOT), the local loss summed over
    the stages, and binary detection over the dataset-wide defect list."""
    return DAPOConfig(name="DAPO (official code)", normal_word="flawless", alpha_decay=1.0, text_layout="official",
                      local_reduction="sum", inference_vocabulary="dataset")


def dapo_naive() -> DAPOConfig:
    """Ablation (appendix 11.1): naive deep prefix tuning, no progressive carry-over."""
    return DAPOConfig(name="DAPO (naive prefix)", tuning="naive")


def dapo_attention() -> DAPOConfig:
    """Ablation (appendix 11): attention-weighted abnormal prototype instead of the mean."""
    return DAPOConfig(name="DAPO (attention)", aggregation="attention")


def dapo_random_init() -> DAPOConfig:
    """Ablation (appendix 10.2): every learned token drawn from N(0, 1)."""
    return DAPOConfig(name="DAPO (random init)", init="random")


def dapo_offset_init() -> DAPOConfig:
    """Ablation (appendix 10.2): abnormal context shifted by 5 sigma from the CLIP-space mean."""
    return DAPOConfig(name="DAPO (offset init)", init="offset")


def clip_ac() -> DAPOConfig:
    """CLIP-AC: no training; ensembles of "a photo of a normal/damaged [cls]" over templates.

    Binary; patch maps from CLIP's own projection of ``ln_post``-normalised patch tokens;
    prompt embeddings normalised before the mean (CLIP's prompt ensembling); image score =
    global score only; CLIP's own logit scale. Templates come from the knowledge base
    (``multiads_templates``).
    """
    return DAPOConfig(name="CLIP-AC", text_prompts="handcrafted_binary", normal_states=("normal {}",),
                      abnormal_states=("damaged {}",), state_mean="normalized", text_depth=0, vision_depth=0,
                      patch_ln_post=True, adapter_init="projection", train_adapters=False, temperature=None,
                      image_score_global_weight=1.0, smoothing_sigma=0.0)


def multiads() -> DAPOConfig:
    """MultiADS as its released code runs (boschresearch/MultiADS; AGPL, read for facts only).

    Handcrafted defect-aware prompts (knowledge-base states x 35 templates, product names),
    each prompt normalised before the state mean (``prompt_ensemble``); raw patch tokens
    (no ``ln_post``) through four default-initialised linear adapters; maps at temperature 0.01
    (``train.py:187``) with the logits upsampled before the softmax (``train.py:192-194``).
    Loss per stage (focal + Dice(1 - S[0], M)) / 2, averaged over the stages, no global term
    (``train.py:200-205``; the paper's Eq. 2 sums the stages). Image score = mean of the top 3
    of the anomaly map (``test.py:122``; its per-product min-max scaling leaves every
    per-product image metric unchanged). Binary detection scores the dataset-wide defect list
    (no filtering). Differs from the MultiADS paper, which averages the map maximum and the
    global score: see ``multiads_f`` and ``docs/FIDELITY.md``.
    """
    return DAPOConfig(name="MultiADS", text_prompts="handcrafted_defects", state_mean="normalized", text_depth=0,
                      vision_depth=0, patch_ln_post=False, adapter_init="random", temperature=0.01,
                      softmax_before_upsample=False, global_score="states", image_score_global_weight=0.0,
                      map_score="top3_mean", smoothing_sigma=0.0, inference_vocabulary="dataset", lam=0.5,
                      global_loss_weight=0.0, dice_terms="abnormal", local_reduction="mean")


def multiads_f() -> DAPOConfig:
    """MultiADS-F: MultiADS scoring only each product's own defect types (``test_prior_knowledge.py``),
    image score = 1/2 (global + map maximum) (its per-product min-max of the map term is not
    reproduced: it needs every test score of a product first)."""
    return multiads().with_overrides(name="MultiADS-F", inference_vocabulary="product",
                                     image_score_global_weight=0.5, map_score="max")


def multiads_paraphrased() -> DAPOConfig:
    """Diagnosis variant (notebook 12): MultiADS with held-out paraphrased templates and state
    phrases (:mod:`dapo.prompt_overlap`), whose wording the compact CLIP's captions never use."""
    from dapo.prompt_overlap import paraphrase_overrides

    return multiads().with_overrides(name="MultiADS (held-out paraphrases)", **paraphrase_overrides())


def anomalyclip() -> DAPOConfig:
    """AnomalyCLIP as its released code runs (github zqhang/AnomalyCLIP, ``train.sh`` 9_12_4).

    Object-agnostic learned binary prompts ``[V1..V12] object.`` / ``[W1..W12] damaged object.``
    (one prompt per state, N(0, 0.02^2) initialisation, ``prompt_ensemble.py``); 4 deep text
    tokens overwriting the first four context tokens at text layers 2-9 (naive, depth 9 capped
    at the encoder's depth); no vision tokens; DPAM (:mod:`dapo.dpam`) on the last 19 of 24
    vision layers (scaled to other depths by :func:`make_model`) with the patch maps read from
    its v-v path through the frozen ``ln_post`` + projection; image score = global score only;
    maps smoothed with sigma 4 (``test.py``); loss CE + 4 x the stage *sum* of focal + both
    Dice terms (``train.py:82-104``); 15 epochs (its recipe).

    Remaining differences from the released code:

    * the global image embedding goes through ``ln_post`` before the projection (the released
      ``VisionTransformer.forward`` projects the class token without it, ``AnomalyCLIP.py:387``);
    * positional embeddings are resized bicubically (the released code: bilinear, ``:366-370``);
    * patch maps at the four proportional taps (6, 12, 18, 24): ``train.py``/``test.py``
      default to these, but the released ``train.sh``/``test.sh`` pass ``--features_list 24``;
    * the training set is the profile's (the DAPO protocol; ``train.sh`` trains on VisA to test
      MVTec-AD and on MVTec-AD for the rest), images at the profile's size;
    * the stage maps are averaged, not summed (the same metrics); the unused
      ``compound_prompt_projections`` layer is not built; the seed is the run's (``train.py``: 111).
    """
    return DAPOConfig(name="AnomalyCLIP", text_prompts="object_agnostic", n_prompts=1, n_ctx=12, normal_word="",
                      abnormal_word="damaged", prompt_suffix=".", init="small", tuning="naive", text_depth=9,
                      text_deep_layout="context", vision_depth=0, patch_ln_post=True, adapter_init="projection",
                      train_adapters=False, dpam_layers=OFFICIAL_DPAM_LAYERS, upsample_align_corners=False,
                      image_score_global_weight=1.0, smoothing_sigma=4.0, lam=4.0, local_reduction="sum")


METHODS: dict[str, Callable[[], DAPOConfig]] = {
    "dapo": dapo,
    "dapo_official": dapo_official,
    "dapo_naive": dapo_naive,
    "dapo_attention": dapo_attention,
    "dapo_random_init": dapo_random_init,
    "dapo_offset_init": dapo_offset_init,
    "clip_ac": clip_ac,
    "multiads": multiads,
    "multiads_f": multiads_f,
    "multiads_paraphrased": multiads_paraphrased,
    "anomalyclip": anomalyclip,
}

#: DAPO's recipe: the paper's Adam, lr 1e-3, batch 8, 5 epochs; where it is silent, the released
#: train.py: betas (0.5, 0.999), MVTec-AD ``combined`` trained as its own class, its training words.
DAPO_TRAINING = dict(multi_defect="as_class", train_words="dapo_official")

#: Training recipes (the defaults of :class:`TrainConfig` are the paper's and the official code's).
TRAINING: dict[str, Callable[[], TrainConfig]] = {
    **{name: (lambda: TrainConfig(**DAPO_TRAINING))
       for name in ("dapo", "dapo_naive", "dapo_attention", "dapo_random_init", "dapo_offset_init")},
    # the official README evaluates the checkpoint after the second epoch; the code trains in fp32
    "dapo_official": lambda: TrainConfig(**DAPO_TRAINING, epochs=2, precision="fp32"),
    # MultiADS train.py: batch 4, 10 epochs, mosaic rate 0.2, combined trained as a class
    "multiads": lambda: TrainConfig(batch_size=4, epochs=10, mosaic_prob=0.2, multi_defect="as_class"),
    "multiads_f": lambda: TrainConfig(batch_size=4, epochs=10, mosaic_prob=0.2, multi_defect="as_class"),
    "multiads_paraphrased": lambda: TrainConfig(batch_size=4, epochs=10, mosaic_prob=0.2, multi_defect="as_class"),
    # AnomalyCLIP train.sh: 15 epochs, batch 8
    "anomalyclip": lambda: TrainConfig(epochs=15, multi_defect="as_class"),
}


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

    A method's own fixed text depth (AnomalyCLIP's 9) is capped at the encoder's depth, and
    its DPAM layers (19 of ViT-L/14's 24) keep their proportion of the vision tower
    (:func:`dapo.dpam.scaled_dpam_layers`); explicit ``text_depth`` / ``dpam_layers``
    overrides are used as given.
    """
    config = config_for(method, **overrides)
    n_text_layers = len(backbone.text_blocks)
    if "text_depth" not in overrides and config.text_depth is not None and config.text_depth > n_text_layers:
        config = config.with_overrides(text_depth=n_text_layers)
    n_vision_layers = len(backbone.vision_blocks)
    if "dpam_layers" not in overrides and config.dpam_layers and n_vision_layers != OFFICIAL_VISION_LAYERS:
        config = config.with_overrides(dpam_layers=scaled_dpam_layers(n_vision_layers, config.dpam_layers))
    return DAPO(backbone, config)
