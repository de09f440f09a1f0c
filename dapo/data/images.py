"""Image and mask files -> uint8 RGB arrays and integer label maps; CLIP normalisation.

Every PIL mode a loader can meet is read exactly, converted with a stated rule, or refused
with an error naming the file and the mode. Conversions that lose information or change the
scale emit one :class:`ImageConversionWarning` per kind (mode and rule, with one example
path), not one per file.

Images (:func:`read_rgb`)::

    RGB, RGBX, L, 1       as stored (grey replicated; 1 -> 0/255); no warning
    P                     palette colours; a transparency entry is dropped (warning)
    LA, PA, RGBA          alpha dropped, colours kept as stored, not composited (warning)
    CMYK, YCbCr           Pillow's conversion to RGB, no colour profile (warning)
    I;16, I;16B/L/N       16 bit -> 8 bit by round(v / 257): 0..65535 -> 0..255 (warning)
    I (32-bit integer)    values in 0..65535: as 16 bit (warning); others refused
    F (float)             values in [0, 1]: round(255 v) (warning); others refused
    anything else         refused (UnsupportedImageError)

Every image is resized to the square input (:func:`clip_tensor`); one far smaller than the
input (shorter side below a quarter of it) or far from square (over 4:1) is stated once
(:func:`check_geometry`), by the loaders and ``dapo predict`` alike.

Colour files with 16 bits per channel are decoded by Pillow to their high byte (``v // 256``),
which is stated. Multi-frame files give their first frame and EXIF orientation tags are not
applied (pixels as stored, like the masks drawn on them); both are stated.

Masks (:func:`read_label_map`) keep raw values (grey levels, palette indices, 16- and 32-bit
integers): ``1``, ``L``, ``P``, ``I;16*``, ``I`` as stored; ``F`` only with integral values;
``LA``/``PA``/``RGBA`` drop alpha (refused when the labels live only in alpha); ``RGB``
channels that differ are reduced to their maximum (stated). JPEG masks are lossy, so they are
binarised at mid-range (>= 128 -> 255, stated) rather than read as "nonzero = anomalous".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import open_clip
import torch
from PIL import Image

CLIP_MEAN = tuple(open_clip.OPENAI_DATASET_MEAN)
CLIP_STD = tuple(open_clip.OPENAI_DATASET_STD)
EIGHT_BIT_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
IMAGE_MODES = (*EIGHT_BIT_MODES, *SIXTEEN_BIT_MODES, "I", "F")
MASK_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", *SIXTEEN_BIT_MODES, "I", "F")
EXIF_ORIENTATION = 0x0112


class CorruptImageError(OSError):
    """An image or mask file cannot be decoded."""


class UnsupportedImageError(CorruptImageError):
    """A file decodes, but its mode or values cannot be read without silent damage."""


class ImageConversionWarning(UserWarning):
    """Images or masks of some kind were converted with loss of information or a change of scale."""


class SuspiciousMaskWarning(UserWarning):
    """A mask decodes but its content looks wrong (empty, or every pixel anomalous)."""


_STATED: set[str] = set()


def state_once(kind: str, message: str, category: type[Warning] = ImageConversionWarning) -> None:
    """Warn once per process for each ``kind`` of conversion (the first file is the example).

    DataLoader workers are processes of their own: each states a kind once.
    """
    if kind in _STATED:
        return
    _STATED.add(kind)
    warnings.warn(f"{message}; further files of this kind are treated alike without a warning", category,
                  stacklevel=3)


def normalisation(mean: Sequence[float] | None = None, std: Sequence[float] | None = None
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (default: OpenAI CLIP's, from ``open_clip``), checked."""
    mean = tuple(float(v) for v in (CLIP_MEAN if mean is None else mean))
    std = tuple(float(v) for v in (CLIP_STD if std is None else std))
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 channels and std > 0, got mean={mean}, std={std}")
    return mean, std


def to_clip_tensor(pixels: np.ndarray, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> torch.Tensor:
    """``(H, W, 3)`` values in 0..255 -> float32 ``[3, H, W]``: ``(v / 255 - mean) / std``."""
    mean, std = normalisation(mean, std)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 255.0
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


SMALL_FACTOR = 4  # an image whose shorter side is below size / 4 is upsampled more than 4x
ASPECT_LIMIT = 4  # a longer side over 4x the shorter one is squashed to a square more than 4:1


def check_geometry(path: str | Path, shape: tuple[int, ...], size: int) -> None:
    """State once (per kind) an image far smaller than the input size or far from square: both are
    resized to ``size x size`` as every image is (bicubic, aspect ratio not kept), but such images
    lose detail or are distorted compared with the benchmarks'. Loaders and ``dapo predict`` share it."""
    height, width = shape[:2]
    if min(height, width) * SMALL_FACTOR < size:
        state_once("image small", f"images far smaller than the {size} px input are upsampled (bicubic), so "
                                  f"their anomaly maps are coarse (e.g. {path}: {width}x{height} px)")
    if max(height, width) > ASPECT_LIMIT * min(height, width):
        state_once("image aspect", f"images far from square are resized to {size}x{size} without keeping their "
                                   f"aspect ratio, so they are squashed (e.g. {path}: {width}x{height} px); crop "
                                   f"them into near-square tiles for pixel-level use")


def clip_tensor(image: np.ndarray, size: int, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> float32 ``[3, size, size]``: bicubic resize, then :func:`to_clip_tensor`."""
    resized = np.array(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    return to_clip_tensor(resized, mean, std)


# ----------------------------------------------------------------------------- decoding
def _too_large(path: str | Path, what: str, error: Exception) -> NoReturn:
    raise UnsupportedImageError(f"cannot read {what} {path}: {error} Pillow refuses files above "
                                f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels (a guard against decompression bombs): "
                                f"downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None


def _load(path: str | Path, what: str) -> tuple[Image.Image, str]:
    """Open and decode a file; also return the decoder's raw mode (it tells 16-bit colour apart).

    Files above Pillow's pixel limit (``PIL.Image.MAX_IMAGE_PIXELS``, twice which is a
    decompression bomb) are refused with :class:`UnsupportedImageError` naming the file.
    """
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        _too_large(path, what, error)
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptImageError(f"cannot read {what} {path}: {error}") from error
    try:
        args = image.tile[0][3] if image.tile else ""
        rawmode = args if isinstance(args, str) else str(args[0]) if args else ""
        image.load()
    except Image.DecompressionBombError as error:
        image.close()
        _too_large(path, what, error)
    except (OSError, SyntaxError, ValueError) as error:
        image.close()
        raise CorruptImageError(f"cannot read {what} {path}: {error}") from error
    return image, rawmode


def _note_layout(image: Image.Image, path: str | Path, what: str) -> None:
    """State what is read as stored: first frame only, EXIF orientation not applied."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        state_once(f"{what} frames", f"{what} files with several frames are read at their first frame "
                                     f"(e.g. {path}: {frames} frames)")
    orientation = image.getexif().get(EXIF_ORIENTATION)
    if orientation not in (None, 1):
        state_once(f"{what} orientation", f"EXIF orientation tags of {what}s are not applied: pixels are read "
                                          f"as stored, as masks are drawn (e.g. {path}: orientation {orientation})")


def _unsupported(path: str | Path, what: str, mode: str, supported: Sequence[str], reason: str = "") -> NoReturn:
    """Refuse a file by path and mode, saying why (default: the modes that are read)."""
    reason = reason or f"the loaders read the modes {', '.join(supported)}"
    raise UnsupportedImageError(f"cannot read {what} {path}: PIL mode {mode!r}: {reason}")


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by ``round(v / 257)`` (65535 = 255 * 257, so the ends map exactly)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image as ``(H, W, 3)`` uint8 (the conversions of the module docstring)."""
    image, rawmode = _load(path, "image")
    with image:
        _note_layout(image, path, "image")
        mode = image.mode
        if ";16" in rawmode and mode in EIGHT_BIT_MODES:
            state_once(f"image {mode} 16-bit", f"16-bit {mode} images are reduced to 8 bit by Pillow "
                                               f"(high byte, v // 256), e.g. {path}")
        if mode in ("RGB", "RGBX", "L", "1"):
            return np.asarray(image.convert("RGB"))
        if mode == "P" and "transparency" not in image.info:
            return np.asarray(image.convert("RGB"))
        if mode in ("P", "LA", "PA", "RGBA"):
            what = "palette transparency" if mode == "P" else "alpha channel"
            state_once(f"image {mode} alpha", f"{mode} images: the {what} is dropped, colours are kept as stored "
                                              f"(not composited on a background), e.g. {path}")
            return np.ascontiguousarray(np.asarray(image.convert("RGBA"))[..., :3])
        if mode in ("CMYK", "YCbCr"):
            state_once(f"image {mode}", f"{mode} images are converted to RGB with Pillow's formula "
                                        f"(no colour profile), e.g. {path}")
            return np.asarray(image.convert("RGB"))
        if mode in SIXTEEN_BIT_MODES or mode == "I":
            values = np.asarray(image)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high > 65535:
                _unsupported(path, "image", mode, IMAGE_MODES,
                             f"32-bit integer values {low}..{high} do not fit 16 bits; no scale to 8 bit is known")
            kind = "16-bit" if mode != "I" else "32-bit integer (I) with values that fit 16 bits"
            state_once(f"image {mode}", f"{kind} grey images ({mode}) are scaled to 8 bit by round(v / 257), "
                                        f"0..65535 -> 0..255, not clipped, e.g. {path}")
            return np.repeat(_sixteen_to_eight(values)[..., None], 3, axis=2)
        if mode == "F":
            values = np.asarray(image, dtype=np.float64)
            if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
                _unsupported(path, "image", mode, IMAGE_MODES, f"float values {np.nanmin(values):g}.."
                             f"{np.nanmax(values):g} are not in [0, 1]; no scale to 8 bit is known")
            state_once("image F", f"float grey images (F) with values in [0, 1] are scaled to 8 bit by "
                                  f"round(255 v), e.g. {path}")
            return np.repeat(np.rint(values * 255.0).astype(np.uint8)[..., None], 3, axis=2)
        _unsupported(path, "image", mode, IMAGE_MODES)


def _drop_alpha(values: np.ndarray, path: str | Path, mode: str) -> np.ndarray:
    """Colour/grey/index channels of a mask with alpha; refuse labels carried by alpha alone."""
    colour, alpha = values[..., :-1], values[..., -1]
    if (colour == colour.reshape(-1, colour.shape[-1])[0]).all() and alpha.min() != alpha.max():
        _unsupported(path, "mask", mode, MASK_MODES, "its colour channels are uniform and only the alpha "
                     "channel varies: the labels would be lost; save the mask as grey (L)")
    state_once(f"mask {mode} alpha", f"{mode} masks: the alpha channel is dropped, labels are read from the "
                                     f"{'palette index' if mode == 'PA' else 'colour'}, e.g. {path}")
    return colour


def read_label_map(path: str | Path) -> np.ndarray:
    """Decode a mask as ``(H, W)`` int64 keeping its raw values (rules in the module docstring)."""
    image, rawmode = _load(path, "mask")
    with image:
        _note_layout(image, path, "mask")
        mode = image.mode
        if ";16" in rawmode and mode in EIGHT_BIT_MODES:
            _unsupported(path, "mask", mode, MASK_MODES, "16-bit colour masks are decoded by Pillow to their "
                         "high byte, which loses labels below 256; save the mask as 8- or 16-bit grey")
        if mode in ("1", "L", "P", "I", *SIXTEEN_BIT_MODES):
            labels = np.asarray(image).astype(np.int64)
        elif mode == "F":
            values = np.asarray(image, dtype=np.float64)
            if not np.isfinite(values).all() or (values != np.rint(values)).any():
                _unsupported(path, "mask", mode, MASK_MODES, "float masks must hold integral labels; "
                             "soft (fractional) values have no defined class")
            labels = values.astype(np.int64)
        elif mode in ("LA", "PA", "RGB", "RGBA"):
            values = np.asarray(image)
            colour = _drop_alpha(values, path, mode) if mode != "RGB" else values
            if colour.shape[-1] == 1:
                labels = colour[..., 0].astype(np.int64)
            else:
                if (colour != colour[..., :1]).any():
                    state_once("mask colour", f"colour masks with unequal channels are reduced to their "
                                              f"brightest channel (max over R, G, B), e.g. {path}")
                labels = colour.max(axis=2).astype(np.int64)
        else:
            _unsupported(path, "mask", mode, MASK_MODES)
        if image.format == "JPEG":
            state_once("mask JPEG", f"JPEG masks are lossy (their edges and background carry noise), so they "
                                    f"are binarised at mid-range: >= 128 -> 255, else 0, e.g. {path}")
            labels = np.where(labels >= 128, 255, 0).astype(np.int64)
        return labels
