"""KSDD (KolektorSDD), read from its release in the ZSAD papers' protocol: images cut in three.

Layout (``KolektorSDD.zip``)::

    <root>/kos01/Part0.jpg                   50 folders kos01 ... kos50, one commutator each
    <root>/kos01/Part0_label.bmp             every image has a label; an empty one = defect-free

Protocol. The ZSAD papers do not read KolektorSDD whole: AdaCLIP's ``data_preprocess/sdd-pre.py``
(the source of the ``SDD`` tree AnomalyCLIP and AdaCLIP evaluate) cuts each image and its label
into three strips of rows ``[0, H//3)``, ``[H//3, 2H//3)``, ``[2H//3, H)`` (lines 33-39); a strip
is anomalous when its label has a nonzero pixel (line 41); the normal strips are split 75 / 25
into train and test by ``train_test_split(test_size=0.25, random_state=42)`` (line 50); test =
those 25 % and every anomalous strip (lines 59-73). This loader does the same on the fly: a
sample is one strip (``records[i].rows``; the three strips of a file share its ``path``), and the
normal strips, in sorted (file, strip) order, are split by the same rule as scikit-learn's
(``ceil(0.25 n)`` test strips: the first of ``RandomState(42).permutation(n)``). The authors listed
files in ``os.listdir`` order, so their partition of the normal strips may differ; its sizes do
not. Consistency check (arithmetic, not measured here): KolektorSDD's 399 images give 1,197
strips; with 54 defective strips, 1,143 normal ones leave ``ceil(0.25 * 1,143) = 286`` for test,
ViP²-CLIP Table 7's KSDD count (286 normal, 54 anomalous). Product: ``electrical commutators``
(AnomalyCLIP ``generate_dataset_json/SDD.py:8-10``); one defect class (``ksdd.yaml``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dapo.data.base import AnomalyDataset, DatasetRootError, MissingMaskError, Record
from dapo.data.images import read_label_map, read_rgb
from dapo.data.layouts import KSDD_LABEL_SUFFIX

KSDD_PRODUCT = "electrical commutators"
DEFECT_LABEL = "defect"
STRIPS = 3  # sdd-pre.py:34-39
TEST_FRACTION = 0.25  # sdd-pre.py:50
SPLIT_SEED = 42  # sdd-pre.py:50
KSDD_LAYOUT_HELP = (
    "  <root>/kos<NN>/Part<k>.jpg\n"
    "  <root>/kos<NN>/Part<k>_label.bmp"
)


@dataclass(frozen=True)
class StripRecord(Record):
    """A record of one horizontal strip of an image: rows ``[rows[0], rows[1])``."""

    rows: tuple[int, int] = (0, 0)


def strip_rows(height: int) -> list[tuple[int, int]]:
    """The row ranges of the three strips of an image ``height`` rows tall (sdd-pre.py:33-39)."""
    return [(height * k // STRIPS, height * (k + 1) // STRIPS) for k in range(STRIPS)]


def held_out_positions(count: int) -> set[int]:
    """Positions of the normal strips that go to test: ``train_test_split``'s rule (module docstring)."""
    chosen = np.random.RandomState(SPLIT_SEED).permutation(count)[: math.ceil(TEST_FRACTION * count)]
    return {int(i) for i in chosen}


class KSDD(AnomalyDataset):
    """KolektorSDD as strips (module docstring); ``split`` selects the 75 / 25 split of the normal strips."""

    knowledge_name = "ksdd"
    layout_help = KSDD_LAYOUT_HELP

    def _image_dirs(self) -> list[Path]:
        dirs = [p for p in sorted(self.root.iterdir()) if p.is_dir() and any(_images(p))]
        if not dirs:
            raise DatasetRootError(f"no folders with .jpg images under {self.root}; expected the "
                                   f"{self.knowledge.title} layout:\n{self.layout_help}")
        return dirs

    def _product_names(self) -> list[str]:
        self._image_dirs()
        return [KSDD_PRODUCT]

    def _index(self, split: str, products: set[str] | None) -> list[Record]:
        if products is not None and KSDD_PRODUCT not in products:
            return []
        normal, anomalous = self._strips()
        chosen = held_out_positions(len(normal))
        if split == "test":
            return sorted([normal[i] for i in sorted(chosen)] + anomalous, key=_order)
        return [record for i, record in enumerate(normal) if i not in chosen]

    def _strips(self) -> tuple[list[StripRecord], list[StripRecord]]:
        """Normal and anomalous strips, each in sorted (file, strip) order."""
        normal, anomalous = [], []
        for folder in self._image_dirs():
            for image in _images(folder):
                label = folder / f"{image.stem}{KSDD_LABEL_SUFFIX}"
                if not label.is_file():
                    raise MissingMaskError(f"image {image} has no label; expected {label} (KolektorSDD labels "
                                           f"every image, defect-free ones with an empty label)")
                raw = read_label_map(label)
                for rows in strip_rows(raw.shape[0]):
                    if raw[rows[0]:rows[1]].any():
                        anomalous.append(StripRecord(str(image), KSDD_PRODUCT, (DEFECT_LABEL,), str(label), rows=rows))
                    else:
                        normal.append(StripRecord(str(image), KSDD_PRODUCT, (), None, rows=rows))
        return normal, anomalous

    def _read_image(self, record: Record) -> np.ndarray:
        first, last = record.rows
        return read_rgb(record.path)[first:last]

    def _read_mask(self, record: Record) -> np.ndarray:
        first, last = record.rows
        return read_label_map(record.mask_path)[first:last]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() == ".jpg" and not p.name.startswith("."))


def _order(record: StripRecord) -> tuple[str, tuple[int, int]]:
    return record.path, record.rows
