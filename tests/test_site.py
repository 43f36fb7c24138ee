"""The built documentation site: examples as code, nothing loaded from another site.

The site is the one in ``$SITE_DIR`` when that variable is set (``tox -e docs`` builds it with
``mkdocs build --strict`` and runs this file on it; a missing or empty directory is then a
failure, not a skip). Otherwise it is built once into a temporary directory when the docs
toolchain (mkdocs-material, mkdocstrings) is installed, and these tests skip when it is not.
"""

from __future__ import annotations

import html.parser
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Elements whose text is code: a doctest inside them is shown as code.
_CODE_TAGS = {"pre", "code"}
# Elements whose text is not shown on the page.
_HIDDEN_TAGS = {"script", "style", "template"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("SITE_DIR")
    if given:
        path = Path(given)
        assert (path / "index.html").is_file(), f"SITE_DIR={given} holds no built site (no index.html)"
        return path
    missing = [m for m in ("material", "mkdocstrings", "mkdocs") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs toolchain is not installed (no {', '.join(missing)}): pip install -e '.[docs]'")
    path = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(path)],
        cwd=ROOT, check=True, capture_output=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return path


class _Page(html.parser.HTMLParser):
    """Collects a page's visible text outside code, its code blocks, and what it loads."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.prose: list[str] = []
        self.code: list[str] = []
        self.loads: list[str] = []  # src of scripts, href of stylesheets

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.loads.append(str(found["src"]))
        if tag == "link" and "stylesheet" in (found.get("rel") or "").split() and found.get("href"):
            self.loads.append(str(found["href"]))
        if tag not in _VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if any(t in _HIDDEN_TAGS for t in self.stack):
            return
        (self.code if any(t in _CODE_TAGS for t in self.stack) else self.prose).append(data)


def _pages(site: Path) -> dict[str, _Page]:
    pages = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path.relative_to(site).as_posix()] = page
    assert len(pages) > 10, f"only {len(pages)} pages in {site}"
    return pages


def test_every_doctest_is_shown_as_code(site: Path) -> None:
    pages = _pages(site)
    for name, page in pages.items():
        for text in page.prose:
            assert ">>>" not in text, f"{name}: a doctest renders as text, not code: {text.strip()[:200]!r}"
    api = "".join(pages["api/index.html"].code)
    # The reference's docstring examples (about forty) all arrive as code.
    assert api.count(">>> ") > 40, api.count(">>> ")
    assert ">>> import deferral" in api


def test_no_page_loads_a_script_or_stylesheet_from_another_site(site: Path) -> None:
    pages = _pages(site)
    for name, page in pages.items():
        external = [u for u in page.loads if _EXTERNAL.match(u)]
        assert not external, f"{name} loads {external}"
    assert any(u.endswith(".css") for u in pages["index.html"].loads), "the theme's stylesheet is missing"
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8")
        imports = re.findall(r"@import\s+(?:url\()?['\"]?((?:https?:)?//[^'\")\s]+)", text)
        assert not imports, f"{css.relative_to(site)} imports {imports}"


def test_code_is_highlighted_when_the_site_is_built(site: Path) -> None:
    text = (site / "tutorial" / "index.html").read_text(encoding="utf-8")
    # Pygments' token classes in the page itself: no script has to colour the code.
    assert re.search(r'<div class="language-python highlight">', text)
    assert re.search(r'<span class="kn">from</span>', text)


def test_no_page_speaks_of_what_a_reader_cannot_see(site: Path) -> None:
    internal = re.compile(r"design brief|the brief\b|pending before|issue \d+|the lead\b", re.IGNORECASE)
    for name, page in _pages(site).items():
        found = internal.findall(" ".join(page.prose))
        assert not found, f"{name} mentions {found}"
