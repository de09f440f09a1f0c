"""BTAD (beanTech Anomaly Detection), read from the release ``BTech_Dataset_transformed``.

Layout (MVTec-like, with BTAD's folder names)::

    <root>/01/train/ok/*.bmp                 products 01, 02, 03
    <root>/01/test/ok/*.bmp
    <root>/01/test/ko/*.bmp
    <root>/01/ground_truth/ko/<name>.png     <name>.bmp for product 03

Sources. Folders ``ok`` (normal) and ``ko`` (anomalous), every folder but ``ok`` anomalous, masks
under ``ground_truth/ko``: AnomalyCLIP ``generate_dataset_json/btad.py:6,20-30`` and AdaCLIP
``data_preprocess/btad.py:9-37``. Mask = the image's name with ``.png``, ``.bmp`` for product 03:
the BTAD loaders that name masks rather than pair sorted lists (e.g. dataset-ninja/btad
``src/convert.py``: ``get_file_name(image) + ".png"``, ``".bmp"`` if the product is ``03``).
Images are read whether stored as ``.bmp`` or ``.png`` (anomalib's ``make_btech_dataset``
accepts both). The ZSAD papers evaluate on the test split (ViP²-CLIP Table 7: 451 normal and 290
anomalous images); BTAD has no defect types, so ``ko`` is its one class (``btad.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from dapo.data.layouts import BTAD_BMP_MASK_PRODUCTS, BTAD_GOOD_FOLDER
from dapo.data.mvtec import MVTecStyleDataset

BTAD_LAYOUT_HELP = (
    "  <root>/{01,02,03}/train/ok/*.bmp\n"
    "  <root>/{01,02,03}/test/{ok,ko}/*.bmp\n"
    "  <root>/{01,02,03}/ground_truth/ko/<name>.png   (<name>.bmp for product 03)"
)


class BTAD(MVTecStyleDataset):
    """BTAD (3 products); normal folder ``ok``, anomalous ``ko``."""

    knowledge_name = "btad"
    layout_help = BTAD_LAYOUT_HELP
    good_folder = BTAD_GOOD_FOLDER

    def _mask_candidates(self, product_dir: Path, folder: str, image: Path) -> list[Path]:
        suffixes = (".bmp", ".png") if product_dir.name in BTAD_BMP_MASK_PRODUCTS else (".png", ".bmp")
        return [product_dir / "ground_truth" / folder / f"{image.stem}{suffix}" for suffix in suffixes]
