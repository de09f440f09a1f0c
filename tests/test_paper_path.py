"""The paper path end to end, as a reviewer with data would run it: tiny trees in all six official
layouts (real product and defect-folder names), a small randomly initialised OpenCLIP model saved
to a local weights file, and the bare papermill command with ``-p profile paper``. The run must
finish, and its tables must name the backbone it used, not the paper's ViT-L-14-336."""

from __future__ import annotations

import time

import pytest
from official_trees import write_official_trees

from dapo.experiments.profiles import PAPER_DATASET_DIRS
from dapo.util.paths import REPO_ROOT

BACKBONE = "ViT-S-32"   # the smallest OpenCLIP ViT config; 16 x 16 patches at the paper's 518 px
NOTEBOOKS = {"03_multitype": ("table1_multitype", "per_product_visa", "per_defect_mpdd")}


@pytest.fixture(scope="module")
def reviewer(tmp_path_factory):
    """The data root with the six trees and the random weights file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("reviewer")
    write_official_trees(base / "data", PAPER_DATASET_DIRS)
    torch.manual_seed(0)
    model = open_clip.create_model(BACKBONE, pretrained=None)
    weights = base / f"{BACKBONE}-random.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(weights))
    return base, weights


@pytest.mark.paper_path
@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_paper_profile_runs_with_the_backbone_named(notebook, reviewer, monkeypatch):
    import papermill as pm

    base, weights = reviewer
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, figures = base / notebook / "results", base / notebook / "figures"
    (base / notebook).mkdir()
    start = time.perf_counter()
    pm.execute_notebook(str(REPO_ROOT / "notebooks" / f"{notebook}.ipynb"), str(base / notebook / "out.ipynb"),
                        parameters={"profile": "paper", "smoke": True, "data_root": str(base / "data"),
                                    "backbone": BACKBONE, "pretrained": "openai", "checkpoint": str(weights),
                                    "epochs": 1, "seeds": [0], "output_dir": str(out), "figures_dir": str(figures)},
                        cwd=str(REPO_ROOT), kernel_name="python3", progress_bar=False)
    print(f"{notebook} on the paper path: {time.perf_counter() - start:.0f} s")
    for name in NOTEBOOKS[notebook]:
        caption = (out / f"{name}.md").read_text().split("\n\n")[0]
        assert f"paper profile (OpenCLIP {BACKBONE} / openai" in caption, caption
        assert "ViT-L-14-336" not in (out / f"{name}.md").read_text(), f"{name}.md names the paper's backbone"
        assert f"{BACKBONE}/openai" in (out / f"{name}.csv").read_text()
    assert list(figures.glob("*.png")), "no figure written"
