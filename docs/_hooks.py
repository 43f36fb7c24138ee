"""Build-time fixes for the API reference: docstring examples as code, Sphinx roles as links.

Two plugins live here. :class:`ExampleSections` is a griffe extension (``mkdocs.yml`` lists it
under mkdocstrings' ``extensions``): the docstrings head their doctests ``Example:``, a heading
the Google-style parser does not know (it knows ``Examples:``), so it would render the doctest
as Markdown text, where ``>>>`` reads as nested quotes. The extension renames the heading and
puts the blank line above it that the parser requires, so the doctest becomes an examples
section rendered as a highlighted code block. The docstrings stay as they are: ``python -m
doctest`` and ``help()`` read them the same either way.

The MkDocs hook :func:`on_page_markdown` hides the left navigation on pages that are a tab of
their own (Home, Performance, API reference), where it would list only the page itself and
take width from its wide tables.

The MkDocs hook :func:`on_page_content` handles the roles: the docstrings cross-reference with reStructuredText roles (:func:`deferral.seed`,
:meth:`host_values`, :class:`~deferral.hookspec.BackendInfo`), which Markdown leaves as literal
text. On each rendered page this hook replaces ``:role:<code>target</code>`` with a link to the
target's heading when the page documents it (by full path, as a top-level re-export, or by a
unique dotted suffix), and with plain code otherwise.
"""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^([ \t]*)Examples?:[ \t]*$")
_ROLE = re.compile(r":(?:func|class|meth|data|mod|attr|exc|obj):<code>(~?)([\w.]+?)(\(\))?</code>")
_HEADING_ID = re.compile(r'<h[1-6] id="([\w.]+)" class="doc doc-heading"')


def examples_headings(text: str) -> str:
    """``text`` with each ``Example:`` heading line spelled ``Examples:``, a blank line above it."""
    out: list[str] = []
    for line in text.split("\n"):
        match = _EXAMPLE_HEADING.match(line)
        if match:
            if out and out[-1].strip():
                out.append("")
            line = f"{match.group(1)}Examples:"
        out.append(line)
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Make every ``Example:`` block of a docstring an examples section (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = examples_headings(obj.docstring.value)


def _top_level_aliases() -> dict[str, str]:
    """``deferral.X`` -> ``deferral.module.X`` for the names ``deferral/__init__.py`` re-exports."""
    init = Path(__file__).resolve().parents[1] / "deferral" / "__init__.py"
    aliases: dict[str, str] = {}
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for name in node.names:
                aliases[f"deferral.{name.asname or name.name}"] = f"deferral.{node.module}.{name.name}"
    return aliases


_ALIASES = _top_level_aliases()


def _resolve(target: str, ids: set[str]) -> str | None:
    target = _ALIASES.get(target, target)
    if target in ids:
        return target
    matches = [i for i in ids if i.endswith("." + target)]
    return matches[0] if len(matches) == 1 else None


def on_page_markdown(markdown: str, *, page: Any, **kwargs: Any) -> str:
    if page.parent is None:
        hidden = page.meta.setdefault("hide", [])
        if "navigation" not in hidden:
            hidden.append("navigation")
    return markdown


def on_page_content(html_text: str, **kwargs: Any) -> str:
    ids = set(_HEADING_ID.findall(html_text))

    def replace(match: re.Match[str]) -> str:
        short, target, call = match.group(1), match.group(2), match.group(3) or ""
        shown = html.escape((target.rsplit(".", 1)[-1] if short else target) + call)
        anchor = _resolve(target, ids)
        if anchor is None:
            return f"<code>{shown}</code>"
        return f'<a href="#{anchor}" title="{anchor}"><code>{shown}</code></a>'

    return _ROLE.sub(replace, html_text)
