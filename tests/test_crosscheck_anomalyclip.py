"""The AnomalyCLIP cross-check's own code: parameter mapping, output renaming, the DPAM argument,
the QuickGELU backbone, the release side's switches. No release is needed (the release run is in
tests/test_crosscheck_releases.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dapo.crosscheck.compare import compare, summary
from dapo.crosscheck.driver import write_stubs
from dapo.crosscheck.mapping import anomalyclip_to_release, release_to_anomalyclip


def _learned(n_ctx=12, width=16, depth=3, tokens=4):
    g = torch.Generator().manual_seed(2)
    return {"context.normal": torch.randn(1, n_ctx, width, generator=g),
            "context.abnormal": torch.randn(1, n_ctx, width, generator=g),
            "text_deep.tokens": torch.randn(depth, tokens, width, generator=g)}


def test_anomalyclip_mapping_names_shapes_and_round_trip():
    ours = _learned()
    release = anomalyclip_to_release(ours)
    assert set(release) == {"ctx_pos", "ctx_neg", *(f"compound_prompts_text.{j}" for j in range(3))}
    # the prompt learner's (n_cls, states per kind, n_ctx, D): one class ("object"), one state prompt
    assert release["ctx_pos"].shape == (1, 1, 12, 16)
    assert torch.equal(release["ctx_neg"][0], ours["context.abnormal"])
    assert torch.equal(release["compound_prompts_text.1"], ours["text_deep.tokens"][1])
    back = release_to_anomalyclip(release)
    assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)


def test_anomalyclip_mapping_refuses_what_has_no_counterpart():
    with pytest.raises(KeyError, match="adapters"):
        anomalyclip_to_release({"adapters.0.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="compound_prompt_projections"):  # built, never used by the release
        release_to_anomalyclip({"compound_prompt_projections.0.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="classes"):
        release_to_anomalyclip({"ctx_pos": torch.zeros(2, 1, 12, 16)})
    with pytest.raises(KeyError, match="0..1"):
        release_to_anomalyclip({"compound_prompts_text.0": torch.zeros(1), "compound_prompts_text.2": torch.zeros(1)})


def test_split_release_renames_each_variants_gradients_and_weights():
    from dapo.crosscheck.anomalyclip_check import split_release

    raw = {"grad_release": {"ctx_pos": torch.ones(1, 1, 2, 3)},
           "grad_release/as_released_half/": {"compound_prompts_text.0": torch.ones(4, 3)},
           "weights_release/as_released_ln_post/": {"ctx_neg": torch.zeros(1, 1, 2, 3)},
           "score/image": torch.ones(4), "as_released_half/score/image": torch.zeros(4)}
    out = split_release(raw)
    assert set(out) == {"grad/context.normal", "as_released_half/grad/text_deep.tokens",
                        "as_released_ln_post/weights/context.abnormal", "score/image", "as_released_half/score/image"}
    assert out["grad/context.normal"].shape == (1, 2, 3)
    assert out["as_released_half/grad/text_deep.tokens"].shape == (1, 4, 3)


def test_summary_groups_a_variants_rows_within_it():
    names = ["stage1/logits", "stage2/logits", "as_released_half/stage1/logits", "as_released_half/stage2/logits"]
    theirs = {n: torch.zeros(2) for n in names}
    ours = {n: torch.full((2,), 0.1 * (i + 1)) for i, n in enumerate(names)}
    families = {key: a for key, a, _ in summary(compare(ours, theirs, 1.0))}
    assert families == {"stage logits": pytest.approx(0.2), "as_released_half/stage logits": pytest.approx(0.4)}


def test_release_dpam_argument_matches_the_releases_own_value():
    from dapo.crosscheck.anomalyclip_check import release_dpam_layer
    from dapo.methods.dapo.dpam import OFFICIAL_DPAM_LAYERS, scaled_dpam_layers

    assert release_dpam_layer(OFFICIAL_DPAM_LAYERS) == 20  # train.py:42 on ViT-L/14's 24 layers
    assert release_dpam_layer(scaled_dpam_layers(8)) == 7  # the compact tower: blocks 3-8
    with pytest.raises(ValueError, match="dpam_layers"):
        release_dpam_layer(0)


def test_quickgelu_backbone_uses_quickgelu_and_computes_another_network():
    from open_clip.transformer import QuickGELU

    from dapo.crosscheck import ours
    from dapo.crosscheck.anomalyclip_check import quickgelu_backbone

    quick, plain = quickgelu_backbone(), ours.compact_backbone()
    assert all(isinstance(m, QuickGELU) for n, m in quick.named_modules() if n.endswith("mlp.gelu"))
    assert not any(isinstance(m, QuickGELU) for n, m in plain.named_modules() if n.endswith("mlp.gelu"))
    images = torch.randn(1, 3, quick.image_size, quick.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = quick.clip.encode_image(images), plain.clip.encode_image(images)
    assert not torch.allclose(a, b, atol=1e-4)


def test_release_side_half_switch_and_pkg_resources_shim():
    from dapo.crosscheck import release_anomalyclip as side

    x = torch.tensor([0.1234567], dtype=torch.float32)
    try:
        side.set_half(False)
        assert x.half().dtype == torch.float32 and torch.equal(x.half(), x)
    finally:
        side.set_half(True)
    assert x.half().dtype == torch.float16
    had = "pkg_resources" in sys.modules
    try:
        side.shim_pkg_resources()
        from pkg_resources import packaging

        assert packaging.version.parse("1.8.0") < packaging.version.parse("2.0")
    finally:
        if not had:
            sys.modules.pop("pkg_resources", None)


def test_stubs_include_thop(tmp_path):
    stubs = write_stubs(tmp_path / "stubs")
    result = subprocess.run([sys.executable, "-c", "from thop import profile; print(profile)"],
                            env={"PYTHONPATH": str(stubs)}, capture_output=True, text=True)
    assert result.stdout.strip() == "None", result.stderr
