"""The layout writer: exact official file trees, mask encodings, refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dapo.data import LAYOUTS, LayoutImage, write_tree


def _image(value: int = 60) -> np.ndarray:
    return np.full((8, 10, 3), value, np.uint8)


def _mask(rows: slice, cols: slice = slice(None)) -> np.ndarray:
    mask = np.zeros((8, 10), bool)
    mask[rows, cols] = True
    return mask


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _mixed(product: str, single: str, pair: tuple[str, str]) -> list[LayoutImage]:
    return [
        LayoutImage(product, "train", (), _image(), None),
        LayoutImage(product, "test", (), _image(), None),
        LayoutImage(product, "test", (), _image(), None),
        LayoutImage(product, "test", (single,), _image(90), {single: _mask(slice(0, 2))}),
        LayoutImage(
            product, "test", pair, _image(120), {pair[0]: _mask(slice(0, 4)), pair[1]: _mask(slice(2, 8), slice(5, 10))}
        ),
    ]


def test_mvtec_tree_is_exact_and_multi_defect_goes_to_combined(tmp_path):
    root = write_tree("mvtec", tmp_path, _mixed("cable", "bent_wire", ("bent_wire", "missing_wire")))
    assert _files(root) == {
        "cable/train/good/000.png",
        "cable/test/good/000.png",
        "cable/test/good/001.png",
        "cable/test/bent_wire/000.png",
        "cable/ground_truth/bent_wire/000_mask.png",
        "cable/test/combined/000.png",
        "cable/ground_truth/combined/000_mask.png",
    }
    union = _pixels(root / "cable/ground_truth/combined/000_mask.png")
    assert set(np.unique(union)) == {0, 255}
    assert np.array_equal(union > 0, _mask(slice(0, 4)) | _mask(slice(2, 8), slice(5, 10)))
    assert np.array_equal(_pixels(root / "cable/test/combined/000.png"), _image(120))  # PNG is lossless


def test_mad_numbering_starts_at_zero_without_padding(tmp_path):
    root = write_tree("mad_sim", tmp_path, _mixed("01Gorilla", "Burrs", ("Burrs", "Stains")))
    assert "01Gorilla/test/good/1.png" in _files(root)
    assert "01Gorilla/ground_truth/Burrs/0_mask.png" in _files(root)


def test_visa_tree_csvs_and_class_indexed_masks(tmp_path):
    ids = {"pcb4": {"burnt": 1, "scratch": 2, "dirt": 7}}
    root = write_tree("visa", tmp_path, _mixed("pcb4", "scratch", ("burnt", "dirt")), mask_ids=ids)
    assert _files(root) == {
        "split_csv/1cls.csv",
        "pcb4/image_anno.csv",
        "pcb4/Data/Images/Normal/0000.JPG",
        "pcb4/Data/Images/Normal/0001.JPG",
        "pcb4/Data/Images/Normal/0002.JPG",
        "pcb4/Data/Images/Anomaly/000.JPG",
        "pcb4/Data/Images/Anomaly/001.JPG",
        "pcb4/Data/Masks/Anomaly/000.png",
        "pcb4/Data/Masks/Anomaly/001.png",
    }
    with open(root / "split_csv/1cls.csv", newline="") as handle:
        split = list(csv.reader(handle))
    assert split[0] == ["object", "split", "label", "image", "mask"]
    assert split[1] == ["pcb4", "train", "normal", "pcb4/Data/Images/Normal/0000.JPG", ""]
    anomaly = ["pcb4", "test", "anomaly", "pcb4/Data/Images/Anomaly/001.JPG", "pcb4/Data/Masks/Anomaly/001.png"]
    assert split[5] == anomaly
    with open(root / "pcb4/image_anno.csv", newline="") as handle:
        anno = list(csv.reader(handle))
    assert anno[0] == ["image", "label", "mask"]
    assert anno[5][1] == "burnt,dirt" and anno[1][1] == "normal"
    typed = _pixels(root / "pcb4/Data/Masks/Anomaly/001.png")
    expected = np.zeros((8, 10), np.uint8)
    expected[0:4] = 1
    expected[2:8, 5:10] = 7  # the later defect wins where masks overlap
    assert np.array_equal(typed, expected)


def test_visa_default_mask_ids_number_sorted_labels(tmp_path):
    root = write_tree("visa", tmp_path, _mixed("gear", "scratch", ("scratch", "hole")))
    assert set(np.unique(_pixels(root / "gear/Data/Masks/Anomaly/001.png"))) == {0, 1, 2}  # hole=1, scratch=2


def test_real_iad_tree_and_json(tmp_path):
    items = _mixed("mint", "YW", ("YW", "ZW"))[:4]
    root = write_tree("real_iad", tmp_path, items)
    document = json.loads((root / "realiad_jsons/realiad_jsons_sv/mint.json").read_text())
    assert document["meta"]["normal_class"] == "OK"
    assert [e["anomaly_class"] for e in document["train"]] == ["OK"]
    assert [e["anomaly_class"] for e in document["test"]] == ["OK", "OK", "YW"]
    entry = document["test"][-1]
    assert entry["category"] == "mint" and entry["image_path"].startswith("NG/YW/S0004/mint_0004_NG_YW_C1_")
    folder = root / "realiad_1024/mint"
    assert (folder / entry["image_path"]).is_file()
    assert np.array_equal(_pixels(folder / entry["mask_path"]) > 0, _mask(slice(0, 2)))
    assert document["test"][0]["mask_path"] is None


def test_writing_twice_gives_identical_files(tmp_path):
    for layout in LAYOUTS:
        items = _mixed("p", "a", ("a", "b"))[: 4 if layout == "real_iad" else 5]
        first = write_tree(layout, tmp_path / f"{layout}1", items)
        second = write_tree(layout, tmp_path / f"{layout}2", items)
        assert _files(first) == _files(second)
        assert all((first / f).read_bytes() == (second / f).read_bytes() for f in _files(first))


def test_explicit_names_are_used(tmp_path):
    item = LayoutImage("tubes", "test", ("anomalous",), _image(), {"anomalous": _mask(slice(0, 1))}, name="x7")
    root = write_tree("mpdd", tmp_path, [item])
    assert _files(root) == {"tubes/test/anomalous/x7.png", "tubes/ground_truth/anomalous/x7_mask.png"}


@pytest.mark.parametrize(
    "layout, item, message",
    [
        ("kolektor", LayoutImage("p", "test", (), _image(), None), "unknown layout"),
        ("mvtec", LayoutImage("p", "val", (), _image(), None), "split must be one of"),
        ("mvtec", LayoutImage("p", "test", (), _image().astype(np.float32), None), r"\(H, W, 3\) uint8"),
        ("mvtec", LayoutImage("p", "test", ("a",), _image(), None), "masks must be given for exactly"),
        ("mvtec", LayoutImage("p", "train", ("a",), _image(), {"a": _mask(slice(0, 1))}), "only good images"),
        ("mvtec", LayoutImage("p", "test", ("a",), _image(), {"a": np.ones((4, 4), bool)}), r"shape \(4, 4\)"),
        ("mvtec", LayoutImage("p", "test", ("a",), _image(), {"a": np.zeros((8, 10), bool)}), "mask 'a' is empty"),
        ("mvtec", LayoutImage("p", "test", ("a", "a"), _image(), {"a": _mask(slice(0, 1))}), "repeated defect"),
        (
            "real_iad",
            LayoutImage("p", "test", ("a", "b"), _image(), {"a": _mask(slice(0, 1)), "b": _mask(slice(1, 2))}),
            "one anomaly_class per image",
        ),
    ],
)
def test_writer_refuses_bad_input(tmp_path, layout, item, message):
    with pytest.raises(ValueError, match=message):
        write_tree(layout, tmp_path, [item])


def test_visa_writer_needs_an_id_for_every_label(tmp_path):
    item = LayoutImage("p", "test", ("a",), _image(), {"a": _mask(slice(0, 1))})
    with pytest.raises(ValueError, match="no VisA mask id for defect 'a'"):
        write_tree("visa", tmp_path, [item], mask_ids={"p": {"b": 1}})
