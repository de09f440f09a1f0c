"""Every PIL mode a loader can meet: decoded values against hand computations, stated
conversions (one warning per kind), refusals naming the file and the mode."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dapo.data import (
    CLIP_MEAN,
    CLIP_STD,
    CorruptImageError,
    ImageConversionWarning,
    LayoutImage,
    SuspiciousMaskWarning,
    UnsupportedImageError,
    open_dataset,
    read_label_map,
    read_rgb,
    write_tree,
)
from dapo.data import images as image_module

RAMP16 = np.array([[0, 128, 129, 256, 32767, 32768, 65279, 65535]], np.uint16)
RAMP16_8BIT = np.array([[0, 0, 1, 1, 127, 128, 254, 255]], np.uint8)  # round(v / 257), by hand


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test starts with no kind of conversion stated yet."""
    monkeypatch.setattr(image_module, "_STATED", set())


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _read(reader, path: Path):
    """Decode and collect the warnings (all of them: the module itself must deduplicate)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = reader(path)
    return values, [w for w in caught if issubclass(w.category, (ImageConversionWarning, SuspiciousMaskWarning))]


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=2)


def _png16_rgb(values: np.ndarray, path: Path) -> Path:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + values[r].astype(">u2").tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------ images
def test_rgb_grey_and_bilevel_images_are_exact_and_silent(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    bits = np.zeros((5, 7), bool)
    bits[1:3, 2:6] = True
    cases = [(_save(Image.fromarray(rgb), tmp_path / "rgb.png"), rgb),
             (_save(Image.fromarray(grey), tmp_path / "l.png"), _grey(grey)),
             (_save(Image.fromarray(bits), tmp_path / "one.png"), _grey(bits * 255))]
    for path, expected in cases:
        values, stated = _read(read_rgb, path)
        assert values.dtype == np.uint8 and values.shape == (5, 7, 3)
        np.testing.assert_array_equal(values, expected)
        assert not stated, path


def test_palette_images_take_their_colours_and_state_dropped_transparency(tmp_path):
    palette = [0, 0, 0, 200, 10, 30, 5, 250, 90] + [0] * (3 * 253)
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    expected = np.array(palette[:9], np.uint8).reshape(3, 3)[indices]
    values, stated = _read(read_rgb, _save(image, tmp_path / "p.png"))
    np.testing.assert_array_equal(values, expected)
    assert not stated
    values, stated = _read(read_rgb, _save(image, tmp_path / "pt.png", transparency=1))
    np.testing.assert_array_equal(values, expected)  # colours kept as stored under the transparent entry
    assert len(stated) == 1 and "P images: the palette transparency is dropped" in str(stated[0].message)
    assert "pt.png" in str(stated[0].message)


@pytest.mark.parametrize("mode, suffix", [("LA", "png"), ("RGBA", "png"), ("PA", "tif")])
def test_alpha_is_dropped_and_stated(tmp_path, mode, suffix):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    if mode == "LA":
        image, expected = Image.fromarray(np.dstack([colour[..., 0], alpha]), mode="LA"), _grey(colour[..., 0])
    elif mode == "RGBA":
        image, expected = Image.fromarray(np.dstack([colour, alpha]), mode="RGBA"), colour
    else:
        indices = rng.integers(0, 3, (4, 6), dtype=np.uint8)
        palette = [10, 20, 30, 40, 50, 60, 70, 80, 90]
        image = Image.fromarray(np.dstack([indices, alpha]), mode="PA")
        image.putpalette(palette + [0] * (768 - 9))
        expected = np.array(palette, np.uint8).reshape(3, 3)[indices]
    path = _save(image, tmp_path / f"a.{suffix}")
    assert Image.open(path).mode == mode
    values, stated = _read(read_rgb, path)
    np.testing.assert_array_equal(values, expected)
    assert len(stated) == 1 and f"{mode} images: the alpha channel is dropped" in str(stated[0].message)


def test_cmyk_and_ycbcr_are_converted_and_stated(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [51, 0, 0, 0], [0, 0, 0, 102]], [[255, 255, 255, 0], [0, 153, 0, 0],
                                                                       [20, 40, 60, 0]]], np.uint8)
    values, stated = _read(read_rgb, _save(Image.fromarray(cmyk, mode="CMYK"), tmp_path / "c.tif"))
    # R = (255 - C)(255 - K) / 255, the same for G (M) and B (Y): exact for these pixels
    expected = ((255 - cmyk[..., :3].astype(int)) * (255 - cmyk[..., 3:].astype(int)) / 255).round()
    np.testing.assert_array_equal(values, expected.astype(np.uint8))
    assert len(stated) == 1 and "CMYK images are converted to RGB" in str(stated[0].message)

    ycbcr = np.array([[[100, 128, 128], [100, 160, 90], [60, 100, 140]]], np.uint8)
    values, stated = _read(read_rgb, _save(Image.fromarray(ycbcr, mode="YCbCr"), tmp_path / "y.tif"))
    y, cb, cr = (ycbcr[..., i].astype(float) for i in range(3))
    bt601 = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                      y + 1.772 * (cb - 128)], axis=-1)
    np.testing.assert_array_equal(values[0, 0], (100, 100, 100))
    assert np.abs(values - np.clip(bt601, 0, 255)).max() <= 1.0
    assert len(stated) == 1 and "YCbCr images are converted to RGB" in str(stated[0].message)


def _sixteen(mode: str, values: np.ndarray, path: Path) -> Path:
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, values.shape[::-1], values.astype(dtype).tobytes())
    return _save(image, path)


@pytest.mark.parametrize("mode, suffix, opens_as", [("I;16", "png", "I;16"), ("I;16", "tif", "I;16"),
                                                    ("I;16B", "tif", "I;16B"), ("I;16L", "tif", "I;16")])
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, mode, suffix, opens_as):
    path = _sixteen(mode, RAMP16, tmp_path / f"g.{suffix}")
    assert Image.open(path).mode == opens_as  # Pillow names little-endian 16 bit "I;16"
    values, stated = _read(read_rgb, path)
    np.testing.assert_array_equal(values, _grey(RAMP16_8BIT))
    assert len(stated) == 1
    message = str(stated[0].message)
    assert f"({opens_as}) are scaled to 8 bit by round(v / 257)" in message and "g." in message


def test_a_full_sixteen_bit_ramp_spans_0_to_255(tmp_path):
    ramp = np.arange(65536, dtype=np.uint32).reshape(256, 256).astype(np.uint16)
    with pytest.warns(ImageConversionWarning):
        values = read_rgb(_save(Image.fromarray(ramp), tmp_path / "ramp.png"))[..., 0]
    assert values.min() == 0 and values.max() == 255 and (values == 255).mean() < 0.01
    np.testing.assert_array_equal(np.bincount(values.ravel(), minlength=256)[1:255], 257)  # 257 levels per step


def test_thirty_two_bit_integers_are_scaled_when_they_fit_sixteen_bits(tmp_path):
    values, stated = _read(read_rgb, _save(Image.fromarray(RAMP16.astype(np.int32)), tmp_path / "i.tif"))
    np.testing.assert_array_equal(values, _grey(RAMP16_8BIT))
    assert len(stated) == 1 and "32-bit integer (I)" in str(stated[0].message)
    for bad, shown in ((np.array([[0, 70000]], np.int32), "0..70000"), (np.array([[-1, 5]], np.int32), "-1..5")):
        path = _save(Image.fromarray(bad), tmp_path / "bad.tif")
        with pytest.raises(UnsupportedImageError, match=rf"bad\.tif: PIL mode 'I': .*{shown} do not fit 16 bits"):
            read_rgb(path)


def test_float_images_in_0_1_are_scaled_others_refused(tmp_path):
    floats = np.array([[0.0, 0.2, 0.25, 0.6, 1.0]], np.float32)
    values, stated = _read(read_rgb, _save(Image.fromarray(floats), tmp_path / "f.tif"))
    np.testing.assert_array_equal(values, _grey([[0, 51, 64, 153, 255]]))  # round(255 v)
    assert len(stated) == 1 and "float grey images (F)" in str(stated[0].message)
    for bad in (np.array([[0.0, 1.5]], np.float32), np.array([[np.nan, 0.5]], np.float32)):
        path = _save(Image.fromarray(bad), tmp_path / "bad.tif")
        with pytest.raises(UnsupportedImageError, match=r"bad\.tif: PIL mode 'F': float values .* not in \[0, 1\]"):
            read_rgb(path)


def test_other_modes_are_refused_by_path_and_mode(tmp_path):
    path = _save(Image.new("LAB", (3, 3)), tmp_path / "lab.tif")
    with pytest.raises(UnsupportedImageError, match=r"cannot read image .*lab\.tif: PIL mode 'LAB'") as error:
        read_rgb(path)
    assert isinstance(error.value, CorruptImageError) and "I;16" in str(error.value)  # lists what is read


def test_sixteen_bit_colour_is_reduced_by_pillow_and_stated(tmp_path):
    colour = np.array([[[0x1234, 0xFFFF, 0x00FF]]], np.uint16)
    values, stated = _read(read_rgb, _png16_rgb(colour, tmp_path / "rgb16.png"))
    np.testing.assert_array_equal(values, [[[0x12, 0xFF, 0x00]]])  # the high byte
    assert len(stated) == 1 and "16-bit RGB images are reduced to 8 bit by Pillow" in str(stated[0].message)


def test_one_warning_per_kind_naming_the_first_file(tmp_path):
    first = _sixteen("I;16", RAMP16, tmp_path / "first.png")
    second = _sixteen("I;16", RAMP16, tmp_path / "second.png")
    rgba = _save(Image.new("RGBA", (2, 2)), tmp_path / "rgba.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in (first, second, first, rgba, rgba):
            read_rgb(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, ImageConversionWarning)]
    assert len(messages) == 2
    assert "first.png" in messages[0] and "I;16" in messages[0] and "RGBA" in messages[1]


def test_multi_frame_files_and_exif_orientation_are_stated(tmp_path):
    path = tmp_path / "frames.tif"
    Image.new("L", (4, 3), 10).save(path, save_all=True, append_images=[Image.new("L", (4, 3), 20)])
    values, stated = _read(read_rgb, path)
    assert (values == 10).all() and len(stated) == 1 and "first frame" in str(stated[0].message)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _save(Image.new("RGB", (4, 2), (90, 90, 90)), tmp_path / "turned.jpg", exif=exif)
    values, stated = _read(read_rgb, path)
    assert values.shape == (2, 4, 3)  # as stored, not rotated
    assert len(stated) == 1 and "orientation 6" in str(stated[0].message)


# ------------------------------------------------------------------------------ masks
def test_grey_palette_bilevel_and_integer_masks_keep_raw_values(tmp_path):
    labels = np.array([[0, 1, 2], [7, 255, 0]], np.uint8)
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([255, 255, 255] * 256)  # the colours are irrelevant: indices are the labels
    wide = np.array([[0, 1000, 65535]], np.uint16)
    cases = [(_save(Image.fromarray(labels), tmp_path / "l.png"), labels),
             (_save(palette, tmp_path / "p.png"), labels),
             (_save(Image.fromarray(labels > 0), tmp_path / "one.png"), (labels > 0)),
             (_save(Image.fromarray(wide), tmp_path / "w.png"), wide),
             (_sixteen("I;16B", wide, tmp_path / "wb.tif"), wide),
             (_save(Image.fromarray(wide.astype(np.int32) * 3), tmp_path / "i.tif"), wide.astype(np.int64) * 3),
             (_save(Image.fromarray(np.array([[0.0, 2.0, 1.0]], np.float32)), tmp_path / "f.tif"), [[0, 2, 1]])]
    for path, expected in cases:
        values, stated = _read(read_label_map, path)
        assert values.dtype == np.int64
        np.testing.assert_array_equal(values, np.asarray(expected, np.int64))
        assert not stated, path


def test_fractional_float_masks_are_refused(tmp_path):
    path = _save(Image.fromarray(np.array([[0.0, 0.4]], np.float32)), tmp_path / "soft.tif")
    with pytest.raises(UnsupportedImageError, match=r"mask .*soft\.tif: PIL mode 'F': .*integral labels"):
        read_label_map(path)


def test_mask_alpha_is_dropped_unless_it_holds_the_labels(tmp_path):
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    values, stated = _read(read_label_map, _save(Image.fromarray(np.dstack([grey, grey]), mode="LA"),
                                                 tmp_path / "la.png"))
    np.testing.assert_array_equal(values, grey)
    assert len(stated) == 1 and "LA masks: the alpha channel is dropped" in str(stated[0].message)
    rgba = np.dstack([np.full((2, 2, 3), 255, np.uint8), grey])  # white everywhere, labels in alpha
    with pytest.raises(UnsupportedImageError, match=r"alpha\.png: PIL mode 'RGBA': .*only the alpha"):
        read_label_map(_save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "alpha.png"))


def test_colour_masks_use_their_brightest_channel_and_say_so(tmp_path):
    grey = np.array([[0, 9], [255, 0]], np.uint8)
    values, stated = _read(read_label_map, _save(Image.fromarray(_grey(grey)), tmp_path / "g.png"))
    np.testing.assert_array_equal(values, grey)
    assert not stated
    colour = np.array([[[0, 0, 0], [200, 0, 0]], [[0, 0, 120], [10, 30, 20]]], np.uint8)
    values, stated = _read(read_label_map, _save(Image.fromarray(colour), tmp_path / "c.png"))
    np.testing.assert_array_equal(values, [[0, 200], [120, 30]])
    assert len(stated) == 1 and "brightest channel" in str(stated[0].message)


def test_jpeg_masks_are_binarised_at_mid_range(tmp_path):
    square = np.zeros((32, 32), np.uint8)
    square[5:19, 7:23] = 255
    path = _save(Image.fromarray(square), tmp_path / "m.jpg", quality=75)
    noisy = np.asarray(Image.open(path))
    assert (noisy[square == 0] > 0).any()  # "nonzero = anomalous" would mark background pixels
    values, stated = _read(read_label_map, path)
    np.testing.assert_array_equal(values, square)
    assert len(stated) == 1 and "JPEG masks are lossy" in str(stated[0].message)


def test_masks_pillow_cannot_read_exactly_are_refused(tmp_path):
    with pytest.raises(UnsupportedImageError, match=r"m16\.png: PIL mode 'RGB': 16-bit colour masks"):
        read_label_map(_png16_rgb(np.ones((2, 2, 3), np.uint16), tmp_path / "m16.png"))
    with pytest.raises(UnsupportedImageError, match=r"cmyk\.tif: PIL mode 'CMYK'"):
        read_label_map(_save(Image.new("CMYK", (2, 2)), tmp_path / "cmyk.tif"))


# ------------------------------------------------------------------------------ through a loader
def _mvtec(tmp_path: Path) -> Path:
    image = np.full((16, 16, 3), 100, np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[:8] = True
    return write_tree("mvtec", tmp_path, [LayoutImage("bottle", "test", (), image, None),
                                          LayoutImage("bottle", "test", ("broken_large",), image,
                                                      {"broken_large": mask})])


def test_a_sixteen_bit_image_reaches_the_sample_scaled(tmp_path):
    root = _mvtec(tmp_path)
    _sixteen("I;16", np.full((16, 16), 51400, np.uint16), root / "bottle/test/good/000.png")  # 51400 / 257 = 200
    with pytest.warns(ImageConversionWarning, match="I;16"):
        sample = open_dataset("mvtec", root, image_size=8)[1]
    expected = (200 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(sample["image"][:, 3, 3], expected.float())


def test_datasets_normalise_with_the_mean_and_std_they_are_given(tmp_path):
    root = _mvtec(tmp_path)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.2, 0.5)
    sample = open_dataset("mvtec", root, image_size=8, mean=mean, std=std)[1]
    expected = (100 / 255 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(sample["image"][:, 0, 0], expected.float())
    default = open_dataset("mvtec", root, image_size=8)
    assert default.mean == CLIP_MEAN == tuple(__import__("open_clip").OPENAI_DATASET_MEAN)
    with pytest.raises(ValueError, match="3 channels"):
        open_dataset("mvtec", root, image_size=8, mean=(0.5,))


def test_bilevel_full_and_empty_masks_are_decoded_and_flagged(tmp_path):
    root = _mvtec(tmp_path)
    mask = root / "bottle/ground_truth/broken_large/000_mask.png"
    Image.fromarray(np.ones((16, 16), bool)).save(mask)  # mode "1", every pixel anomalous
    dataset = open_dataset("mvtec", root, image_size=8)
    with pytest.warns(SuspiciousMaskWarning, match=r"000_mask\.png marks every pixel .* anomalous"):
        sample = dataset[0]
    assert sample["label"] == 1 and bool((sample["type_mask"] == 1).all())
    Image.fromarray(np.zeros((16, 16), bool)).save(mask)
    with pytest.warns(SuspiciousMaskWarning, match=r"has a mask without an anomalous pixel"):
        sample = dataset[0]
    assert sample["label"] == 1 and int(sample["mask"].sum()) == 0


def test_a_defect_lost_by_the_resize_is_flagged(tmp_path):
    root = _mvtec(tmp_path)
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 0] = 255  # a one-pixel column: 8 samples of 16 px fall on columns 1, 3, ..., 15
    Image.fromarray(mask).save(root / "bottle/ground_truth/broken_large/000_mask.png")
    with pytest.warns(SuspiciousMaskWarning, match=r"000_mask\.png all fall between the samples .* 8 px"):
        sample = open_dataset("mvtec", root, image_size=8)[0]
    assert sample["label"] == 1 and int(sample["mask"].sum()) == 0
    assert int(open_dataset("mvtec", root, image_size=16)[0]["mask"].sum()) == 16


def test_hidden_resource_fork_files_are_not_images(tmp_path):
    root = _mvtec(tmp_path)
    (root / "bottle/test/good/._000.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    dataset = open_dataset("mvtec", root, image_size=8)
    assert len(dataset) == 2 and not any("._" in r.path for r in dataset.records)
