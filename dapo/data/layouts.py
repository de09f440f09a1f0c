"""Write image trees in the official layouts of the benchmark datasets.

Used by the tests (tiny fixture trees) and by the synthetic world (generated worlds are
written exactly as the real datasets are distributed, so the same loaders read both).

Layouts (``root`` is the dataset root a loader is pointed at)::

    mvtec, mpdd, mad_sim, mad_real   (MVTec-AD folder convention)
        <product>/train/good/<name>.png
        <product>/test/good/<name>.png
        <product>/test/<defect>/<name>.png
        <product>/ground_truth/<defect>/<name>_mask.png      binary, 0 / 255
    visa                              (VisA_20220922 release)
        split_csv/1cls.csv            object,split,label,image,mask  (label: normal|anomaly)
        <product>/image_anno.csv      image,label,mask  (label: "normal" or "a,b" native labels)
        <product>/Data/Images/Normal/<name>.JPG
        <product>/Data/Images/Anomaly/<name>.JPG
        <product>/Data/Masks/Anomaly/<name>.png            pixel value = defect id of the product
    real_iad                          (Real-IAD release, single-view JSON protocol)
        realiad_1024/<product>/OK/S0001/<product>_0001_OK_C1_<stamp>.jpg
        realiad_1024/<product>/NG/<code>/S0002/<product>_0002_NG_<code>_C1_<stamp>.{jpg,png}
        realiad_jsons/realiad_jsons_sv/<product>.json
            {"meta": {"prefix": "", "normal_class": "OK"},
             "train": [...], "test": [{"category", "anomaly_class", "image_path", "mask_path"}]}

    btad                              (BTech_Dataset_transformed, as AnomalyCLIP and AdaCLIP read it)
        <product>/train/ok/<name>.bmp
        <product>/test/ok/<name>.bmp
        <product>/test/ko/<name>.bmp
        <product>/ground_truth/ko/<name>.png               <name>.bmp for product 03; 0 / 255
    ksdd                              (KolektorSDD release; no split on disk, see dapo.data.ksdd)
        <kosNN>/Part<k>.jpg
        <kosNN>/Part<k>_label.bmp                          every image has one; empty = defect-free
    dagm                              (DAGM 2007, Class folders with Train/Test as AnomalyCLIP reads them)
        <Class>/{Train,Test}/<name>.PNG
        <Class>/{Train,Test}/Label/<name>_label.PNG       defective images only; 0 / 255
        <Class>/{Train,Test}/Label/Labels.txt             class number, then id, flag, file, 0, label file
    dtd_synthetic                     (DTD-Synthetic, MVTec-like)
        <product>/train/good/<name>.png
        <product>/test/{good,bad}/<name>.png
        <product>/ground_truth/bad/<name>.png              0 / 255

Multi-defect images, per layout (what the official format can hold):

* folder layouts keep one binary mask per image, so an image with several defect types is
  written to the ``combined`` folder (MVTec-AD's convention) with the union mask; per-pixel
  types are lost, exactly as in MVTec-AD.
* ``visa`` keeps them: the image_anno.csv row lists every native label and the mask stores
  each pixel's defect id (VisA's class-indexed masks). Where masks overlap, the defect listed
  later in ``LayoutImage.defects`` wins.
* ``real_iad`` stores one ``anomaly_class`` per image; a multi-defect image is refused.
* ``btad``, ``ksdd``, ``dagm``, ``dtd_synthetic`` have a single anomaly class and no defect types:
  every anomalous image, whatever its native labels, is written as that class (``ko``, a non-empty
  label, a ``Label`` entry, ``bad``) with the union of its masks. ``dagm`` alone holds defective
  images in its train split too (DAGM's Train folders do); ``ksdd`` has no split on disk, so
  ``LayoutImage.split`` is not written (the loader derives the split).

Names default to the official numbering (``000`` for MVTec-AD, MPDD, VisA anomalies; ``0`` for
MAD; ``0000`` for VisA normals; ``Part0`` on for KolektorSDD), or the width seen in the sources
read where they show names: three digits for BTAD (anomalib's example ``01/train/ok/105.bmp``),
four for DAGM (``0595_label.PNG``), counted from ``0001``; DTD-Synthetic's names are not shown
there, so it takes MVTec-AD's ``000``. No loader depends on the numbering. Images are PNG except the JPEG layouts (VisA, Real-IAD, KolektorSDD), written at
``jpeg_quality``, and BTAD's BMP files; masks are lossless: PNG, BMP for KolektorSDD and BTAD 03.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FOLDER_LAYOUTS = ("mvtec", "mpdd", "mad_sim", "mad_real")
SINGLE_CLASS_LAYOUTS = ("btad", "ksdd", "dagm", "dtd_synthetic")  # one anomaly class, no defect types
LAYOUTS = FOLDER_LAYOUTS + ("visa", "real_iad") + SINGLE_CLASS_LAYOUTS
SPLITS = ("train", "test")
GOOD_FOLDER = "good"
COMBINED_FOLDER = "combined"
REAL_IAD_IMAGE_DIR = "realiad_1024"
REAL_IAD_JSON_DIR = ("realiad_jsons", "realiad_jsons_sv")
REAL_IAD_NORMAL_CLASS = "OK"
VISA_SPLIT_CSV = ("split_csv", "1cls.csv")
BTAD_GOOD_FOLDER, BTAD_BAD_FOLDER = "ok", "ko"
BTAD_BMP_MASK_PRODUCTS = ("03",)  # BTAD product whose masks are .bmp (the others' are .png)
DTD_BAD_FOLDER = "bad"
DAGM_SPLITS = {"train": "Train", "test": "Test"}
DAGM_LABEL_DIR, DAGM_LABEL_FILE, DAGM_MASK_SUFFIX = "Label", "Labels.txt", "_label.PNG"
KSDD_LABEL_SUFFIX = "_label.bmp"
ANOMALOUS_TRAIN_LAYOUTS = ("dagm",)  # layouts whose train split holds defective images
_NAME_DIGITS = {"mvtec": 3, "mpdd": 3, "mad_sim": 0, "mad_real": 0}


@dataclass
class LayoutImage:
    """One image to write.

    Attributes
    ----------
    product:
        Product (class) name; used verbatim as the product folder name.
    split:
        ``"train"`` or ``"test"``.
    defects:
        Dataset-native defect labels (folder names, VisA label strings, Real-IAD codes);
        ``()`` for a good image.
    image:
        ``(H, W, 3)`` uint8 RGB array.
    masks:
        Native label -> ``(H, W)`` bool mask, one per entry of ``defects``; ``None`` or ``{}``
        for a good image.
    name:
        File stem; ``None`` takes the layout's official numbering.
    """

    product: str
    split: str
    defects: tuple[str, ...]
    image: np.ndarray
    masks: dict[str, np.ndarray] | None
    name: str | None = None


def write_tree(
    layout: str,
    root: str | Path,
    images: Iterable[LayoutImage],
    *,
    mask_ids: Mapping[str, Mapping[str, int]] | None = None,
    jpeg_quality: int = 95,
) -> Path:
    """Write ``images`` under ``root`` in the official ``layout``; return ``root``.

    One call writes one whole tree: the VisA split/annotation CSVs and the Real-IAD JSONs are
    written from ``images`` alone, replacing any earlier ones.

    Parameters
    ----------
    layout:
        One of ``LAYOUTS``.
    root:
        Dataset root (created if missing).
    images:
        The images; order fixes the default numbering, so equal input gives an equal tree.
    mask_ids:
        VisA only: product -> {native label: pixel value} of its class-indexed masks. By
        default a product's labels are numbered 1.. in sorted order of the labels its images
        use; pass ``{p: knowledge.mask_ids(p) ...}`` to match a knowledge file exactly.
    jpeg_quality:
        Quality of the JPEG images of the VisA and Real-IAD layouts.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    root = Path(root)
    items = [_checked(image, layout in ANOMALOUS_TRAIN_LAYOUTS) for image in images]
    if layout in FOLDER_LAYOUTS:
        _write_folder_layout(layout, root, items)
    elif layout == "visa":
        _write_visa(root, items, mask_ids, jpeg_quality)
    elif layout == "real_iad":
        _write_real_iad(root, items, jpeg_quality)
    elif layout == "btad":
        _write_btad(root, items)
    elif layout == "ksdd":
        _write_ksdd(root, items, jpeg_quality)
    elif layout == "dagm":
        _write_dagm(root, items)
    else:
        _write_dtd_synthetic(root, items)
    return root


def _checked(item: LayoutImage, anomalous_train: bool = False) -> LayoutImage:
    """Validate one ``LayoutImage``; raise ``ValueError`` naming what is wrong."""
    where = f"{item.product}/{item.split}/{item.name or '?'}"
    if item.split not in SPLITS:
        raise ValueError(f"{where}: split must be one of {SPLITS}, got {item.split!r}")
    image = np.asarray(item.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    defects = tuple(item.defects)
    masks = dict(item.masks or {})
    if len(set(defects)) != len(defects):
        raise ValueError(f"{where}: repeated defect label in {defects}")
    if set(masks) != set(defects):
        raise ValueError(f"{where}: masks must be given for exactly the defects {defects}, got {sorted(masks)}")
    if defects and item.split == "train" and not anomalous_train:
        raise ValueError(f"{where}: the official layouts hold only good images in the train split")
    for label, mask in masks.items():
        mask = np.asarray(mask)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{where}: mask {label!r} has shape {mask.shape}, image is {image.shape[:2]}")
        if not mask.any():
            raise ValueError(f"{where}: mask {label!r} is empty; an anomalous image needs its region")
        masks[label] = mask.astype(bool)
    return LayoutImage(item.product, item.split, defects, image, masks, item.name)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _save_jpeg(array: np.ndarray, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=quality)


def _save_bmp(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="BMP")


def _union(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.logical_or.reduce(list(masks.values())).astype(np.uint8) * 255


def _stem(item: LayoutImage, counter: int, digits: int) -> str:
    return item.name if item.name is not None else f"{counter:0{digits}d}"


def _write_folder_layout(layout: str, root: Path, items: list[LayoutImage]) -> None:
    counters: dict[tuple[str, str, str], int] = defaultdict(int)
    for item in items:
        if not item.defects:
            folder = GOOD_FOLDER
        elif len(item.defects) == 1:
            folder = item.defects[0]
        else:
            folder = COMBINED_FOLDER
        key = (item.product, item.split, folder)
        stem = _stem(item, counters[key], _NAME_DIGITS[layout])
        counters[key] += 1
        product_dir = root / item.product
        _save_png(item.image, product_dir / item.split / folder / f"{stem}.png")
        if item.defects:
            _save_png(_union(item.masks), product_dir / "ground_truth" / folder / f"{stem}_mask.png")


def _default_visa_ids(items: list[LayoutImage]) -> dict[str, dict[str, int]]:
    labels: dict[str, set[str]] = defaultdict(set)
    for item in items:
        labels[item.product].update(item.defects)
    return {product: {label: i for i, label in enumerate(sorted(names), start=1)} for product, names in labels.items()}


def _visa_mask(item: LayoutImage, ids: Mapping[str, int]) -> np.ndarray:
    typed = np.zeros(item.image.shape[:2], dtype=np.uint8)
    for label in item.defects:
        if label not in ids:
            raise ValueError(f"{item.product}: no VisA mask id for defect {label!r}; ids: {dict(ids)}")
        if not 0 < ids[label] < 256:
            raise ValueError(f"{item.product}: VisA mask id {ids[label]} of {label!r} must be in 1..255")
        typed[item.masks[label]] = ids[label]
    return typed


def _write_visa(
    root: Path, items: list[LayoutImage], mask_ids: Mapping[str, Mapping[str, int]] | None, quality: int
) -> None:
    ids = _default_visa_ids(items) if mask_ids is None else mask_ids
    counters: dict[tuple[str, bool], int] = defaultdict(int)
    split_rows: list[list[str]] = []
    anno_rows: dict[str, list[list[str]]] = defaultdict(list)
    for item in items:
        anomalous = bool(item.defects)
        key = (item.product, anomalous)
        stem = _stem(item, counters[key], 3 if anomalous else 4)
        counters[key] += 1
        image_rel = f"{item.product}/Data/Images/{'Anomaly' if anomalous else 'Normal'}/{stem}.JPG"
        mask_rel = f"{item.product}/Data/Masks/Anomaly/{stem}.png" if anomalous else ""
        _save_jpeg(item.image, root / image_rel, quality)
        if anomalous:
            _save_png(_visa_mask(item, ids.get(item.product, {})), root / mask_rel)
        split_rows.append([item.product, item.split, "anomaly" if anomalous else "normal", image_rel, mask_rel])
        anno_rows[item.product].append([image_rel, ",".join(item.defects) if anomalous else "normal", mask_rel])
    _write_csv(root.joinpath(*VISA_SPLIT_CSV), ["object", "split", "label", "image", "mask"], split_rows)
    for product, rows in anno_rows.items():
        _write_csv(root / product / "image_anno.csv", ["image", "label", "mask"], rows)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _write_real_iad(root: Path, items: list[LayoutImage], quality: int) -> None:
    entries: dict[str, dict[str, list[dict]]] = defaultdict(lambda: {"train": [], "test": []})
    samples: dict[str, int] = defaultdict(int)
    for item in items:
        if len(item.defects) > 1:
            raise ValueError(
                f"{item.product}/{item.name or '?'}: the real_iad layout stores one anomaly_class per image, "
                f"got {item.defects}"
            )
        samples[item.product] += 1
        sample = samples[item.product]
        status = REAL_IAD_NORMAL_CLASS if not item.defects else item.defects[0]
        folder = "OK" if not item.defects else f"NG/{status}"
        kind = "OK" if not item.defects else f"NG_{status}"
        stamp = 20240101000000 + sample
        stem = item.name if item.name is not None else f"{item.product}_{sample:04d}_{kind}_C1_{stamp}"
        image_rel = f"{folder}/S{sample:04d}/{stem}.jpg"
        mask_rel = f"{folder}/S{sample:04d}/{stem}.png" if item.defects else None
        product_dir = root / REAL_IAD_IMAGE_DIR / item.product
        _save_jpeg(item.image, product_dir / image_rel, quality)
        if item.defects:
            _save_png(_union(item.masks), product_dir / mask_rel)
        entries[item.product][item.split].append(
            {"category": item.product, "anomaly_class": status, "image_path": image_rel, "mask_path": mask_rel}
        )
    json_dir = root.joinpath(*REAL_IAD_JSON_DIR)
    json_dir.mkdir(parents=True, exist_ok=True)
    for product, splits in entries.items():
        document = {"meta": {"prefix": "", "normal_class": REAL_IAD_NORMAL_CLASS}, **splits}
        (json_dir / f"{product}.json").write_text(json.dumps(document, indent=1), encoding="utf-8")


def _single_class(items: list[LayoutImage], digits: int, start: int = 0) -> list[tuple[LayoutImage, str]]:
    """``(item, stem)`` pairs, numbered per (product, split, normal or anomalous) from ``start``."""
    counters: dict[tuple[str, str, bool], int] = defaultdict(lambda: start)
    named = []
    for item in items:
        key = (item.product, item.split, bool(item.defects))
        named.append((item, _stem(item, counters[key], digits)))
        counters[key] += 1
    return named


def _write_btad(root: Path, items: list[LayoutImage]) -> None:
    for item, stem in _single_class(items, 3):
        folder = BTAD_BAD_FOLDER if item.defects else BTAD_GOOD_FOLDER
        product_dir = root / item.product
        _save_bmp(item.image, product_dir / item.split / folder / f"{stem}.bmp")
        if item.defects:
            mask = product_dir / "ground_truth" / folder / stem
            if item.product in BTAD_BMP_MASK_PRODUCTS:
                _save_bmp(_union(item.masks), mask.with_name(f"{stem}.bmp"))
            else:
                _save_png(_union(item.masks), mask.with_name(f"{stem}.png"))


def _write_dtd_synthetic(root: Path, items: list[LayoutImage]) -> None:
    for item, stem in _single_class(items, 3):
        folder = DTD_BAD_FOLDER if item.defects else GOOD_FOLDER
        product_dir = root / item.product
        _save_png(item.image, product_dir / item.split / folder / f"{stem}.png")
        if item.defects:
            _save_png(_union(item.masks), product_dir / "ground_truth" / folder / f"{stem}.png")


def _write_ksdd(root: Path, items: list[LayoutImage], quality: int) -> None:
    counters: dict[str, int] = defaultdict(int)
    for item in items:
        stem = item.name if item.name is not None else f"Part{counters[item.product]}"
        counters[item.product] += 1
        label = _union(item.masks) if item.defects else np.zeros(item.image.shape[:2], np.uint8)
        _save_jpeg(item.image, root / item.product / f"{stem}.jpg", quality)
        _save_bmp(label, root / item.product / f"{stem}{KSDD_LABEL_SUFFIX}")


def _write_dagm(root: Path, items: list[LayoutImage]) -> None:
    counters: dict[tuple[str, str], int] = defaultdict(lambda: 1)
    rows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item in items:
        key = (item.product, item.split)
        stem = _stem(item, counters[key], 4)
        counters[key] += 1
        folder = root / item.product / DAGM_SPLITS[item.split]
        _save_png(item.image, folder / f"{stem}.PNG")
        label = "0"
        if item.defects:
            label = f"{stem}{DAGM_MASK_SUFFIX}"
            _save_png(_union(item.masks), folder / DAGM_LABEL_DIR / label)
        rows[key].append(f"{len(rows[key]) + 1}\t{int(bool(item.defects))}\t{stem}.PNG\t0\t{label}")
    for (product, split), lines in rows.items():
        number = re.search(r"\d+$", product)
        path = root / product / DAGM_SPLITS[split] / DAGM_LABEL_DIR / DAGM_LABEL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([number.group() if number else product, *lines]) + "\n", encoding="utf-8")
