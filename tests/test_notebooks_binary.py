"""Notebooks 04 and 05: `-p profile paper` without data stops in the run cell, at once, saying what
to provide, and writes nothing; their parameters include the notebook's own."""

from __future__ import annotations

import time

import pytest

from dapo.experiments.parameters import ParameterError, validate
from dapo.experiments.profiles import PAPER_DATASETS, ProfileError
from dapo.experiments.runs import start_notebook
from dapo.util.paths import REPO_ROOT

NOTEBOOKS = ("04_binary", "05_multilabel")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_paper_profile_without_data_stops_at_once_naming_what_to_provide(notebook, offline):
    out = offline / "results"
    start = time.perf_counter()
    with pytest.raises(ProfileError) as err:
        start_notebook(notebook, {"profile": "paper", "data_root": str(offline / "data"), "output_dir": str(out)})
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "the 'paper' profile cannot start; provide" in message
    assert all(f"dataset {name!r}" in message for name in PAPER_DATASETS) and "ViT-L-14-336/openai" in message
    assert not out.exists()


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_notebook_itself_stops_in_its_run_cell(notebook, offline, monkeypatch):
    import papermill as pm

    out = offline / "results"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(REPO_ROOT / "notebooks" / f"{notebook}.ipynb"), str(offline / "out.ipynb"),
                            parameters={"profile": "paper", "data_root": str(offline / "data"),
                                        "output_dir": str(out)},
                            cwd=str(REPO_ROOT), kernel_name="python3", progress_bar=False)
    assert err.value.ename == "ProfileError" and "cannot start; provide" in err.value.evalue
    assert f'start_notebook("{notebook}", globals())' in err.value.source  # the first cell after the parameters
    assert not out.exists()


def test_own_parameters_are_validated():
    assert validate("04_binary", {})["reverse"] is True and validate("05_multilabel", {})["contrast"] is True
    assert validate("04_binary", {"seeds": [3]})["seeds"] == [3]
    with pytest.raises(ParameterError, match="reverse='yes': expected True or False"):
        validate("04_binary", {"reverse": "yes"})
    with pytest.raises(ParameterError, match="unknown parameter"):
        validate("05_multilabel", {"reverse": True})
