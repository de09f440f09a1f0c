"""AnomalyCLIP (github zqhang/AnomalyCLIP): object-agnostic learned prompts with DPAM, a preset
of the DAPO family."""

from __future__ import annotations

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.dpam import OFFICIAL_DPAM_LAYERS
from dapo.methods.dapo.presets import register_dapo_family
from dapo.methods.recipe import TrainConfig


def anomalyclip() -> DAPOConfig:
    """AnomalyCLIP as its released code runs (github zqhang/AnomalyCLIP, ``train.sh`` 9_12_4).

    Object-agnostic learned binary prompts ``[V1..V12] object.`` / ``[W1..W12] damaged object.``
    (one prompt per state, N(0, 0.02^2) initialisation, ``prompt_ensemble.py``); 4 deep text
    tokens overwriting the first four context tokens at text layers 2-9 (naive, depth 9 capped
    at the encoder's depth); no vision tokens; DPAM (:mod:`dapo.methods.dapo.dpam`) on the last 19 of 24
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


def anomalyclip_recipe() -> TrainConfig:
    """AnomalyCLIP ``train.sh``: 15 epochs, batch 8."""
    return TrainConfig(epochs=15, multi_defect="as_class")


register_dapo_family("anomalyclip", anomalyclip, anomalyclip_recipe, table3="AnomalyCLIP",
                     paper="Zhou et al., AnomalyCLIP: object-agnostic prompt learning for zero-shot anomaly detection, ICLR 2024")
