"""CITATION.cff is valid Citation File Format (cffconvert's own validator) and agrees with pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]


def cffconvert() -> str:
    """The cffconvert of this environment (the Makefile installs it next to python)."""
    found = Path(sys.executable).with_name("cffconvert")
    path = str(found) if found.exists() else shutil.which("cffconvert")
    assert path, "cffconvert is not installed: `make venv` installs it (pip install --no-deps -c constraints.txt cffconvert)"
    return path


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([cffconvert(), "--validate", "-i", str(path)], capture_output=True, text=True, timeout=120)


def test_citation_cff_is_valid():
    result = validate(REPO / "CITATION.cff")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_the_validator_refuses_an_invalid_file(tmp_path):
    data = yaml.safe_load((REPO / "CITATION.cff").read_text())
    del data["authors"]
    data["preferred-citation"]["type"] = "not-a-type"
    (tmp_path / "CITATION.cff").write_text(yaml.safe_dump(data))
    assert validate(tmp_path / "CITATION.cff").returncode != 0


def test_citation_agrees_with_the_package_and_prefers_the_dapo_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"] and cff["license"] == project["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["title"].startswith("Defect-aware Hybrid Prompt Optimization via Progressive Tuning")
    assert [a["family-names"] for a in paper["authors"]] == ["Nazer", "Zhou", "Halilaj", "Sadikaj", "Staab"]
    assert "doi" not in paper  # the paper's text gives none: none is invented


@pytest.mark.parametrize("key", ["nazer_dapo", "sadikaj2025multiads", "zhu2025faprompt", "vip2clip"])
def test_readme_has_bibtex_of_the_four_papers(key):
    assert f"{{{key}," in (REPO / "README.md").read_text()


def test_license_is_the_mit_text():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the DAPO companion authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text
