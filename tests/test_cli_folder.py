"""The plain folder layout for one's own images (dapo.data.folder): good/, defect folders, masks/."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dapo.data import DatasetRootError, MissingMaskError, SuspiciousMaskWarning, open_dataset
from dapo.data.base import resize_nearest
from dapo.data.folder import FolderDataset, FolderLayoutError

SIZE = 16


def write_folder(root: Path, counts: dict[str, int], *, masks: bool = True, shape=(20, 24), seed: int = 0,
                 mask_name: str = "{stem}.png") -> dict[str, np.ndarray]:
    """A folder dataset: ``counts`` images per class folder (``good`` = normal), each defect image a
    square of its own colour on noise, with its binary mask under masks/ (``mask_name``).
    Returns the masks drawn, by image path."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for k, (folder, n) in enumerate(counts.items()):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.integers(0, 120, (*shape, 3), dtype=np.uint8)
            mask = np.zeros(shape, dtype=np.uint8)
            if folder != "good":
                top, left = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
                mask[top:top + shape[0] // 3, left:left + shape[1] // 3] = 255
                image[mask > 0] = (200, 40 * k % 256, 255 - 30 * k)
            path = root / folder / f"{i:03d}.png"
            Image.fromarray(image).save(path)
            if folder != "good" and masks:
                mask_path = root / "masks" / folder / mask_name.format(stem=path.stem)
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(mask_path)
                drawn[str(path)] = mask
    return drawn


def test_folders_are_the_vocabulary_and_masks_their_pixels(tmp_path):
    root = tmp_path / "bracket"
    drawn = write_folder(root, {"good": 2, "scratch": 2, "metal_contamination": 1})
    dataset = open_dataset("folder", root, image_size=SIZE, vocab_scope="dataset")
    assert isinstance(dataset, FolderDataset) and dataset.has_masks
    assert dataset.products == ("bracket",) and len(dataset) == 5
    assert dataset.dataset_vocabulary == ("metal contamination", "scratch")  # underscores read as spaces
    labels = sorted((Path(s["path"]).parent.name, s["label"], s["defects"]) for s in dataset)
    assert labels == [("good", 0, ()), ("good", 0, ()), ("metal_contamination", 1, ("metal contamination",)),
                      ("scratch", 1, ("scratch",)), ("scratch", 1, ("scratch",))]
    for sample in dataset:
        if sample["label"]:
            expected = resize_nearest((drawn[sample["path"]] > 0).astype(np.int64), SIZE)
            k = dataset.dataset_vocabulary.index(sample["defects"][0]) + 1
            np.testing.assert_array_equal(sample["type_mask"].numpy(), expected * k)
            np.testing.assert_array_equal(sample["mask"].numpy(), expected.astype(np.float32))
        else:
            assert not sample["type_mask"].any()
        assert sample["image"].shape == (3, SIZE, SIZE)


def test_subfolders_are_searched_and_masks_mirror_them(tmp_path):
    write_folder(tmp_path / "a", {"good": 1, "hole": 1}, mask_name="{stem}_mask.png")
    (tmp_path / "a" / "hole" / "line2").mkdir()
    (tmp_path / "a" / "hole" / "000.png").rename(tmp_path / "a" / "hole" / "line2" / "000.png")
    (tmp_path / "a" / "masks" / "hole" / "line2").mkdir()
    (tmp_path / "a" / "masks" / "hole" / "000_mask.png").rename(tmp_path / "a" / "masks" / "hole" / "line2" /
                                                                 "000_mask.png")
    dataset = FolderDataset(tmp_path / "a", image_size=SIZE)
    anomalous = [s for s in dataset if s["label"]]
    assert len(anomalous) == 1 and anomalous[0]["path"].endswith("line2/000.png") and anomalous[0]["mask"].any()


def test_every_split_gives_all_images_once(tmp_path):
    write_folder(tmp_path / "p", {"good": 2, "hole": 1})
    assert [len(FolderDataset(tmp_path / "p", image_size=SIZE, split=s)) for s in ("test", "train", "all")] == [3, 3, 3]


def test_a_missing_mask_names_the_image_and_the_expected_file(tmp_path):
    write_folder(tmp_path / "p", {"good": 1, "hole": 2})
    (tmp_path / "p" / "masks" / "hole" / "001.png").unlink()
    with pytest.raises(MissingMaskError, match=r"hole/001\.png has no mask; expected .*masks/hole/001\.png"):
        FolderDataset(tmp_path / "p", image_size=SIZE)


def test_without_masks_the_dataset_is_image_level_and_says_so(tmp_path):
    write_folder(tmp_path / "p", {"good": 1, "hole": 1}, masks=False)
    with pytest.warns(SuspiciousMaskWarning, match="no masks/ folder"):
        dataset = FolderDataset(tmp_path / "p", image_size=SIZE)
    assert not dataset.has_masks
    samples = sorted((s["label"], s["defects"], int(s["mask"].sum())) for s in dataset)
    assert samples == [(0, (), 0), (1, ("hole",), 0)]


@pytest.mark.parametrize("folders, message", [
    (("scratch", "Scratch"), r"\('Scratch'\).* \('scratch'\)|\('scratch'\).* \('Scratch'\)"),
    (("metal_cut", "metal cut"), "same defect once normalised"),
    (("normal",), "cannot be called 'normal'.*good/"),
    (("Good",), "would be a defect called 'Good'; the reserved folder names are lower case"),
])
def test_defect_folders_naming_the_same_or_the_normal_class_are_refused(tmp_path, folders, message):
    write_folder(tmp_path / "p", {"good": 1, **{f: 1 for f in folders}})
    with pytest.raises(ValueError, match=message):
        FolderDataset(tmp_path / "p", image_size=SIZE)


def test_layout_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(DatasetRootError, match=r"(?s)missing does not exist.*good/"):
        FolderDataset(tmp_path / "missing", image_size=SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FolderLayoutError, match=r"empty holds no good/ or defect folder"):
        FolderDataset(tmp_path / "empty", image_size=SIZE)
    write_folder(tmp_path / "p", {"good": 1, "hole": 1})
    (tmp_path / "p" / "crack").mkdir()
    with pytest.raises(FolderLayoutError, match=r"folder .*p/crack holds no images"):
        FolderDataset(tmp_path / "p", image_size=SIZE)
    (tmp_path / "p" / "crack").rmdir()
    (tmp_path / "p" / "masks" / "rust").mkdir()
    with pytest.raises(FolderLayoutError, match=r"mask folder .*masks/rust has no defect folder"):
        FolderDataset(tmp_path / "p", image_size=SIZE)
    (tmp_path / "p" / "masks" / "rust").rmdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "p" / "stray.png")
    with pytest.raises(FolderLayoutError, match=r"stray\.png lies directly in the dataset root"):
        FolderDataset(tmp_path / "p", image_size=SIZE)


def test_hidden_files_and_other_files_are_skipped(tmp_path):
    write_folder(tmp_path / "p", {"good": 2, "hole": 1})
    (tmp_path / "p" / "good" / "._000.png").write_bytes(b"resource fork")
    (tmp_path / "p" / "good" / "notes.txt").write_text("taken on Monday")
    (tmp_path / "p" / ".cache").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(FolderDataset(tmp_path / "p", image_size=SIZE)) == 3
