"""Tiny trees in the six official layouts, with real product and defect-folder names from the
knowledge base (shared by the loader tests and the paper-path notebook test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dapo.data import LayoutImage, load_knowledge, write_tree

HEIGHT, WIDTH, SIZE = 24, 36, 12  # image height and width; the loaders' test input size
# region of the i-th defect of an image, at full size and at the model size SIZE
REGIONS = [(slice(0, 12), slice(0, 36)), (slice(12, 24), slice(18, 36))]
SMALL_REGIONS = [(slice(0, 6), slice(0, 12)), (slice(6, 12), slice(6, 12))]

# dataset -> product folder -> anomalous test images (native labels); each product also
# gets one good train image and one good test image
TREES = {
    "mvtec": {
        "cable": [("bent_wire",), ("cut_inner_insulation",), ("bent_wire", "missing_wire")],
        "bottle": [("broken_large",), ("contamination",)],
    },
    "mpdd": {"bracket_brown": [("bend_and_parts_mismatch",), ("parts_mismatch",)], "tubes": [("anomalous",)]},
    "mad_sim": {"01Gorilla": [("Burrs",), ("Stains",)], "02Unicorn": [("Missing",)]},
    "mad_real": {"Bear": [("Stains",)], "Pig": [("Missing",)]},
    "visa": {
        "pcb4": [("burnt",), ("burnt", "dirt")],
        "candle": [("weird candle wick",), ("different colour spot", "chunk of wax missing")],
    },
    "real_iad": {"audiojack": [("BX",), ("HS",)], "mint": [("YW",)]},
}


def _colour(index: int) -> int:
    return 40 + 20 * index


def _images(spec: dict[str, list[tuple[str, ...]]]) -> list[LayoutImage]:
    images, index = [], 0
    for product, anomalies in spec.items():
        for split in ("train", "test"):
            image = np.full((HEIGHT, WIDTH, 3), _colour(index), np.uint8)
            images.append(LayoutImage(product, split, (), image, None, name=f"g{index}"))
            index += 1
        for defects in anomalies:
            masks = {}
            for label, (rows, cols) in zip(defects, REGIONS):
                masks[label] = np.zeros((HEIGHT, WIDTH), bool)
                masks[label][rows, cols] = True
            image = np.full((HEIGHT, WIDTH, 3), _colour(index), np.uint8)
            images.append(LayoutImage(product, "test", defects, image, masks, name=f"a{index}"))
            index += 1
    return images


def _mask_ids(name: str) -> dict[str, dict[str, int]] | None:
    if name != "visa":
        return None
    knowledge = load_knowledge("visa")
    return {product: knowledge.mask_ids(product) for product in TREES["visa"]}



def write_official_trees(base: Path, folders: dict[str, str] | None = None) -> dict[str, Path]:
    """Write the six trees under ``base/<folder>`` (``folders``: dataset -> folder name, default the
    dataset's name); returns their roots."""
    folders = folders or {}
    return {name: write_tree(name, Path(base) / folders.get(name, name), _images(spec), mask_ids=_mask_ids(name))
            for name, spec in TREES.items()}
