"""APRIL-GAN (Chen et al., "A zero-/few-shot anomaly classification and segmentation method for
CVPR 2023 VAND workshop challenge", 2023; release github ByChelsea/VAND-APRIL-GAN, read at
f13b8a6): a preset of the DAPO family.

Its maths is the DAPO family's with handcrafted prompts: one trained linear layer per tapped
vision layer maps raw patch tokens into the joint space, the maps are the softmax of
100 x cosine against a normal and an abnormal text embedding (WinCLIP's state words x 35
templates, each prompt normalised before the per-state mean), the loss is focal + Dice per stage
summed over the stages, and the image score is CLIP's zero-shot score of the class token.
"""

from __future__ import annotations

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.presets import register_dapo_family
from dapo.methods.recipe import TrainConfig

PAPER = ("Chen et al., APRIL-GAN: a zero-/few-shot anomaly classification and segmentation method for "
         "CVPR 2023 VAND workshop challenge tracks 1&2 (arXiv 2305.17382)")

#: Normal state words (``prompt_ensemble.py:9``; WinCLIP's list), ``{}`` = the product name.
NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")
#: Abnormal state words (``prompt_ensemble.py:10``: WinCLIP's four plus "broken {}").
ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
#: The 35 templates of ``prompt_ensemble.py:12``, in the release's order.
TEMPLATES = (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.", "a photo of my {}.",
    "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a photo of one {}.",
    "a close-up photo of the {}.", "a photo of a {}.", "a low resolution photo of a {}.",
    "a photo of a large {}.", "a blurry photo of a {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a photo of the small {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "a dark photo of a {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "there is a {} in the scene.", "there is the {} in the scene.",
    "this is a {} in the scene.", "this is the {} in the scene.", "this is one {} in the scene.",
)


def aprilgan() -> DAPOConfig:
    """APRIL-GAN's zero-shot setting as its release runs it (``train.sh``, ``test_zero_shot.sh``).

    * prompts: :data:`NORMAL_STATES` / :data:`ABNORMAL_STATES` x :data:`TEMPLATES` with the product
      name; each prompt embedding normalised, averaged per state, normalised again
      (``prompt_ensemble.py:17-28``); binary;
    * patch side: the raw residual stream of the tapped layers (no ``ln_post``,
      ``open_clip/transformer.py:336-337``) through one default-initialised ``nn.Linear(width,
      embed_dim)`` per tap (``model.py:9``), normalised; taps 6/12/18/24 of ViT-L/14
      (``train.sh --features_list``) kept as fractions of depth;
    * maps: ``100 x cos`` (temperature 0.01), the logits upsampled bilinearly with
      ``align_corners=True`` before the softmax (``train.py:123-128``, ``test.py:176-181``);
      the stage maps are summed in the release, averaged here (the same ranking); no smoothing;
    * loss: per stage focal (gamma 2, target smoothing 1e-5, ``loss.py:21-86``) + Dice of the
      abnormal channel (smoothing 1, ``loss.py:93-107``), summed over the stages
      (``train.py:134-137``); no image-level term;
    * image score: softmax of ``100 x cos`` of the class-token embedding (``ln_post`` then the
      projection) against the two state embeddings (``test.py:168-169``), zero-shot mode.
    """
    return DAPOConfig(name="APRIL-GAN", text_prompts="handcrafted_binary", normal_states=NORMAL_STATES,
                      abnormal_states=ABNORMAL_STATES, templates=TEMPLATES, state_mean="normalized",
                      text_depth=0, vision_depth=0, patch_ln_post=False, adapter_init="random",
                      train_adapters=True, temperature=0.01, softmax_before_upsample=False,
                      upsample_align_corners=True, global_score="pair", image_score_global_weight=1.0,
                      smoothing_sigma=0.0, lam=1.0, local_reduction="sum", dice_terms="abnormal",
                      global_loss_weight=0.0, focal_gamma=2.0, focal_smooth=1e-5)


def aprilgan_recipe() -> TrainConfig:
    """``train.sh`` (training on MVTec-AD, to test the other datasets): Adam lr 1e-3, betas
    (0.5, 0.999) (``train.py:92``), batch 8, 3 epochs, 2x2 mosaic at rate 0.2 (``dataset.py:98-144``,
    ``--aug_rate 0.2``); every test folder of MVTec-AD is trained on, ``combined`` included."""
    return TrainConfig(batch_size=8, epochs=3, mosaic_prob=0.2, multi_defect="as_class")


register_dapo_family("aprilgan", aprilgan, aprilgan_recipe, table3="AprilGAN", paper=PAPER)
