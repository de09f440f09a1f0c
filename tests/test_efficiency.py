"""dapo.experiments.efficiency: the parameter counter, the cost tables' layout and ratios, the
method selection and the errors. No timing is asserted (timings depend on the machine)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from torch import nn

from dapo.experiments import efficiency as eff
from dapo.reference import paper_numbers


class Toy(nn.Module):
    """Linear(3, 4) with bias (16), a frozen Linear(4, 2) (10, not counted), and one 5x5 weight
    shared by two layers (25, counted once)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.frozen = nn.Linear(4, 2)
        self.frozen.requires_grad_(False)
        self.b = nn.Linear(5, 5, bias=False)
        self.c = nn.Linear(5, 5, bias=False)
        self.c.weight = self.b.weight


class ToyMethod(Toy):
    def learnable_parameters(self):
        return {"a.weight": self.a.weight}  # a method says what training updates (12)


def test_count_trainable_counts_what_training_updates():
    assert eff.count_trainable(Toy()) == 3 * 4 + 4 + 5 * 5
    assert eff.count_trainable(ToyMethod()) == 12


def test_count_of_a_registered_method_matches_its_learnable_parameters(tiny_backbone):
    from dapo.methods import make_model

    counts = eff.parameter_counts(tiny_backbone, ["anomalyclip", "clip_ac"]).set_index("method")
    model = make_model("anomalyclip", tiny_backbone)
    assert counts.loc["anomalyclip", "parameters"] == sum(p.numel() for p in model.learnable_parameters().values()) > 0
    assert counts.loc["clip_ac", "parameters"] == 0 and counts.loc["clip_ac", "training_free"]


def test_main_methods_drop_named_variants_only():
    names = ["dapo", "dapo_naive", "anomalyclip", "clip_ac", "multiads", "multiads_f", "vip2clip", "vip2clip_release"]
    assert eff.main_methods(names) == ["dapo", "anomalyclip", "clip_ac", "multiads", "vip2clip"]
    assert set(eff.main_methods()) <= set(__import__("dapo.methods", fromlist=["available"]).available())
    assert "anomalyclip" in eff.main_methods()


def test_unknown_method_is_refused_by_name(tiny_backbone):
    with pytest.raises(ValueError, match="anomalyclipp"):
        eff.parameter_counts(tiny_backbone, ["anomalyclipp"])
    with pytest.raises(ValueError, match="nosuchmethod"):
        eff.measure_methods(["anomalyclip", "nosuchmethod"], {}, ("hole",), "p", isolate=True)


def test_setup_refuses_bad_sizes():
    with pytest.raises(ValueError, match="repeats"):
        eff.Setup(repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        eff.Setup(warmup=-1)


def _measured() -> pd.DataFrame:
    """Made-up measurements (not timings of anything)."""
    return pd.DataFrame({
        "method": ["anomalyclip", "aprilgan", "faprompt", "dapo", "winclip"],
        "label": ["AnomalyCLIP", "AprilGAN", "FAPrompt", "DAPO", "WinCLIP"],
        "parameters": [1000, 500, 2000, 800, 0],
        "train_ms_per_batch": [200.0, 100.0, 300.0, 250.0, float("nan")],
        "train_ms_per_batch_pm": [1.0, 1.0, 1.0, 1.0, float("nan")],
        "inference_ms_per_image": [10.0, 5.0, 20.0, 12.5, 40.0],
        "inference_ms_per_image_pm": [0.1, 0.1, 0.1, 0.1, 0.1],
        "train_peak_gb": [2.0, 1.0, 1.5, 3.0, float("nan")],
        "recipe_epochs": [15, 5, 7, 5, 5],
    })


def test_ratios_to_anomalyclip_are_exact():
    out = eff.with_ratios(_measured()).set_index("method")
    assert out.loc["aprilgan", "parameters_ratio"] == 0.5
    assert out.loc["faprompt", "train_ms_per_batch_ratio"] == 1.5
    assert out.loc["dapo", "inference_ms_per_image_ratio"] == 1.25
    assert out.loc["anomalyclip", "train_peak_gb_ratio"] == 1.0
    assert math.isnan(out.loc["winclip", "train_ms_per_batch_ratio"])
    with pytest.raises(ValueError, match="anomalyclip"):
        eff.with_ratios(_measured().iloc[1:])


def test_faprompt_layout_sets_measured_and_paper_ratios_side_by_side():
    layout = eff.paper_layout(_measured(), eff.FAPROMPT_TABLE)
    printed = list(dict.fromkeys(paper_numbers(eff.FAPROMPT_TABLE)["method"]))
    assert list(layout.index) == printed + ["DAPO"]  # the paper's rows in order, then ours it lacks
    train = "Training Time (ms / batch of 8)"
    assert layout.loc["APRIL-GAN", (train, "measured")] == 100.0  # AprilGAN matched to APRIL-GAN
    assert layout.loc["APRIL-GAN", (train, "measured ratio")] == 0.5
    assert layout.loc["APRIL-GAN", (train, "paper")] == 368.7
    assert layout.loc["APRIL-GAN", (train, "paper ratio")] == 368.7 / 914.1
    assert layout.loc["FAPrompt", ("Number of Para.", "paper ratio")] == 9612256 / 5555200
    assert layout.loc["DAPO", ("Inference Time (ms / image)", "measured ratio")] == 1.25
    assert pd.isna(layout.loc["DAPO", (train, "paper")]) and pd.isna(layout.loc["CoOp", (train, "measured")])
    assert layout.loc["WinCLIP", ("Number of Para.", "measured ratio")] == 0.0
    assert layout.attrs["methods"]["APRIL-GAN"] == "aprilgan"


def test_vip2_layout_scales_parameters_and_compares_training_as_batch_time_times_epochs():
    layout = eff.paper_layout(_measured(), eff.VIP2_TABLE)
    assert layout.loc["FAPrompt", ("Trainable Parameters (M)", "measured")] == 2000 * 1e-6
    assert layout.loc["FAPrompt", ("Trainable Parameters (M)", "measured ratio")] == 2.0
    assert layout.loc["FAPrompt", (eff.LAYOUTS[eff.VIP2_TABLE][0][0], "measured ratio")] == (300.0 * 7) / (200.0 * 15)
    assert layout.loc["FAPrompt", (eff.LAYOUTS[eff.VIP2_TABLE][0][0], "paper ratio")] == 5.62 / 1.02
    assert layout.loc["FAPrompt", ("GPU Cost (GB)", "measured ratio")] == 0.75
    assert list(layout.index[:5]) == ["AnomalyCLIP", "AdaCLIP", "AA-CLIP", "FAPrompt", "ViP²-CLIP"]
    with pytest.raises(ValueError, match="Table 9"):
        eff.paper_layout(_measured(), "FAPrompt Table 9")


def test_sentences_come_from_the_layout():
    measured = _measured()
    layout = eff.paper_layout(measured, eff.FAPROMPT_TABLE)
    lines = eff.ratio_lines(layout, measured)
    train = next(line for line in lines if line.startswith("Training Time"))
    assert "APRIL-GAN 0.50 (paper 0.40)" in train and "FAPrompt 1.50 (paper 1.48)" in train
    assert "clearly (> 2 std of the repetitions) on the same side of 1 as the paper for 2 of the 2" in train
    params = next(line for line in lines if line.startswith("Number of Para."))
    assert "on the same side of 1 as the paper for 3 of the 3 other methods" in params  # WinCLIP, APRIL-GAN, FAPrompt
    noisy = measured.assign(train_ms_per_batch_pm=[1.0, 80.0, 1.0, 1.0, float("nan")])  # APRIL-GAN's 100 ± 80
    train = next(line for line in eff.ratio_lines(layout, noisy) if line.startswith("Training Time"))
    assert "for 1 of the 2 other methods" in train
    single = measured.assign(train_ms_per_batch_pm=float("nan"))  # one repetition: no spread
    train = next(line for line in eff.ratio_lines(layout, single) if line.startswith("Training Time"))
    assert train.endswith("; 2 not judged (one repetition)")
    check = eff.parameter_check(measured[["method", "label", "parameters"]])
    assert check.set_index("method").loc["faprompt", eff.FAPROMPT_TABLE] == 9612256
    assert check.set_index("method").loc["faprompt", eff.VIP2_TABLE] == pytest.approx(9.61e6)
    text = eff.parameter_lines(check)
    assert text[0].startswith("AnomalyCLIP: 1,000 trainable parameters; FAPrompt Table 3: 5,555,200")
    assert "no paper count" in next(line for line in text if line.startswith("DAPO"))


def test_name_keys_match_printed_and_registry_names():
    assert eff.name_key("APRIL-GAN") == eff.name_key("AprilGAN") == eff.name_key("aprilgan")
    assert eff.name_key("ViP²-CLIP") == eff.name_key("vip2clip") and eff.name_key("AA-CLIP") == "aaclip"


def test_views_format_the_numbers_as_printed():
    measured = _measured().assign(train_added_gb=0.5, inference_peak_gb=1.25)
    view = eff.measured_view(measured)
    assert view.loc["FAPrompt", "train ms / batch"] == "300.0 ± 1.0"
    assert view.loc["WinCLIP", "train ms / batch"] == "" and view.loc["AprilGAN", "params ×AnomalyCLIP"] == "0.50"
    layout = eff.layout_view(eff.paper_layout(measured, eff.FAPROMPT_TABLE))
    assert layout.loc["FAPrompt", ("Number of Para.", "paper")] == "9,612,256"
    check = eff.parameter_view(eff.parameter_check(measured[["method", "label", "parameters"]]))
    assert check.loc["AnomalyCLIP", eff.FAPROMPT_TABLE] == "5,555,200"
    assert check.loc["AnomalyCLIP", f"ratio to {eff.FAPROMPT_TABLE}"] == f"{1000 / 5555200:.3f}"
    assert check.loc["DAPO", eff.VIP2_TABLE] == ""


def test_one_measurement_fills_every_column_on_the_tiny_backbone(tiny_backbone):
    """Plumbing only (what is measured, not how long it took): a trainable and a training-free method."""
    setup = eff.Setup(batch_size=2, repeats=1, warmup=0)
    trained = eff.measure_method("anomalyclip", tiny_backbone, ("hole", "scratch"), "part", setup)
    assert set(eff.MEASURED) <= set(trained) and trained["parameters"] > 0 and trained["recipe_epochs"] == 15
    assert trained["train_ms_per_batch"] > 0 and math.isnan(trained["train_ms_per_batch_pm"])  # one repeat: no std
    free = eff.measure_method("clip_ac", tiny_backbone, ("hole", "scratch"), "part", setup)
    assert free["parameters"] == 0 and math.isnan(free["train_ms_per_batch"]) and free["inference_ms_per_image"] > 0
    assert free["batch_size"] == 2 and free["device"].startswith("CPU (")
