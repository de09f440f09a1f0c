"""The cross-check harness's own code: comparison, table, parameter mapping, stubs, commit lookup.
No release is needed (the release runs are in tests/test_crosscheck_releases.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dapo.crosscheck.compare import compare, compare_one, failures, format_table, summary
from dapo.crosscheck.driver import ReleaseError, check_release_path, release_commit, release_quantities, write_stubs
from dapo.crosscheck.inputs import synthetic_batch
from dapo.crosscheck.mapping import dapo_to_release, release_to_dapo


def test_compare_one_measures_abs_and_rel_differences():
    theirs = torch.tensor([1.0, -4.0, 0.0])
    ours = torch.tensor([1.0, -4.0, 2e-3])
    row = compare_one("x", ours, theirs, tolerance=1e-2)
    assert row.max_abs == pytest.approx(2e-3)
    assert row.max_rel == pytest.approx(2e-3 / 4.0)  # against the tensor's scale, not the zero entry
    assert row.ok
    assert not compare_one("x", ours, theirs, tolerance=1e-3).ok


def test_compare_one_fails_on_shape_missing_and_non_finite():
    assert compare_one("x", torch.zeros(2, 3), torch.zeros(3, 2), 1.0).note == "shapes differ"
    assert not compare_one("x", None, torch.zeros(2), 1.0).ok
    assert "ours" in compare_one("x", None, torch.zeros(2), 1.0).note
    assert not compare_one("x", torch.tensor([float("nan")]), torch.tensor([0.0]), 1.0).ok


def test_integer_quantities_must_agree_exactly_whatever_the_tolerance():
    ids = torch.tensor([[49406, 343, 49407]])
    assert compare_one("tokens", ids, ids.clone(), 1e3).ok
    other = ids.clone()
    other[0, 1] = 344
    row = compare_one("tokens", other, ids, 1e3)
    assert not row.ok and row.note == "1 entries differ"


def test_compare_covers_both_sides_and_prefix_tolerances():
    theirs = {"loss/total": torch.tensor(74.0), "grad/a": torch.zeros(2)}
    ours = {"loss/total": torch.tensor(74.00005), "grad/a": torch.full((2,), 5e-5), "extra": torch.ones(1)}
    rows = compare(ours, theirs, 1e-5, {"loss/": 1e-4})
    assert [r.name for r in rows] == ["loss/total", "grad/a", "extra"]
    assert [r.name for r in failures(rows)] == ["grad/a", "extra"]
    table = format_table(rows)
    assert "| loss/total | scalar |" in table and "**NO** (missing on release side)" in table


def test_summary_takes_the_largest_difference_per_family():
    theirs = {"stage1/logits": torch.ones(2), "stage2/logits": torch.ones(2), "grad/a": torch.ones(1)}
    ours = {"stage1/logits": torch.tensor([1.0, 1.1]), "stage2/logits": torch.tensor([1.3, 1.0]),
            "grad/a": torch.ones(1)}
    families = {key: a for key, a, _ in summary(compare(ours, theirs, 1.0))}
    assert families["stage logits"] == pytest.approx(0.3)
    assert families["grad"] == 0.0


def _learned(depth_text=4, depth_vision=8, taps=4):
    g = torch.Generator().manual_seed(1)
    params = {"context.normal": torch.randn(10, 5, 16, generator=g),
              "context.abnormal": torch.randn(10, 5, 16, generator=g),
              "text_deep.tokens": torch.randn(depth_text, 4, 16, generator=g),
              "vision_deep.tokens": torch.randn(depth_vision, 4, 24, generator=g)}
    for i in range(taps):
        params[f"adapters.{i}.weight"] = torch.randn(16, 24, generator=g)
        params[f"adapters.{i}.bias"] = torch.randn(16, generator=g)
    return params


def test_dapo_mapping_names_and_round_trip():
    ours = _learned()
    release = dapo_to_release(ours)
    assert set(release) == {"prompt_learner.learnable_normal_tokens", "prompt_learner.learnable_abnormal_tokens",
                            *(f"prompt_learner.learnable_layer_tokens.{j}" for j in range(4)),
                            "visual_prompt.learnable_visual_tokens",
                            *(f"linear_adapter.fc.{i}.{k}" for i in range(4) for k in ("weight", "bias"))}
    assert torch.equal(release["prompt_learner.learnable_layer_tokens.2"], ours["text_deep.tokens"][2])
    assert torch.equal(release["linear_adapter.fc.3.bias"], ours["adapters.3.bias"])
    back = release_to_dapo(release)
    assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)


def test_dapo_mapping_refuses_unknown_names():
    with pytest.raises(KeyError, match="dpam"):
        dapo_to_release({"dpam.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="meta_net"):
        release_to_dapo({"prompt_learner.meta_net.0.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="0..1"):
        release_to_dapo({"prompt_learner.learnable_layer_tokens.0": torch.zeros(1),
                         "prompt_learner.learnable_layer_tokens.2": torch.zeros(1)})


def test_release_quantities_renames_gradients_and_weights_and_keeps_facts_apart():
    raw = {"grad_release": {"linear_adapter.fc.0.bias": torch.ones(2)},
           "weights_release": {"prompt_learner.learnable_normal_tokens": torch.zeros(1)},
           "fact/backbone_has_grad": True, "words/train": ["bent"], "score/image": torch.ones(4)}
    tensors, facts = release_quantities(raw, release_to_dapo)
    assert set(tensors) == {"grad/adapters.0.bias", "weights/context.normal", "score/image"}
    assert facts == {"fact/backbone_has_grad": True, "words/train": ["bent"]}


def test_synthetic_batch_is_fixed_and_masks_match_labels():
    a, b = synthetic_batch(32), synthetic_batch(32)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["labels"].tolist() == [0, 1, 1, 1]
    assert a["masks"][0].sum() == 0 and all(a["masks"][i].sum() > 0 for i in (1, 2, 3))
    assert set(a["masks"].unique().tolist()) == {0.0, 1.0}


def test_stubs_import_in_a_fresh_process(tmp_path):
    stubs = write_stubs(tmp_path / "stubs")
    code = "import cv2, skimage; from skimage import measure; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(stubs)}, capture_output=True,
                            text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_release_path_is_checked_and_commit_read(tmp_path):
    with pytest.raises(ReleaseError, match="--release"):
        check_release_path("dapo", tmp_path)
    assert release_commit(tmp_path) == "unknown"
    (tmp_path / ".release_commit").write_text("ad2ceab\n")
    assert release_commit(tmp_path) == "ad2ceab"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert release_commit(tmp_path) == head.strip()


def test_fidelity_row_names_commit_families_and_verdict():
    from dapo.crosscheck.compare import fidelity_row

    rows = compare({"grad/a": torch.tensor([1.0, 2.5e-6]), "tokens/x": torch.tensor([1, 2])},
                   {"grad/a": torch.tensor([1.0, 0.0]), "tokens/x": torch.tensor([1, 2])}, 1e-5)
    row = fidelity_row("dapo_official", "ad2ceabc14079a", "2026-12-07", rows)
    assert row == "| `dapo_official` | `ad2ceab` | 2026-12-07 | grad 2.5e-06; tokens/x 0.0e+00 | all 2 within tolerance |"


def test_training_word_indices_follow_our_map():
    from dapo.crosscheck.dapo_check import training_word_indices

    ours, theirs = training_word_indices(["bent", "color", "poke"], ["bent", "discoloration", "puncture"])
    assert ours.tolist() == theirs.tolist() == [0, 1, 2]
    ours, _ = training_word_indices(["color", "bent"], ["bent", "discoloration"])
    assert ours.tolist() == [1, 0]  # a release whose lists were not index-aligned would be caught
    ours, _ = training_word_indices(["color"], ["color"])
    assert ours.tolist() == [-1]
