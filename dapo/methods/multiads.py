"""MultiADS (boschresearch/MultiADS) and its variants, presets of the DAPO family: handcrafted
defect-aware prompts, four trained linear adapters, no learned text."""

from __future__ import annotations

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.presets import register_dapo_family
from dapo.methods.recipe import TrainConfig

PAPER = "MultiADS: defect-aware supervision for multi-type anomaly detection and segmentation (Bosch Research)"


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
    phrases (:mod:`dapo.experiments.prompt_overlap`), whose wording the compact CLIP's captions never use."""
    from dapo.methods.paraphrases import paraphrase_overrides

    return multiads().with_overrides(name="MultiADS (held-out paraphrases)", **paraphrase_overrides())


def multiads_recipe() -> TrainConfig:
    """MultiADS ``train.py``: batch 4, 10 epochs, mosaic rate 0.2, ``combined`` trained as a class."""
    return TrainConfig(batch_size=4, epochs=10, mosaic_prob=0.2, multi_defect="as_class")


register_dapo_family("multiads", multiads, multiads_recipe, paper=PAPER, table3="MultiADS")
register_dapo_family("multiads_f", multiads_f, multiads_recipe, paper=PAPER)
register_dapo_family("multiads_paraphrased", multiads_paraphrased, multiads_recipe, paper=PAPER)
