"""MPDD (metal parts defect detection), distributed in the MVTec-AD folder convention.

Layout: ``<root>/<product>/{train,test}/<folder>/*.png`` and
``<root>/<product>/ground_truth/<folder>/<name>_mask.png``; products bracket_black,
bracket_brown, bracket_white, connector, metal_plate, tubes. Folder -> superclass in
``mpdd.yaml`` (e.g. ``scratches`` -> scratch, ``major_rust``/``total_rust`` -> rust,
``tubes/test/anomalous`` -> flattening).
"""

from __future__ import annotations

from dapo.data.mvtec import MVTecStyleDataset


class MPDD(MVTecStyleDataset):
    """MPDD (6 products)."""

    knowledge_name = "mpdd"
