"""Fidelity switches: the lists, inference-only settings, paired effects, and the settings runner."""

import numpy as np
import pandas as pd
import pytest
import torch

from dapo.experiments.fidelity import (
    DEFAULT_SWITCHES,
    EARLIER_CHOICES,
    INFERENCE_FIELDS,
    OFFICIAL_SWITCHES,
    effects,
    effects_view,
    evaluate_settings,
    inference_only,
    smoke_subset,
    switch_kind,
    with_config,
)
from dapo.experiments.runs import checkpoint_dir, non_default
from dapo.experiments.sweep import Evaluation
from dapo.methods import config_for, preset
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.losses import dapo_loss
from dapo.methods.dapo.model import DAPO


def test_every_switch_differs_from_the_default_and_builds():
    for setting in DEFAULT_SWITCHES:
        assert non_default("dapo", setting) == setting, f"{setting} is DAPO's default already"
        preset("dapo", **setting)
    official = {k: v for s in OFFICIAL_SWITCHES for k, v in s.items()}
    differs = {k: v for k, v in config_for("dapo_official").to_dict().items()
               if k != "name" and v != config_for("dapo").to_dict()[k]}
    assert official == differs, "OFFICIAL_SWITCHES must be exactly what the dapo_official preset changes"
    assert switch_kind({}) == "default" and switch_kind({"alpha_decay": 1.0}) == "official"
    assert switch_kind({"alpha0": 0.1}) == "earlier choice" and switch_kind({"lam": 2.0}) == "other"
    assert len({str(s) for s in DEFAULT_SWITCHES}) == len(OFFICIAL_SWITCHES) + len(EARLIER_CHOICES)


def test_inference_only_fields_do_not_change_the_training_loss(tiny_backbone, tiny_dataset):
    batch = [tiny_dataset[i] for i in range(4)]
    images = torch.stack([s["image"] for s in batch])
    labels = torch.tensor([s["label"] for s in batch])
    masks = torch.stack([s["type_mask"] for s in batch])
    vocabulary = tiny_dataset.dataset_vocabulary
    base = DAPO(tiny_backbone, DAPOConfig(n_prompts=2))
    reference = dapo_loss(base(images, vocabulary), labels, masks, base.config)
    values = {"inference_vocabulary": "dataset", "image_score_global_weight": 0.3, "map_score": "top3_mean",
              "smoothing_sigma": 4.0, "global_score": "states"}
    assert set(values) == INFERENCE_FIELDS
    for field, value in values.items():
        model = with_config(base, **{field: value})
        assert getattr(model.config, field) == value
        torch.testing.assert_close(dapo_loss(model(images, vocabulary), labels, masks, model.config), reference,
                                   msg=f"{field} changed the training loss")
    assert inference_only({"smoothing_sigma": 4.0}) and not inference_only({"smoothing_sigma": 4.0, "lam": 1.0})
    assert not inference_only({})
    assert smoke_subset(DEFAULT_SWITCHES) == [{"normal_word": "flawless"}, {"inference_vocabulary": "dataset"}]


def test_with_config_refuses_a_config_that_needs_other_tensors(tiny_backbone):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2))
    with pytest.raises(ValueError, match="has shape"):
        with_config(model, n_ctx=3)


def _tidy(rows):
    return pd.DataFrame(rows, columns=["setting", "kind", "seed", "epoch", "dataset", "metric", "value"])


def test_effects_pair_each_seed_with_its_default_run():
    default = {0: 0.80, 1: 0.70, 2: 0.75}
    switched = {0: 0.85, 1: 0.71, 2: 0.81}
    rows = [("default", "default", s, 2, "d", "multitype_f1", v) for s, v in default.items()]
    rows += [("x=1", "other", s, 2, "d", "multitype_f1", v) for s, v in switched.items()]
    rows += [("x=1", "other", 0, 2, "d", "not_reported", 0.5)]
    table = effects(_tidy(rows)).set_index("setting")
    deltas = np.array([switched[s] - default[s] for s in default]) * 100
    assert list(table.index) == ["default", "x=1"] and (table["n"] == 3).all()
    assert table.loc["x=1", "mean"] == pytest.approx(np.mean(list(switched.values())) * 100)
    assert table.loc["x=1", "std"] == pytest.approx(np.std(list(switched.values()), ddof=1) * 100)
    assert table.loc["x=1", "delta"] == pytest.approx(deltas.mean())
    assert table.loc["x=1", "delta_std"] == pytest.approx(deltas.std(ddof=1))
    assert table.loc["default", "delta"] == 0 and table.loc["default", "delta_std"] == 0
    view = effects_view(effects(_tidy(rows))).set_index("setting")
    assert list(view.columns) == ["kind", "d multitype_f1"]
    assert view.loc["x=1", "d multitype_f1"].startswith(f"{np.mean(list(switched.values())) * 100:.1f} ± ")
    assert "(Δ +" in view.loc["x=1", "d multitype_f1"] and "Δ" not in view.loc["default", "d multitype_f1"]
    with pytest.raises(ValueError, match="no rows of the baseline"):
        effects(_tidy(rows[3:]))
    with pytest.raises(ValueError, match="one epoch only"):
        effects(_tidy(rows + [("default", "default", 0, 1, "d", "multitype_f1", 0.6)]))


def test_evaluate_settings_trains_only_what_training_reads(tmp_path, tiny_backbone, tiny_image_size):
    from dapo.experiments.profiles import resolve_profile
    from dapo.synthetic.worlds import write_world

    cfg = resolve_profile("synthetic", smoke=True, data_root=tmp_path / "worlds", image_size=tiny_image_size,
                          epochs=1)
    write_world(cfg.train_dataset, cfg.dataset_roots[cfg.train_dataset], smoke=True, image_size=64)
    seen = []

    def record(model):
        seen.append((model.config.alpha0, model.config.smoothing_sigma))
        return pd.DataFrame([{"dataset": "d", "metric": "m", "value": model.config.smoothing_sigma}])

    settings = [{"alpha0": 0.05}, {"smoothing_sigma": 4.0}]
    run = tmp_path / "run"
    kwargs = dict(settings=settings, seeds=[0], evaluate=Evaluation("record/1", record), backbone=tiny_backbone,
                  device="cpu", progress=False)
    table = evaluate_settings(cfg, "dapo", run, **kwargs)
    assert list(table["setting"]) == ["default", "alpha0=0.05", "smoothing_sigma=4.0"]
    assert list(table["value"]) == [0.0, 0.0, 4.0]
    assert seen == [(0.01, 0.0), (0.05, 0.0), (0.01, 4.0)]
    assert (checkpoint_dir(run, "dapo", 0, {"alpha0": 0.05}) / "epoch_001.safetensors").is_file()
    assert not checkpoint_dir(run, "dapo", 0, {"smoothing_sigma": 4.0}).exists(), "inference-only: no training"
    cached = list((checkpoint_dir(run, "dapo", 0) / "evaluations").glob("record_1@smoothing_sigma=4.0-*.csv"))
    assert len(cached) == 1
    again = evaluate_settings(cfg, "dapo", run, **kwargs)
    assert len(seen) == 3, "a second run must read the cached evaluations"
    pd.testing.assert_frame_equal(table, again)


def test_the_notebook_parameters_validate_switches_and_epochs():
    from dapo.experiments.parameters import ParameterError, parameters_cell, validate

    assert validate("11_fidelity", {})["switches"] == [dict(s) for s in DEFAULT_SWITCHES]
    assert validate("11_fidelity", {"switches": [{"lam": 2.0}]})["switches"] == [{"lam": 2.0}]
    for bad, message in (({"lam": 2.0}, "expected a non-empty list of settings"),
                         ([{}], r"switches\[0\]=\{\}: expected a non-empty dict"),
                         ([{"seed": 1}], "not 'seed'"),
                         ([{"alpha0": 2.0}], r"switches\[0\].*alpha0"),
                         ([{"lam": 1.0}, {"no_such_field": 1}], r"switches\[1\].*no_such_field")):
        with pytest.raises(ParameterError, match=message):
            validate("11_fidelity", {"switches": bad})
    assert validate("12_diagnosis", {"eval_epochs": [5, 1, 2, 2]})["eval_epochs"] == [1, 2, 5]
    with pytest.raises(ParameterError, match="epochs >= 1"):
        validate("12_diagnosis", {"eval_epochs": [0, 2]})
    lines = parameters_cell("11_fidelity").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("switches = "))
    assert lines[at - 1].startswith("# settings, each trained"), "a long default carries its comment above"
    assert lines[1].index("#") == lines[2].index("#"), "short parameters stay aligned"
