"""Progress bars leave one final line outside a terminal, and never the notebook widget."""

import io

import pytest

from dapo.util import progress


def _run(monkeypatch, mode, n=500, **kwargs):
    monkeypatch.setenv(progress.ENV, mode)
    out = io.StringIO()
    bar = progress.tqdm(range(n), file=out, mininterval=0, miniters=1, desc="work", **kwargs)
    for i in bar:
        bar.set_postfix(loss=i)    # an explicit refresh, as the training loop does
    return out.getvalue()


def test_final_mode_writes_one_line_with_the_final_count(monkeypatch):
    text = _run(monkeypatch, "final")
    assert text.count("\n") == 1 and "\r" not in text
    assert text.startswith("work: 100%") and "500/500" in text


def test_live_mode_redraws_and_off_mode_is_silent(monkeypatch):
    assert _run(monkeypatch, "live").count("\r") > 10
    assert _run(monkeypatch, "off") == ""
    assert _run(monkeypatch, "final", leave=False) == ""


def test_default_mode_follows_the_terminal(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress.mode() == "final"


def test_bad_mode_is_refused(monkeypatch):
    monkeypatch.setenv(progress.ENV, "loud")
    with pytest.raises(ValueError, match="DAPO_PROGRESS"):
        progress.mode()


def test_no_module_of_the_package_imports_the_notebook_bar():
    from pathlib import Path

    root = Path(progress.__file__).parents[1]
    offenders = [str(p.relative_to(root)) for p in sorted(root.rglob("*.py")) if p.name != "progress.py"
                 and ("tqdm.auto" in p.read_text() or "tqdm.notebook" in p.read_text())]
    assert offenders == ["cli/predict.py"]  # the command line runs in a terminal
