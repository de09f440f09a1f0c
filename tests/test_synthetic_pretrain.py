"""Captions, the multi-positive contrastive loss and the compact CLIP pretraining loop."""

from __future__ import annotations

import csv

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from dapo.synthetic.captions import (
    DEFECT_NOUNS,
    GENERIC_OBJECT,
    CaptionKey,
    CaptionPolicy,
    class_prompts,
    product_prompts,
    sample_caption,
)
from dapo.synthetic.corpus import (
    DEFECT_ORDER,
    IGNORE,
    LOCAL_STREAM,
    CorpusSpec,
    View,
    collate_views,
    full_view,
    local_views,
    patch_labels,
    positive_matrix,
    sample_image,
    to_tensor,
)
from dapo.synthetic.defects import DEFECTS
from dapo.synthetic.generator import SyntheticImage, applicable_defects
from dapo.synthetic.pretrain import (
    COMPACT_MODEL,
    PretrainConfig,
    balanced_patch_loss,
    encode_views,
    global_targets,
    learning_rate,
    multi_positive_clip_loss,
    pretrain,
    register_compact_config,
    state_class_weights,
    state_loss,
    state_texts,
    step_views,
    text_stage_parameters,
)
from dapo.synthetic.products import PRODUCTS

EOT = 49407


def test_every_defect_type_has_caption_words_led_by_its_superclass_word():
    assert set(DEFECT_NOUNS) == set(DEFECTS)
    assert all(nouns[0] == name for name, nouns in DEFECT_NOUNS.items())


@pytest.mark.parametrize("key, product, defects, expected", [
    (CaptionKey("gear", "exact"), "gear", (), True),
    (CaptionKey("gear", "exact"), "gear", ("rust",), False),
    (CaptionKey("gear", "exact", frozenset({"rust", "hole"})), "gear", ("hole", "rust"), True),
    (CaptionKey("gear", "exact", frozenset({"rust"})), "gear", ("hole", "rust"), False),
    (CaptionKey("gear", "anomalous"), "gear", ("hole",), True),
    (CaptionKey("gear", "anomalous"), "gear", (), False),
    (CaptionKey("gear", "any"), "gear", ("hole",), True),
    (CaptionKey("gear", "any"), "nut", (), False),
    (CaptionKey(None, "exact", frozenset({"hole"})), "nut", ("hole",), True),
])
def test_caption_key_describes(key, product, defects, expected):
    assert key.describes(product, defects) is expected


def test_sampled_captions_are_true_of_their_image_and_name_it():
    rng = np.random.default_rng(0)
    policy = CaptionPolicy()
    for _ in range(300):
        product = list(PRODUCTS)[int(rng.integers(len(PRODUCTS)))]
        defects = tuple(rng.choice(sorted(DEFECTS), size=int(rng.integers(0, 3)), replace=False))
        text, key = sample_caption(rng, product, defects, policy)
        assert key.describes(product, defects)
        assert (product in text) if key.product else (GENERIC_OBJECT in text)
        if key.kind == "exact":
            for defect in defects:
                assert any(noun in text for noun in DEFECT_NOUNS[defect])


def test_all_prompts_and_captions_fit_the_compact_context():
    register_compact_config()
    tokenizer = open_clip.get_tokenizer(COMPACT_MODEL)
    rng = np.random.default_rng(1)
    texts = [p for product in PRODUCTS for d in (None, *DEFECTS) for p in class_prompts(product, d)]
    texts += [p for product in PRODUCTS for p in product_prompts(product)]
    texts += [sample_caption(rng, "circuit", ("flattening", "contamination"))[0] for _ in range(200)]
    texts += ["X " * 9 + "flattening anomaly object", "a jpeg corrupted photo of the flawed tablets with absent pieces."]
    ids = tokenizer(texts)
    assert ids.shape[1] == 32
    assert bool((ids == EOT).any(dim=1).all()), "a prompt was truncated"


def test_multi_positive_loss_is_clip_loss_with_one_positive_per_row():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(5, 8, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(5, 8, generator=generator, dtype=torch.float64), dim=-1)
    scale = torch.tensor(10.0, dtype=torch.float64)
    logits = scale * images @ texts.t()
    reference = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5))) / 2
    ours = multi_positive_clip_loss(images, texts, scale, torch.eye(5, dtype=torch.bool))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)


def test_multi_positive_loss_spreads_targets_over_duplicates():
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    positives = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    logits = images @ texts.t()
    log_p = torch.log_softmax(logits, 1)
    log_q = torch.log_softmax(logits.t(), 1)
    by_hand = (-(0.5 * (log_p[0, 0] + log_p[0, 1]) + 0.5 * (log_p[1, 0] + log_p[1, 1]) + log_p[2, 2]) / 3
               - (0.5 * (log_q[0, 0] + log_q[0, 1]) + 0.5 * (log_q[1, 0] + log_q[1, 1]) + log_q[2, 2]) / 3) / 2
    ours = multi_positive_clip_loss(images, texts, torch.tensor(1.0, dtype=torch.float64), positives)
    assert ours.item() == pytest.approx(by_hand.item(), rel=1e-12)


def test_multi_positive_loss_needs_a_positive_everywhere():
    with pytest.raises(ValueError, match="positive"):
        multi_positive_clip_loss(torch.eye(2), torch.eye(2), torch.tensor(1.0), torch.tensor([[1, 0], [0, 0]]).bool())


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = PretrainConfig(warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(0, 100, 1e-3, config) == pytest.approx(1e-4)
    assert learning_rate(9, 100, 1e-3, config) == pytest.approx(1e-3)
    assert learning_rate(10, 100, 1e-3, config) == pytest.approx(1e-3)
    assert learning_rate(55, 100, 1e-3, config) == pytest.approx(0.55e-3)
    assert learning_rate(100, 100, 1e-3, config) == pytest.approx(1e-4)
    assert learning_rate(55, 100, 2e-3, config) == pytest.approx(1.1e-3)


def test_state_class_weights_count_normal_as_one_average_defect_type():
    spec = CorpusSpec(p_normal=0.1, p_two=0.15)
    weights = state_class_weights(spec)
    assert weights.shape == (1 + len(DEFECT_ORDER),) and bool((weights[1:] == 1).all())
    # 75 % single-defect images over 13 types = 5.77 % per type, against 10 % normal images
    assert weights[0].item() == pytest.approx(0.75 / 13 / 0.1)


def test_views_depend_only_on_their_index():
    spec = CorpusSpec()
    a, b, c = full_view(spec, 0, 2), full_view(spec, 0, 2), full_view(spec, 0, 3)
    assert torch.equal(a.image, b.image) and a.caption == b.caption
    assert not torch.equal(a.image, c.image)
    assert a.image.shape == (3, 128, 128) and a.patch_labels.shape == (16, 16) and a.offset == (0, 0)


def test_local_views_are_patch_aligned_crops_captioned_with_what_they_show():
    spec = CorpusSpec()
    defective, centred = 0, 0
    expected_sizes = [size for size, count in spec.local_views for _ in range(count)]
    for index in range(12):
        image, _ = sample_image(spec, 0, LOCAL_STREAM, index)
        full_labels = patch_labels(image, spec.patch_size, spec.label_threshold)
        views = local_views(spec, 0, index)
        assert [v.image.shape[-1] for v in views] == expected_sizes
        for view, size in zip(views, expected_sizes):
            crop, (row, col) = size // 8, view.offset
            assert view.image.shape == (3, size, size) and 0 <= row <= 16 - crop and 0 <= col <= 16 - crop
            pixels = image.image[row * 8:row * 8 + size, col * 8:col * 8 + size]
            assert torch.equal(view.image, to_tensor(pixels))
            assert set(view.defects) <= set(image.defects) and view.key.describes(image.product, view.defects)
            if size < spec.named_product_min_size:
                assert view.key.product is None, "a small crop names no product"
            shown = [1 + DEFECT_ORDER.index(d) for d in view.defects] + [0]
            labels = full_labels[row:row + crop, col:col + crop]
            kept = np.isin(labels, shown)
            assert np.array_equal(view.patch_labels.numpy()[kept], labels[kept])
            assert (view.patch_labels.numpy()[~kept] == IGNORE).all()
        defective += bool(image.defects)
        centred += bool(image.defects) and bool(views[0].defects)
    assert defective >= 6 and centred >= defective - 1, "the first local view is centred on a defect"


def test_a_step_shows_full_views_and_the_local_views_of_other_images():
    config = PretrainConfig(full_per_step=3, local_images_per_step=2)
    views = step_views(config, 5)
    per_image = sum(count for _, count in config.corpus.local_views)
    assert [v.image.shape[-1] for v in views[:3]] == [128] * 3 and len(views) == 3 + 2 * per_image
    assert all(torch.equal(a.image, b.image) for a, b in zip(views, step_views(config, 5)))
    assert not torch.equal(views[0].image, step_views(config, 6)[0].image)


def test_state_texts_offer_every_state_of_the_product_and_point_at_the_truth():
    products = ["gear", "nut", "gear", "gear"]
    defects = [("rust",), (), ("rust", "hole"), ("hole",)]
    texts, scored, candidates, targets = state_texts(np.random.default_rng(0), products, defects, CaptionPolicy())
    assert scored == [0, 1, 3]
    assert [len(c) for c in candidates] == [1 + len(applicable_defects("gear")), 1 + len(applicable_defects("nut")),
                                            1 + len(applicable_defects("gear"))]
    assert candidates[0] == candidates[2], "one set of state captions per product"
    truth = [texts[c[t]] for c, t in zip(candidates, targets)]
    assert "gear" in truth[0] and any(n in truth[0] for n in DEFECT_NOUNS["rust"])
    assert "nut" in truth[1] and not any(n in truth[1] for d in DEFECTS for n in DEFECT_NOUNS[d])
    assert any(n in truth[2] for n in DEFECT_NOUNS["hole"])
    assert texts == state_texts(np.random.default_rng(0), products, defects, CaptionPolicy())[0]


def test_state_loss_is_cross_entropy_over_each_rows_candidates():
    generator = torch.Generator().manual_seed(3)
    images = F.normalize(torch.randn(2, 4, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(5, 4, generator=generator, dtype=torch.float64), dim=-1)
    scale = torch.tensor(7.0, dtype=torch.float64)
    candidates, targets = [[0, 1, 2], [3, 4]], [2, 0]
    by_hand = (-torch.log_softmax(scale * texts[[0, 1, 2]] @ images[0], 0)[2]
               - torch.log_softmax(scale * texts[[3, 4]] @ images[1], 0)[0]) / 2
    assert state_loss(images, texts, scale, candidates, targets).item() == pytest.approx(by_hand.item(), rel=1e-12)


def test_encode_views_is_openclips_forward_on_the_visible_patches():
    register_compact_config()
    torch.manual_seed(0)
    model = open_clip.create_model(COMPACT_MODEL).eval()
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        full = encode_views(model.visual, images, torch.zeros(2, 2, dtype=torch.long))
        assert torch.allclose(full, model.encode_image(images), atol=1e-6)
        small = open_clip.create_model(COMPACT_MODEL, force_image_size=64).eval()
        state = model.state_dict()
        grid = state["visual.positional_embedding"][1:].reshape(16, 16, -1)[3:11, 5:13].reshape(64, -1)
        state["visual.positional_embedding"] = torch.cat([state["visual.positional_embedding"][:1], grid])
        small.load_state_dict(state)
        crops = images[:, :, 24:88, 40:104]
        reference = small.encode_image(crops)
        ours = encode_views(model.visual, crops, torch.tensor([[3, 5], [3, 5]]))
    assert torch.allclose(ours, reference, atol=1e-5)


def test_positive_matrix_marks_every_true_caption():
    keys = [CaptionKey("gear", "exact"), CaptionKey("gear", "anomalous"), CaptionKey(None, "exact", frozenset({"rust"}))]
    positives = positive_matrix(keys, ["gear", "gear", "nut"], [(), ("rust",), ("rust",)])
    assert positives.tolist() == [[True, False, False], [False, True, True], [False, False, True]]
    image, labels = torch.zeros(3, 8, 8), torch.zeros(1, 1, dtype=torch.int64)
    views = [View(image, "", key, "gear", (), labels) for key in keys]
    batch = collate_views(views)
    assert batch["images"].shape == (3, 3, 8, 8) and batch["patch_labels"].shape == (3, 1, 1)
    assert batch["offsets"].tolist() == [[0, 0]] * 3


def test_patch_labels_take_the_covering_defect_and_ignore_thin_touches():
    masks = {name: np.zeros((32, 32), bool) for name in ("hole", "rust")}
    masks["hole"][0:8, 0:8] = True  # patch (0, 0) fully
    masks["rust"][3:8, 0:8] = True  # drawn later, over the hole: 5/8 of patch (0, 0)
    masks["rust"][8:9, 8:10] = True  # 2 of 64 pixels of patch (1, 1)
    image = SyntheticImage("nut", ("hole", "rust"), np.zeros((32, 32, 3), np.uint8), masks)
    labels = patch_labels(image, patch_size=8, threshold=0.2)
    assert labels.shape == (4, 4) and labels.dtype == np.int64
    assert labels[0, 0] == 1 + DEFECT_ORDER.index("rust")
    assert labels[1, 1] == IGNORE and labels[3, 3] == 0
    assert (labels == 0).sum() == 14


def test_balanced_patch_loss_weights_defective_and_clean_patches_equally():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, IGNORE, 1])
    ce = F.cross_entropy(logits, torch.tensor([0, 0, 0, 1]), reduction="none")
    expected = ((ce[0] + ce[1]) / 2 + ce[3]) / 2
    assert balanced_patch_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-12)
    only_clean = balanced_patch_loss(logits[:2], labels[:2])
    assert only_clean.item() == pytest.approx(((ce[0] + ce[1]) / 2).item(), rel=1e-12)


class _Interrupt(Exception):
    pass


def _tiny_run(tmp_path, name, monitor=None, resume=True, loader_workers=1):
    config = PretrainConfig(image_steps=2, text_steps=2, full_per_step=2, local_images_per_step=1, warmup_steps=1,
                            text_images=8, text_batch=4, checkpoint_every=1, threads=1, precision="fp32")
    return pretrain(config, tmp_path / name, output=tmp_path / name / "w.safetensors", resume=resume,
                    monitor=monitor, loader_workers=loader_workers)


def test_pretraining_writes_a_loadable_checkpoint_and_resumes_exactly(tmp_path):
    seen = {}

    def keep(model, heads, stage, step):
        seen[step] = {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items()}
        return {"stage_is": stage}

    path = _tiny_run(tmp_path, "straight", monitor=keep)
    with open(tmp_path / "straight" / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["step"]), r["stage"]) for r in rows] == [(1, "image"), (2, "image"), (3, "text"), (4, "text")]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    register_compact_config()
    model = open_clip.create_model(COMPACT_MODEL, pretrained=str(path))
    state = load_file(str(path))
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert set(state) == set(model.state_dict())
    # the text stage locks the image tower but for its last block, ln_post and final projection
    after_images = seen[2]
    assert {n for n, _ in text_stage_parameters(model)} == {n for n, _ in model.named_parameters()
                                                            if not n.startswith("visual.") or n == "visual.proj"}
    trained_in_text_stage = {name for name, _ in text_stage_parameters(model, last_block=True)}
    last = f"visual.transformer.resblocks.{len(model.visual.transformer.resblocks) - 1}."
    tuned = {k for k in state if k.startswith(("visual.proj", "visual.ln_post.", last))}
    assert tuned < trained_in_text_stage and "visual.conv1.weight" not in trained_in_text_stage
    for key, value in state.items():
        if key.startswith("visual.") and key not in tuned:
            assert torch.equal(value, after_images[key]), key
    for key in ("visual.proj", "visual.ln_post.weight", last + "attn.in_proj_weight", last + "mlp.c_fc.weight"):
        assert not torch.equal(state[key], after_images[key]), key
    assert not torch.equal(state["text_projection"], after_images["text_projection"])

    def interrupt(model, heads, stage, step):
        if step == 3:
            raise _Interrupt
        return {}

    with pytest.raises(_Interrupt):
        _tiny_run(tmp_path, "resumed", monitor=interrupt)
    resumed = load_file(str(_tiny_run(tmp_path, "resumed")))
    assert all(torch.equal(resumed[k], state[k]) for k in state)


def test_views_made_ahead_by_a_worker_or_inline_and_a_resume_mid_image_stage_give_the_same_model(tmp_path):
    ahead = load_file(str(_tiny_run(tmp_path, "ahead", loader_workers=1)))

    def interrupt(model, heads, stage, step):
        if step == 1:
            raise _Interrupt
        return {}

    with pytest.raises(_Interrupt):
        _tiny_run(tmp_path, "inline", monitor=interrupt, loader_workers=0)
    inline = load_file(str(_tiny_run(tmp_path, "inline", loader_workers=0)))
    assert all(torch.equal(inline[k], ahead[k]) for k in ahead)


def test_global_targets_name_the_product_of_large_views_and_the_single_state():
    image, small, labels = torch.zeros(3, 128, 128), torch.zeros(3, 32, 32), torch.zeros(1, 1, dtype=torch.int64)
    key = CaptionKey(None, "any")
    views = [View(image, "", key, "nut", (), labels), View(image, "", key, "gear", ("rust",), labels),
             View(small, "", key, "gear", ("hole",), labels), View(image, "", key, "gear", ("rust", "hole"), labels)]
    products, states = global_targets(views, ("gear", "nut"), named_min_size=64)
    assert products.tolist() == [1, 0, IGNORE, 0]
    assert states.tolist() == [0, 1 + DEFECT_ORDER.index("rust"), 1 + DEFECT_ORDER.index("hole"), IGNORE]
