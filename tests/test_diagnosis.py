"""Diagnosis statistics: collapse at defect pixels, state cosines, vision tokens removed, parameter drift."""

import pandas as pd
import pytest
import torch

from dapo.experiments.diagnosis import (
    collapse_counts,
    collapse_shares,
    cosine_summary,
    parameter_drift,
    state_cosines,
    without_vision_tokens,
)
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO

VOCABULARY = ("hole", "scratch", "crack")


def test_collapse_counts_on_a_hand_made_example():
    # 1 image, normal + 3 types, 2 x 2 pixels; pixel (r, c): probabilities over [normal, a, b, c]
    probs = torch.tensor([[[0.40, 0.20, 0.20, 0.20],    # (0,0) defect a: mass 0.6 > 0.4 but argmax normal
                           [0.10, 0.70, 0.10, 0.10]],   # (0,1) defect a: right type
                          [[0.60, 0.20, 0.10, 0.10],    # (1,0) defect c: argmax normal, mass 0.4 < 0.6
                           [0.30, 0.10, 0.50, 0.10]]])  # (1,1) normal pixel: not counted
    type_probs = probs.permute(2, 0, 1).unsqueeze(0)    # (1, 4, 2, 2)
    type_mask = torch.tensor([[[1, 1], [3, 0]]])
    counts = collapse_counts(type_probs, type_mask)
    assert counts == {"defect_pixels": 3, "argmax_normal": 2, "abnormal_mass_wins": 2, "hidden_by_argmax": 1,
                      "right_type": 1}
    shares = collapse_shares(counts)
    assert shares["argmax_normal"] == pytest.approx(2 / 3) and shares["hidden_by_argmax"] == pytest.approx(1 / 3)
    assert shares["hidden_of_mass_wins"] == pytest.approx(1 / 2) and shares["right_type"] == pytest.approx(1 / 3)


def test_collapse_refuses_bad_inputs():
    with pytest.raises(ValueError, match="type_mask ids must lie in"):
        collapse_counts(torch.full((1, 2, 2, 2), 0.5), torch.full((1, 2, 2), 2))
    with pytest.raises(ValueError, match=r"need type_probs \(B, K\+1, H, W\)"):
        collapse_counts(torch.full((2, 2, 2), 0.5), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="no ground-truth defect pixels"):
        collapse_shares(collapse_counts(torch.full((1, 2, 2, 2), 0.5), torch.zeros(1, 2, 2, dtype=torch.long)))


def test_cosine_summary_of_a_hand_made_matrix():
    names = ["normal", "a", "b", "c"]
    matrix = pd.DataFrame([[1.0, 0.1, 0.2, 0.3], [0.1, 1.0, 0.9, 0.5], [0.2, 0.9, 1.0, 0.7], [0.3, 0.5, 0.7, 1.0]],
                          index=names, columns=names)
    summary = cosine_summary(matrix)
    assert summary["defect_defect_mean"] == pytest.approx((0.9 + 0.5 + 0.7) / 3)
    assert summary["defect_defect_min"] == 0.5 and summary["defect_defect_max"] == 0.9
    assert summary["normal_defect_mean"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="at least two defect states"):
        cosine_summary(matrix.iloc[:2, :2])


def test_state_cosines_of_a_model(tiny_backbone):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2))
    cosines = state_cosines(model, VOCABULARY)
    assert list(cosines.index) == list(cosines.columns) == ["normal", *VOCABULARY]
    assert torch.allclose(torch.tensor(cosines.to_numpy()).diagonal(), torch.ones(4), atol=1e-5)
    pd.testing.assert_frame_equal(cosines, cosines.T)


def test_without_vision_tokens_keeps_every_other_learned_weight(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2, seed=3))
    with torch.no_grad():
        model.vision_deep.tokens.mul_(50.0)  # make the tokens matter
    stripped = without_vision_tokens(model)
    assert stripped.vision_deep is None and model.vision_deep is not None, "the original must keep its tokens"
    # an independent construction: a model without vision tokens, given the trained tensors by name
    reference = DAPO(tiny_backbone, DAPOConfig(n_prompts=2, seed=11, vision_depth=0))
    trained = dict(model.named_parameters())
    with torch.no_grad():
        for name, parameter in reference.learnable_parameters().items():
            parameter.copy_(trained[name])
    with torch.no_grad():
        got, want, full = (m(images, VOCABULARY) for m in (stripped, reference, model))
    for a, b in zip(got.stage_logits, want.stage_logits):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got.global_logits, want.global_logits)
    assert not torch.allclose(got.stage_logits[0], full.stage_logits[0]), "the tokens did not change the maps"
    with pytest.raises(ValueError, match="no vision deep tokens"):
        without_vision_tokens(stripped)


def test_parameter_drift_measures_the_change_from_the_seeded_init(tiny_backbone):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2, seed=5))
    drift = parameter_drift(model).set_index("parameter")
    assert (drift["change_norm"] == 0).all(), "an untrained model has not moved"
    initial = model.vision_deep.tokens.detach().clone()
    with torch.no_grad():
        model.vision_deep.tokens.add_(0.01)
    drift = parameter_drift(model).set_index("parameter")
    row = drift.loc["vision_deep.tokens"]
    assert row["change_norm"] == pytest.approx(0.01 * initial.numel() ** 0.5, rel=1e-4)
    assert row["relative_change"] == pytest.approx(row["change_norm"] / float(initial.norm()), rel=1e-6)
    assert row["mean_row_norm"] == pytest.approx(float(initial.norm(dim=-1).mean()), rel=1e-6)
    assert drift.loc["adapters.0.weight", "change_norm"] == 0


def test_the_paraphrased_multiads_differs_from_multiads_only_in_its_prompt_lists():
    from dapo import methods as baselines
    from dapo.experiments.prompt_overlap import PARAPHRASE_TEMPLATES

    config = baselines.config_for("multiads_paraphrased")
    assert config.templates == PARAPHRASE_TEMPLATES and config.text_prompts == "handcrafted_defects"
    assert config.with_overrides(name="x", templates=None, normal_states=None, defect_states=None) == \
        baselines.config_for("multiads").with_overrides(name="x")
    assert baselines.training_for("multiads_paraphrased") == baselines.training_for("multiads")
