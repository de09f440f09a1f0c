"""The source notebooks (notebooks/*.ipynb) are committed stripped: no outputs, no execution counts.
Executed copies live in results/<profile>/notebooks/ and tests/notebooks/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def dirty_cells(notebook: dict) -> list[str]:
    found = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {index}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {index}: execution_count {cell['execution_count']}")
    return found


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 13


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebook_carries_no_outputs(path):
    found = dirty_cells(json.loads(path.read_text()))
    assert not found, (f"{path.name} was committed executed ({'; '.join(found[:5])}): clear its outputs "
                       f"(jupyter nbconvert --clear-output --inplace {path.relative_to(path.parents[1])})")


def test_an_executed_notebook_is_caught():
    cell = {"cell_type": "code", "source": "1", "metadata": {}, "outputs": [], "execution_count": None}
    assert dirty_cells({"cells": [cell]}) == []
    assert len(dirty_cells({"cells": [{**cell, "execution_count": 3, "outputs": [{"output_type": "stream"}]}]})) == 2
