"""The nbval sanitizers (tests/nbval_sanitize.cfg), applied as nbval applies them: what varies with
the order notebooks ran in is equal after sanitising, what a notebook computes is not.

Found by CI: notebook 13 read notebook 04's evaluations from the evaluation cache when the
notebooks ran in order, but not when its reference was made beside 04 (two at once)."""

from __future__ import annotations

import re

from nbformat import NotebookNode
from nbval.plugin import coalesce_streams, get_sanitize_patterns

from dapo.util.paths import REPO_ROOT

PATTERNS = get_sanitize_patterns((REPO_ROOT / "tests" / "nbval_sanitize.cfg").read_text())


def sanitized(stderr: str) -> str:
    """One cell's stderr stream as nbval compares it: streams merged, carriage returns applied."""
    (output,) = coalesce_streams([NotebookNode(output_type="stream", name="stderr", text=stderr)])
    text = output.text
    for regex, replace in PATTERNS:
        text = re.sub(regex, replace, text)
    return text


def bar(desc: str, n: int) -> str:
    return (f"{desc}:   0%|          | 0/{n} [00:00<?, ?it/s]\r"
            f"{desc}: 100%|██████████| {n}/{n} [00:03<00:00,  1.52it/s]\n")


def cached(desc: str) -> str:
    return f"{desc}: read from the evaluation cache\n"


def test_an_evaluation_read_from_the_cache_equals_its_progress_bar():
    descs = ["WinCLIP seed 0 on synthetic_target", "ViP²-CLIP seed 2 on synthetic_mpdd"]
    computed = "".join(bar(d, 5) for d in descs)
    read = "".join(cached(d) for d in descs)
    assert sanitized(computed) == sanitized(read)


def test_which_evaluation_and_the_other_progress_bars_still_count():
    assert sanitized(cached("DAPO seed 0 on synthetic_target")) != sanitized(cached("DAPO seed 1 on synthetic_target"))
    assert sanitized(cached("DAPO seed 0 on synthetic_target")) != sanitized(cached("CoCoOp seed 0 on synthetic_target"))
    # a training's bar is not an evaluation: its count stays compared
    assert sanitized(bar("AA-CLIP epoch 1", 4)) != sanitized(bar("AA-CLIP epoch 1", 5))
    # an evaluation that stopped early is not a completed one
    partial = "DAPO seed 0 on synthetic_target:  40%|████      | 2/5 [00:01<00:02,  1.50it/s]\n"
    assert sanitized(partial) != sanitized(cached("DAPO seed 0 on synthetic_target"))
