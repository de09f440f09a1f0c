"""What ``dapo predict`` writes per image, and the run's legend and table; every file atomically.

Per image, at the image's own resolution (maps computed at the model's input size, resized):

* ``<name>_anomaly.png``: 8-bit grey, value = round(255 * anomaly probability) (the predictor's
  binary anomaly map, bilinear resize);
* ``<name>_types.png``: indexed (palette) PNG, pixel value k = class k of the legend (0 normal,
  k = the k-th defect of ``--defects``; the per-pixel argmax of the multi-type map,
  nearest-neighbour resize); the legend is also stored in the PNG as a ``dapo:legend`` text
  chunk (JSON);
* ``<name>_overlay.png``: the image with each defect's pixels tinted in its legend colour
  and outlined.

Per run: ``legend.csv`` / ``legend.png`` (index, name, colour) and ``predictions.csv``.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, PngImagePlugin

from dapo.util.atomic import atomic_path

MAX_CLASSES = 256  # an indexed PNG holds 256 palette entries: normal + 255 defects
NORMAL_COLOUR = (0, 0, 0)
TINT = 0.5
# Qualitative colours (matplotlib's tab10 order), then evenly spread hues.
BASE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def palette(n_defects: int) -> list[tuple[int, int, int]]:
    """Colours of normal (black) and ``n_defects`` defects, all distinct."""
    if n_defects + 1 > MAX_CLASSES:
        raise ValueError(f"{n_defects} defects do not fit an indexed PNG (at most {MAX_CLASSES - 1})")
    colours = [NORMAL_COLOUR, *BASE_COLOURS[:n_defects]]
    for k in range(len(colours) - 1, n_defects):
        hue = (k * 0.618033988749895) % 1.0  # golden-ratio hue steps
        colours.append(tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.75, 0.95)))
    return colours


def legend_table(class_names: Sequence[str]) -> pd.DataFrame:
    """``index, name, hex, r, g, b`` for normal and each defect."""
    colours = palette(len(class_names) - 1)
    return pd.DataFrame([{"index": k, "name": name, "hex": "#{:02x}{:02x}{:02x}".format(*colour), "r": colour[0],
                          "g": colour[1], "b": colour[2]} for k, (name, colour) in enumerate(zip(class_names, colours))])


def write_legend(out: Path, class_names: Sequence[str]) -> list[Path]:
    """``legend.csv`` and ``legend.png`` (a swatch and the name per class)."""
    table = legend_table(class_names)
    csv_path = out / "legend.csv"
    with atomic_path(csv_path) as temporary:
        table.to_csv(temporary, index=False, lineterminator="\n")
    row = 18
    image = Image.new("RGB", (260, row * len(table) + 6), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for k, entry in table.iterrows():
        top = 3 + k * row
        draw.rectangle((4, top, 4 + row - 4, top + row - 4), fill=(entry.r, entry.g, entry.b), outline=(0, 0, 0))
        draw.text((row + 8, top + 1), f"{entry['index']}  {entry['name']}", fill=(0, 0, 0))
    png_path = out / "legend.png"
    _save_png(image, png_path)
    return [csv_path, png_path]


def _save_png(image: Image.Image, path: Path, info: PngImagePlugin.PngInfo | None = None) -> None:
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG", pnginfo=info)


def _resized(values: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """``(h, w)`` array resized to ``size = (height, width)``."""
    if values.shape == size:
        return values
    return np.asarray(Image.fromarray(values).resize(size[::-1], resample))  # float32 -> F, uint8 -> L


def anomaly_png(anomaly_map: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Grey PNG of a ``[0, 1]`` map at ``size`` (height, width): round(255 * value)."""
    resized = _resized(np.clip(anomaly_map, 0.0, 1.0).astype(np.float32), size, Image.Resampling.BILINEAR)
    return Image.fromarray(np.rint(np.clip(resized, 0.0, 1.0) * 255.0).astype(np.uint8))


def type_png(type_mask: np.ndarray, size: tuple[int, int], class_names: Sequence[str]
             ) -> tuple[Image.Image, np.ndarray, PngImagePlugin.PngInfo]:
    """Indexed PNG of a class-id map at ``size``, the resized ids, and the legend text chunk."""
    ids = _resized(type_mask.astype(np.uint8), size, Image.Resampling.NEAREST)
    image = Image.fromarray(ids)
    flat = [value for colour in palette(len(class_names) - 1) for value in colour]
    image.putpalette(flat + [0] * (3 * MAX_CLASSES - len(flat)))  # L -> P, the ids kept
    info = PngImagePlugin.PngInfo()
    info.add_text("dapo:legend", json.dumps(list(class_names)))
    return image, ids, info


def overlay(rgb: np.ndarray, ids: np.ndarray, n_defects: int) -> Image.Image:
    """``rgb`` with defect pixels tinted in their colour and the regions' borders in full colour."""
    colours = np.array(palette(n_defects), dtype=np.float32)
    out = rgb.astype(np.float32)
    defect = ids > 0
    out[defect] = (1.0 - TINT) * out[defect] + TINT * colours[ids[defect]]
    border = np.zeros_like(defect)
    border[1:, :] |= ids[1:, :] != ids[:-1, :]
    border[:-1, :] |= ids[1:, :] != ids[:-1, :]
    border[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    border[:, :-1] |= ids[:, 1:] != ids[:, :-1]
    border &= defect
    out[border] = colours[ids[border]]
    return Image.fromarray(np.rint(out).astype(np.uint8))


def write_image_outputs(out: Path, name: str, rgb: np.ndarray, anomaly_map: np.ndarray, type_mask: np.ndarray,
                        class_names: Sequence[str]) -> tuple[dict[str, str], np.ndarray]:
    """The three PNGs of one image (``name``: its relative output name without suffix); returns
    their paths relative to ``out`` and the class ids at the image's resolution."""
    size = rgb.shape[:2]
    stem = out / name
    files = {"anomaly_map": stem.with_name(f"{stem.name}_anomaly.png"),
             "type_mask": stem.with_name(f"{stem.name}_types.png"),
             "overlay": stem.with_name(f"{stem.name}_overlay.png")}
    _save_png(anomaly_png(anomaly_map, size), files["anomaly_map"])
    types, ids, info = type_png(type_mask, size, class_names)
    _save_png(types, files["type_mask"], info)
    _save_png(overlay(rgb, ids, len(class_names) - 1), files["overlay"])
    return {key: path.relative_to(out).as_posix() for key, path in files.items()}, ids


def area_fractions(ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of the pixels in each class (``n_classes`` values summing to 1)."""
    return np.bincount(ids.ravel(), minlength=n_classes)[:n_classes] / ids.size


def prediction_row(path: str, image_score: float, defect_probs: np.ndarray, areas: np.ndarray,
                   vocabulary: Sequence[str], threshold: float, files: dict[str, str]) -> dict:
    """One row of ``predictions.csv``: path, image score, per defect its Eq. 11 probability, the
    predicted types (probability > ``threshold``, ``;``-separated), the area per type, the files."""
    row = {"path": path, "image_score": float(image_score)}
    row.update({f"prob_{name}": float(p) for name, p in zip(vocabulary, defect_probs)})
    row["predicted_types"] = ";".join(name for name, p in zip(vocabulary, defect_probs) if p > threshold)
    row.update({f"area_{name}": float(a) for name, a in zip(vocabulary, areas[1:])})
    row.update(files)
    return row


def write_predictions(path: Path, rows: list[dict], vocabulary: Sequence[str]) -> Path:
    """``predictions.csv``, written atomically (an interruption leaves the previous file or none)."""
    columns = ["path", "image_score", *(f"prob_{n}" for n in vocabulary), "predicted_types",
               *(f"area_{n}" for n in vocabulary), "anomaly_map", "type_mask", "overlay"]
    with atomic_path(path) as temporary:
        pd.DataFrame(rows, columns=columns).to_csv(temporary, index=False, float_format="%.6g", lineterminator="\n")
    return path
