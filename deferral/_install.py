"""Install commands that fit how deferral itself was installed.

A backend declares the command that installs what it needs (``BackendInfo.install``), written
for a release installed from an index: ``pip install "deferral[torch]"``. deferral running from
a source checkout (``pip install -e .``, as the README does, or the tree on ``sys.path``) is
extended from that checkout instead, so there the command names the checkout's directory:
``pip install -e "/path/to/deferral[torch]"``, correct from any working directory. Commands that
install another distribution (a third-party backend's ``pip install deferral-jax``) are kept.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["install_command", "source_checkout"]

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


def install_command(command: str) -> str:
    """``command`` with any install of deferral itself rewritten for how deferral was installed.

    Example:
        >>> from deferral._install import install_command, source_checkout
        >>> cmd = install_command('pip install "deferral[torch]"')
        >>> cmd == ('pip install "deferral[torch]"' if source_checkout() is None
        ...         else f'pip install -e "{source_checkout()}[torch]"')
        True
        >>> install_command("pip install deferral-jax")
        'pip install deferral-jax'
    """
    root = source_checkout()
    if root is None:
        return command
    return _OURS.sub(lambda m: f'pip install -e "{root}{(m.group(2) or "").replace(" ", "")}"', command)
