"""Dataset statistics computed from disk."""

from __future__ import annotations

import numpy as np

from dapo.data import LayoutImage, defect_counts, open_dataset, product_statistics, summary_statistics, write_tree


def _tree(root):
    image = np.full((8, 8, 3), 70, np.uint8)
    top, bottom = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    top[:4], bottom[4:] = True, True
    items = [LayoutImage("cable", "train", (), image, None) for _ in range(3)]
    items += [LayoutImage("cable", "test", (), image, None) for _ in range(2)]
    items += [
        LayoutImage("cable", "test", ("bent_wire",), image, {"bent_wire": top}),
        LayoutImage("cable", "test", ("cut_lead",), image, {"cut_lead": top}),
        LayoutImage(
            "cable", "test", ("bent_wire", "poke_insulation"), image, {"bent_wire": top, "poke_insulation": bottom}
        ),
        LayoutImage("bottle", "test", (), image, None),
        LayoutImage("bottle", "test", ("broken_small",), image, {"broken_small": top}),
    ]
    return write_tree("mvtec", root, items)


def test_product_statistics_count_the_files(tmp_path):
    dataset = open_dataset("mvtec", _tree(tmp_path), image_size=4)
    table = product_statistics(dataset).set_index("product")
    assert table.loc["cable", ["normal", "anomalous", "multi_defect", "defect_types"]].tolist() == [2, 3, 1, 3]
    assert table.loc["cable", "defects"] == "bent, combined, cut"
    assert table.loc["cable", "vocabulary"] == "bent, combined, cut, misplaced, missing, poke"
    assert table.loc["bottle", ["normal", "anomalous", "multi_defect"]].tolist() == [1, 1, 0]


def test_summary_statistics_is_a_table5_row_per_dataset(tmp_path):
    root = _tree(tmp_path)
    test = open_dataset("mvtec", root, image_size=4)
    both = open_dataset("mvtec", root, image_size=4, split="all")
    single = open_dataset("mvtec", root, image_size=4, exclude_multi_defect=True)
    table = summary_statistics([test, both, single])
    assert table[["products", "normal", "anomalous", "multi_defect"]].values.tolist() == [
        [2, 3, 4, 1],
        [2, 6, 4, 1],
        [2, 3, 3, 0],
    ]
    assert table["split"].tolist() == ["test", "all", "test"]


def test_defect_counts(tmp_path):
    dataset = open_dataset("mvtec", _tree(tmp_path), image_size=4)
    counts = defect_counts(dataset)
    assert counts[["product", "defect", "images"]].values.tolist() == [
        ["bottle", "broken", 1],
        ["cable", "bent", 1],
        ["cable", "combined", 1],
        ["cable", "cut", 1],
    ]
