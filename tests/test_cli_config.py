"""`dapo train --set FIELD=VALUE` and `--config run.yaml`: every field settable, every bad value a one-line
error before any work, and the run.yaml a run writes repeats it."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_cli import TINY_BACKBONE, dapo, error_line
from test_cli_folder import write_folder

from dapo.cli.common import UsageError
from dapo.cli.config import check_fields, literal, parse_set, run_tokens
from dapo.engine.checkpoint import read_metadata


@pytest.fixture
def parts(tmp_path, tiny_model_name):
    root = tmp_path / "parts"
    write_folder(root, {"good": 2, "scratch": 2, "dent": 2}, shape=(32, 32))
    return root


def train_args(root, out, *extra):
    return ("train", "--dataset", "folder", "--root", root, "--epochs", 1, "--out", out, "--no-progress",
            *TINY_BACKBONE, *extra)


def test_set_values_are_python_literals_else_text():
    assert parse_set(["lam=8", "lr=1e-3", "betas=(0.9, 0.99)", "aggregation=attention", "text_depth=None",
                      "train_adapters=false"]) == {"lam": 8, "lr": 1e-3, "betas": (0.9, 0.99),
                                                   "aggregation": "attention", "text_depth": None,
                                                   "train_adapters": False}
    assert literal("'quoted'") == "quoted" and parse_set(["lam=1", "lam=2"]) == {"lam": 2}  # the later wins


def test_fields_take_their_types_and_numbers_become_floats():
    assert check_fields({"lam": 8, "n_ctx": 4, "betas": [0.9, 0.99], "epochs": 2}, "--set") == {
        "lam": 8.0, "n_ctx": 4, "betas": (0.9, 0.99), "epochs": 2}
    assert isinstance(check_fields({"lam": 8}, "--set")["lam"], float)


@pytest.mark.parametrize(("items", "message"), [
    (["lamb=8"], "--set: unknown setting(s) ['lamb']: not a field of DAPOConfig"),
    (["lam=abc"], "--set: lam='abc': expected a number"),
    (["n_ctx=4.5"], "--set: n_ctx=4.5: expected an integer"),
    (["train_adapters=yes"], "--set: train_adapters='yes': expected True or False"),
    (["betas=0.9"], "--set: betas=0.9: expected a list"),
    (["lam=-1"], "--set: DAPOConfig.lam must be >= 0, got -1.0"),
    (["n_ctx=0"], "--set: DAPOConfig.n_ctx must be >= 1, got 0"),
    (["aggregation=median"], "--set: DAPOConfig.aggregation='median': expected one of ('mean', 'attention')"),
    (["lr=0"], "--set: TrainConfig.lr must be > 0, got 0.0"),
    (["seed=3"], "--set seed: use --seed"),
    (["lam"], "--set 'lam': expected FIELD=VALUE"),
])
def test_bad_set_values_are_one_line_errors_before_any_work(capsys, tmp_path, parts, items, message):
    code, err = dapo(capsys, *train_args(parts, tmp_path / "run", "--set", *items))
    assert code == 2 and message in error_line(err), err
    assert not (tmp_path / "run").exists()  # refused before the output folder was made


def test_set_reaches_the_model_and_the_recipe_and_run_yaml_records_the_run(capsys, tmp_path, parts):
    code, err = dapo(capsys, *train_args(parts, tmp_path / "run", "--set", "lam=8", "n_ctx=4", "lr=5e-4",
                                         "betas=(0.9, 0.99)"))
    assert code == 0, err
    meta = read_metadata(tmp_path / "run" / "epoch_001.safetensors")
    assert (meta["config"].lam, meta["config"].n_ctx) == (8.0, 4)
    assert (meta["training"].lr, meta["training"].betas, meta["training"].epochs) == (5e-4, (0.9, 0.99), 1)
    run = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert run["method"] == "dapo" and run["dataset"] == "folder" and run["root"] == str(parts)
    assert (run["backbone"], run["pretrained"], run["image_size"]) == ("dapo-test-tiny", "none", 32)
    assert run["model"] == json.loads(json.dumps(meta["config"].to_dict()))  # every field, as trained
    assert run["model"]["lam"] == 8.0 and run["model"]["n_ctx"] == 4 and len(run["model"]) > 30
    assert run["training"]["lr"] == 5e-4 and run["training"]["betas"] == [0.9, 0.99]


def test_config_of_a_run_yaml_repeats_the_run(capsys, tmp_path, parts):
    code, err = dapo(capsys, *train_args(parts, tmp_path / "first", "--set", "lam=8", "n_ctx=4"))
    assert code == 0, err
    code, err = dapo(capsys, "train", "--config", tmp_path / "first" / "run.yaml", "--out", tmp_path / "again",
                     "--no-progress")
    assert code == 0, err
    first, again = (load_file(tmp_path / d / "epoch_001.safetensors") for d in ("first", "again"))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    a, b = (yaml.safe_load((tmp_path / d / "run.yaml").read_text()) for d in ("first", "again"))
    assert {**a, "out": None} == {**b, "out": None}  # the same resolved run, written elsewhere


def test_a_run_file_of_ones_own_and_the_command_line_over_it(capsys, tmp_path, parts):
    run_file = tmp_path / "mine.yaml"
    run_file.write_text(yaml.safe_dump({"dataset": "folder", "root": str(parts), "out": str(tmp_path / "run"),
                                        "backbone": "dapo-test-tiny", "pretrained": "none", "image_size": 32,
                                        "model": {"lam": 2.0}, "training": {"epochs": 3, "lr": 2e-3}}))
    code, err = dapo(capsys, "train", "--config", run_file, "--epochs", 1, "--set", "lam=6", "--no-progress")
    assert code == 0, err
    meta = read_metadata(tmp_path / "run" / "epoch_001.safetensors")
    assert meta["config"].lam == 6.0 and meta["training"].epochs == 1 and meta["training"].lr == 2e-3


@pytest.mark.parametrize(("content", "message"), [
    ("method: dapo\nlamb: 3\n", "unknown key(s) ['lamb']"),
    ("model: {lam: abc}\n", "--set: lam='abc': expected a number"),
    ("model: {lam: -2}\n", "DAPOConfig.lam must be >= 0, got -2.0"),
    ("model: [1, 2]\n", "'model' must be a mapping of fields"),
    ("model: {lam: [\n", "not valid YAML"),
    ("- 1\n", "expected a mapping of options"),
    ("seed: 1\nmodel: {seed: 2}\n", "model.seed=2 differs from seed=1"),
])
def test_bad_run_files_are_one_line_errors(capsys, tmp_path, parts, content, message):
    run_file = tmp_path / "bad.yaml"
    run_file.write_text(content)
    code, err = dapo(capsys, *train_args(parts, tmp_path / "run", "--config", run_file))
    assert code == 2 and message in error_line(err), err
    assert not (tmp_path / "run").exists()


def test_a_missing_run_file_and_a_bad_option_in_one_are_refused(capsys, tmp_path):
    code, err = dapo(capsys, "train", "--config", tmp_path / "missing.yaml")
    assert code == 2 and "--config" in error_line(err) and "cannot be read" in err
    (tmp_path / "bad.yaml").write_text("method: nosuch\n")  # options are checked by argparse, as if typed
    with pytest.raises(SystemExit) as exit_:
        dapo(capsys, "train", "--config", tmp_path / "bad.yaml")
    assert exit_.value.code == 2 and "argument --method: invalid choice: 'nosuch'" in capsys.readouterr().err


def test_run_tokens_put_recipe_options_before_set():
    tokens = run_tokens({"method": "dapo", "seed": 1, "model": {"lam": 2.0, "seed": 1},
                         "training": {"epochs": 3, "precision": "fp32", "lr": 0.002}}, "f.yaml")
    assert tokens == ["--method", "dapo", "--seed", "1", "--epochs", "3", "--precision", "fp32",
                      "--set", "lam=2.0", "lr=0.002"]
    with pytest.raises(UsageError, match="training.seed=0 differs"):
        run_tokens({"seed": 2, "training": {"seed": 0}}, "f.yaml")
