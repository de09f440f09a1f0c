"""Prompt texts, literal defect words in the token sequence, context layout, initialisations."""

from __future__ import annotations

import pytest
import torch

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO
from dapo.methods.dapo.prompts import (
    LearnedContext,
    check_placeholders,
    defect_phrase,
    handcrafted_state_prompts,
    learned_prompt_texts,
    sample_tokens,
    token_embedding_stats,
)


def test_defect_aware_prompt_texts_follow_eq_1_and_2():
    texts = learned_prompt_texts(DAPOConfig(), ("scratch", "faulty imprint", "wobbly_edge"), 3)
    assert texts == ["X X X normal object", "X X X scratch anomaly object",
                     "X X X faulty imprint anomaly object", "X X X wobbly edge anomaly object"]


def test_object_agnostic_prompts_ignore_the_vocabulary():
    config = DAPOConfig(text_prompts="object_agnostic", normal_word="", abnormal_word="damaged")
    assert learned_prompt_texts(config, ("scratch", "hole"), 2) == ["X X object", "X X damaged object"]


def test_unknown_defect_names_are_used_literally():
    assert defect_phrase("scratch") == "scratch"
    assert defect_phrase("never_seen_before") == "never seen before"


def test_literal_defect_words_appear_in_the_token_sequence(tiny_backbone):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2))
    vocabulary = ("scratch", "faulty imprint", "wobbly_edge")
    ids = model._prompt_ids(vocabulary)
    n_placeholders = model.text_deep.n_tokens + model.config.n_ctx
    x_id = int(tiny_backbone.tokenize(["X"])[0, 1])
    assert bool((ids[:, 1:1 + n_placeholders] == x_id).all())
    for row, words in zip(ids[1:], ("scratch", "faulty imprint", "wobbly edge")):
        expected = tiny_backbone.tokenize([f"{words} anomaly object"])[0]
        expected = expected[1:int(expected.argmax())]  # words without SOT/EOT
        start = 1 + n_placeholders
        assert torch.equal(row[start:start + len(expected)], expected)
        assert int(row.argmax()) == start + len(expected)  # EOT right after the literal words
    normal = tiny_backbone.tokenize(["normal object"])[0]
    assert torch.equal(ids[0, 1 + n_placeholders:1 + n_placeholders + 2], normal[1:3])


def test_check_placeholders_rejects_shifted_prompts(tiny_backbone):
    ids = tiny_backbone.tokenize(["X X scratch", "scratch X X"])
    x_id = int(ids[0, 1])
    check_placeholders(ids[:1], 2, x_id)
    with pytest.raises(ValueError, match="placeholder"):
        check_placeholders(ids, 2, x_id)


def test_context_is_shared_by_all_defects():
    config = DAPOConfig(n_prompts=3, n_ctx=2)
    context = LearnedContext(config, torch.zeros(4), torch.ones(4), torch.Generator().manual_seed(0))
    assert context.normal.shape == context.abnormal.shape == (3, 2, 4)
    stacked = context.contexts(n_abnormal_states=2)
    assert stacked.shape == (9, 2, 4)
    assert torch.equal(stacked[:3], context.normal)
    assert torch.equal(stacked[3:6], context.abnormal) and torch.equal(stacked[6:], context.abnormal)


def test_token_embedding_stats_are_per_dimension():
    table = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    mean, std = token_embedding_stats(table)
    torch.testing.assert_close(mean, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(std, torch.tensor([2.0, 0.0]))


@pytest.mark.parametrize("init, shift, expected_mean, expected_std", [
    ("random", 0.0, 0.0, 1.0), ("clip", 0.0, 3.0, 0.5), ("offset", 5.0, 3.0 + 5 * 0.5, 0.5)])
def test_initialisations_draw_from_their_distribution(init, shift, expected_mean, expected_std):
    mean, std = torch.full((8,), 3.0), torch.full((8,), 0.5)
    tokens = sample_tokens((4000, 8), mean, std, init, torch.Generator().manual_seed(0), shift)
    assert abs(float(tokens.mean()) - expected_mean) < 0.02
    assert abs(float(tokens.std()) - expected_std) < 0.02


def test_offset_init_shifts_only_the_abnormal_context(tiny_backbone):
    plain = DAPO(tiny_backbone, DAPOConfig(init="clip"))
    offset = DAPO(tiny_backbone, DAPOConfig(init="offset"))
    _, std = token_embedding_stats(tiny_backbone.text.token_embedding.weight)
    torch.testing.assert_close(offset.context.normal, plain.context.normal)
    torch.testing.assert_close(offset.context.abnormal - plain.context.abnormal,
                               (5.0 * std).expand_as(plain.context.abnormal))


def test_handcrafted_prompts_expand_states_times_templates(test_prompts):
    config = DAPOConfig(text_prompts="handcrafted_defects", text_depth=0, **test_prompts)
    states = handcrafted_state_prompts(config, ("scratch", "stain"), "metal_nut")
    assert states[0] == ["a photo of a flawless metal nut.", "a close-up photo of the flawless metal nut.",
                         "a photo of a metal nut.", "a close-up photo of the metal nut."]
    assert states[1] == ["a photo of a metal nut with a scratch.", "a close-up photo of the metal nut with a scratch."]
    assert states[2][0] == "a photo of a metal nut with stain."  # no handcrafted phrases: generic ones
    binary = DAPOConfig(text_prompts="handcrafted_binary", text_depth=0, templates=("{}.",),
                        normal_states=("normal {}",), abnormal_states=("damaged {}",))
    assert handcrafted_state_prompts(binary, ("scratch",), None) == [["normal object."], ["damaged object."]]


def test_prompt_layout_shows_shared_context_and_literal_words():
    from dapo.methods.dapo.prompts import prompt_layout

    rows = prompt_layout(DAPOConfig(), ("scratch", "faulty_imprint"))
    assert [r["state"] for r in rows] == ["normal", "scratch", "faulty_imprint"]
    assert rows[0]["prompt"] == "[SOT] [U1] [U2] [U3] [U4] [V1] [V2] [V3] [V4] [V5] normal object [EOT]"
    assert rows[1]["prompt"].endswith("[W5] scratch anomaly object [EOT]")
    assert "[W1] [W2] [W3] [W4] [W5]" in rows[2]["prompt"]  # the same W tokens for every defect type
    no_deep = prompt_layout(DAPOConfig(text_depth=0), ("hole",))
    assert "[U1]" not in no_deep[1]["prompt"]
