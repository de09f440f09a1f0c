"""Real-IAD, read from the official release with its JSON annotations (single view).

Layout::

    <root>/realiad_1024/<product>/OK/S0001/<product>_0001_OK_C1_<stamp>.jpg
    <root>/realiad_1024/<product>/NG/<code>/S0002/<product>_0002_NG_<code>_C1_<stamp>.{jpg,png}
    <root>/realiad_jsons/realiad_jsons_sv/<product>.json    (or <root>/realiad_jsons_sv/)

Each JSON holds ``meta.normal_class`` (``"OK"``) and ``train``/``test`` lists of
``{"category", "anomaly_class", "image_path", "mask_path"}``, paths relative to the product's
image folder. ``anomaly_class`` is the native label: AK pit, BX deformation, CH abrasion,
HS scratch, PS damage, QS missing, YW foreign, ZW contamination (``real_iad.yaml``); one
class and one binary mask per image. Single-view protocol as in MultiADS and DAPO: every
camera view is its own sample. The papers' counts (99,721 normal / 51,329 anomalous) cover
every image, i.e. ``split="all"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dapo.data.annotations import AnnotationFormatError, check_entry, check_unique, read_json
from dapo.data.base import AnomalyDataset, DatasetRootError, MissingMaskError, Record
from dapo.data.knowledge import UnknownDefectError, product_key
from dapo.data.layouts import REAL_IAD_JSON_DIR, REAL_IAD_NORMAL_CLASS
from dapo.util.progress import tqdm

ENTRY_KEYS = ("anomaly_class", "image_path")  # and mask_path for anomalous images
RESOLUTIONS = ("realiad_1024", "realiad_512", "realiad_256", "realiad_raw")
REAL_IAD_LAYOUT_HELP = (
    "  <root>/realiad_1024/<product>/{OK,NG/<code>}/S*/<image>.jpg (+ .png masks)\n"
    "  <root>/realiad_jsons/realiad_jsons_sv/<product>.json"
)


class RealIAD(AnomalyDataset):
    """Real-IAD (30 products), single-view.

    Extra parameters
    ----------------
    resolution:
        Image folder (``"realiad_1024"``, ``"realiad_512"``, ``"realiad_256"``,
        ``"realiad_raw"``); default: the first of these present under the root.
    json_variant:
        JSON folder name; default ``"realiad_jsons_sv"`` (single-view split).
    """

    knowledge_name = "real_iad"
    layout_help = REAL_IAD_LAYOUT_HELP

    def __init__(
        self,
        root: str | Path,
        *,
        resolution: str | None = None,
        json_variant: str = REAL_IAD_JSON_DIR[1],
        **kwargs: Any,
    ) -> None:
        self.resolution = resolution
        self.json_variant = json_variant
        super().__init__(root, **kwargs)

    def _image_dir(self) -> Path:
        candidates = (self.resolution,) if self.resolution else RESOLUTIONS
        for name in candidates:
            if (self.root / name).is_dir():
                return self.root / name
        raise DatasetRootError(
            f"{self.knowledge.title}: no image folder {' or '.join(candidates)} under {self.root}; "
            f"expected:\n{self.layout_help}"
        )

    def _json_dir(self) -> Path:
        candidates = (self.root / REAL_IAD_JSON_DIR[0] / self.json_variant, self.root / self.json_variant)
        for path in candidates:
            if path.is_dir():
                return path
        raise DatasetRootError(
            f"{self.knowledge.title}: no JSON folder {candidates[0]} or {candidates[1]}; expected:\n{self.layout_help}"
        )

    def _product_names(self) -> list[str]:
        return [product_key(path.stem) for path in sorted(self._json_dir().glob("*.json"))]

    def _index(self, split: str, products: set[str] | None) -> list[Record]:
        image_dir = self._image_dir()
        records: list[Record] = []
        files = sorted(self._json_dir().glob("*.json"))
        for path in tqdm(files, desc=f"indexing Real-IAD {split}", leave=False, disable=len(files) < 5):
            product = product_key(path.stem)
            if products is None or product in products:
                records.extend(self._index_product(product, path, image_dir / path.stem, split))
        return records

    def _index_product(self, product: str, json_path: Path, folder: Path, split: str) -> list[Record]:
        document = read_json(json_path, "Real-IAD annotation")
        if not isinstance(document, dict) or split not in document:
            raise AnnotationFormatError(f"Real-IAD annotation file {json_path} has no {split!r} list; expected an "
                                        f"object with the keys meta, train, test")
        if not isinstance(document[split], list):
            raise AnnotationFormatError(f"Real-IAD annotation file {json_path}: {split!r} is a "
                                        f"{type(document[split]).__name__}, expected a list of entries")
        meta = document.get("meta") if isinstance(document.get("meta"), dict) else {}
        normal = meta.get("normal_class", REAL_IAD_NORMAL_CLASS)
        for index, entry in enumerate(document[split]):
            check_entry(json_path, f"{split}[{index}]", entry, ENTRY_KEYS)
        check_unique(json_path, [str(entry["image_path"]) for entry in document[split]], "image_path", json_list=split)
        records = []
        for entry in sorted(document[split], key=lambda item: str(item["image_path"])):
            image = folder / entry["image_path"]
            if not image.is_file():
                raise DatasetRootError(f"image {image} listed in {json_path} does not exist")
            label = entry["anomaly_class"]
            if label == normal:
                records.append(Record(str(image), product, (), None))
                continue
            try:
                self.knowledge.superclass(label)
            except UnknownDefectError as error:
                raise UnknownDefectError(f"image {image} in {json_path}: {error}") from None
            mask = folder / entry["mask_path"] if entry.get("mask_path") else None
            if mask is None or not mask.is_file():
                listed = entry.get("mask_path")
                raise MissingMaskError(f"anomalous image {image} has no mask (listed in {json_path}: {listed!r})")
            records.append(Record(str(image), product, (label,), str(mask)))
        return records
