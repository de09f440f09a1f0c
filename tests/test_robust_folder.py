"""One's own folders meet the image and mask oddities the benchmark loaders handle, with the same
messages (issue 31): oversized files, JPEG masks, image formats the loaders do not read."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_cli_folder import write_folder

import dapo.data.images as image_module
from dapo.data import UnsupportedImageError, open_dataset, read_label_map, read_rgb
from dapo.data.folder import SkippedFileWarning, list_images

SIZE = 16


@pytest.fixture(autouse=True)
def fresh_conversion_notes(monkeypatch):
    monkeypatch.setattr(image_module, "_STATED", set())


def test_files_above_pillows_pixel_limit_are_named_by_every_reader(tmp_path, monkeypatch):
    root = tmp_path / "widget"
    write_folder(root, {"good": 1, "scratch": 1})
    image = root / "good" / "000.png"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 20 x 24 = 480 pixels > 2 x 100
    for read, what in ((read_rgb, "image"), (read_label_map, "mask")):
        with pytest.raises(UnsupportedImageError, match=rf"cannot read {what} {image}: .*decompression bombs\): "
                                                        r"downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS"):
            read(image)
    dataset = open_dataset("folder", root, image_size=SIZE)
    index = [record.path for record in dataset.records].index(str(image))
    with pytest.raises(UnsupportedImageError, match=rf"cannot read image {image}: "):
        dataset[index]


def test_predict_skips_an_oversized_file_with_the_loaders_message(tmp_path, monkeypatch):
    from dapo.cli.predict import ImageFiles

    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(root / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    item = ImageFiles([root / "big.png"], SIZE, None, None)[0]
    assert item["error"].startswith(f"cannot read image {root / 'big.png'}: ")
    assert "decompression bombs" in item["error"]


def test_jpeg_masks_of_ones_own_folder_are_read_and_binarised_as_the_benchmarks_are(tmp_path):
    root = tmp_path / "widget"
    drawn = write_folder(root, {"good": 1, "scratch": 2}, mask_name="{stem}.jpg")
    assert sorted(p.suffix for p in (root / "masks" / "scratch").iterdir()) == [".jpg", ".jpg"]
    with pytest.warns(UserWarning, match="JPEG masks are lossy .* binarised at mid-range"):
        dataset = open_dataset("folder", root, image_size=24)
        samples = [dataset[i] for i in range(len(dataset))]
    for sample in samples:
        if sample["label"]:
            exact = drawn[sample["path"]] > 0
            got = sample["mask"].numpy() > 0
            assert got.any() and (got != np.asarray(Image.fromarray(exact).resize((24, 24), Image.NEAREST))).mean() < 0.1


def test_image_formats_the_loaders_do_not_read_are_stated_not_skipped_in_silence(tmp_path):
    root = tmp_path / "widget"
    write_folder(root, {"good": 2, "scratch": 1})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "good" / "extra.gif")
    (root / "good" / "notes.txt").write_text("not an image: skipped without a word")
    with pytest.warns(SkippedFileWarning, match=r"1 file\(s\) under .*good in an image format the loaders do not "
                                                r"read are skipped \(e.g. .*extra.gif"):
        images = list_images(root / "good")
    assert [p.name for p in images] == ["000.png", "001.png"]


@pytest.mark.parametrize("shape, message", [
    ((6, 5), r"images far smaller than the 32 px input are upsampled .*: 5x6 px\)"),
    ((40, 200), r"images far from square are resized to 32x32 without keeping their aspect ratio.*: 200x40 px\)"),
])
def test_tiny_and_skinny_images_are_stated_alike_by_the_loaders_and_predict(tmp_path, shape, message):
    from dapo.cli.predict import ImageFiles

    root = tmp_path / "widget"
    write_folder(root, {"good": 1, "scratch": 1}, shape=shape)
    dataset = open_dataset("folder", root, image_size=32)
    with pytest.warns(UserWarning, match=message) as caught:
        dataset[0]
    loader_message = next(str(w.message) for w in caught if "px input" in str(w.message) or "square" in str(w.message))
    image_module._STATED.clear()
    with pytest.warns(UserWarning, match=message) as caught:
        ImageFiles([dataset.records[0].path], 32, None, None)[0]
    assert loader_message in [str(w.message) for w in caught]
    if shape == (6, 5):  # the same image against an input it is not far below: nothing to state
        import warnings

        image_module._STATED.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            open_dataset("folder", root, image_size=12)[0]
