"""Notebook parameters: one definition for every notebook, and up-front validation with messages
that name the parameter."""


import pytest
import torch

from dapo.experiments.parameters import (
    COMMON,
    ParameterError,
    from_namespace,
    injected_names,
    notebook_cells,
    parameters_cell,
    parameters_for,
    validate,
)
from dapo.util.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameters_cell_is_generated_from_the_package(path):
    nb, index = notebook_cells(path)
    assert "".join(nb["cells"][index]["source"]) == parameters_cell(path.stem), (
        f"{path.name}: run `python -m dapo.experiments.parameters` to regenerate its parameters cell")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_its_run_through_start_notebook(path):
    nb, index = notebook_cells(path)
    following = "".join(nb["cells"][index + 1]["source"])
    assert f'start_notebook("{path.stem}", globals())' in following


def test_defaults_validate_and_the_cell_lists_every_parameter_once():
    values = validate("03_multitype", {})
    assert values["profile"] == "synthetic" and values["epochs"] is None
    lines = parameters_cell("03_multitype").splitlines()[1:]
    assert [line.split(" = ")[0] for line in lines] == [p.name for p in parameters_for("03_multitype")]
    assert all("  # " in line for line in lines)


@pytest.mark.parametrize("name, value, message", [
    ("epochs", -1, "epochs=-1: must be >= 1"),
    ("epochs", "abc", "epochs='abc': expected an integer"),
    ("epochs", True, "epochs=True: expected an integer"),
    ("seed", "abc", "seed='abc': expected an integer"),
    ("profile", "papper", "profile='papper': expected one of 'synthetic', 'paper'"),
    ("smoke", "yes", "smoke='yes': expected True or False"),
    ("precision", "fp16", "precision='fp16': expected one of"),
    ("checkpoint", "/no/such/weights.pt", "checkpoint='/no/such/weights.pt': no such file"),
    ("dataset_roots", ["visa"], "dataset_roots=\\['visa'\\]: expected a dict"),
    ("target_datasets", "visa", "target_datasets='visa': expected a non-empty list"),
])
def test_bad_values_are_refused_naming_the_parameter(name, value, message):
    with pytest.raises(ParameterError, match=message):
        validate("03_multitype", {name: value})


def test_an_unavailable_device_is_refused_up_front():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ParameterError, match="device: device='cuda': no CUDA GPU is available"):
        validate("03_multitype", {"device": "cuda"})
    with pytest.raises(ParameterError, match="not a torch device name"):
        validate("03_multitype", {"device": "gpu0"})


def test_unknown_parameters_are_refused():
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['epoch'\]"):
        validate("03_multitype", {"epoch": 3})


def test_names_injected_by_papermill_must_be_parameters_of_the_notebook():
    history = ["", "# Parameters (papermill...)\nprofile = 'synthetic'", "# Parameters\nepoch = 3\nseed = 1\n"]
    assert injected_names(history) == {"epoch", "seed"}
    namespace = {"In": history, "seed": 1, "profile": "synthetic", "unrelated": object()}
    with pytest.raises(ParameterError, match=r"\['epoch'\] for 02_training"):
        from_namespace("02_training", namespace)
    namespace["In"] = history[:2]
    values = from_namespace("02_training", namespace)  # variables the notebook defined itself are ignored
    assert values["seed"] == 1 and "unrelated" not in values


def test_seed_lists_and_sweep_grids_are_checked_field_by_field():
    from dapo.experiments.parameters import seed_list, sweep_grid

    assert seed_list("seeds", (0, 1)) == [0, 1]
    with pytest.raises(ParameterError, match="seeds must be distinct"):
        seed_list("seeds", [0, 0])
    with pytest.raises(ParameterError, match="expected a non-empty list"):
        seed_list("seeds", [])

    assert sweep_grid("grid", {"lam": [1, 4], "lr": [1e-3]}) == {"lam": [1, 4], "lr": [1e-3]}
    with pytest.raises(ParameterError, match="unknown setting"):
        sweep_grid("grid", {"lamda": [1]})
    with pytest.raises(ParameterError, match=r"grid\['tuning'\] value 'sideways'"):
        sweep_grid("grid", {"tuning": ["sideways"]})
    with pytest.raises(ParameterError, match="non-empty list"):
        sweep_grid("grid", {"lam": 4})


def test_lists_given_as_text_on_the_papermill_command_line_are_read_as_literals():
    # papermill -p passes "[0, 1]" as a string; -y would pass a list
    assert validate("03_multitype", {"seeds": "[0, 1]"})["seeds"] == [0, 1]
    assert validate("03_multitype", {"target_datasets": "['synthetic_mpdd']"})["target_datasets"] == ["synthetic_mpdd"]
    assert validate("06_ablation_lambda_length", {"lam_values": "(1, 4.0)"})["lam_values"] == [1, 4.0]
    assert validate("03_multitype", {"train_dataset": "synthetic_target"})["train_dataset"] == "synthetic_target"
    with pytest.raises(ParameterError, match=r"seeds='\[0,'"):
        validate("03_multitype", {"seeds": "[0,"})
    with pytest.raises(ParameterError, match="seeds='7'"):
        validate("03_multitype", {"seeds": "7"})


def test_start_notebook_hands_the_checked_values_to_the_later_cells(monkeypatch):
    import dapo.experiments.runs as experiments

    monkeypatch.setattr(experiments, "start_run", lambda **kwargs: kwargs)
    namespace = {"seeds": "[1, 2]", "smoke": True}
    run = experiments.start_notebook("03_multitype", namespace)
    assert namespace["seeds"] == [1, 2] and run["params"]["seeds"] == [1, 2]
    assert namespace["epochs"] is None  # defaults are filled in too


def test_common_parameters_are_documented_in_the_docs():
    docs = (REPO_ROOT / "docs" / "REPRODUCING.md").read_text()
    missing = [p.name for p in COMMON if f"`{p.name}`" not in docs]
    assert not missing, f"docs/REPRODUCING.md does not mention parameters {missing}"


def test_a_bad_parameter_stops_the_notebook_before_anything_is_written(tmp_path):
    """The bare papermill command with ``-p epochs -1`` fails in the run cell, naming the parameter,
    and leaves the output folders empty (no provenance.json, no table)."""
    import papermill as pm

    out, figs = tmp_path / "results", tmp_path / "figures"
    with pytest.raises(pm.PapermillExecutionError, match=r"epochs=-1: must be >= 1"):
        pm.execute_notebook(str(REPO_ROOT / "notebooks" / "03_multitype.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"epochs": -1, "smoke": True, "data_root": str(tmp_path / "data"),
                                        "output_dir": str(out), "figures_dir": str(figs)},
                            kernel_name="python3", progress_bar=False, cwd=str(REPO_ROOT))
    assert not out.exists() and not figs.exists() and not (tmp_path / "data").exists()


def test_help_prints_usage_and_rewrites_nothing(monkeypatch, capsys):
    from dapo.experiments import parameters

    monkeypatch.setattr(parameters, "write_parameters_cells", lambda paths: pytest.fail("--help wrote notebooks"))
    with pytest.raises(SystemExit) as stop:
        parameters.main(["--help"])
    assert stop.value.code == 0 and "Rewrite the parameters cell" in capsys.readouterr().out
