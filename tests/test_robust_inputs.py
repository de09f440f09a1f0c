"""Bad inputs that used to pass in silence (issue 31): annotation headers, misspelt dataset names,
user values of the public entry points. Each error names the file or parameter and the way out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dapo.data import LayoutImage, load_knowledge, open_dataset, write_tree
from dapo.data.annotations import AnnotationFormatError
from dapo.experiments.parameters import ParameterError, validate
from dapo.experiments.profiles import ProfileError, resolve_profile

SIZE = 8


def _tree(layout: str, root: Path, product: str, labels: tuple[str, ...]) -> Path:
    image = np.full((16, 16, 3), 100, np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[:8] = True
    items = [LayoutImage(product, "train", (), image, None), LayoutImage(product, "test", (), image, None),
             LayoutImage(product, "test", labels, image, {label: mask for label in labels})]
    return write_tree(layout, root, items)


# ----------------------------------------------------------------------------- annotation files


def test_visa_split_csv_with_another_header_names_the_file_and_the_columns(tmp_path):
    root = _tree("visa", tmp_path, "pcb1", ("melt",))
    split = root / "split_csv/1cls.csv"
    split.write_text(split.read_text().replace("object,split,label,image,mask", "obj,set,lab,img,msk", 1))
    with pytest.raises(AnnotationFormatError) as error:
        open_dataset("visa", root, image_size=SIZE)
    message = str(error.value)
    assert str(split) in message and "expected the columns object,split,label,image,mask" in message
    assert "found obj,set,lab,img,msk" in message


def test_visa_split_csv_with_a_byte_order_mark_is_read(tmp_path):
    root = _tree("visa", tmp_path, "pcb1", ("melt",))
    split = root / "split_csv/1cls.csv"
    split.write_text("\ufeff" + split.read_text(), encoding="utf-8")  # as a spreadsheet program saves it
    assert len(open_dataset("visa", root, image_size=SIZE)) == 2


@pytest.mark.parametrize("column, value", [("split", "val"), ("label", "Anomalous")])
def test_visa_split_values_outside_the_release_are_named(tmp_path, column, value):
    root = _tree("visa", tmp_path, "pcb1", ("melt",))
    split = root / "split_csv/1cls.csv"
    old = {"split": ",test,anomaly,", "label": ",test,anomaly,"}[column]
    new = {"split": f",{value},anomaly,", "label": f",test,{value},"}[column]
    split.write_text(split.read_text().replace(old, new))
    with pytest.raises(AnnotationFormatError, match=rf"1cls\.csv, line \d: {column}='{value}'; expected one of"):
        open_dataset("visa", root, image_size=SIZE)


def test_visa_image_anno_with_another_header_and_an_empty_split_file(tmp_path):
    root = _tree("visa", tmp_path, "pcb1", ("melt",))
    anno = root / "pcb1/image_anno.csv"
    anno.write_text(anno.read_text().replace("image,label,mask", "path,defect,mask", 1))
    with pytest.raises(AnnotationFormatError, match=r"image_anno\.csv: the header lacks the column\(s\) image, "
                                                    r"label .*expected the columns image,label"):
        open_dataset("visa", root, image_size=SIZE)
    (root / "split_csv/1cls.csv").write_text("")
    with pytest.raises(AnnotationFormatError, match=r"1cls\.csv: .*found nothing \(an empty file\)"):
        open_dataset("visa", root, image_size=SIZE)


def test_real_iad_json_entries_without_the_keys_are_named(tmp_path):
    root = _tree("real_iad", tmp_path, "mint", ("YW",))
    path = root / "realiad_jsons/realiad_jsons_sv/mint.json"
    document = json.loads(path.read_text())
    del document["test"][0]["image_path"]
    path.write_text(json.dumps(document))
    with pytest.raises(AnnotationFormatError, match=r"mint\.json: test\[0\] lacks the key\(s\) image_path; "
                                                    r"expected the keys anomaly_class, image_path"):
        open_dataset("real_iad", root, image_size=SIZE)
    path.write_text(json.dumps({"meta": {}, "train": [], "test": {"a": 1}}))
    with pytest.raises(AnnotationFormatError, match=r"mint\.json: 'test' is a dict, expected a list"):
        open_dataset("real_iad", root, image_size=SIZE)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(AnnotationFormatError, match=r"mint\.json has no 'test' list"):
        open_dataset("real_iad", root, image_size=SIZE)
    path.write_text('{"test": [')
    with pytest.raises(AnnotationFormatError, match=r"cannot read Real-IAD annotation file .*mint\.json"):
        open_dataset("real_iad", root, image_size=SIZE)


# ----------------------------------------------------------------------------- dataset names


def test_a_misspelt_dataset_roots_key_is_named_with_the_known_ones(tmp_path):
    with pytest.raises(ProfileError) as error:
        resolve_profile("synthetic", data_root=tmp_path, dataset_roots={"synthetic_targt": tmp_path})
    message = str(error.value)
    assert "unknown dataset 'synthetic_targt'; did you mean 'synthetic_target'?" in message
    assert "known: synthetic_mpdd, synthetic_source, synthetic_target" in message
    with pytest.raises(ProfileError, match="unknown dataset 'vsia'; did you mean 'visa'"):
        resolve_profile("paper", data_root=tmp_path, dataset_roots={"vsia": tmp_path}, check=False)
    # a dataset outside the profile is fine when the run uses it
    cfg = resolve_profile("synthetic", data_root=tmp_path, dataset_roots={"visa": tmp_path}, target_datasets=["visa"])
    assert cfg.dataset_roots["visa"] == tmp_path and cfg.target_datasets == ("visa",)


def test_misspelt_train_and_target_datasets_are_named(tmp_path):
    with pytest.raises(ParameterError, match="train_dataset: unknown dataset 'synthetic_sorce'; did you mean "
                                             "'synthetic_source'"):
        resolve_profile("synthetic", data_root=tmp_path, train_dataset="synthetic_sorce")
    with pytest.raises(ParameterError, match=r"target_datasets\[1\]: unknown dataset 'MVTec'; did you mean 'mvtec'"):
        resolve_profile("paper", data_root=tmp_path, target_datasets=["visa", "MVTec"], check=False)
    with pytest.raises(ProfileError, match="target_datasets: unknown dataset 'visa'; known: synthetic_mpdd"):
        resolve_profile("synthetic", data_root=tmp_path, target_datasets=["visa"])  # known, but no folder


@pytest.mark.parametrize("name, value, message", [
    ("train_dataset", "mvtce", "train_dataset: unknown dataset 'mvtce'; did you mean 'mvtec'"),
    ("target_datasets", ["visa", "mpd"], r"target_datasets\[1\]: unknown dataset 'mpd'; did you mean 'mpdd'"),
    ("target_datasets", ["visa", "visa"], "a dataset is named twice"),
    ("dataset_roots", {"synthetic_targt": "/data"}, r"dataset_roots\['synthetic_targt'\]: unknown dataset"),
])
def test_notebook_parameters_refuse_unknown_dataset_names(name, value, message):
    with pytest.raises(ParameterError, match=message):
        validate("03_multitype", {name: value})


def test_load_knowledge_suggests_the_closest_name():
    with pytest.raises(FileNotFoundError, match="unknown dataset 'mad-sim'; did you mean 'mad_sim'"):
        load_knowledge("mad-sim")


def test_cli_dataset_argument_names_the_closest_known_name(capsys):
    from dapo.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--dataset", "VisA", "--root", "x", "--out", "y"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --dataset: unknown dataset 'VisA'; did you mean 'visa'?" in err and "folder" in err


# ----------------------------------------------------------------------------- user values


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=-1), "epochs=-1: must be >= 1"),
    (dict(epochs=2.5), "epochs=2.5: expected an integer"),
    (dict(image_size=0), "image_size=0: must be >= 1"),
    (dict(smoke="yes"), "smoke='yes': expected True or False"),
    (dict(target_datasets="visa"), "target_datasets='visa': expected a non-empty list of dataset names"),
    (dict(backbone=""), "backbone='': expected a non-empty string"),
    (dict(dataset_roots=["visa"]), r"dataset_roots=\['visa'\]: expected a dict"),
    (dict(data_root=3), "data_root=3: expected a path"),
])
def test_resolve_profile_refuses_bad_values_naming_the_parameter(tmp_path, kwargs, message):
    kwargs.setdefault("data_root", tmp_path)
    with pytest.raises(ParameterError, match=re.escape(message) if "\\" not in message else message):
        resolve_profile("synthetic", **kwargs)


# ----------------------------------------------------------------------------- soft masks


def _maps_and_masks(n: int = 4, size: int = 16):
    rng = np.random.default_rng(0)
    masks = np.zeros((n, size, size), bool)
    for index in range(1, n):
        masks[index, 4:4 + 2 * index, 3:9] = True
    maps = rng.random((n, size, size)).astype(np.float32) + masks
    return maps, masks


def test_soft_masks_below_one_half_are_refused_not_read_as_all_normal():
    from dapo.metrics import BinaryEvaluator, aupro, pixel_metrics

    maps, masks = _maps_and_masks()
    soft = np.where(masks, 0.4, 0.0).astype(np.float32)  # the case: every value below 0.5
    for function in (pixel_metrics, aupro):
        with pytest.raises(ValueError, match=r"masks are not binary: values \[0.4\] at index 1; .*mask_threshold"):
            function(maps, soft)
    with pytest.raises(ValueError, match=r"masks are not binary: values \[0.4\] for product 'a' at batch index 1"):
        BinaryEvaluator().add("a", maps.max(axis=(1, 2)), masks.any(axis=(1, 2)), maps, soft)


def test_a_chosen_threshold_reads_soft_masks_and_states_masks_left_empty():
    from dapo.metrics import MaskWarning, pixel_metrics

    maps, masks = _maps_and_masks()
    soft = np.where(masks, 0.4, 0.0).astype(np.float32)
    assert pixel_metrics(maps, soft, mask_threshold=0.2) == pixel_metrics(maps, masks)
    with pytest.warns(MaskWarning, match=r"masks at index 1 and 2 more hold nonzero values \(up to 0.4\) but none "
                                         r"above mask_threshold=0.5: these samples count as wholly normal"):
        pixel_metrics(maps, soft, mask_threshold=0.5)
    for bad in (float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="mask_threshold=.*expected None .*or a finite number"):
            pixel_metrics(maps, soft, mask_threshold=bad)


def test_labels_and_masks_that_disagree_are_stated_once_per_product():
    from dapo.metrics import BinaryEvaluator, MaskWarning

    maps, masks = _maps_and_masks()
    labels = masks.any(axis=(1, 2))
    empty = masks.copy()
    empty[2] = False  # labelled anomalous, mask empty (e.g. a mask drawn on another image)
    evaluator = BinaryEvaluator()
    with pytest.warns(MaskWarning, match=r"product 'pcb', batch index 2: an image labelled anomalous whose mask has "
                                         r"no anomalous pixel \(binary masks\)"):
        evaluator.add("pcb", maps.max(axis=(1, 2)), labels, maps, empty)
    wrong = labels.copy()
    wrong[3] = False
    with pytest.warns(MaskWarning, match=r"batch index 3: an image labelled normal whose mask marks 36 pixels"):
        evaluator.add("pcb", maps.max(axis=(1, 2)), wrong, maps, masks)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluator.add("pcb", maps.max(axis=(1, 2)), labels, maps, empty)  # stated already for this product
        BinaryEvaluator().add("pcb", maps.max(axis=(1, 2)), labels, maps, masks.astype(np.uint8) * 255)


# ----------------------------------------------------------------------------- other entry points


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=2.7), "image_size must be a positive integer, got 2.7"),
    (dict(image_size="32"), "image_size must be a positive integer, got '32'"),
    (dict(products="pcb1"), "products must be a list of product names .*got 'pcb1'"),
    (dict(exclude_multi_defect="no"), "exclude_multi_defect must be True or False, got 'no'"),
])
def test_open_dataset_refuses_values_it_would_have_bent(tmp_path, kwargs, message):
    root = _tree("visa", tmp_path, "pcb1", ("melt",))
    kwargs.setdefault("image_size", SIZE)
    with pytest.raises(ValueError, match=message):
        open_dataset("visa", root, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seeds=[]), r"seeds=\[\]: expected a non-empty list of integers >= 0"),
    (dict(seeds=[0, 0]), "seeds must be distinct"),
    (dict(eval_epochs=[0, 1]), r"eval_epochs=\[0, 1\]: expected a non-empty list of epochs >= 1"),
    (dict(epochs=0), "epochs=0: must be >= 1"),
    (dict(evaluate=lambda model: None), "evaluate=.*expected an Evaluation"),
    (dict(grid={"lam": []}), r"grid\['lam'\]=\[\]: expected a non-empty list of values"),
    (dict(grid={"lam": "1,4"}), r"grid\['lam'\]='1,4': expected a non-empty list"),
    (dict(grid="lam"), "grid='lam': expected a dict of field -> values or a list of dicts"),
])
def test_sweep_checks_its_arguments_before_any_work(kwargs, message):
    from dapo.experiments.sweep import Evaluation, sweep

    arguments = dict(grid={"lam": [1.0]}, seeds=[0], evaluate=Evaluation("x", lambda model: None))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sweep(None, "dapo", "unused", backbone=object(), progress=False, **arguments)


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_steps=-1), "PretrainConfig.image_steps=-1: expected an integer >= 0"),
    (dict(image_steps=0, text_steps=0), "nothing to train"),
    (dict(lr=0.0), "PretrainConfig.lr=0.0: expected a finite number > 0"),
    (dict(betas=(0.9, 1.5)), r"PretrainConfig.betas=\(0.9, 1.5\): expected two numbers in \[0, 1\)"),
    (dict(precision="fp16"), "PretrainConfig.precision='fp16': expected one of 'auto', 'fp32', 'bf16'"),
    (dict(text_batch=1), "PretrainConfig.text_batch=1: expected an integer >= 2"),
])
def test_pretraining_settings_are_checked_when_made(kwargs, message):
    from dapo.synthetic.pretrain_config import PretrainConfig

    with pytest.raises(ValueError, match=message):
        PretrainConfig(**kwargs)


def test_an_image_listed_twice_is_named_not_evaluated_twice(tmp_path):
    root = _tree("visa", tmp_path / "visa", "pcb1", ("melt",))
    split = root / "split_csv/1cls.csv"
    lines = split.read_text().splitlines()
    split.write_text("\n".join([*lines, lines[-1]]) + "\n")
    with pytest.raises(AnnotationFormatError, match=rf"1cls\.csv: image '.*' is listed twice \(lines {len(lines)} "
                                                    rf"and {len(lines) + 1}\)"):
        open_dataset("visa", root, image_size=SIZE)
    real = _tree("real_iad", tmp_path / "real", "mint", ("YW",))
    path = real / "realiad_jsons/realiad_jsons_sv/mint.json"
    document = json.loads(path.read_text())
    document["test"].append(document["test"][0])
    path.write_text(json.dumps(document))
    last = len(document["test"]) - 1
    with pytest.raises(AnnotationFormatError, match=rf"image_path '.*' is listed twice \(test\[0\] and test\[{last}\]\)"):
        open_dataset("real_iad", real, image_size=SIZE)


def test_a_misspelt_notebook_parameter_name_gets_the_closest_known_one():
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['epoch', 'zzz'\] for 03_multitype "
                                             r"\(did you mean 'epochs' for 'epoch'\?\); known: profile"):
        validate("03_multitype", {"epoch": 3, "zzz": 1})
