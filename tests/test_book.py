"""`make book`: the static site builds offline with Sphinx -W (a broken cross-reference is an error),
has a page for every executed notebook, and every local link and resource in it resolves."""

from __future__ import annotations

import html.parser
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "results" / "synthetic" / "notebooks").glob("*.ipynb"))


class Links(html.parser.HTMLParser):
    """Every href and src of a page, with whether it loads a resource (script, style, image)."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str, bool]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                loads = tag in ("script", "img") or (tag == "link" and ("rel", "stylesheet") in attrs)
                self.found.append((tag, value, loads))


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-c", "docs",
                             "-d", str(out / "doctrees"), ".", str(out / "html")],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"make book failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return out / "html"


@pytest.mark.slow
def test_every_page_and_every_executed_notebook_is_in_the_book(book):
    assert (book / "index.html").read_text() == (book / "README.html").read_text()
    for page in [*(REPO / "docs").glob("*.md"), REPO / "results" / "README.md", *NOTEBOOKS]:
        built = book / page.relative_to(REPO).with_suffix(".html")
        assert built.is_file(), f"{page.relative_to(REPO)} has no page in the book"
    front = (book / "index.html").read_text()
    for notebook in NOTEBOOKS:
        assert f'href="results/synthetic/notebooks/{notebook.stem}.html"' in front  # in the navigation


@pytest.mark.slow
def test_notebook_pages_show_the_committed_outputs(book):
    page = (book / "results" / "synthetic" / "notebooks" / "03_multitype.html").read_text()
    assert "<table" in page and "<img" in page  # tables and figures as committed, not re-executed


@pytest.mark.slow
def test_no_local_link_is_broken_and_nothing_loads_from_the_network(book):
    broken, remote = [], []
    for page in book.rglob("*.html"):
        if page.relative_to(book).parts[0] == "_static":
            continue  # the theme's template fragments, not pages
        parser = Links()
        parser.feed(page.read_text())
        for tag, link, loads in parser.found:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                if loads and parts.scheme in ("http", "https", ""):
                    remote.append(f"{page.relative_to(book)}: <{tag}> {link}")
                continue
            if not parts.path:
                continue  # #anchor on the same page
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(book)}: {link}")
    assert not broken, f"{len(broken)} broken local link(s): {broken[:10]}"
    assert not remote, f"the book loads from the network: {remote[:10]}"
