"""The frozen towers' memos on the backbone: handcrafted prompts are encoded once per backbone
(Backbone.frozen_text) and a frozen image tower runs once per evaluation batch (Backbone.frozen_vision):
every model on the backbone gets the very tensors the first one got, equal to a fresh computation;
learned prompts, learnable vision tokens, training, other precisions, the reference blocks and
other weights are never served from them."""

from __future__ import annotations

import pytest
import torch

import dapo.methods.dapo.dpam as dpam
from dapo.clip.backbone import FEATURE_MEMO_ENV, feature_memo_bytes
from dapo.methods import make_model
from dapo.methods.dapo.progressive import reference_blocks

WORDS = ("scratch", "hole")


def _counted(monkeypatch, owner, name: str) -> list[int]:
    """Count the calls of ``owner.name`` (a list that grows by one per call)."""
    calls = []
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, counted)
    return calls


def test_two_seeds_share_one_encoding_equal_to_a_fresh_one(tiny_backbone, monkeypatch):
    import copy

    fresh_backbone = copy.deepcopy(tiny_backbone)
    fresh_backbone._text_memo.clear()
    tiny_backbone._text_memo.clear()
    first, second = (make_model("multiads", tiny_backbone, seed=s) for s in (0, 1))
    runs = _counted(monkeypatch, second, "_run_text")
    a = first.encode_text(WORDS, product="bottle")
    b = second.encode_text(WORDS, product="bottle")
    assert not runs, "the second seed ran the text tower again"
    reference = make_model("multiads", fresh_backbone, seed=0).encode_text(WORDS, product="bottle")
    assert torch.equal(a, b) and torch.equal(a, reference)
    other = second.encode_text(WORDS, product="cable")   # other texts: computed
    assert runs and not torch.equal(other, a)


def test_learned_prompts_and_another_precision_are_not_served_from_the_memo(tiny_backbone):
    tiny_backbone._text_memo.clear()
    dapo = make_model("dapo", tiny_backbone, seed=0, n_prompts=2)
    dapo.encode_text(WORDS)
    assert not tiny_backbone._text_memo, "learned prompts depend on the model's parameters"
    model = make_model("clip_ac", tiny_backbone)
    plain = model.prompt_embeddings(WORDS, "bottle")[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.prompt_embeddings(WORDS, "bottle")[0]
    assert len(tiny_backbone._text_memo) == 2 and low.dtype == torch.bfloat16 and plain.dtype == torch.float32


def test_the_memo_keeps_the_most_recently_used_entries(tiny_backbone, monkeypatch):
    tiny_backbone._text_memo.clear()
    monkeypatch.setattr(type(tiny_backbone), "TEXT_MEMO_SIZE", 2)
    made = []
    for key in ("a", "b", "a", "c"):
        tiny_backbone.frozen_text((key,), lambda key=key: made.append(key) or torch.zeros(1))
    assert made == ["a", "b", "c"] and [key[1:] for key in tiny_backbone._text_memo] == [("a",), ("c",)]


# ----------------------------------------------------------------------------- vision


@pytest.fixture
def counted_vision(monkeypatch):
    return _counted(monkeypatch, dpam, "run_vision_blocks")


def _outputs(model, images):
    global_embedding, patches, _ = model.encode_image(images)
    return [global_embedding, *patches]


def _equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("method", ["multiads", "anomalyclip", "cocoop"])
def test_a_frozen_image_tower_runs_once_per_batch_and_gives_a_fresh_computation(method, tiny_backbone, images,
                                                                                counted_vision):
    import copy

    fresh_backbone = copy.deepcopy(tiny_backbone)
    tiny_backbone._vision_memo.clear()
    first, second = (make_model(method, tiny_backbone, seed=s) for s in (0, 1))
    with torch.no_grad():
        a = _outputs(first, images)
        b = _outputs(second, images)
        assert len(counted_vision) == 1, "the second model ran the image tower again"
        fresh_backbone._vision_memo.clear()
        reference = _outputs(make_model(method, fresh_backbone, seed=0), images)
    assert torch.equal(a[0], b[0])                    # the global embedding (the patches pass seeded adapters)
    assert _equal(a, reference)
    with torch.no_grad():
        first.encode_image(images[:1])                    # another batch: computed
    assert len(counted_vision) == 3


def test_training_dapo_and_the_reference_blocks_compute(tiny_backbone, images, counted_vision):
    tiny_backbone._vision_memo.clear()
    model = make_model("multiads", tiny_backbone, seed=0)
    model.encode_image(images)
    model.encode_image(images)                            # autograd on: training never reads the memo
    assert len(counted_vision) == 2 and not tiny_backbone._vision_memo
    with torch.no_grad():
        fused = _outputs(model, images)
        with reference_blocks():
            reference = _outputs(model, images)           # its own entry: the fused-vs-reference tests stay real
        assert len(counted_vision) == 4
        dapo = make_model("dapo", tiny_backbone, seed=0, n_prompts=2)
        dapo.encode_image(images)
        dapo.encode_image(images)
    assert len(tiny_backbone._vision_memo) == 2, "DAPO's vision tokens are learnable: never memoised"
    for a, b in zip(fused, reference, strict=True):   # two entries of one computation, up to float sums
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_other_weights_miss(tiny_backbone, images, counted_vision):
    import copy

    backbone = copy.deepcopy(tiny_backbone)
    backbone._vision_memo.clear()
    model = make_model("multiads", backbone, seed=0)
    with torch.no_grad():
        before = _outputs(model, images)
        backbone.vision_blocks[0].mlp.c_fc.bias.add_(0.5)   # in place
        after = _outputs(model, images)
    assert len(counted_vision) == 2 and not _equal(before, after)


def test_the_budget_off_switch_and_a_bad_value(tiny_backbone, images, counted_vision, monkeypatch):
    tiny_backbone._vision_memo.clear()
    model = make_model("multiads", tiny_backbone, seed=0)
    monkeypatch.setenv(FEATURE_MEMO_ENV, "0")
    with torch.no_grad():
        model.encode_image(images)
        model.encode_image(images)
    assert len(counted_vision) == 2 and not tiny_backbone._vision_memo
    monkeypatch.setenv(FEATURE_MEMO_ENV, "0.001")          # about 1 kB: smaller than one batch's features
    with torch.no_grad():
        model.encode_image(images)
    assert not tiny_backbone._vision_memo
    monkeypatch.setenv(FEATURE_MEMO_ENV, "lots")
    with pytest.raises(ValueError, match="DAPO_FEATURE_MEMO_MB='lots'"):
        feature_memo_bytes()
