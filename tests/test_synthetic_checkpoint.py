"""The committed compact CLIP: size, OpenCLIP loading, backbone API, zero-shot knowledge."""

from __future__ import annotations

import json
from dataclasses import asdict

import open_clip
import pytest
import torch
from safetensors import safe_open

from dapo.synthetic.pretrain import (
    COMPACT_CONFIG,
    COMPACT_MODEL,
    COMPACT_WEIGHTS,
    PretrainConfig,
    last_block_class_token,
    locked_features,
    register_compact_config,
)
from dapo.synthetic.zeroshot import defect_type_accuracy, encode_images, heldout_set, product_accuracy

pytestmark = [pytest.mark.skipif(not COMPACT_WEIGHTS.is_file(), reason="compact CLIP weights not built yet")]


@pytest.fixture(scope="module")
def compact():
    register_compact_config()
    return open_clip.create_model(COMPACT_MODEL, pretrained=str(COMPACT_WEIGHTS)).eval()


def test_checkpoint_is_small_and_records_its_recipe():
    assert COMPACT_WEIGHTS.stat().st_size <= 25 * 2**20
    with safe_open(str(COMPACT_WEIGHTS), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["model"] == COMPACT_MODEL
    # the committed weights are what the script's defaults write: same recipe, field for field
    assert json.loads(metadata["config"]) == json.loads(json.dumps(asdict(PretrainConfig())))


def test_config_uses_openclip_tokenizer_vocabulary_and_a_128_px_grid_of_16():
    config = json.loads(COMPACT_CONFIG.read_text())
    assert config["text_cfg"]["vocab_size"] == 49408
    assert config["vision_cfg"]["image_size"] // config["vision_cfg"]["patch_size"] == 16


def test_loads_through_the_backbone_api_with_four_taps():
    from dapo.clip.backbone import load_backbone

    backbone = load_backbone(COMPACT_MODEL, "synthetic", image_size=128)
    assert backbone.tap_layers == (2, 4, 6, 8)
    assert backbone.grid_size() == (16, 16)
    assert abs(backbone.logit_scale - 1 / 0.07) > 1.0  # learned, not CLIP's 1/0.07 initialisation


def test_knows_products_and_defects_on_held_out_images(compact):
    items = heldout_set(seed=11, per_class=1)
    with torch.no_grad():
        defects = defect_type_accuracy(compact, items)["accuracy"]
        products = product_accuracy(compact, items)["accuracy"]
    # chance is 1/14 and 1/15; the full bars (70 %, 90 %) are measured by scripts/evaluate_compact_clip.py
    assert defects > 0.5 and products > 0.8


def test_locked_features_are_the_image_embedding_before_its_projection(compact):
    images = [item.image.image for item in heldout_set(seed=12, per_class=1)[:5]]
    features = locked_features(compact, images, batch_size=2)
    assert features.shape == (5, compact.visual.conv1.out_channels)
    expected = encode_images(compact, images, normalize=False)
    torch.testing.assert_close(features @ compact.visual.proj, expected, rtol=1e-4, atol=1e-5)
    tokens = locked_features(compact, images, batch_size=2, before_last_block=True)
    assert tokens.shape == (5, 1 + compact.visual.grid_size[0] ** 2, compact.visual.conv1.out_channels)
    with torch.no_grad():
        torch.testing.assert_close(last_block_class_token(compact.visual, tokens), features, rtol=1e-4, atol=1e-5)
