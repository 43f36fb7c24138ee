"""Install commands that fit how deferral itself was installed.

A backend declares the command that installs what it needs (``BackendInfo.install``), written
for a release installed from an index: ``pip install "deferral[torch]"``. deferral running from
a source checkout (``pip install -e .``, as the README does, or the tree on ``sys.path``) is
extended from that checkout instead, so there the command names the checkout's directory:
``pip install -e "/path/to/deferral[torch]"``, correct from any working directory. A copy
installed from a local directory (``pip install /path/to/deferral``) is found through the
``direct_url.json`` pip records (PEP 610) and gets ``pip install "/path/to/deferral[torch]"``.
Commands that install another distribution (a third-party backend's ``pip install
deferral-jax``) are kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["install_command", "installed_from", "source_checkout"]

# `pip install deferral`, `pip install "deferral[torch]"`, `pip install 'deferral[a,b]'`.
_OURS = re.compile(r"""pip install\s+(["']?)deferral(\[[\w,\s-]*\])?\1(?=\s|$)""")


def source_checkout() -> Path | None:
    """The source tree this deferral is imported from, or ``None`` for an installed release.

    A source tree is recognized by the ``pyproject.toml`` next to the ``deferral`` package
    directory; an installed release lives in ``site-packages``, which has none.
    """
    root = Path(__file__).resolve().parents[1]
    project = root / "pyproject.toml"
    try:
        declares_us = 'name = "deferral"' in project.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if declares_us else None


def installed_from() -> tuple[Path, bool] | None:
    """The local directory deferral was pip-installed from and whether editably, else ``None``."""
    import importlib.metadata
    import urllib.parse
    import urllib.request

    try:
        record = importlib.metadata.distribution("deferral").read_text("direct_url.json")
        found = json.loads(record) if record else {}
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    url = found.get("url", "") if isinstance(found, dict) else ""
    if "dir_info" not in found or not url.startswith("file://"):
        return None
    path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    return path, bool(found["dir_info"].get("editable"))


def _source() -> tuple[Path, bool] | None:
    root = source_checkout()
    return (root, True) if root is not None else installed_from()


def install_command(command: str) -> str:
    """``command`` with any install of deferral itself rewritten for how deferral was installed.

    Example:
        >>> from deferral._install import install_command, source_checkout
        >>> root = source_checkout()
        >>> cmd = install_command('pip install "deferral[torch]"')
        >>> root is None or cmd == f'pip install -e "{root}[torch]"'
        True
        >>> install_command("pip install deferral-jax")
        'pip install deferral-jax'
    """
    source = _source()
    if source is None:
        return command
    path, editable = source
    flag = "-e " if editable else ""
    return _OURS.sub(lambda m: f'pip install {flag}"{path}{(m.group(2) or "").replace(" ", "")}"', command)
