"""VisA, read from the official release (``VisA_20220922``) with its 1-class split.

Layout::

    <root>/split_csv/1cls.csv               object,split,label,image,mask   (label normal|anomaly)
    <root>/<product>/image_anno.csv         image,label,mask   (label "normal" or "melt,scratch")
    <root>/<product>/Data/Images/Normal/0000.JPG ...
    <root>/<product>/Data/Images/Anomaly/000.JPG ...
    <root>/<product>/Data/Masks/Anomaly/000.png

``1cls.csv`` fixes the split (paths relative to the root); ``image_anno.csv`` gives each
anomalous image's native labels, several for a multi-defect image. Masks are class-indexed:
a pixel's value is the product's defect id (``mask_ids`` in ``visa.yaml``, from VisA's
``id2class.json``), so every pixel of a multi-defect image gets its own defect type. A mask
whose values do not match the image's labels is read as binary when the image has a single
defect type; for a multi-defect image that is an error (its types cannot be told apart).
"""

from __future__ import annotations

import numpy as np

from dapo.data.annotations import check_unique, check_values, read_csv_rows
from dapo.data.base import AnomalyDataset, DatasetRootError, MissingMaskError, Record
from dapo.data.knowledge import UnknownDefectError, normalise_label, product_key
from dapo.data.layouts import VISA_SPLIT_CSV

VISA_LAYOUT_HELP = (
    "  <root>/split_csv/1cls.csv\n"
    "  <root>/<product>/image_anno.csv\n"
    "  <root>/<product>/Data/Images/{Normal,Anomaly}/*.JPG\n"
    "  <root>/<product>/Data/Masks/Anomaly/*.png"
)


SPLIT_COLUMNS = ("object", "split", "label", "image", "mask")
ANNOTATION_COLUMNS = ("image", "label")  # the release's third column, mask, is read from 1cls.csv
SPLIT_VALUES = ("train", "test")
SPLIT_LABELS = ("normal", "anomaly")


class VisA(AnomalyDataset):
    """VisA (12 products), 1-class split of ``split_csv/1cls.csv``."""

    knowledge_name = "visa"
    layout_help = VISA_LAYOUT_HELP

    def _split_rows(self) -> list[dict[str, str]]:
        path = self.root.joinpath(*VISA_SPLIT_CSV)
        if not path.is_file():
            raise DatasetRootError(
                f"{self.knowledge.title} split file {path} not found; "
                f"expected the VisA release layout:\n{self.layout_help}"
            )
        rows = read_csv_rows(path, SPLIT_COLUMNS, "the VisA 1-class split (split_csv/1cls.csv)")
        check_values(path, rows, "split", SPLIT_VALUES)
        check_values(path, rows, "label", SPLIT_LABELS)
        check_unique(path, [row["image"] for row in rows], "image")
        return rows

    def _product_names(self) -> list[str]:
        return list(dict.fromkeys(product_key(row["object"]) for row in self._split_rows()))

    def _index(self, split: str, products: set[str] | None) -> list[Record]:
        rows_by_product: dict[str, list[dict[str, str]]] = {}
        for row in self._split_rows():
            rows_by_product.setdefault(product_key(row["object"]), []).append(row)
        records: list[Record] = []
        for product, rows in rows_by_product.items():
            if products is not None and product not in products:
                continue
            chosen = sorted((row for row in rows if row["split"] == split), key=lambda row: row["image"])
            labels = self._annotations(rows[0]["object"])
            records.extend(self._record(product, row, labels) for row in chosen)
        return records

    def _annotations(self, folder: str) -> dict[str, str]:
        path = self.root / folder / "image_anno.csv"
        if not path.is_file():
            raise DatasetRootError(f"{self.knowledge.title} annotation file {path} not found:\n{self.layout_help}")
        rows = read_csv_rows(path, ANNOTATION_COLUMNS, "a VisA product annotation (<product>/image_anno.csv)")
        return {row["image"]: row["label"] for row in rows}

    def _record(self, product: str, row: dict[str, str], annotations: dict[str, str]) -> Record:
        image = self.root / row["image"]
        if not image.is_file():
            raise DatasetRootError(f"image {image} listed in {self.root.joinpath(*VISA_SPLIT_CSV)} does not exist")
        if row["image"] not in annotations:
            raise ValueError(f"image {image} has no row in {self.root / row['object'] / 'image_anno.csv'}")
        annotated = annotations[row["image"]]
        anomalous = row["label"] != "normal"
        if anomalous == (normalise_label(annotated) == "normal"):
            raise ValueError(f"image {image}: split label {row['label']!r} contradicts annotation {annotated!r}")
        if not anomalous:
            return Record(str(image), product, (), None)
        native = tuple(dict.fromkeys(normalise_label(label) for label in annotated.split(",") if label.strip()))
        for label in native:
            try:
                self.knowledge.superclass(label)
            except UnknownDefectError as error:
                raise UnknownDefectError(f"image {image}: {error}") from None
        mask = self.root / row["mask"] if row["mask"] else None
        if mask is None or not mask.is_file():
            raise MissingMaskError(f"anomalous image {image} has no mask (listed: {row['mask']!r})")
        try:
            ids = self.knowledge.mask_ids(product)
        except KeyError:
            ids = {}
        return Record(str(image), product, native, str(mask), tuple(sorted((v, k) for k, v in ids.items())))

    def _decode_mask(self, record: Record, raw: np.ndarray, defects: tuple[str, ...]) -> np.ndarray:
        values = {int(v) for v in np.unique(raw)} - {0}
        ids = dict(record.mask_ids)
        if values and values <= set(ids) and {ids[v] for v in values} <= set(record.native):
            lookup = np.zeros(max(values) + 1, dtype=np.int64)
            for value in values:
                lookup[value] = defects.index(self.knowledge.superclass(ids[value])) + 1
            return lookup[raw]
        if len(defects) == 1:
            return (raw > 0).astype(np.int64)
        raise ValueError(
            f"mask {record.mask_path}: values {sorted(values)} are not the class ids {ids} of its labels "
            f"{record.native}; the defect types of this multi-defect image cannot be told apart"
        )
