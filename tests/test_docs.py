"""The documentation runs: every ```python block of docs/*.md and README.md, and the site build.

Each page is one test. Its ```python blocks run in order in one fresh namespace (later blocks
use names from earlier ones), in a temporary working directory. A block right after an HTML
comment line ``<!-- requires: torch -->`` (or ``tensorflow``; several names separated by commas)
runs only when those modules are importable; when one is missing the block is left out and,
after every other block of the page has run, the page is reported as skipped with the reason.
A page is reported as passed only when every one of its blocks ran.

Output listings use ```text fences. A ```text block right below a ```python block (nothing
but blank lines in between) is that block's exact standard output and is compared with it
(trailing spaces ignored); put a sentence in between to show output that is only illustrative.
Fences that look like Python under another name (```py, ```pycon, ...) are refused, so no
example can silently escape execution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import itertools
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import deferral
from deferral import registry
from deferral.testing import BackendConformance

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + ([ROOT / "README.md"] if (ROOT / "README.md").exists() else [])

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
_REQUIRES = re.compile(r"^\s*<!--\s*requires:\s*(?P<mods>[\w., ]+?)\s*-->\s*$")
_PYTHON_ALIASES = {"py", "py3", "python3", "pycon", "ipython", "{.python", ".python", "pyi"}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # 1-based line of the opening fence
    info: str  # the fence's language tag
    code: str
    requires: tuple[str, ...]
    end: int = 0  # 1-based line of the closing fence
    output: str | None = None  # a ```text block right below (blank lines only in between)


def parse(path: Path) -> list[Block]:
    """Every fenced block of a Markdown page, with the ``requires`` comment right above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent, start = match["fence"], len(match["indent"]), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence) and set(lines[i].strip()) == {fence[0]}
        ):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path.name}:{start + 1}: code fence is never closed")
        i += 1
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        req = _REQUIRES.match(lines[prev]) if prev >= 0 else None
        requires = tuple(m.strip() for m in req["mods"].split(",") if m.strip()) if req else ()
        blocks.append(
            Block(path.name, start + 1, match["info"].lower(), "\n".join(body) + "\n", requires, end=i)
        )
    for k, (block, after) in enumerate(itertools.pairwise(blocks)):
        between = lines[block.end : after.line - 1]
        if block.info == "python" and after.info == "text" and not any(x.strip() for x in between):
            blocks[k] = dataclasses.replace(block, output=after.code)
    return blocks


def _normalize(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def python_blocks(path: Path) -> list[Block]:
    return [b for b in parse(path) if b.info == "python"]


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


RUNNABLE = [p for p in PAGES if python_blocks(p)]


def test_the_docs_have_runnable_pages() -> None:
    names = {p.name for p in RUNNABLE}
    assert {"index.md", "tutorial.md", "concepts.md"} <= names, names
    assert all(python_blocks(DOCS / n) for n in ("tutorial.md", "identity.md", "initializers.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_python_hides_behind_another_fence(page: Path) -> None:
    for block in parse(page):
        assert block.info not in _PYTHON_ALIASES, (
            f"{page.name}:{block.line}: use ```python (executed) or ```text (output), not ```{block.info}"
        )
        if block.requires:
            assert block.info == "python", (
                f"{page.name}:{block.line}: a requires comment only applies to a ```python block"
            )


def test_requires_comments_are_attached_to_a_block() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8").splitlines()
        marked = sum(1 for line in text if _REQUIRES.match(line))
        attached = sum(1 for b in parse(page) if b.requires)
        assert marked == attached, f"{page.name}: a requires comment is not right above a code block"


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # A real module, so classes a page defines can be pickled.
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    module.__file__ = str(page)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    ran, left_out = 0, []
    for block in python_blocks(page):
        missing = _missing(block.requires)
        if missing:
            left_out.append(f"line {block.line}")
            continue
        source = textwrap.dedent(block.code)
        # Pad with blank lines so tracebacks point at the line in the .md file.
        code = compile("\n" * block.line + source, f"{page}", "exec")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, namespace)
        ran += 1
        if block.output is not None:
            assert _normalize(printed.getvalue()) == _normalize(block.output), (
                f"{page.name}:{block.line}: the block printed\n{printed.getvalue()}\n"
                f"but the ```text block below it (line {block.end + 1}) shows\n{block.output}"
            )
    if left_out:
        needs = sorted({m for b in python_blocks(page) for m in _missing(b.requires)})
        pytest.skip(
            f"{page.name}: ran {ran} of {ran + len(left_out)} blocks; left out {len(left_out)} "
            f"that need {' and '.join(needs)} (not installed; first at {left_out[0]})"
        )
    assert ran > 0


# Commands of docs/cli.md whose output does not depend on what is installed: checked verbatim.
_CHECKED_COMMANDS = ("demo", "summary")


def test_cli_page_shows_real_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ```text block under a ```bash `deferral demo`/`summary` line is what the command prints.

    The page's ```python blocks are the files the commands use (``mymodels.py``); the timing
    and the version number are the only parts allowed to differ.
    """
    from deferral import cli

    blocks = parse(DOCS / "cli.md")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for block in blocks:
        if block.info == "python":
            (tmp_path / "mymodels.py").write_text(block.code, encoding="utf-8")

    def varying(text: str) -> str:
        text = re.sub(r"\(\d+\.\d ms\)", "(? ms)", text)
        return _normalize(re.sub(r"^deferral \S+ demo", "deferral ? demo", text.strip("\n")))

    checked = []
    for block, after in itertools.pairwise(blocks):
        words = block.code.split()
        if block.info != "bash" or after.info != "text" or len(block.code.strip().splitlines()) != 1:
            continue
        args = words[3:] if words[:3] == ["python", "-m", "deferral"] else words[1:] if words[:1] == ["deferral"] else []
        if not args or args[0] not in _CHECKED_COMMANDS:
            continue
        try:
            assert cli.main(args) == 0, block.code
        finally:
            sys.modules.pop("mymodels", None)
        assert varying(capsys.readouterr().out) == varying(after.code), f"cli.md:{block.line}: {block.code}"
        checked.append(args[0])
    assert sorted(set(checked)) == sorted(_CHECKED_COMMANDS)


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")  # the theme (mkdocs-material)
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d",
         str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "index.html").exists()


def _documented_backend() -> object:
    """An instance of the backend plugin class that docs/plugins.md builds."""
    page = DOCS / "plugins.md"
    block = next(b for b in python_blocks(page) if "class MineBackend" in b.code)
    namespace: dict[str, object] = {"__name__": "docs_plugins_backend"}
    exec(compile("\n" * block.line + textwrap.dedent(block.code), str(page), "exec"), namespace)
    return namespace["MineBackend"]()  # type: ignore[operator]


class TestDocumentedBackendConformance(BackendConformance):
    """The backend the plugin page builds passes the conformance suite it tells readers to run."""

    backend = "mine"

    @pytest.fixture(scope="class")
    @classmethod
    def backend_environment(cls) -> Iterator[None]:
        registry.unregister_backend(cls.backend)
        deferral.register_backend(_documented_backend())
        yield
        registry.unregister_backend(cls.backend)
