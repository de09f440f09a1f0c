"""Every named method builds, runs, predicts and (where it learns) trains one step."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from dapo.engine.checkpoint import load_trained, read_metadata, save_checkpoint
from dapo.engine.inference import Predictor
from dapo.engine.train import training_step
from dapo.methods import METHODS, config_for, make_model

VOCABULARY = ("hole", "scratch")


def build(method, backbone, prompts):
    """Handcrafted methods get explicit prompt lists, so the tests do not read the knowledge base."""
    overrides = dict(prompts) if getattr(config_for(method), "handcrafted", False) else {}
    if method == "clip_ac":
        overrides.pop("defect_states")
    return make_model(method, backbone, **overrides)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_runs_predicts_and_trains(method, tiny_backbone, tiny_dataset, images, test_prompts):
    model = build(method, tiny_backbone, test_prompts)
    pred = Predictor(model, VOCABULARY, product="widget")(images)
    assert pred.type_probs.shape == (2, 3, 32, 32) and torch.isfinite(pred.image_score).all()
    learnable = model.learnable_parameters()
    if not learnable:
        assert METHODS[method].training_free
        return
    before = {k: v.detach().clone() for k, v in learnable.items()}
    batch = next(iter(DataLoader(tiny_dataset, batch_size=3, collate_fn=default_collate)))
    terms = training_step(model, torch.optim.Adam(learnable.values(), lr=1e-3), batch, VOCABULARY)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert any(not torch.equal(v, before[k]) for k, v in model.learnable_parameters().items())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_survives_its_checkpoint(method, tiny_backbone, images, test_prompts, tmp_path):
    """The contract's checkpoint path: any method is saved with its family and rebuilt identically
    (a training-free one is rebuilt from its configuration alone, with the same predictions)."""
    model = build(method, tiny_backbone, test_prompts)
    with torch.no_grad():
        for parameter in model.learnable_parameters().values():
            parameter.add_(0.01 * torch.randn_like(parameter))  # not the initialisation: the file must carry it
    path = save_checkpoint(model, tmp_path / "epoch_001.safetensors", epoch=1, vocabulary=VOCABULARY)
    assert read_metadata(path)["family"] == model.family
    loaded = load_trained(path, tiny_backbone)
    assert type(loaded) is type(model) and loaded.config == model.config
    first = Predictor(model, VOCABULARY, product="widget", precision="fp32")(images)
    again = Predictor(loaded, VOCABULARY, product="widget", precision="fp32")(images)
    for key in first.keys():
        assert torch.equal(first[key], again[key]), (method, key)


def test_what_each_baseline_learns(tiny_backbone, test_prompts):
    learned = {m: set(build(m, tiny_backbone, test_prompts).learnable_parameters()) for m in
               ("multiads", "anomalyclip", "clip_ac")}
    assert learned["clip_ac"] == set()
    assert learned["multiads"] == {f"adapters.{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert learned["anomalyclip"] == {"context.normal", "context.abnormal", "text_deep.tokens"}


def test_anomalyclip_depth_is_capped_but_explicit_depth_is_checked(tiny_backbone):
    deep = make_model("anomalyclip", tiny_backbone).text_deep  # depth 9 capped at the 4 layers
    assert (deep.first_layer, deep.last_layer, deep.depth) == (2, 4, 3)  # layer 1 sees the context itself
    with pytest.raises(ValueError, match="exceeds"):
        make_model("anomalyclip", tiny_backbone, text_depth=9)


def test_multiads_f_filters_the_vocabulary_and_scores_images_as_its_script():
    a, b = config_for("multiads").to_dict(), config_for("multiads_f").to_dict()
    assert {k for k in a if a[k] != b[k]} == {"name", "inference_vocabulary", "image_score_global_weight", "map_score"}
    assert (a["inference_vocabulary"], b["inference_vocabulary"]) == ("dataset", "product")
    assert (a["map_score"], a["image_score_global_weight"]) == ("top3_mean", 0.0)


def test_presets_are_distinct_and_carry_their_recipes():
    from dapo.methods import preset, training_for

    configs = {m: config_for(m).to_dict() for m in METHODS}
    for m in METHODS:
        for other in METHODS:
            if m != other:
                assert {k: v for k, v in configs[m].items() if k != "name"} != \
                       {k: v for k, v in configs[other].items() if k != "name"}, (m, other)
    assert training_for("dapo").betas == (0.5, 0.999) and training_for("dapo").multi_defect == "as_class"
    assert training_for("multiads").batch_size == 4 and training_for("multiads").mosaic_prob == 0.2
    assert training_for("anomalyclip").epochs == 15 and training_for("dapo_official").epochs == 2
    both = preset("dapo", seed=3, lam=8.0, lr=1e-4)
    assert (both.model.lam, both.model.seed, both.training.lr, both.training.seed) == (8.0, 3, 1e-4, 3)
    with pytest.raises(ValueError, match="unknown setting"):
        preset("dapo", lamda=8.0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_configs_survive_json(method, test_prompts):
    config = config_for(method, **(test_prompts if getattr(config_for(method), "handcrafted", False) else {}))
    assert type(config).from_dict(config.to_dict()) == config


def test_unknown_method_and_bad_overrides_fail():
    with pytest.raises(ValueError, match="unknown method"):
        config_for("no_such_method")
    with pytest.raises(TypeError):
        config_for("dapo", no_such_field=1)
    with pytest.raises(ValueError, match="tuning"):
        config_for("dapo", tuning="sideways")
    with pytest.raises(ValueError, match="text_depth=0"):
        config_for("multiads", text_depth=None)


@pytest.mark.slow
def test_anomalyclip_counts_the_papers_parameters_less_the_unused_projections(paper_backbone):
    """FAPrompt's and ViP²-CLIP's Table 3 give AnomalyCLIP 5,555,200 trainable parameters: the release
    also builds ``compound_prompt_projections``, 8 x Linear(768, 896) that its forward pass never calls."""
    model = make_model("anomalyclip", paper_backbone)
    count = sum(p.numel() for p in model.learnable_parameters().values())
    unused = 8 * (768 * 896 + 896)
    assert count == 12 * 768 * 2 + 8 * 4 * 768 == 43_008  # two 12-token contexts, 4 deep tokens at 8 text layers
    assert count + unused == 5_555_200
