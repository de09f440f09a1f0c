"""DAGM 2007, the ten classes with their ``Train`` and ``Test`` folders.

Layout (as AnomalyCLIP reads it, ``DAGM_KaggleUpload``)::

    <root>/Class1/Test/0001.PNG ...                      every image, defective or not
    <root>/Class1/Test/Label/0002_label.PNG              mask of a defective image
    <root>/Class1/Test/Label/Labels.txt                  class number, then per image:
                                                         id <TAB> flag 0|1 <TAB> file <TAB> 0 <TAB> mask|0
    <root>/Class1/Train/...                              the same

Protocol (AnomalyCLIP ``generate_dataset_json/DAGM.py``): the products are ``Class1`` ...
``Class10`` (lines 7-9); a phase folder holds every image (line 28-30, ``.PNG``) and its
``Label`` folder the masks (line 26); an image with a mask ``<name>_label.PNG`` is anomalous
(line 35: the image of a mask is its name before ``_`` plus ``.PNG``), every other image normal
(line 37), for ``Train`` and ``Test`` alike (line 21). ``split="test"`` reads ``Test``, the
split the ZSAD papers evaluate (ViP²-CLIP Table 7: 6,996 normal and 1,054 anomalous images);
``split="train"`` reads ``Train``, defective images included, as that script lists them.

``Labels.txt`` is checked where present (its columns as DAGM distributes them: a first line with
the class number, then id, defect flag, image file, 0, label file or 0): an image flagged defective
must have its mask and an image with a mask must be flagged, else the loader stops naming both.
A mask whose image is missing stops it too. DAGM has no defect types: one class (``dagm.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from dapo.data.base import AnomalyDataset, DatasetRootError, MissingMaskError, Record
from dapo.data.knowledge import product_key
from dapo.data.layouts import DAGM_LABEL_DIR, DAGM_LABEL_FILE, DAGM_MASK_SUFFIX, DAGM_SPLITS

DEFECT_LABEL = "defect"
DAGM_LAYOUT_HELP = (
    "  <root>/Class<N>/{Train,Test}/<name>.PNG\n"
    "  <root>/Class<N>/{Train,Test}/Label/<name>_label.PNG   (defective images)\n"
    "  <root>/Class<N>/{Train,Test}/Label/Labels.txt         (optional, checked when present)"
)


class LabelsFileError(ValueError):
    """DAGM's ``Labels.txt`` contradicts the masks on disk, or cannot be read."""


class DAGM(AnomalyDataset):
    """DAGM 2007 (10 classes); anomalous = has a ``Label/<name>_label.PNG`` mask."""

    knowledge_name = "dagm"
    layout_help = DAGM_LAYOUT_HELP

    def _class_dirs(self) -> dict[str, Path]:
        dirs = {product_key(p.name): p for p in sorted(self.root.iterdir())
                if p.is_dir() and any((p / phase).is_dir() for phase in DAGM_SPLITS.values())}
        if not dirs:
            raise DatasetRootError(f"no class folders with Train/ or Test/ under {self.root}; expected the "
                                   f"{self.knowledge.title} layout:\n{self.layout_help}")
        return dirs

    def _product_names(self) -> list[str]:
        return list(self._class_dirs())

    def _index(self, split: str, products: set[str] | None) -> list[Record]:
        records: list[Record] = []
        for product, class_dir in self._class_dirs().items():
            if products is None or product in products:
                records.extend(self._index_phase(product, class_dir / DAGM_SPLITS[split]))
        return records

    def _index_phase(self, product: str, phase: Path) -> list[Record]:
        if not phase.is_dir():
            return []
        images = {p.stem: p for p in sorted(phase.iterdir())
                  if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")}
        label_dir = phase / DAGM_LABEL_DIR
        masks = {}
        if label_dir.is_dir():
            for mask in sorted(label_dir.iterdir()):
                if mask.is_file() and mask.name.lower().endswith(DAGM_MASK_SUFFIX.lower()):
                    stem = mask.name[: -len(DAGM_MASK_SUFFIX)]
                    if stem not in images:
                        raise DatasetRootError(f"mask {mask} has no image {phase / (stem + '.PNG')}")
                    masks[stem] = mask
        self._check_labels_file(label_dir / DAGM_LABEL_FILE, images, masks)
        return [Record(str(path), product, (DEFECT_LABEL,), str(masks[stem])) if stem in masks
                else Record(str(path), product, (), None) for stem, path in images.items()]

    def _check_labels_file(self, path: Path, images: dict[str, Path], masks: dict[str, Path]) -> None:
        if not path.is_file():
            return
        for number, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
            fields = [field.strip() for field in line.split("\t")]
            if len(fields) < 3:
                continue  # the first line: the class number
            if fields[1] not in ("0", "1"):
                raise LabelsFileError(f"{path}:{number}: defect flag {fields[1]!r} is not 0 or 1")
            stem = Path(fields[2]).stem
            if stem not in images:
                raise DatasetRootError(f"{path}:{number} lists image {fields[2]}, which is not in {path.parent.parent}")
            if fields[1] == "1" and stem not in masks:
                raise MissingMaskError(f"{path}:{number} flags image {images[stem]} defective but its mask "
                                       f"{path.parent / (stem + DAGM_MASK_SUFFIX)} does not exist")
            if fields[1] == "0" and stem in masks:
                raise LabelsFileError(f"{path}:{number} flags image {images[stem]} defect-free but it has the "
                                      f"mask {masks[stem]}")
