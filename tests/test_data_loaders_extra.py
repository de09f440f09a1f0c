"""The loaders of ViP²-CLIP Table 1's other industrial benchmarks (BTAD, KSDD, DAGM, DTD-Synthetic),
each on a tiny tree written in its official layout: files, counts per split, labels, masks,
products, the papers' split rules, and the errors that name a missing file."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dapo.data import (
    CLIP_MEAN,
    CLIP_STD,
    LOADERS,
    DatasetRootError,
    LayoutImage,
    MissingMaskError,
    load_knowledge,
    open_dataset,
    write_tree,
)
from dapo.data.base import resize_nearest
from dapo.data.dagm import LabelsFileError
from dapo.data.ksdd import KSDD_PRODUCT, held_out_positions, strip_rows
from dapo.data.registry import openable_datasets

HEIGHT, WIDTH, SIZE = 24, 36, 12
NEW = ("btad", "ksdd", "dagm", "dtd_synthetic")


def _image(value: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), value, np.uint8)


def _mask(rows: slice, cols: slice = slice(None)) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[rows, cols] = True
    return mask


def _good(product: str, split: str, value: int = 60) -> LayoutImage:
    return LayoutImage(product, split, (), _image(value), None)


def _bad(product: str, label: str, mask: np.ndarray, split: str = "test", value: int = 90) -> LayoutImage:
    return LayoutImage(product, split, (label,), _image(value), {label: mask})


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _labels(dataset) -> list[int]:
    return [int(bool(record.native)) for record in dataset.records]


TOP = _mask(slice(0, 12))              # upper half of the image
CORNER = _mask(slice(12, 24), slice(18, 36))


# ----------------------------------------------------------------------------- registration
def test_the_four_are_registered_and_openable_by_name():
    assert set(NEW) <= set(openable_datasets())
    for name in NEW:
        knowledge = load_knowledge(name)
        assert knowledge.layout == name and name in LOADERS
        assert knowledge.superclasses == ("damaged",)  # one generic class: no defect types on disk


@pytest.mark.parametrize("name, products", [("btad", 3), ("ksdd", 1), ("dagm", 10), ("dtd_synthetic", 12)])
def test_product_counts_match_vip2clip_table_1(name, products):
    # ViP²-CLIP Table 1 / Table 7: KSDD 1, BTAD 3, DAGM 10, DTD-Synthetic 12 classes
    assert len(load_knowledge(name).products) == products


@pytest.mark.parametrize("name", NEW)
def test_a_missing_root_is_named(tmp_path, name):
    with pytest.raises(DatasetRootError, match=str(tmp_path / "absent")):
        open_dataset(name, tmp_path / "absent", image_size=SIZE)


@pytest.mark.parametrize("name", NEW)
def test_a_root_without_the_layout_is_refused(tmp_path, name):
    (tmp_path / "README").write_text("unpacked in the wrong folder")
    with pytest.raises(DatasetRootError, match="expected the"):
        open_dataset(name, tmp_path, image_size=SIZE)


# ----------------------------------------------------------------------------- BTAD
@pytest.fixture()
def btad(tmp_path) -> Path:
    return write_tree("btad", tmp_path / "btad", [
        _good("01", "train"), _good("01", "train"), _good("01", "test"),
        _bad("01", "ko", TOP), _bad("01", "ko", CORNER, value=120),
        _good("03", "train"), _good("03", "test"), _bad("03", "ko", CORNER),
    ])


def test_btad_tree_has_the_release_names(btad):
    assert _files(btad) == {
        "01/train/ok/000.bmp", "01/train/ok/001.bmp", "01/test/ok/000.bmp",
        "01/test/ko/000.bmp", "01/test/ko/001.bmp", "01/ground_truth/ko/000.png", "01/ground_truth/ko/001.png",
        "03/train/ok/000.bmp", "03/test/ok/000.bmp", "03/test/ko/000.bmp", "03/ground_truth/ko/000.bmp",
    }
    assert set(np.unique(_pixels(btad / "03/ground_truth/ko/000.bmp"))) == {0, 255}


def test_btad_counts_labels_masks_and_products(btad):
    test = open_dataset("btad", btad, image_size=SIZE)
    assert test.products == ("01", "03")
    assert len(test) == 5 and sorted(_labels(test)) == [0, 0, 1, 1, 1]
    by_name = {Path(r.path).relative_to(btad).as_posix(): i for i, r in enumerate(test.records)}
    sample = test[by_name["01/test/ko/000.bmp"]]
    assert sample["label"] == 1 and sample["defects"] == ("damaged",) and sample["product"] == "01"
    assert sample["mask"].shape == (SIZE, SIZE)
    assert torch.equal(sample["mask"], torch.from_numpy(resize_nearest(TOP.astype(np.int64), SIZE)).float())
    corner = test[by_name["03/test/ko/000.bmp"]]  # the .bmp mask of product 03
    assert torch.equal(corner["mask"], torch.from_numpy(resize_nearest(CORNER.astype(np.int64), SIZE)).float())
    good = test[by_name["03/test/ok/000.bmp"]]
    assert good["label"] == 0 and not good["mask"].any() and good["defects"] == ()
    # a BMP image is lossless: the constant grey survives, normalised with CLIP's statistics
    expected = (torch.full((3, 1, 1), 90 / 255.0) - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(
        CLIP_STD).view(3, 1, 1)
    assert torch.allclose(sample["image"], expected.expand(3, SIZE, SIZE), atol=1e-5)
    train = open_dataset("btad", btad, image_size=SIZE, split="train")
    assert len(train) == 3 and _labels(train) == [0, 0, 0]
    assert len(open_dataset("btad", btad, image_size=SIZE, split="all")) == 8


def test_btad_reads_png_images_too(btad):
    image = btad / "01/test/ko/001.bmp"
    Image.open(image).save(image.with_suffix(".png"))
    image.unlink()
    dataset = open_dataset("btad", btad, image_size=SIZE, products=["01"])
    record = next(r for r in dataset.records if r.path.endswith("ko/001.png"))
    assert record.mask_path == str(btad / "01/ground_truth/ko/001.png")


def test_btad_missing_mask_names_the_expected_file(btad):
    (btad / "03/ground_truth/ko/000.bmp").unlink()
    with pytest.raises(MissingMaskError, match=r"03/ground_truth/ko/000\.bmp"):
        open_dataset("btad", btad, image_size=SIZE)


# ----------------------------------------------------------------------------- DTD-Synthetic
@pytest.fixture()
def dtd(tmp_path) -> Path:
    return write_tree("dtd_synthetic", tmp_path / "dtd", [
        _good("Woven_001", "train"), _good("Woven_001", "test"), _good("Woven_001", "test"),
        _bad("Woven_001", "bad", TOP), _good("Mesh_114", "train"), _good("Mesh_114", "test"),
        _bad("Mesh_114", "bad", CORNER), _bad("Mesh_114", "bad", TOP),
    ])


def test_dtd_synthetic_tree_and_loader(dtd):
    assert _files(dtd) == {
        "Woven_001/train/good/000.png", "Woven_001/test/good/000.png", "Woven_001/test/good/001.png",
        "Woven_001/test/bad/000.png", "Woven_001/ground_truth/bad/000.png",
        "Mesh_114/train/good/000.png", "Mesh_114/test/good/000.png",
        "Mesh_114/test/bad/000.png", "Mesh_114/test/bad/001.png",
        "Mesh_114/ground_truth/bad/000.png", "Mesh_114/ground_truth/bad/001.png",
    }
    test = open_dataset("dtd_synthetic", dtd, image_size=SIZE)
    assert test.products == ("mesh_114", "woven_001")
    assert len(test) == 6 and sorted(_labels(test)) == [0, 0, 0, 1, 1, 1]
    index = next(i for i, r in enumerate(test.records) if r.path.endswith("Mesh_114/test/bad/000.png"))
    sample = test[index]
    assert sample["defects"] == ("damaged",) and sample["product"] == "mesh_114"
    assert torch.equal(sample["mask"], torch.from_numpy(resize_nearest(CORNER.astype(np.int64), SIZE)).float())
    assert len(open_dataset("dtd_synthetic", dtd, image_size=SIZE, split="train")) == 2


def test_dtd_synthetic_takes_mvtec_style_mask_names_and_names_both_when_missing(dtd):
    mask = dtd / "Woven_001/ground_truth/bad/000.png"
    mask.rename(mask.with_name("000_mask.png"))
    dataset = open_dataset("dtd_synthetic", dtd, image_size=SIZE, products=["Woven_001"])
    assert [Path(r.mask_path).name for r in dataset.records if r.native] == ["000_mask.png"]
    mask.with_name("000_mask.png").unlink()
    with pytest.raises(MissingMaskError, match=r"bad/000\.png or .*bad/000_mask\.png"):
        open_dataset("dtd_synthetic", dtd, image_size=SIZE)


# ----------------------------------------------------------------------------- DAGM
@pytest.fixture()
def dagm(tmp_path) -> Path:
    return write_tree("dagm", tmp_path / "dagm", [
        _good("Class1", "train"), _good("Class1", "train"), _bad("Class1", "defect", TOP, split="train"),
        _good("Class1", "test"), _bad("Class1", "defect", CORNER), _good("Class1", "test"),
        _bad("Class1", "defect", TOP),
        _good("Class10", "train"), _good("Class10", "test"), _bad("Class10", "defect", CORNER),
    ])


def test_dagm_tree_and_labels_file(dagm):
    assert _files(dagm) == {
        "Class1/Train/0001.PNG", "Class1/Train/0002.PNG", "Class1/Train/0003.PNG",
        "Class1/Train/Label/0003_label.PNG", "Class1/Train/Label/Labels.txt",
        "Class1/Test/0001.PNG", "Class1/Test/0002.PNG", "Class1/Test/0003.PNG", "Class1/Test/0004.PNG",
        "Class1/Test/Label/0002_label.PNG", "Class1/Test/Label/0004_label.PNG", "Class1/Test/Label/Labels.txt",
        "Class10/Train/0001.PNG", "Class10/Train/Label/Labels.txt",
        "Class10/Test/0001.PNG", "Class10/Test/0002.PNG", "Class10/Test/Label/0002_label.PNG",
        "Class10/Test/Label/Labels.txt",
    }
    lines = (dagm / "Class1/Test/Label/Labels.txt").read_text().splitlines()
    assert lines[0] == "1"
    assert [line.split("\t") for line in lines[1:3]] == [["1", "0", "0001.PNG", "0", "0"],
                                                        ["2", "1", "0002.PNG", "0", "0002_label.PNG"]]


def test_dagm_counts_labels_masks_and_products(dagm):
    test = open_dataset("dagm", dagm, image_size=SIZE)
    assert test.products == ("class1", "class10")
    assert len(test) == 6 and _labels(test) == [0, 1, 0, 1, 0, 1]
    sample = test[1]
    assert sample["path"].endswith("Class1/Test/0002.PNG") and sample["defects"] == ("damaged",)
    assert torch.equal(sample["mask"], torch.from_numpy(resize_nearest(CORNER.astype(np.int64), SIZE)).float())
    # DAGM's Train folders hold defective images too; the json script lists them, so does the loader
    train = open_dataset("dagm", dagm, image_size=SIZE, split="train")
    assert len(train) == 4 and _labels(train) == [0, 0, 1, 0]


def test_dagm_labels_file_flag_without_mask_names_the_mask(dagm):
    (dagm / "Class1/Test/Label/0004_label.PNG").unlink()
    with pytest.raises(MissingMaskError, match=r"Labels\.txt:5 flags image .*0004\.PNG defective.*0004_label\.PNG"):
        open_dataset("dagm", dagm, image_size=SIZE)
    # without Labels.txt an image without a mask is normal, as AnomalyCLIP's script reads DAGM
    (dagm / "Class1/Test/Label/Labels.txt").unlink()
    assert _labels(open_dataset("dagm", dagm, image_size=SIZE, products=["Class1"])) == [0, 1, 0, 0]


def test_dagm_refuses_a_mask_the_labels_file_calls_defect_free_and_a_mask_without_image(dagm):
    labels = dagm / "Class10/Test/Label/Labels.txt"
    labels.write_text(labels.read_text().replace("\t1\t0002.PNG", "\t0\t0002.PNG"))
    with pytest.raises(LabelsFileError, match="flags image .*0002.PNG defect-free"):
        open_dataset("dagm", dagm, image_size=SIZE)
    labels.unlink()
    (dagm / "Class10/Test/0002.PNG").unlink()
    with pytest.raises(DatasetRootError, match=r"0002_label\.PNG has no image .*Class10/Test/0002\.PNG"):
        open_dataset("dagm", dagm, image_size=SIZE)


# ----------------------------------------------------------------------------- KSDD
STRIP_VALUES = (40, 120, 200)  # one grey per third of the image, to see which strip a sample shows
KSDD_HEIGHT, KSDD_WIDTH = 36, 12  # tall, as KolektorSDD's images: the strips are square


def _ksdd_image() -> np.ndarray:
    image = np.zeros((KSDD_HEIGHT, KSDD_WIDTH, 3), np.uint8)
    for (first, last), value in zip(strip_rows(KSDD_HEIGHT), STRIP_VALUES):
        image[first:last] = value
    return image


def _ksdd_mask(rows: slice, cols: slice = slice(None)) -> np.ndarray:
    mask = np.zeros((KSDD_HEIGHT, KSDD_WIDTH), bool)
    mask[rows, cols] = True
    return mask


def _ksdd_item(folder: str, mask: np.ndarray | None) -> LayoutImage:
    if mask is None:
        return LayoutImage(folder, "test", (), _ksdd_image(), None)
    return LayoutImage(folder, "test", ("defect",), _ksdd_image(), {"defect": mask})


IN_FIRST = _ksdd_mask(slice(0, 9))                 # inside strip 0 (rows 0-11)
ACROSS = _ksdd_mask(slice(9, 18), slice(0, 5))     # rows 9-17: strips 0 and 1


@pytest.fixture()
def ksdd(tmp_path) -> Path:
    return write_tree("ksdd", tmp_path / "ksdd", [
        _ksdd_item("kos01", None), _ksdd_item("kos01", IN_FIRST), _ksdd_item("kos01", ACROSS),
        _ksdd_item("kos02", None), _ksdd_item("kos02", None),
    ])


def test_ksdd_tree_has_the_release_names(ksdd):
    assert _files(ksdd) == {f"kos01/Part{k}{suffix}" for k in range(3) for suffix in (".jpg", "_label.bmp")} | {
        f"kos02/Part{k}{suffix}" for k in range(2) for suffix in (".jpg", "_label.bmp")}
    assert not _pixels(ksdd / "kos01/Part0_label.bmp").any()  # defect-free images carry an empty label
    assert np.array_equal(_pixels(ksdd / "kos01/Part1_label.bmp") > 0, IN_FIRST)


def test_ksdd_strips_splits_and_labels(ksdd):
    assert strip_rows(KSDD_HEIGHT) == [(0, 12), (12, 24), (24, 36)]
    assert strip_rows(1267) == [(0, 422), (422, 844), (844, 1267)]  # H // 3, 2H // 3, H (sdd-pre.py:33-39)
    test = open_dataset("ksdd", ksdd, image_size=SIZE)
    train = open_dataset("ksdd", ksdd, image_size=SIZE, split="train")
    everything = open_dataset("ksdd", ksdd, image_size=SIZE, split="all")
    # 5 images x 3 strips; strips with a labelled pixel: Part1 strip 0, Part2 strips 0 and 1
    anomalous = {(Path(r.path).name, r.rows) for r in everything.records if r.native}
    assert anomalous == {("Part1.jpg", (0, 12)), ("Part2.jpg", (0, 12)), ("Part2.jpg", (12, 24))}
    normal = len(everything) - len(anomalous)
    assert len(everything) == 15 and normal == 12
    assert len(test) == math.ceil(0.25 * normal) + 3 and len(train) == normal - math.ceil(0.25 * normal)
    assert not any(r.native for r in train.records)
    assert {(r.path, r.rows) for r in train.records}.isdisjoint({(r.path, r.rows) for r in test.records})
    assert test.products == (KSDD_PRODUCT,)


def test_ksdd_samples_show_their_strip_and_its_part_of_the_label(ksdd):
    test = open_dataset("ksdd", ksdd, image_size=SIZE)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    for index, record in enumerate(test.records):
        sample = test[index]
        strip = strip_rows(KSDD_HEIGHT).index(record.rows)
        expected = (torch.full((3, 1, 1), STRIP_VALUES[strip] / 255.0) - mean) / std
        assert torch.allclose(sample["image"].mean(dim=(1, 2), keepdim=True), expected, atol=3 / 255 / min(CLIP_STD))
        full = {"Part1.jpg": IN_FIRST, "Part2.jpg": ACROSS}.get(Path(record.path).name)
        if record.native:
            cut = full[record.rows[0]:record.rows[1]].astype(np.int64)
            assert sample["label"] == 1 and sample["defects"] == ("damaged",)
            assert torch.equal(sample["mask"], torch.from_numpy(resize_nearest(cut, SIZE)).float())
        else:
            assert sample["label"] == 0 and not sample["mask"].any()


def test_ksdd_split_follows_the_authors_train_test_split_call(ksdd):
    sklearn = pytest.importorskip("sklearn.model_selection")
    everything = open_dataset("ksdd", ksdd, image_size=SIZE, split="all")
    normal = sorted((r.path, r.rows) for r in everything.records if not r.native)
    _, held_out = sklearn.train_test_split(list(range(len(normal))), test_size=0.25, random_state=42)
    assert held_out_positions(len(normal)) == set(held_out)
    test = open_dataset("ksdd", ksdd, image_size=SIZE)
    assert {(r.path, r.rows) for r in test.records if not r.native} == {normal[i] for i in held_out}
    # sdd-pre.py:50 on the real data: 1,143 normal strips (1,197 minus 54 defective) leave 286 for
    # test, the count of ViP²-CLIP Table 7
    assert len(held_out_positions(1143)) == len(sklearn.train_test_split(list(range(1143)), test_size=0.25,
                                                                          random_state=42)[1]) == 286


def test_ksdd_image_without_label_names_it(ksdd):
    (ksdd / "kos02/Part1_label.bmp").unlink()
    with pytest.raises(MissingMaskError, match=r"kos02/Part1_label\.bmp"):
        open_dataset("ksdd", ksdd, image_size=SIZE)


def test_ksdd_records_survive_a_copy_of_the_tree(ksdd, tmp_path):
    copy = Path(shutil.copytree(ksdd, tmp_path / "copy"))
    first = open_dataset("ksdd", ksdd, image_size=SIZE)
    second = open_dataset("ksdd", copy, image_size=SIZE)
    assert [(Path(r.path).relative_to(ksdd), r.rows) for r in first.records] == [
        (Path(r.path).relative_to(copy), r.rows) for r in second.records]


# ----------------------------------------------------------------------------- writers
@pytest.mark.parametrize("layout", ["btad", "ksdd", "dtd_synthetic"])
def test_only_dagm_writes_defective_train_images(tmp_path, layout):
    with pytest.raises(ValueError, match="only good images in the train split"):
        write_tree(layout, tmp_path, [_bad("p", "defect", TOP, split="train")])


@pytest.mark.parametrize("layout, mask_file", [("btad", "p/ground_truth/ko/000.png"),
                                                ("dtd_synthetic", "p/ground_truth/bad/000.png"),
                                                ("dagm", "p/Test/Label/0001_label.PNG"),
                                                ("ksdd", "p/Part0_label.bmp")])
def test_single_class_writers_store_the_union_of_an_images_masks(tmp_path, layout, mask_file):
    item = LayoutImage("p", "test", ("a", "b"), _image(90), {"a": TOP, "b": CORNER})
    root = write_tree(layout, tmp_path, [item])
    assert np.array_equal(_pixels(root / mask_file) > 0, TOP | CORNER)
