"""DTD-Synthetic (Aota et al., WACV 2023): DTD textures with synthetic anomalies, MVTec-like.

Layout::

    <root>/Woven_001/train/good/*.png        twelve texture folders (dtd_synthetic.yaml)
    <root>/Woven_001/test/good/*.png
    <root>/Woven_001/test/bad/*.png
    <root>/Woven_001/ground_truth/bad/<name>.png

Sources. Texture folders, ``train``/``test``, every folder but ``good`` anomalous, masks under
``ground_truth/<folder>``: AnomalyCLIP ``generate_dataset_json/DTD.py:8,19-30`` and AdaCLIP
``data_preprocess/dtd.py:9-37``. Both pair images with masks by sorted position, so their scripts
do not fix the mask's file name; the loader takes the mask of the same name as the image (as
third-party DTD-Synthetic loaders read ``ground_truth/bad/<image name>``) or, failing that,
MVTec-AD's ``<name>_mask.png``, and names both when neither exists. The ZSAD papers evaluate on
the test split (ViP²-CLIP Table 7: 357 normal and 947 anomalous images).
"""

from __future__ import annotations

from pathlib import Path

from dapo.data.mvtec import MVTecStyleDataset

DTD_LAYOUT_HELP = (
    "  <root>/<texture>/train/good/*.png\n"
    "  <root>/<texture>/test/{good,bad}/*.png\n"
    "  <root>/<texture>/ground_truth/bad/<name>.png"
)


class DTDSynthetic(MVTecStyleDataset):
    """DTD-Synthetic (12 textures); anomalous folder ``bad``."""

    knowledge_name = "dtd_synthetic"
    layout_help = DTD_LAYOUT_HELP

    def _mask_candidates(self, product_dir: Path, folder: str, image: Path) -> list[Path]:
        masks = product_dir / "ground_truth" / folder
        return [masks / f"{image.stem}.png", masks / f"{image.stem}_mask.png"]
