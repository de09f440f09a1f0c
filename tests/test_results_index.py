"""results/README.md, the index of the paper's tables and figures, stays true: every notebook it
names exists, every file of a 'synthetic profile done' row exists, and every file name is one
its notebook's code writes (``run.table`` / ``run.figure``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dapo.util.paths import REPO_ROOT

INDEX = REPO_ROOT / "results" / "README.md"
DONE = "synthetic profile done"
STATUSES = {DONE, "synthetic: pending regeneration", "synthetic: notebook pending", "paper profile only"}
NOT_HERE = "not reproducible here"
PAPER_ITEMS = ([f"Table {n}" for n in range(1, 15)] + ["Figure 1"] + [f"Figure {n}" for n in range(3, 11)]
               + ["Figures 11-19"])


def parse_index(text: str) -> list[dict]:
    """The rows of the index table as dicts (paper, what, notebook, files, status)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == len(header), f"results/README.md: row with {len(cells)} cells, expected {len(header)}: {line}"
        rows.append(dict(zip(header, cells)))
    return rows


def expand(cell: str) -> list[str]:
    """The file paths of a cell: backticked, comma-separated, ``name.{csv,md}`` expanded."""
    paths = []
    for item in re.findall(r"`([^`]+)`", cell):
        match = re.fullmatch(r"(.*)\{([^}]+)\}(.*)", item)
        paths += [match[1] + alt + match[3] for alt in match[2].split(",")] if match else [item]
    return paths


def notebook_of(row: dict) -> str | None:
    names = re.findall(r"`([^`]+)`", row["notebook"])
    return names[0] if names else None


def written_names(notebook: str) -> list[tuple[str, bool]]:
    """(literal start of the name, whether the name is an f-string) of every table and figure the
    notebook's code saves."""
    source = "\n".join("".join(c["source"]) for c in json.loads((REPO_ROOT / "notebooks" / f"{notebook}.ipynb")
                                                                .read_text())["cells"] if c["cell_type"] == "code")
    return [(m[2], bool(m[1]) and "{" in m[3]) for m in
            re.finditer(r'run\.(?:table|figure)\(\s*[^,]+,\s*(f?)"([^"{]*)([^"]*)"', source)]


ROWS = parse_index(INDEX.read_text())


def test_parse_and_expand():
    assert expand("`a/b.{csv,md}`, `c.png`") == ["a/b.csv", "a/b.md", "c.png"]
    assert expand("—") == []


def test_every_paper_table_and_figure_has_one_row():
    assert sorted(row["paper"] for row in ROWS) == sorted(PAPER_ITEMS)


@pytest.mark.parametrize("row", ROWS, ids=[row["paper"] for row in ROWS])
def test_row(row):
    status = row["status"]
    assert status in STATUSES or status.startswith(NOT_HERE), f"{row['paper']}: unknown status {status!r}"
    notebook = notebook_of(row)
    if status.startswith(NOT_HERE):
        return
    assert notebook and re.fullmatch(r"\d\d_\w+", notebook), f"{row['paper']}: no notebook named"
    files = expand(row["files"])
    assert files, f"{row['paper']}: no files named"
    if status == "synthetic: notebook pending":
        return
    assert (REPO_ROOT / "notebooks" / f"{notebook}.ipynb").is_file(), \
        f"{row['paper']}: notebooks/{notebook}.ipynb does not exist"
    names = written_names(notebook)
    for path in files:
        stem = Path(path).stem
        assert any(stem == start or (is_f and stem.startswith(start)) for start, is_f in names), \
            f"{row['paper']}: {notebook} writes no table or figure named like {stem!r} (it writes {names})"
        if status == DONE:
            assert (REPO_ROOT / path).is_file(), f"{row['paper']}: {path} does not exist (status {DONE!r})"
