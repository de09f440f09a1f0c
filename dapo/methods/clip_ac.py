"""CLIP-AC: zero-shot CLIP with handcrafted normal/damaged prompts (a preset of the DAPO family;
training-free). Reported as a baseline in DAPO's Table 3, after AnomalyCLIP's and MultiADS's papers."""

from __future__ import annotations

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.presets import register_dapo_family


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


register_dapo_family("clip_ac", clip_ac, training_free=True, table3="CLIP-AC",
                     paper="Radford et al. 2021 (CLIP), as the zero-shot anomaly baseline of AnomalyCLIP/MultiADS")
