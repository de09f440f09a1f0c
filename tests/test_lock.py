"""constraints.txt is a full lock: every distribution installed in this environment is pinned there, at
the version installed (README: "Updating the pins"; `make lock` rewrites the file)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = "dapo"


def canonical(name: str) -> str:
    """PEP 503 name: case, '-', '_' and '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;=<>!~]+)", line)
        assert match, f"constraints.txt:{number}: {line!r} is not NAME==VERSION (run `make lock`)"
        name = canonical(match[1])
        assert name not in found, f"constraints.txt:{number}: {match[1]} pinned twice"
        found[name] = match[2]
    return found


def test_constraints_pin_every_line_exactly_once():
    locked = pins((REPO / "constraints.txt").read_text())
    assert {"torch", "torchvision", "numpy", "pandas", "nbval", "ruff", "sphinx", "cffconvert"} <= set(locked)


def test_every_installed_distribution_is_pinned_at_its_version():
    locked = pins((REPO / "constraints.txt").read_text())
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    installed.pop(PROJECT, None)
    unpinned = sorted(f"{n}=={v}" for n, v in installed.items() if n not in locked)
    other = sorted(f"{n} {v} (constraints.txt: {locked[n]})" for n, v in installed.items()
                   if n in locked and v != locked[n])
    assert not unpinned and not other, (
        f"installed but not pinned: {unpinned}; installed at another version: {other}. Rebuild the venv "
        f"(make clean-venv test), or refresh the lock on purpose with `make lock` (README: Updating the pins)")


def test_a_distribution_missing_from_the_lock_is_reported():
    assert pins("# header\nnumpy==2.0.0  # comment\n") == {"numpy": "2.0.0"}
    for bad in ("numpy>=2", "numpy", "numpy==2\nNumPy==2"):
        try:
            pins(bad)
        except AssertionError:
            continue
        raise AssertionError(f"{bad!r} was accepted as a pin")


def test_environment_yml_installs_through_the_same_pins():
    text = (REPO / "environment.yml").read_text()
    assert "- -c constraints.txt" in text and "- -e .[dev]" in text
    python = re.search(r"- python=(\d+\.\d+)", text)
    assert python and python[1] == "3.11"  # the lock's reference interpreter
