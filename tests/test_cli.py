"""The `dapo` command line: predict / train / evaluate outputs, and every bad input as a one-line error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score
from test_cli_folder import write_folder

import dapo.cli.common as common
import dapo.data.images as image_module
from dapo.cli import build_parser, main
from dapo.cli.outputs import palette
from dapo.cli.predict import collect_images, output_names
from dapo.data import read_rgb
from dapo.data.folder import FolderDataset
from dapo.data.images import clip_tensor
from dapo.engine.checkpoint import load_trained, read_metadata
from dapo.engine.inference import Predictor
from dapo.engine.train import train
from dapo.methods import make_model, preset

REPO = Path(__file__).resolve().parents[1]
DEFECTS = ("scratch", "rust")


def dapo(capsys, *args) -> tuple[int, str]:
    """Run ``dapo args`` in this process; exit status and stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    """The one error line of a refused command (and check that it is one line)."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def fresh_conversion_notes(monkeypatch):
    monkeypatch.setattr(image_module, "_STATED", set())


@pytest.fixture(scope="module")
def trained(tiny_backbone, tiny_image_size, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny folder dataset and a DAPO run trained on it for one epoch with the tiny backbone
    (the recipe `dapo train --epochs 1` uses): (dataset root, run folder)."""
    root = tmp_path_factory.mktemp("train") / "widget"
    write_folder(root, {"good": 2, "scratch": 2, "rust": 2}, shape=(32, 32))
    dataset = FolderDataset(root, image_size=tiny_image_size, vocab_scope="dataset", mean=tiny_backbone.mean,
                            std=tiny_backbone.std)
    run = tmp_path_factory.mktemp("run")
    train(make_model("dapo", tiny_backbone), dataset, run, preset("dapo").training, epochs=1, device="cpu",
          progress=False)
    return root, run


@pytest.fixture
def checkpoint(trained) -> Path:
    return trained[1] / "epoch_001.safetensors"


def images_folder(root: Path, shapes=((32, 32), (32, 32), (40, 48))) -> list[Path]:
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, shape in enumerate(shapes):
        paths.append(root / f"part{i}.png")
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(paths[-1])
    return paths


# ----------------------------------------------------------------------------- predict


def test_predict_writes_maps_masks_overlays_and_the_table_of_the_predictor(capsys, tmp_path, checkpoint,
                                                                             tiny_backbone, tiny_image_size):
    paths = images_folder(tmp_path / "photos")
    code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", ",".join(DEFECTS), "--checkpoint",
                     checkpoint, "--out", tmp_path / "out", "--no-progress", "--batch-size", 2)
    assert code == 0, err
    out = tmp_path / "out"
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table.columns) == ["path", "image_score", "prob_scratch", "prob_rust", "predicted_types",
                                   "area_scratch", "area_rust", "anomaly_map", "type_mask", "overlay"]
    assert list(table["path"]) == [str(p) for p in paths]

    model = load_trained(checkpoint, tiny_backbone)  # the reference: the package's own predictor
    predictor = Predictor(model, DEFECTS)
    inputs = torch.stack([clip_tensor(read_rgb(p), tiny_image_size, tiny_backbone.mean, tiny_backbone.std)
                          for p in paths])
    pred = predictor(inputs)
    np.testing.assert_allclose(table["image_score"], pred.image_score.numpy(), rtol=1e-5)
    np.testing.assert_allclose(table[["prob_scratch", "prob_rust"]], pred.defect_probs.numpy(), rtol=1e-5)
    expected_types = [";".join(d for d, p in zip(DEFECTS, row) if p > 0.5) for row in pred.defect_probs.numpy()]
    assert list(table["predicted_types"]) == expected_types

    legend = pd.read_csv(out / "legend.csv")
    assert list(legend["name"]) == ["normal", *DEFECTS]
    for i, path in enumerate(paths):
        row = table.iloc[i]
        types = Image.open(out / row["type_mask"])
        anomaly = Image.open(out / row["anomaly_map"])
        overlay = Image.open(out / row["overlay"])
        assert types.mode == "P" and anomaly.mode == "L" and overlay.mode == "RGB"
        assert types.size == anomaly.size == overlay.size == Image.open(path).size
        assert json.loads(types.info["dapo:legend"]) == ["normal", *DEFECTS]
        assert types.getpalette()[:9] == [v for colour in palette(2) for v in colour]
        ids = np.asarray(types)
        np.testing.assert_allclose([row["area_scratch"], row["area_rust"]],
                                   [(ids == 1).mean(), (ids == 2).mean()], rtol=1e-5)
        if ids.shape == (tiny_image_size, tiny_image_size):  # written at the model's size: exact
            np.testing.assert_array_equal(ids, pred.type_mask[i].numpy())
            np.testing.assert_array_equal(np.asarray(anomaly),
                                          np.rint(pred.anomaly_map[i].clamp(0, 1).numpy() * 255).astype(np.uint8))
    assert "3 prediction(s)" in err and "images/s" in err


def test_unreadable_and_empty_images_are_reported_skipped_and_exit_non_zero(capsys, tmp_path, checkpoint):
    paths = images_folder(tmp_path / "photos")
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "photos" / "empty.jpg").write_bytes(b"")
    code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", checkpoint,
                     "--out", tmp_path / "out", "--no-progress")
    assert code == 1
    for bad in ("broken.png", "empty.jpg"):
        assert any(f"skipped {tmp_path / 'photos' / bad}" in line for line in err.splitlines()), err
    assert "2 of 5 image(s) could not be read" in error_line(err)
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(table["path"]) == [str(p) for p in paths]  # the readable ones, all written
    assert all((tmp_path / "out" / f"part{i}_overlay.png").is_file() for i in range(3))
    assert not list((tmp_path / "out").glob("broken*")) and not list((tmp_path / "out").glob("empty*"))


def test_grey_rgba_and_16_bit_images_are_converted_and_said_once(capsys, tmp_path, checkpoint):
    folder = tmp_path / "mixed"
    folder.mkdir()
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    for i in range(2):
        Image.fromarray(np.full((32, 32), 90 + i, np.uint8)).save(folder / f"grey{i}.png")
        Image.new("RGBA", (32, 32), (10, 200, 30, 128 + i)).save(folder / f"alpha{i}.png")
        Image.fromarray(ramp).save(folder / f"deep{i}.png")
    assert Image.open(folder / "deep0.png").mode == "I;16"
    code, err = dapo(capsys, "predict", folder, "--defects", "scratch", "--checkpoint", checkpoint, "--out",
                     tmp_path / "out", "--no-progress")
    assert code == 0, err
    warnings_ = [line for line in err.splitlines() if line.startswith("dapo: warning:") and "images" in line]
    assert len(warnings_) == 2, err  # RGBA once, 16-bit once; grey is exact and silent
    assert any("RGBA" in w and "alpha0.png" in w for w in warnings_)
    assert any("16-bit" in w and "deep0.png" in w for w in warnings_)
    assert len(pd.read_csv(tmp_path / "out" / "predictions.csv")) == 6


def test_an_interrupted_run_leaves_no_half_written_table(capsys, tmp_path, checkpoint, monkeypatch):
    images_folder(tmp_path / "photos")
    args = ("predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", checkpoint, "--out",
            tmp_path / "out", "--no-progress")
    assert dapo(capsys, *args)[0] == 0
    before = (tmp_path / "out" / "predictions.csv").read_bytes()
    original = pd.DataFrame.to_csv

    def interrupted(frame, path, *a, **k):
        Path(path).write_text("path,image_score\nhalf")  # part of the table reached the disk, then ^C
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    code, err = dapo(capsys, *args)
    monkeypatch.setattr(pd.DataFrame, "to_csv", original)
    assert code == 130 and "interrupted" in err
    assert (tmp_path / "out" / "predictions.csv").read_bytes() == before
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".partial")]


@pytest.mark.parametrize("defects, message", [
    ("scratch,,rust", r"--defects: --defects entry 1 is '': an empty"),
    ("scratch,rust, Scratch", r"--defects: .*entry 2 \('Scratch'\) is the same defect .* entry 0 \('scratch'\)"),
    ("hole,hole", r"--defects: .*entry 1 \('hole'\) repeats entry 0"),
    ("normal,hole", r"--defects: .*cannot be called 'normal'"),
    ("hole," + "very " * 80 + "long", r"--defects: the prompt of .* needs \d+ tokens but the text tower holds"),
])
def test_bad_defect_lists_are_one_line_errors(capsys, tmp_path, checkpoint, defects, message):
    images_folder(tmp_path / "photos")
    code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", defects, "--checkpoint", checkpoint,
                     "--out", tmp_path / "out")
    assert code == 2
    assert re.search(message, error_line(err)), err
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_missing_inputs_and_empty_folders_are_one_line_errors(capsys, tmp_path, checkpoint):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    code, err = dapo(capsys, "predict", tmp_path / "empty", "--defects", "scratch", "--checkpoint", checkpoint,
                     "--out", tmp_path / "out")
    assert code == 2 and f"IMAGES {tmp_path / 'empty'}: the folder holds no images" in error_line(err)
    code, err = dapo(capsys, "predict", tmp_path / "nowhere.png", "--defects", "scratch", "--checkpoint",
                     checkpoint, "--out", tmp_path / "out")
    assert code == 2 and f"IMAGES {tmp_path / 'nowhere.png'}: no such file or folder" in error_line(err)


def test_an_output_folder_that_cannot_be_written_is_a_one_line_error(capsys, tmp_path, checkpoint):
    images_folder(tmp_path / "photos")
    (tmp_path / "taken").write_text("a file, not a folder")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", checkpoint,
                         "--out", out)
        assert code == 2 and f"--out {out}: the output folder cannot be written" in error_line(err)
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", checkpoint,
                         "--out", locked)
        assert code == 2 and "cannot be written" in error_line(err)


def test_truncated_foreign_and_missing_checkpoints_are_one_line_errors(capsys, tmp_path, checkpoint, monkeypatch):
    images_folder(tmp_path / "photos")
    run = ("predict", tmp_path / "photos", "--defects", "scratch", "--out", tmp_path / "out")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    code, err = dapo(capsys, *run, "--checkpoint", truncated)
    assert code == 2 and f"--checkpoint {truncated}: cannot read checkpoint {truncated}" in error_line(err)
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    code, err = dapo(capsys, *run, "--checkpoint", foreign)
    assert code == 2 and f"{foreign} is not a DAPO checkpoint" in error_line(err)
    monkeypatch.setattr(common, "DEFAULT_CHECKPOINT", tmp_path / "not_yet" / "epoch_002.safetensors")
    code, err = dapo(capsys, *run)
    assert code == 2 and "--checkpoint: the default checkpoint" in error_line(err) and "not_yet" in err


def test_a_checkpoint_of_another_backbone_is_a_one_line_error(capsys, tmp_path, checkpoint):
    images_folder(tmp_path / "photos")
    code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", checkpoint,
                     "--out", tmp_path / "out", "--backbone", "dapo-compact", "--pretrained", "none")
    line = error_line(err)
    assert code == 2 and f"{checkpoint} was trained on backbone" in line and "differs in" in line
    assert "dapo-test-tiny" in line and "dapo-compact" in line


def test_a_checkpoint_trained_on_other_weights_is_refused(capsys, tmp_path, checkpoint, tiny_backbone):
    images_folder(tmp_path / "photos")
    weights = tmp_path / "other.pt"
    torch.save(tiny_backbone.clip.state_dict(), weights)  # same architecture, a weights file of its own
    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    described = json.loads(metadata["backbone"])
    metadata["backbone"] = json.dumps({**described, "weights_sha256": "0123456789abcdef"})
    other = tmp_path / "other_weights.safetensors"
    save_file(tensors, str(other), metadata=metadata)
    code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", other,
                     "--out", tmp_path / "out", "--pretrained", weights)
    assert code == 2 and "was trained on other weights of dapo-test-tiny" in error_line(err)


def test_a_checkpoint_whose_tensors_do_not_fit_its_configuration_is_refused(capsys, tmp_path, checkpoint):
    images_folder(tmp_path / "photos")
    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    config = json.loads(metadata["config"])
    metadata["config"] = json.dumps({**config, "n_ctx": config["n_ctx"] + 1})  # another configuration's file
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata=metadata)
    code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", edited,
                     "--out", tmp_path / "out")
    assert code == 2 and re.search(rf"--checkpoint: {re.escape(str(edited))}: \S+ has shape", error_line(err)), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_a_one_line_error(capsys, tmp_path, checkpoint):
    images_folder(tmp_path / "photos")
    code, err = dapo(capsys, "predict", tmp_path / "photos", "--defects", "scratch", "--checkpoint", checkpoint,
                     "--out", tmp_path / "out", "--device", "cuda")
    assert code == 2 and "--device: device='cuda': no CUDA GPU" in error_line(err)


def test_inputs_are_collected_once_and_named_after_their_folders(tmp_path):
    for name in ("a/x.png", "a/x.jpg", "a/deep/y.png", "b/x.png", "a/out/old.png", "a/.hidden.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    found = collect_images([tmp_path / "a", tmp_path / "b" / "x.png", tmp_path / "a" / "x.png"], tmp_path / "a" / "out")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/deep/y.png", "a/x.jpg", "a/x.png", "b/x.png"]
    assert output_names(found) == ["a/deep/y", "a/x_jpg", "a/x_png", "b/x"]
    assert output_names([tmp_path / "a" / "x.png"]) == ["x"]


def test_the_palette_gives_distinct_colours_up_to_the_png_limit():
    colours = palette(255)
    assert colours[0] == (0, 0, 0) and len(set(colours)) == 256
    with pytest.raises(ValueError, match="at most 255"):
        palette(256)


# ----------------------------------------------------------------------------- train


TINY_BACKBONE = ("--backbone", "dapo-test-tiny", "--pretrained", "none", "--image-size", "32")


def test_train_on_a_folder_writes_a_checkpoint_predict_can_use(capsys, tmp_path, tiny_model_name):
    write_folder(tmp_path / "parts", {"good": 2, "scratch": 2, "dent": 2}, shape=(32, 32))
    code, err = dapo(capsys, "train", "--dataset", "folder", "--root", tmp_path / "parts", "--epochs", 1,
                     "--out", tmp_path / "run", "--no-progress", *TINY_BACKBONE)
    assert code == 0, err
    final = tmp_path / "run" / "epoch_001.safetensors"
    meta = read_metadata(final)
    assert meta["vocabulary"] == ["dent", "scratch"] and meta["epoch"] == 1 and meta["config"].name == "DAPO"
    assert meta["backbone"]["model_name"] == "dapo-test-tiny" and meta["training"].epochs == 1
    assert len(pd.read_csv(tmp_path / "run" / "loss_history.csv")) == 1  # 6 images, batch 8
    code, err = dapo(capsys, "predict", tmp_path / "parts" / "dent", "--defects", "dent,scratch,crack",
                     "--checkpoint", final, "--out", tmp_path / "pred", "--no-progress")
    assert code == 0, err
    assert list(pd.read_csv(tmp_path / "pred" / "predictions.csv").columns[2:5]) == ["prob_dent", "prob_scratch",
                                                                                      "prob_crack"]


def test_train_resumes_its_own_run_and_never_overwrites_another_configuration(capsys, tmp_path, trained):
    root, run_dir = trained
    shutil.copytree(run_dir, tmp_path / "run")
    run = ("train", "--dataset", "folder", "--root", root, "--epochs", 1, "--out", tmp_path / "run", "--no-progress",
           *TINY_BACKBONE)
    before = (tmp_path / "run" / "epoch_001.safetensors").read_bytes()
    code, err = dapo(capsys, *run)  # the same configuration, already trained: loaded, not retrained
    assert code == 0 and (tmp_path / "run" / "epoch_001.safetensors").read_bytes() == before, err
    code, err = dapo(capsys, *run, "--seed", 1)
    line = error_line(err)
    assert code == 2 and f"--out: {tmp_path / 'run'} holds checkpoints of another configuration" in line
    assert "seed: saved 0, requested 1" in line and "never overwritten: train into another folder (--out)" in line
    assert (tmp_path / "run" / "epoch_001.safetensors").read_bytes() == before
    elsewhere = [str(tmp_path / "seed1") if str(a) == str(tmp_path / "run") else a for a in run]
    assert dapo(capsys, *elsewhere, "--seed", 1)[0] == 0
    assert read_metadata(tmp_path / "seed1" / "epoch_001.safetensors")["config"].seed == 1
    assert (tmp_path / "run" / "epoch_001.safetensors").read_bytes() == before


def test_train_refuses_a_folder_without_masks_and_training_free_methods(capsys, tmp_path, tiny_model_name):
    write_folder(tmp_path / "parts", {"good": 1, "scratch": 1}, masks=False)
    code, err = dapo(capsys, "train", "--dataset", "folder", "--root", tmp_path / "parts", "--out", tmp_path / "run",
                     *TINY_BACKBONE)
    assert code == 2 and "training needs pixel masks" in error_line(err) and "no masks/ folder" in err
    code, err = dapo(capsys, "train", "--dataset", "folder", "--root", tmp_path / "parts", "--out", tmp_path / "run",
                     "--method", "clip_ac", *TINY_BACKBONE)
    assert code == 2 and "--method clip_ac: a training-free method" in error_line(err)
    assert not list((tmp_path / "run").glob("*.safetensors"))


def test_unknown_datasets_and_missing_roots_are_one_line_errors(capsys, tmp_path, tiny_model_name):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--dataset", "mvtech", "--root", str(tmp_path), "--out", str(tmp_path / "run")])
    line = error_line(capsys.readouterr().err)
    assert stop.value.code == 2 and "argument --dataset: unknown dataset 'mvtech'; did you mean 'mvtec'?" in line
    for dataset in ("folder", "mvtec"):
        code, err = dapo(capsys, "train", "--dataset", dataset, "--root", tmp_path / "nowhere", "--out",
                         tmp_path / "run", *TINY_BACKBONE)
        assert code == 2 and f"--root {tmp_path / 'nowhere'}:" in error_line(err) and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, err = dapo(capsys, "train", "--dataset", "folder", "--root", tmp_path / "empty", "--out", tmp_path / "run",
                     *TINY_BACKBONE)
    assert code == 2 and "holds no good/ or defect folder" in error_line(err)


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_writes_binary_and_multitype_tables_of_the_predictor(capsys, tmp_path, checkpoint, tiny_backbone,
                                                                      tiny_image_size):
    root = tmp_path / "widget"
    write_folder(root, {"good": 3, "scratch": 2, "rust": 2}, shape=(32, 32), seed=5)
    code, err = dapo(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "folder", "--root", root,
                     "--out", tmp_path / "eval", "--no-progress")
    assert code == 0, err
    binary = pd.read_csv(tmp_path / "eval" / "binary_folder.csv", index_col="product")
    assert list(binary.index) == ["widget", "mean"] and binary.loc["widget", "backbone"] == "dapo-test-tiny/None"
    dataset = FolderDataset(root, image_size=tiny_image_size, mean=tiny_backbone.mean, std=tiny_backbone.std)
    predictor = Predictor(load_trained(checkpoint, tiny_backbone), dataset.vocabulary("widget"))
    samples = [dataset[i] for i in range(len(dataset))]
    scores = predictor(torch.stack([s["image"] for s in samples])).image_score.numpy()
    expected = 100 * roc_auc_score([s["label"] for s in samples], scores)
    assert binary.loc["widget", "image_auroc"] == pytest.approx(expected, rel=1e-5)
    assert not binary.loc["widget", ["pixel_auroc", "pixel_aupro"]].isna().any()
    multitype = pd.read_csv(tmp_path / "eval" / "multitype_folder.csv")
    assert list(multitype["product"]) == ["widget", "mean"] and "pixel_auroc / mean" in multitype.columns
    per_defect = pd.read_csv(tmp_path / "eval" / "per_defect_folder.csv")
    assert set(per_defect["defect"]) == {"normal", "rust", "scratch"}  # both trained: no "*"
    assert (tmp_path / "eval" / "binary_folder.md").read_text().startswith("**Binary detection")


def test_evaluate_without_masks_reports_image_level_metrics_only(capsys, tmp_path, checkpoint):
    write_folder(tmp_path / "widget", {"good": 2, "dent": 2}, masks=False, shape=(32, 32))
    code, err = dapo(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "folder", "--root",
                     tmp_path / "widget", "--out", tmp_path / "eval", "--no-progress")
    assert code == 0, err
    binary = pd.read_csv(tmp_path / "eval" / "binary_folder.csv")
    assert [c for c in binary.columns if c.startswith(("image", "pixel"))] == ["image_auroc", "image_ap",
                                                                              "image_f1_max"]
    assert not (tmp_path / "eval" / "multitype_folder.csv").exists()
    assert "no masks/ folder" in err and "anomalous pixels" not in err  # undefined pixel metrics: not reported


def test_a_training_free_method_is_evaluated_and_predicted_without_a_checkpoint(capsys, tmp_path, tiny_backbone,
                                                                                tiny_image_size, tiny_model_name):
    root = tmp_path / "widget"
    write_folder(root, {"good": 3, "scratch": 2, "rust": 2}, shape=(32, 32), seed=5)
    code, err = dapo(capsys, "evaluate", "--method", "winclip", "--dataset", "folder", "--root", root,
                     "--out", tmp_path / "eval", "--no-progress", *TINY_BACKBONE)
    assert code == 0, err
    assert "WinCLIP from winclip (training-free)" in err
    binary = pd.read_csv(tmp_path / "eval" / "binary_folder.csv", index_col="product")
    dataset = FolderDataset(root, image_size=tiny_image_size, mean=tiny_backbone.mean, std=tiny_backbone.std)
    predictor = Predictor(make_model("winclip", tiny_backbone), dataset.vocabulary("widget"), product="widget")
    samples = [dataset[i] for i in range(len(dataset))]
    scores = predictor(torch.stack([s["image"] for s in samples])).image_score.numpy()
    expected = 100 * roc_auc_score([s["label"] for s in samples], scores)
    assert binary.loc["widget", "image_auroc"] == pytest.approx(expected, rel=1e-5)
    code, err = dapo(capsys, "predict", root / "scratch", "--defects", "scratch,rust", "--method", "clip_ac",
                     "--out", tmp_path / "pred", "--no-progress", *TINY_BACKBONE)
    assert code == 0 and len(pd.read_csv(tmp_path / "pred" / "predictions.csv")) == 2, err


def test_method_and_checkpoint_must_agree_and_trained_methods_need_one(capsys, tmp_path, checkpoint):
    common = ("--dataset", "folder", "--root", tmp_path, "--out", tmp_path / "eval", "--no-progress")
    code, err = dapo(capsys, "evaluate", "--method", "aprilgan", *common, *TINY_BACKBONE)
    assert code == 2 and "--method aprilgan is trained: pass its --checkpoint" in error_line(err)
    code, err = dapo(capsys, "evaluate", "--method", "multiads", "--checkpoint", checkpoint, *common)
    assert code == 2 and "holds 'DAPO', not --method multiads ('MultiADS')" in error_line(err)
    code, err = dapo(capsys, "evaluate", "--method", "winclipp", *common, *TINY_BACKBONE)
    assert code == 2 and "unknown method 'winclipp'; did you mean 'winclip'?" in error_line(err)


def test_set_takes_the_fields_of_the_chosen_method(capsys, tmp_path, tiny_model_name):
    write_folder(tmp_path / "parts", {"good": 2, "scratch": 2}, shape=(32, 32))
    run = ("train", "--dataset", "folder", "--root", tmp_path / "parts", "--out", tmp_path / "run", "--epochs", 1,
           "--no-progress", *TINY_BACKBONE)
    code, err = dapo(capsys, *run, "--method", "cocoop", "--set", "aggregation=attention")
    assert code == 2 and "not a field of CoCoOpConfig" in error_line(err)  # a DAPOConfig field, not CoCoOp's
    code, err = dapo(capsys, *run, "--method", "cocoop", "--set", "meta_reduction=8")
    assert code == 0, err
    assert read_metadata(tmp_path / "run" / "epoch_001.safetensors")["config"].meta_reduction == 8


# ----------------------------------------------------------------------------- entry points and help


def test_every_option_of_every_command_is_in_its_help_with_its_default():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"predict", "train", "evaluate"}
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, (name, option)
            if action.option_strings and action.default not in (None, False, "==SUPPRESS==") and action.help:
                shown = " ".join(sub._get_formatter()._expand_help(action).split())
                assert "default" in shown and str(action.default) in shown, (name, action.dest, shown)


def test_python_m_dapo_and_the_console_script_reach_the_command_line(tmp_path):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["dapo"].split(":")
    assert (module, function) == ("dapo.cli", "console") and callable(getattr(sys.modules[module], function))
    done = subprocess.run([sys.executable, "-m", "dapo", "predict", str(tmp_path), "--defects", "x"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "holds no images" in done.stderr
