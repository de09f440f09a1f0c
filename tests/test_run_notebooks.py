"""The resumable notebook runner (issue 32, item 5): a re-run skips notebooks whose recorded
inputs are unchanged, reruns changed, failed or interrupted ones, and stamps one run id."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import nbformat
import pytest

from dapo.experiments import run_notebooks as rn
from dapo.util.paths import REPO_ROOT


def make_notebook(path, body: str):
    """A tiny notebook with a papermill parameters cell and one code cell."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'synthetic'\nsmoke = False\nfail = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


REPORT = ("import os\nif fail:\n    raise RuntimeError('asked to fail')\n"
          "print('run', os.environ.get('DAPO_RUN_ID'), 'threads', os.environ.get('OMP_NUM_THREADS'))")


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    return [make_notebook(folder / "00_a.ipynb", REPORT), make_notebook(folder / "01_b.ipynb", REPORT)]


def printed(executed) -> str:
    nb = nbformat.read(str(executed), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def run(notebooks, out, **kwargs):
    return rn.run(smoke=True, notebooks=notebooks, out_dir=out, **kwargs)


def test_second_run_skips_unchanged_and_reruns_only_the_changed_notebook(notebooks, tmp_path, capsys):
    out = tmp_path / "out"
    run(notebooks, out)
    manifest = json.loads((out / "manifest.json").read_text())
    first_id = manifest["00_a"]["run_id"]
    assert manifest["00_a"]["completed"] and manifest["01_b"]["completed"]
    assert manifest["00_a"]["parameters"] == {"profile": "synthetic", "smoke": True}
    assert f"run {first_id} threads" in printed(out / "00_a.ipynb")  # DAPO_RUN_ID reached the kernel
    meta = nbformat.read(str(out / "00_a.ipynb"), as_version=4).metadata["papermill"]
    assert (meta["input_path"], meta["output_path"]) == (".../00_a.ipynb", ".../00_a.ipynb")  # no machine path
    capsys.readouterr()

    run(notebooks, out)
    log = capsys.readouterr().out
    assert f"00_a: unchanged since run {first_id}, skipped (pass --force to rerun)" in log
    assert "01_b: unchanged" in log and "executing" not in log
    assert "(skipped; recorded in run" in log and "total" in log

    make_notebook(notebooks[0], REPORT + "\nprint('edited')")
    run(notebooks, out)
    log = capsys.readouterr().out
    assert "executing 00_a.ipynb (notebook changed since run" in log
    assert "01_b: unchanged" in log and "executing 01_b" not in log
    assert "edited" in printed(out / "00_a.ipynb")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["00_a"]["run_id"] != first_id and manifest["01_b"]["run_id"] == first_id

    run(notebooks, out, force=True)
    assert capsys.readouterr().out.count("executing") == 2


def test_changed_parameters_environment_or_missing_copy_rerun(notebooks, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    run(notebooks, out)
    capsys.readouterr()
    run(notebooks, out, parameters={"seed": 1})
    assert capsys.readouterr().out.count("parameters changed") == 2
    monkeypatch.setenv("DAPO_AUTO_PRECISION", "bf16")
    (out / "01_b.ipynb").unlink()
    run(notebooks, out, parameters={"seed": 1})
    log = capsys.readouterr().out
    assert "executing 00_a.ipynb (environment changed" in log
    assert "executing 01_b.ipynb (executed copy 01_b.ipynb missing)" in log


def test_failed_or_interrupted_notebook_reruns(notebooks, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(Exception, match="asked to fail"):
        run(notebooks, out, parameters={"fail": True})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["00_a"]["completed"] is False
    assert "01_b" not in manifest  # nothing started after the failure
    capsys.readouterr()

    run(notebooks, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["01_b"]["completed"] = False  # as a kill during 01_b leaves it
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    run(notebooks, out)
    log = capsys.readouterr().out
    assert "00_a: unchanged" in log
    assert f"executing 01_b.ipynb (did not complete in run {manifest['01_b']['run_id']})" in log


def test_two_at_once_with_one_thread_each(notebooks, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    out = tmp_path / "out"
    run(notebooks, out, jobs=2)
    manifest = json.loads((out / "manifest.json").read_text())
    for stem in ("00_a", "01_b"):
        assert manifest[stem]["completed"] and manifest[stem]["environment"]["OMP_NUM_THREADS"] == "1"
        assert f"run {manifest[stem]['run_id']} threads 1" in printed(out / f"{stem}.ipynb")
    assert os.environ["OMP_NUM_THREADS"] == "2"  # the workers' setting stays in the workers


def test_package_hash_follows_content_not_mtimes(tmp_path):
    package = tmp_path / "pkg"
    (package / "reference").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "reference" / "t.csv").write_text("a,b\n1,2\n")
    before = rn.package_hash(package)
    os.utime(package / "a.py", (0, 0))
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"\0")
    assert rn.package_hash(package) == before
    (package / "reference" / "t.csv").write_text("a,b\n1,3\n")
    assert rn.package_hash(package) != before


def test_cli_rejects_zero_jobs(capsys):
    with pytest.raises(SystemExit):
        rn.main(["-j", "0"])
    assert "-j/--jobs must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None or not (REPO_ROOT / ".git").exists(), reason="not a git checkout")
def test_manifest_is_not_committed():
    result = subprocess.run(["git", "check-ignore", "-q", "--no-index", "results/synthetic/notebooks/manifest.json"],
                            cwd=REPO_ROOT)
    assert result.returncode == 0, "results/<profile>/notebooks/manifest.json must be git-ignored"


def test_shown_paths_are_relative_to_the_repository_or_only_a_name():
    from dapo.util.paths import shown_path

    assert shown_path(REPO_ROOT / "results" / "synthetic" / "checkpoints") == "results/synthetic/checkpoints"
    assert shown_path("/somewhere/else/run.ipynb") == ".../run.ipynb"


def test_several_at_once_start_the_longest_previous_run_first(tmp_path):
    """-j 2 orders by the previous executed copies' papermill durations; untimed ones keep their order, last."""
    folder, out = tmp_path / "notebooks", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    paths = [make_notebook(folder / f"0{i}_n.ipynb", "pass") for i in range(4)]
    for path, duration in zip(paths, (5.0, None, 300.0, "broken")):
        nb = nbformat.read(str(path), as_version=4)
        if duration is not None:
            nb.metadata["papermill"] = {"duration": duration}
        nbformat.write(nb, str(out / path.name))
    (out / paths[3].name).write_text("not json")
    assert rn.previous_seconds(out / paths[2].name) == 300.0 and rn.previous_seconds(out / paths[3].name) is None
    order = rn.longest_first([(p, "inputs") for p in paths], out)
    assert [p.name[:2] for p, _ in order] == ["02", "00", "01", "03"]
