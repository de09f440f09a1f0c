"""Backbone: taps, frozen encoders, agreement with OpenCLIP, weights resolution and offline failure."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

import dapo.clip.backbone as backbone_module
from dapo.clip.backbone import (
    checkpoint_available,
    interpolate_positional_embedding,
    load_backbone,
    proportional_taps,
    resolve_weights,
)
from dapo.methods.dapo.progressive import run_blocks


@pytest.mark.parametrize("layers, taps", [(24, (6, 12, 18, 24)), (12, (3, 6, 9, 12)), (6, (2, 3, 5, 6)),
                                          (4, (1, 2, 3, 4)), (2, (1, 2))])
def test_proportional_taps(layers, taps):
    assert proportional_taps(layers) == taps


def test_proportional_taps_rejects_empty_encoder():
    with pytest.raises(ValueError):
        proportional_taps(0)


def test_backbone_is_frozen_and_stays_in_eval(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    tiny_backbone.train()
    assert not tiny_backbone.training and not tiny_backbone.clip.visual.training
    assert tiny_backbone.tap_layers == (1, 2, 3, 4)
    assert tiny_backbone.describe()["embed_dim"] == 32


def test_image_path_matches_openclip(tiny_backbone, images):
    x = tiny_backbone.embed_image(images)
    x, _ = run_blocks(tiny_backbone.vision_blocks, x)
    with torch.no_grad():
        expected = tiny_backbone.clip.encode_image(images)
    torch.testing.assert_close(tiny_backbone.pool_image(x), expected)


def test_truncated_text_path_matches_openclip(tiny_backbone):
    ids = tiny_backbone.tokenize(["a photo of a scratched widget", "hole", "normal object"])
    length = tiny_backbone.text_length(ids)
    assert length == int(ids.argmax(-1).max()) + 1 < ids.shape[1]
    short = ids[:, :length]
    x, _ = run_blocks(tiny_backbone.text_blocks, tiny_backbone.embed_text(short),
                      attn_mask=tiny_backbone.text_attn_mask[:length, :length])
    with torch.no_grad():
        expected = tiny_backbone.clip.encode_text(ids)
    torch.testing.assert_close(tiny_backbone.pool_text(x, short), expected)


def test_positional_interpolation_keeps_class_row_and_constant_grid():
    pos = torch.cat([torch.full((1, 8), 7.0), torch.full((16, 8), 2.0)])
    out = interpolate_positional_embedding(pos, (4, 4), (6, 6))
    assert out.shape == (37, 8)
    torch.testing.assert_close(out[0], pos[0])
    torch.testing.assert_close(out[1:], torch.full((36, 8), 2.0))
    assert interpolate_positional_embedding(pos, (4, 4), (4, 4)) is pos


def test_other_input_size_interpolates_on_the_fly(tiny_backbone):
    x = tiny_backbone.embed_image(torch.randn(1, 3, 48, 40))
    assert x.shape == (1, 1 + 6 * 5, 32)
    assert tiny_backbone.grid_size((48, 40)) == (6, 5)


def test_load_at_larger_size_resizes_positional_table(tiny_model_name):
    backbone = load_backbone(tiny_model_name, None, image_size=48)
    assert backbone.visual.positional_embedding.shape[0] == 1 + 6 * 6


def test_local_checkpoint_file_loads_its_weights(tiny_backbone, tiny_model_name, tiny_image_size, tmp_path):
    state = {k: v.contiguous() for k, v in tiny_backbone.clip.state_dict().items()}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    for kwargs in ({"pretrained": None, "checkpoint": path}, {"pretrained": str(path)}):
        loaded = load_backbone(tiny_model_name, image_size=tiny_image_size, **kwargs)
        for key, value in loaded.clip.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_synthetic_assets_are_registered_and_loaded_from_fp16(tiny_backbone, tiny_config, tiny_image_size,
                                                             tmp_path, monkeypatch):
    name = "dapo-test-asset"
    (tmp_path / f"{name}.json").write_text(json.dumps(tiny_config))
    (tmp_path / "notes.json").write_text(json.dumps({"not": "a model"}))
    monkeypatch.setattr(backbone_module, "ASSETS_DIR", tmp_path)
    assert backbone_module.register_asset_configs() == [name]
    with pytest.raises(FileNotFoundError, match="pretrain_compact_clip"):
        load_backbone(name, "synthetic", image_size=tiny_image_size)
    half = {k: v.half().contiguous() for k, v in tiny_backbone.clip.state_dict().items()}
    save_file(half, str(tmp_path / f"{name}.safetensors"))
    loaded = load_backbone(name, "synthetic", image_size=tiny_image_size)
    assert loaded.visual.conv1.weight.dtype == torch.float32
    assert torch.equal(loaded.visual.conv1.weight, half["visual.conv1.weight"].float())


def test_missing_file_and_unknown_tag_fail_clearly(tiny_model_name, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_weights(tiny_model_name, None, tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="neither a file nor a known tag"):
        resolve_weights("ViT-B-32", "no-such-tag")


def test_offline_tag_fails_at_once_with_instructions(monkeypatch):
    monkeypatch.setattr(backbone_module, "_cached_tag_file", lambda tag_cfg: None)
    for variable in ("HTTPS_PROXY", "https_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # closed port: refused immediately
    with pytest.raises(RuntimeError, match="checkpoint='/path/to"):
        resolve_weights("ViT-L-14-336", "openai")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, how = checkpoint_available("ViT-L-14-336", "openai")
    assert not ok and "offline" in how


def test_non_vit_image_tower_is_rejected(tiny_model_name, tiny_image_size):
    clip = open_clip.create_model(tiny_model_name, pretrained=None)
    clip.visual = torch.nn.Conv2d(3, 32, 8)
    with pytest.raises(ValueError, match="VisionTransformer"):
        backbone_module.Backbone(clip, model_name=tiny_model_name, pretrained=None, image_size=tiny_image_size)


def test_half_precision_weights_load_at_another_image_size(tiny_backbone, tiny_model_name, tmp_path):
    """fp16 weights files (the compact synthetic CLIP, OpenAI's) resize on the CPU: the positional
    table equals OpenCLIP's bicubic resize of the fp32 table."""
    from open_clip.model import resize_pos_embed
    from safetensors.torch import save_file

    state = {k: v.half().contiguous() for k, v in tiny_backbone.clip.state_dict().items()}
    save_file(state, str(tmp_path / "half.safetensors"))
    resized = load_backbone(tiny_model_name, str(tmp_path / "half.safetensors"), image_size=48)
    assert resized.grid_size() == (6, 6) and resized.visual.positional_embedding.dtype == torch.float32
    reference = {k: v.float() for k, v in state.items()}
    resize_pos_embed(reference, resized.clip)
    torch.testing.assert_close(resized.visual.positional_embedding, reference["visual.positional_embedding"])
    torch.testing.assert_close(resized.visual.conv1.weight, state["visual.conv1.weight"].float())
