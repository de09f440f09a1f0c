"""Dataset statistics computed from the files on disk (the basis of a Table-5-like table).

Counts come from the loaders' index (folder listings, CSV and JSON annotations); no image
is decoded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pandas as pd

from dapo.data.base import AnomalyDataset


def product_statistics(dataset: AnomalyDataset) -> pd.DataFrame:
    """One row per product: normal/anomalous/multi-defect counts and its defect types.

    Columns: dataset, product, normal, anomalous, multi_defect, defect_types (count),
    defects (comma-separated superclasses found on disk), vocabulary (the product's).
    """
    by_product: dict[str, list[int]] = {product: [] for product in dataset.products}
    for index, record in enumerate(dataset.records):
        by_product[record.product].append(index)
    rows = []
    for product, indices in by_product.items():
        found = sorted({d for i in indices for d in dataset.defects_of(i)})
        anomalous = sum(bool(dataset.records[i].native) for i in indices)
        rows.append(
            {
                "dataset": dataset.name,
                "product": product,
                "normal": len(indices) - anomalous,
                "anomalous": anomalous,
                "multi_defect": sum(dataset.is_multi_defect(i) for i in indices),
                "defect_types": len(found),
                "defects": ", ".join(found),
                "vocabulary": ", ".join(dataset.vocabulary(product)),
            }
        )
    return pd.DataFrame(rows)


def defect_counts(dataset: AnomalyDataset) -> pd.DataFrame:
    """Images per (product, defect superclass); a multi-defect image counts for each of its types."""
    counts = Counter((dataset.records[i].product, d) for i in range(len(dataset)) for d in dataset.defects_of(i))
    rows = [{"dataset": dataset.name, "product": p, "defect": d, "images": n} for (p, d), n in sorted(counts.items())]
    return pd.DataFrame(rows, columns=["dataset", "product", "defect", "images"])


def summary_statistics(datasets: Iterable[AnomalyDataset]) -> pd.DataFrame:
    """Table-5-like summary: one row per dataset with products, normal and anomalous counts."""
    rows = []
    for dataset in datasets:
        table = product_statistics(dataset)
        rows.append(
            {
                "dataset": dataset.name,
                "split": dataset.split,
                "products": len(table),
                "normal": int(table["normal"].sum()),
                "anomalous": int(table["anomalous"].sum()),
                "multi_defect": int(table["multi_defect"].sum()),
                "defect_types": len(dataset.dataset_vocabulary),
            }
        )
    return pd.DataFrame(rows)
