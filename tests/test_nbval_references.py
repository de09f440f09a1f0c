"""Every notebook has an nbval reference (tests/notebooks/NN_*.ipynb, made by `make nbval-refs`)
whose code is the notebook's own: a notebook added or edited without regenerating its reference
fails here at once, naming the notebook, instead of being skipped or compared with stale code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapo.experiments.run_notebooks import notebook_paths
from dapo.util.paths import REPO_ROOT

REFERENCES = REPO_ROOT / "tests" / "notebooks"
HINT = "regenerate the references with `make nbval-refs`"


def code_cells(path: Path) -> list[str]:
    """The code cells' sources, without papermill's injected parameters."""
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"
            and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("notebook", notebook_paths(), ids=lambda p: p.stem)
def test_reference_exists_and_has_the_notebooks_code(notebook):
    reference = REFERENCES / notebook.name
    assert reference.is_file(), f"no nbval reference {reference.relative_to(REPO_ROOT)}: {HINT}"
    assert code_cells(reference) == code_cells(notebook), \
        f"{reference.relative_to(REPO_ROOT)} holds other code than {notebook.relative_to(REPO_ROOT)}: {HINT}"


def test_references_are_smoke_runs_in_fp32_without_images():
    for reference in sorted(REFERENCES.glob("*.ipynb")):
        nb = json.loads(reference.read_text())
        assert (REPO_ROOT / "notebooks" / reference.name).is_file(), f"{reference.name}: no such notebook (remove it)"
        params = nb["metadata"]["papermill"]["parameters"]
        assert params.get("smoke") is True and params.get("precision") == "fp32", f"{reference.name}: {params}"
        outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], f"{reference.name}: holds an error"
        assert not [o for o in outputs if any(k.startswith("image/") for k in o.get("data", {}))], \
            f"{reference.name}: holds images (nbval does not compare them; keep the repository small)"
