"""Sphinx configuration of the companion's book (`make book`): README, docs/, the results index and
the committed executed notebooks, rendered offline (the notebooks are never re-executed).

The source folder is the repository root (``sphinx-build -c docs . OUT``), so every relative link
works as it does on GitHub; ``include_patterns`` picks the pages. README.md is the front page; its
table of contents is added here, at read time, so that README.md stays plain Markdown.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

project = "DAPO companion"
author = "the DAPO companion authors"
copyright = "2026, the DAPO companion authors"

extensions = ["myst_nb"]
root_doc = "README"
include_patterns = ["README.md", "docs/*.md", "docs/methods/*.md", "results/README.md", "results/synthetic/notebooks/*.ipynb"]
exclude_patterns = ["docs/_build", "**/.ipynb_checkpoints"]

# the executed copies are rendered as committed: never run (no kernel, no network, no data needed)
nb_execution_mode = "off"
nb_merge_streams = True
# notebook 10's vocabulary playground is an ipywidget, live in Jupyter only: the offline book loads no
# widget scripts from a CDN (myst-nb's default), the widget's text stands in its place
nb_ipywidgets_js: dict = {}
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # pages that start at ## (moved README sections) are fine

html_theme = "sphinx_book_theme"
html_title = "DAPO companion"
html_theme_options = {"show_toc_level": 2, "use_download_button": False, "use_fullscreen_button": False}
html_show_sourcelink = False
# everything the site needs is in its own folder: no fonts, scripts or icons from the network
html_theme_options["icon_links"] = []

DOCS_ORDER = ["REPRODUCING", "PROFILES", "MODEL", "METHODS", "FIDELITY", "CLI", "DISTRIBUTED", "DATASETS", "METRICS", "BENCHMARKS",
              "TESTING", "ARCHITECTURE"]


def _toctree(caption: str, entries: list[str]) -> str:
    return "\n```{toctree}\n:hidden:\n:caption: " + caption + "\n\n" + "\n".join(entries) + "\n```\n"


def _front_page_toc() -> str:
    pages = [p.stem for p in (ROOT / "docs").glob("*.md")]
    docs = [f"docs/{name}" for name in DOCS_ORDER if name in pages]
    docs += sorted(f"docs/{name}" for name in pages if name not in DOCS_ORDER)
    notebooks = sorted(f"results/synthetic/notebooks/{p.stem}"
                       for p in (ROOT / "results" / "synthetic" / "notebooks").glob("*.ipynb"))
    methods = sorted(f"docs/methods/{p.stem}" for p in (ROOT / "docs" / "methods").glob("*.md"))
    return (_toctree("Guide", docs) + _toctree("Methods", methods) + _toctree("Results", ["results/README"])
            + _toctree("Executed notebooks (synthetic profile)", notebooks))


def _add_toc(app, docname: str, source: list[str]) -> None:
    if docname == root_doc:
        source[0] += "\n" + _front_page_toc()


def _index_page(app, exception) -> None:
    """The front page is README.html; index.html (what a browser opens in a folder) is the same page."""
    if exception is None and app.builder.format == "html":
        out = Path(app.outdir)
        (out / "index.html").write_bytes((out / "README.html").read_bytes())


def setup(app):
    app.connect("source-read", _add_toc)
    app.connect("build-finished", _index_page)
