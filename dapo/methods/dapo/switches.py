"""DAPO's fidelity switches as data: the released code's values where they differ from this
project's defaults, and the project's earlier defaults (measured one by one in notebook 11,
:mod:`dapo.experiments.fidelity`; listed in ``docs/FIDELITY.md``)."""

from __future__ import annotations

from typing import Any

#: The released code's values where they differ from ``dapo`` (the ``dapo_official`` preset has
#: them all; its 2-epoch recipe is diagnosis (d) of notebook 12).
OFFICIAL_SWITCHES: tuple[dict[str, Any], ...] = (
    {"normal_word": "flawless"},          # learnable_prompt.py:20
    {"alpha_decay": 1.0},                 # constant alpha 0.01, open_clip/transformer.py:389,418
    {"text_layout": "official"},          # open_clip/transformer.py:379-399, open_clip/model.py:310-318
    {"local_reduction": "sum"},           # train.py:261-274
    {"inference_vocabulary": "dataset"},  # test.py:44-88 (binary detection only)
)

#: This project's earlier defaults, replaced by the paper's or the official code's values.
EARLIER_CHOICES: tuple[dict[str, Any], ...] = (
    {"patch_ln_post": True},
    {"adapter_init": "projection"},
    {"vision_token_init": "ln_pre"},
    {"alpha0": 0.1},
    {"betas": [0.9, 0.999]},
    {"state_mean": "normalized"},
    {"focal_smooth": 0.0},
    {"upsample_align_corners": False},
    {"image_score_global_weight": 0.5},
    {"smoothing_sigma": 4.0},
)

DEFAULT_SWITCHES: tuple[dict[str, Any], ...] = OFFICIAL_SWITCHES + EARLIER_CHOICES
