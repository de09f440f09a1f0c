"""Handcrafted prompts are encoded once per backbone (Backbone.frozen_text): every model on the backbone
gets the very tensor the text tower gave the first one; learned prompts and other precisions are
never served from it."""

from __future__ import annotations

import torch

from dapo.methods import make_model

WORDS = ("scratch", "hole")


def _count_text_runs(model, monkeypatch) -> list[int]:
    calls = []
    real = model._run_text

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(model, "_run_text", counted)
    return calls


def test_two_seeds_share_one_encoding_equal_to_a_fresh_one(tiny_backbone, monkeypatch):
    import copy

    fresh_backbone = copy.deepcopy(tiny_backbone)
    fresh_backbone._text_memo.clear()
    tiny_backbone._text_memo.clear()
    first, second = (make_model("multiads", tiny_backbone, seed=s) for s in (0, 1))
    runs = _count_text_runs(second, monkeypatch)
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
    assert made == ["a", "b", "c"] and list(tiny_backbone._text_memo) == [("a",), ("c",)]
