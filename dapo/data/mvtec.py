"""MVTec-AD and the MVTec-AD folder convention shared by MPDD and MAD.

Layout (as distributed)::

    <root>/<product>/train/good/000.png ...
    <root>/<product>/test/good/000.png ...
    <root>/<product>/test/<defect folder>/000.png ...
    <root>/<product>/ground_truth/<defect folder>/000_mask.png     binary mask

Defect folders map to superclasses through the knowledge base (``mvtec.yaml``); the
``combined`` folder holds images with several defects and one binary mask, so its pixels
carry the ``combined`` superclass. Grey-scale images (grid, screw, zipper) are read as RGB.
Files beside the product folders (license, readme) and hidden files (macOS ``._000.png``
resource forks left by unpacking archives) are ignored.
"""

from __future__ import annotations

from pathlib import Path

from dapo.data.base import (
    IMAGE_SUFFIXES,
    AnomalyDataset,
    DatasetRootError,
    MissingMaskError,
    Record,
)
from dapo.data.knowledge import UnknownDefectError, product_key
from dapo.data.layouts import GOOD_FOLDER

FOLDER_LAYOUT_HELP = (
    "  <root>/<product>/train/good/*.png\n"
    "  <root>/<product>/test/{good,<defect>}/*.png\n"
    "  <root>/<product>/ground_truth/<defect>/<name>_mask.png"
)


class MVTecStyleDataset(AnomalyDataset):
    """Any dataset in the MVTec-AD folder convention (product folders with train/ and test/)."""

    layout_help = FOLDER_LAYOUT_HELP
    good_folder = GOOD_FOLDER  # the test/train folder of defect-free images (BTAD: "ok")

    def _mask_candidates(self, product_dir: Path, folder: str, image: Path) -> list[Path]:
        """Where the mask of an anomalous image may be, the layout's official name first."""
        return [product_dir / "ground_truth" / folder / f"{image.stem}_mask.png"]

    def _product_dirs(self) -> dict[str, Path]:
        dirs: dict[str, Path] = {}
        for path in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not ((path / "train").is_dir() or (path / "test").is_dir()):
                continue
            key = product_key(path.name)
            if key in dirs:
                raise ValueError(f"product folders {dirs[key]} and {path} both name product {key!r}")
            dirs[key] = path
        if not dirs:
            raise DatasetRootError(
                f"no product folders with train/ or test/ under {self.root}; expected the "
                f"{self.knowledge.title} layout:\n{self.layout_help}"
            )
        return dirs

    def _product_names(self) -> list[str]:
        return list(self._product_dirs())

    def _index(self, split: str, products: set[str] | None) -> list[Record]:
        records: list[Record] = []
        for product, product_dir in self._product_dirs().items():
            if products is None or product in products:
                records.extend(self._index_product(product, product_dir, split))
        return records

    def _index_product(self, product: str, product_dir: Path, split: str) -> list[Record]:
        split_dir = product_dir / split
        records: list[Record] = []
        folders = sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        for folder in folders:
            images = sorted(p for p in folder.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if folder.name == self.good_folder:
                records.extend(Record(str(p), product, (), None) for p in images)
                continue
            try:
                self.knowledge.superclass(folder.name)
            except UnknownDefectError as error:
                raise UnknownDefectError(f"defect folder {folder}: {error}") from None
            for path in images:
                candidates = self._mask_candidates(product_dir, folder.name, path)
                mask = next((c for c in candidates if c.is_file()), None)
                if mask is None:
                    raise MissingMaskError(f"anomalous image {path} has no mask; expected "
                                           + " or ".join(str(c) for c in candidates))
                records.append(Record(str(path), product, (folder.name,), str(mask)))
        return records


class MVTecAD(MVTecStyleDataset):
    """MVTec-AD (15 products); the paper trains on its test split and evaluates on it from VisA."""

    knowledge_name = "mvtec"
