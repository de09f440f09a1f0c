"""A notebook runs alone, from a fresh clone, with the bare papermill command: every notebook
starts with ``start_notebook(<its name>, globals())``, which generates the synthetic worlds on an
empty data folder (notebook 00 is run that way here: the cheapest), and later notebooks train or
load what they need through ``train_or_load``."""

from __future__ import annotations

import json

import pytest

from dapo.experiments.run_notebooks import notebook_paths
from dapo.util.paths import REPO_ROOT


@pytest.mark.parametrize("notebook", notebook_paths(), ids=lambda p: p.stem)
def test_first_cell_after_the_parameters_starts_the_notebook(notebook):
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0].get("metadata", {}).get("tags", []), f"{notebook.name}: no parameters cell first"
    assert f'start_notebook("{notebook.stem}", globals())' in "".join(cells[1]["source"]), \
        f"{notebook.name}: its second code cell does not call start_notebook({notebook.stem!r}, globals())"


@pytest.mark.slow
def test_notebook_00_alone_on_an_empty_data_folder(tmp_path):
    import papermill as pm

    data, out, figures = tmp_path / "data", tmp_path / "results", tmp_path / "figures"
    pm.execute_notebook(str(REPO_ROOT / "notebooks" / "00_data.ipynb"), str(tmp_path / "00.ipynb"),
                        parameters={"smoke": True, "data_root": str(data), "output_dir": str(out),
                                    "figures_dir": str(figures)},
                        cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    assert sorted(p.name for p in (data / "synthetic" / "smoke").iterdir()) == \
        ["synthetic_mpdd", "synthetic_source", "synthetic_target"]
    assert (out / "table5_dataset_statistics.csv").is_file() and (out / "provenance.json").is_file()
    assert len(list(figures.glob("samples_*.png"))) == 3
