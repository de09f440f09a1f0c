"""DAPO and its ablation presets (the paper's method, the released code's behaviour, appendix 10-11).

Each preset is a :class:`~dapo.methods.dapo.config.DAPOConfig` with DAPO's training recipe;
:func:`fit_to_backbone` adapts the DAPO family's fixed ViT-L/14 depths to smaller towers.
"""

from __future__ import annotations

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.dpam import OFFICIAL_VISION_LAYERS, scaled_dpam_layers
from dapo.methods.dapo.model import DAPO
from dapo.methods.recipe import TrainConfig
from dapo.methods.registry import Method, register

#: DAPO's recipe: the paper's Adam, lr 1e-3, batch 8, 5 epochs; where it is silent, the released
#: train.py: betas (0.5, 0.999), MVTec-AD ``combined`` trained as its own class, its training words.
DAPO_TRAINING = dict(multi_defect="as_class", train_words="dapo_official")

PAPER = "DAPO (Bosch Research): defect-aware hybrid prompt optimisation with progressive tuning"


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


def fit_to_backbone(config: DAPOConfig, backbone, overrides: dict) -> DAPOConfig:
    """A DAPO-family config on ``backbone``: a method's own fixed text depth (AnomalyCLIP's 9) is
    capped at the encoder's depth, and its DPAM layers (19 of ViT-L/14's 24) keep their proportion
    of the vision tower (:func:`dapo.methods.dapo.dpam.scaled_dpam_layers`); explicit
    ``text_depth`` / ``dpam_layers`` overrides are used as given."""
    n_text_layers = len(backbone.text_blocks)
    if "text_depth" not in overrides and config.text_depth is not None and config.text_depth > n_text_layers:
        config = config.with_overrides(text_depth=n_text_layers)
    n_vision_layers = len(backbone.vision_blocks)
    if "dpam_layers" not in overrides and config.dpam_layers and n_vision_layers != OFFICIAL_VISION_LAYERS:
        config = config.with_overrides(dpam_layers=scaled_dpam_layers(n_vision_layers, config.dpam_layers))
    return config


def dapo_recipe() -> TrainConfig:
    return TrainConfig(**DAPO_TRAINING)


def official_recipe() -> TrainConfig:
    """The official README evaluates the checkpoint after the second epoch; the code trains in fp32."""
    return TrainConfig(**DAPO_TRAINING, epochs=2, precision="fp32")


def register_dapo_family(name: str, config, training=dapo_recipe, **info) -> Method:
    """Register a preset of the DAPO model family."""
    return register(Method(name, DAPO, config, training, fit=fit_to_backbone, **info))


register_dapo_family("dapo", dapo, paper=PAPER, table3="DAPO")
register_dapo_family("dapo_official", dapo_official, official_recipe, paper=PAPER)
for _preset in (dapo_naive, dapo_attention, dapo_random_init, dapo_offset_init):
    register_dapo_family(_preset.__name__, _preset, paper=PAPER)
