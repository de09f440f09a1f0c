"""Every result number README.md and docs/*.md quote is generated from the committed tables
(dapo.experiments.claims blocks, rewritten by `make claims`) and none is typed by hand in their prose."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from dapo.experiments import claims

REPO = Path(__file__).resolve().parents[1]
PAGES = claims.pages(REPO)
TABLES = REPO / "results" / "synthetic"

# README.md at b3d9ed5, "Calibration": the stale claim issue 26 found (the table says DAPO 84.2 vs 79.2).
STALE_README = """**Calibration.** Zero-shot patch tokens do not separate defects (0.23, below chance, like real
CLIP's: CLIP-AC reaches 38.2 % pixel AUROC on MVTec-AD and 47.8 % on VisA, FAPrompt
appendix Tables 9 and 13), while a linear probe on the same frozen tokens reaches 0.95 and
the trained methods 85-91 % pixel AUROC (`results/synthetic/table1_multitype.md`): there is
room for the methods' signal. On this backbone MultiADS's handcrafted prompts beat DAPO's
learned ones on both targets (89.9 % vs 85.1 % pixel AUROC on `synthetic_target`, 91.0 % vs
86.7 % on `synthetic_mpdd`, and on AP and F1)."""


def test_the_pages_are_the_readme_and_the_docs():
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    assert "README.md" in names and "docs/PROFILES.md" in names
    assert not names & set(claims.NOT_CHECKED)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_result_is_typed_in_prose(page):
    typed = claims.typed_results(page.read_text())
    assert not typed, f"{page.relative_to(REPO)}: " + "; ".join(typed[:5]) + f". {claims.RULE}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_generated_blocks_match_the_committed_tables(page):
    text = page.read_text()
    assert claims.render(text, page.name) == text, f"{page.relative_to(REPO)} is stale: run `make claims`"


def test_the_stale_readme_claim_is_caught():
    typed = " ".join(claims.typed_results(STALE_README))
    for number in ("89.9 %", "85.1 %", "91.0 %", "86.7 %", "0.23", "0.95", "38.2 %"):
        assert number in typed


def test_what_the_rule_leaves_out():
    text = ("57.9 min on 2 cores, 21.6 MB, torch 2.14.1 on Python 3.11, Sec. 5.2, an error of 1.4e-8, "
            "fp32 0.07-0.08 TFLOP/s, `lr=1e-3`, 3654 images, [a](docs/v1.2.md)\n```\n0.5\n```\n<!-- 0.7 -->")
    assert claims.typed_results(text) == []
    assert [hit.split(" in:")[0] for hit in claims.typed_results("AUROC 84.2, up 5 % and 12.5%")] == [
        "84.2", "5 %", "12.5%"]


def test_the_table1_block_in_the_readme_is_the_csv_within_rounding():
    """Parse the numbers of the generated block back and compare them with the CSV (rounded to 0.1)."""
    block = re.search(r"<!-- generated: table1 .*?-->\n(.*?)<!-- end generated: table1 -->",
                      (REPO / "README.md").read_text(), re.S)
    assert block, "README.md has no generated table1 block"
    table = pd.read_csv(TABLES / "table1_multitype.csv")
    rows = [line.split("|")[1:-1] for line in block[1].splitlines() if line.startswith("| synthetic")]
    assert len(rows) == len(table)
    for cells, (_, row) in zip(rows, table.iterrows()):
        target, method, *values = (c.strip() for c in cells)
        assert (target, method) == (row["test"], row["method"])
        for value, metric in zip(values, ("pixel_auroc", "pixel_ap", "pixel_f1")):
            mean, std = (float(v) for v in value.split("±"))
            assert abs(mean - row[f"{metric} / mean"]) <= 0.05 + 1e-9 and abs(std - row[f"{metric} / std"]) <= 0.05 + 1e-9
    leader = table.loc[table[table["test"] == "synthetic_target"]["pixel_auroc / mean"].idxmax(), "method"]
    assert f"highest mean on `synthetic_target`: AUROC: {leader}" in block[1]


def test_a_stale_block_is_rewritten_and_an_unknown_one_refused():
    stale = "x\n<!-- generated: table1 (python -m dapo.experiments.claims) -->\nMultiADS 89.9\n<!-- end generated: table1 -->\n"
    fresh = claims.render(stale)
    assert "89.9" not in fresh and f"{pd.read_csv(TABLES / 'table1_multitype.csv')['pixel_auroc / mean'][0]:.1f}" in fresh
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        claims.render("<!-- generated: nope -->\n<!-- end generated: nope -->")


def test_readme_is_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 10 * 1024, f"README.md is {len(readme.encode())} bytes; move sections to docs/"
    missing = [p.name for p in (REPO / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert not missing, f"README.md does not link {missing}"


def test_every_method_page_is_linked_from_the_registry_table():
    """A page under docs/methods/ named after a registry entry or its model family is that row's link
    (APRIL-GAN, of the DAPO family, pointed at FIDELITY although aprilgan.md exists)."""
    block = claims.methods()
    for page in sorted((REPO / "docs" / "methods").glob("*.md")):
        assert f"(methods/{page.name})" in block, f"{page.name} is linked from no row of docs/METHODS.md"
