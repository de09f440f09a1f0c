"""Clear errors, never silent damage: every failure names the dataset, file or label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dapo.data import (
    CorruptImageError,
    DatasetRootError,
    EmptyProductError,
    LayoutImage,
    MaskSizeMismatchError,
    MissingMaskError,
    UnknownDefectError,
    open_dataset,
    write_tree,
)

SIZE = 8


def _image(value: int = 100) -> np.ndarray:
    return np.full((16, 16, 3), value, np.uint8)


def _mask(rows: slice = slice(0, 8)) -> np.ndarray:
    mask = np.zeros((16, 16), bool)
    mask[rows] = True
    return mask


def _tree(layout: str, root: Path, product: str, labels: tuple[str, ...]) -> Path:
    items = [LayoutImage(product, "train", (), _image(), None), LayoutImage(product, "test", (), _image(), None)]
    masks = {label: _mask(slice(8 * i, 8 * i + 8)) for i, label in enumerate(labels)}
    items.append(LayoutImage(product, "test", labels, _image(150), masks))
    return write_tree(layout, root, items)


@pytest.mark.parametrize(
    "name, title, hint",
    [
        ("mvtec", "MVTec-AD", "ground_truth"),
        ("mpdd", "MPDD", "ground_truth"),
        ("mad_sim", "MAD-Sim", "ground_truth"),
        ("mad_real", "MAD-Real", "ground_truth"),
        ("visa", "VisA", "1cls.csv"),
        ("real_iad", "Real-IAD", "realiad_jsons_sv"),
    ],
)
def test_missing_root_names_dataset_and_expected_layout(tmp_path, name, title, hint):
    with pytest.raises(DatasetRootError, match=title) as error:
        open_dataset(name, tmp_path / "nowhere", image_size=SIZE)
    assert hint in str(error.value) and "nowhere" in str(error.value)


def test_root_without_the_layout_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(DatasetRootError, match="no product folders with train/ or test/"):
        open_dataset("mvtec", tmp_path, image_size=SIZE)
    with pytest.raises(DatasetRootError, match="split file .*1cls.csv not found"):
        open_dataset("visa", tmp_path, image_size=SIZE)
    with pytest.raises(DatasetRootError, match="no JSON folder .*realiad_jsons_sv"):
        open_dataset("real_iad", tmp_path, image_size=SIZE)
    real = _tree("real_iad", tmp_path / "real", "mint", ("YW",))
    shutil.rmtree(real / "realiad_1024")
    with pytest.raises(DatasetRootError, match="no image folder realiad_1024 or realiad_512"):
        open_dataset("real_iad", real, image_size=SIZE)


def test_anomalous_image_without_mask_is_named(tmp_path):
    root = _tree("mvtec", tmp_path, "bottle", ("broken_large",))
    (root / "bottle/ground_truth/broken_large/000_mask.png").unlink()
    with pytest.raises(MissingMaskError, match=r"bottle/test/broken_large/000\.png has no mask"):
        open_dataset("mvtec", root, image_size=SIZE)


def test_visa_and_real_iad_missing_masks_are_named(tmp_path):
    visa = _tree("visa", tmp_path / "visa", "pcb1", ("melt",))
    (visa / "pcb1/Data/Masks/Anomaly/000.png").unlink()
    with pytest.raises(MissingMaskError, match=r"pcb1/Data/Images/Anomaly/000\.JPG has no mask"):
        open_dataset("visa", visa, image_size=SIZE)
    real = _tree("real_iad", tmp_path / "real", "mint", ("YW",))
    path = real / "realiad_jsons/realiad_jsons_sv/mint.json"
    document = json.loads(path.read_text())
    document["test"][-1]["mask_path"] = None
    path.write_text(json.dumps(document))
    with pytest.raises(MissingMaskError, match=r"NG_YW.*has no mask"):
        open_dataset("real_iad", real, image_size=SIZE)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_named_never_blank(tmp_path, damage):
    root = _tree("mvtec", tmp_path, "bottle", ("broken_large",))
    path = root / "bottle/test/good/000.png"
    data = path.read_bytes()
    path.write_bytes(b"this is not an image" if damage == "garbage" else data[: len(data) // 2])
    dataset = open_dataset("mvtec", root, image_size=SIZE)
    index = [r.path for r in dataset.records].index(str(path))
    with pytest.raises(CorruptImageError, match=r"cannot read image .*bottle/test/good/000\.png"):
        dataset[index]


def test_corrupt_mask_is_named(tmp_path):
    root = _tree("mpdd", tmp_path, "tubes", ("anomalous",))
    (root / "tubes/ground_truth/anomalous/000_mask.png").write_bytes(b"\x89PNG broken")
    dataset = open_dataset("mpdd", root, image_size=SIZE)
    anomalous = next(i for i, r in enumerate(dataset.records) if r.native)
    with pytest.raises(CorruptImageError, match=r"cannot read mask .*000_mask\.png"):
        dataset[anomalous]


def test_mask_image_size_mismatch_names_both(tmp_path):
    root = _tree("mad_sim", tmp_path, "01Gorilla", ("Burrs",))
    mask = root / "01Gorilla/ground_truth/Burrs/0_mask.png"
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(mask)
    dataset = open_dataset("mad_sim", root, image_size=SIZE)
    anomalous = next(i for i, r in enumerate(dataset.records) if r.native)
    with pytest.raises(MaskSizeMismatchError, match=r"0_mask\.png is 12x10 but image .*Burrs/0\.png is 16x16"):
        dataset[anomalous]


def test_unknown_defect_folder_names_folder_and_dataset(tmp_path):
    root = _tree("mvtec", tmp_path, "bottle", ("broken_large",))
    shutil.copytree(root / "bottle/test/broken_large", root / "bottle/test/dent")
    with pytest.raises(UnknownDefectError, match=r"bottle/test/dent.*'dent' is not in the MVTec-AD knowledge base"):
        open_dataset("mvtec", root, image_size=SIZE)


def test_unknown_visa_label_and_real_iad_code_are_named(tmp_path):
    visa = _tree("visa", tmp_path / "visa", "pcb1", ("melt",))
    anno = visa / "pcb1/image_anno.csv"
    anno.write_text(anno.read_text().replace(",melt,", ",toasted,"))
    with pytest.raises(UnknownDefectError, match=r"Anomaly/000\.JPG.*'toasted' is not in the VisA knowledge base"):
        open_dataset("visa", visa, image_size=SIZE)
    real = _tree("real_iad", tmp_path / "real", "mint", ("XX",))
    with pytest.raises(UnknownDefectError, match=r"mint\.json.*'XX' is not in the Real-IAD knowledge base"):
        open_dataset("real_iad", real, image_size=SIZE)


def test_empty_product_is_named(tmp_path):
    root = _tree("mvtec", tmp_path, "bottle", ("broken_large",))
    (root / "capsule/test/good").mkdir(parents=True)
    with pytest.raises(EmptyProductError, match=r"MVTec-AD products \['capsule'\] have no 'test' images"):
        open_dataset("mvtec", root, image_size=SIZE)
    # the filter only checks the products asked for
    assert open_dataset("mvtec", root, image_size=SIZE, products=["bottle"]).products == ("bottle",)


def test_empty_visa_and_real_iad_products_are_named(tmp_path):
    visa = write_tree("visa", tmp_path / "visa", [LayoutImage("pcb1", "train", (), _image(), None)])
    with pytest.raises(EmptyProductError, match=r"VisA products \['pcb1'\] have no 'test' images"):
        open_dataset("visa", visa, image_size=SIZE)
    real = write_tree("real_iad", tmp_path / "real", [LayoutImage("mint", "train", (), _image(), None)])
    with pytest.raises(EmptyProductError, match=r"Real-IAD products \['mint'\] have no 'test' images"):
        open_dataset("real_iad", real, image_size=SIZE)


def test_visa_inconsistent_annotations_are_refused(tmp_path):
    root = _tree("visa", tmp_path, "pcb1", ("melt",))
    (root / "pcb1/image_anno.csv").unlink()
    with pytest.raises(DatasetRootError, match=r"annotation file .*pcb1/image_anno\.csv not found"):
        open_dataset("visa", root, image_size=SIZE)
    root = _tree("visa", tmp_path / "b", "pcb1", ("melt",))
    anno = root / "pcb1/image_anno.csv"
    anno.write_text(anno.read_text().replace(",melt,", ",normal,"))
    with pytest.raises(ValueError, match="contradicts annotation"):
        open_dataset("visa", root, image_size=SIZE)
    root = _tree("visa", tmp_path / "c", "pcb1", ("melt",))
    (root / "pcb1/Data/Images/Normal/0000.JPG").unlink()
    with pytest.raises(DatasetRootError, match=r"Normal/0000\.JPG listed in .*1cls\.csv does not exist"):
        open_dataset("visa", root, image_size=SIZE, split="train")


def test_visa_binary_masks_work_for_single_but_not_multi_defect_images(tmp_path):
    root = _tree("visa", tmp_path, "pcb1", ("melt", "bent"))
    single = _tree("visa", tmp_path / "single", "pcb1", ("melt",))
    for tree in (root, single):  # binarise like the VisA_pytorch preprocessing does
        mask = tree / "pcb1/Data/Masks/Anomaly/000.png"
        Image.fromarray(((np.asarray(Image.open(mask)) > 0) * 255).astype(np.uint8)).save(mask)
    sample = open_dataset("visa", single, image_size=SIZE)[0]
    assert sample["defects"] == ("melt",) and int(sample["type_mask"].max()) == 2  # pcb1: bent melt missing scratch
    dataset = open_dataset("visa", root, image_size=SIZE)
    with pytest.raises(ValueError, match="cannot be told apart"):
        dataset[0]
