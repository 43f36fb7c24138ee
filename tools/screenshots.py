"""Screenshots of the documentation site, for checking it by eye.

Builds the site (``mkdocs build --strict``), serves it on a local port and takes headless
Chromium screenshots of the home, tutorial, API-reference and performance pages, in the light
and the dark palette, at a desktop and a narrow width. Each page is shot in one tall window
and cut into screen-sized tiles (``home-light-wide-01.png``, ``-02``, ...): headless Chromium
renders a blank image when a URL's anchor scrolls the page, so tiles are how the lower parts
(the performance tables, the reference's examples) get seen. Needs the docs extra
(``pip install -e ".[docs]"``), Pillow (``pip install pillow``, to cut the tiles) and a
Chromium (``apt-get install chromium`` on Debian/Ubuntu)::

    python tools/screenshots.py                       # PNGs in ./site-screenshots
    python tools/screenshots.py --out /tmp/shots --chromium /usr/bin/chromium --tiles 12

Look at every PNG: code blocks highlighted with a copy button, wide tables scrolling inside
their own box, the palette toggle in the header, nothing cut off.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"home": "", "tutorial": "tutorial/", "api": "api/", "performance": "performance/"}
# (name, width, tile height): a desktop window and a narrow one, where wide tables must scroll.
SIZES = [("wide", 1440, 1500), ("narrow", 820, 1500)]
SCHEMES = {"light": [], "dark": ["--force-dark-mode", "--blink-settings=preferredColorScheme=0"]}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request otherwise
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free local port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def shoot(chromium: str, url: str, stem: Path, width: int, tile: int, tiles: int, flags: list[str]) -> list[Path]:
    """Screenshot ``url`` in a window ``tiles`` tiles tall; save the tiles that show something."""
    from PIL import Image

    whole = stem.with_suffix(".full.png")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={width},{tile * tiles}", "--virtual-time-budget=5000", *flags,
         f"--screenshot={whole}", url],
        check=True, capture_output=True, timeout=180,
    )
    saved = []
    with Image.open(whole) as image:
        for i in range(tiles):
            part = image.crop((0, i * tile, image.width, (i + 1) * tile))
            if i and part.convert("RGB").getcolors(1) is not None:  # one colour: past the page's end
                break
            png = stem.parent / f"{stem.name}-{i + 1:02d}.png"
            part.save(png, optimize=True)
            saved.append(png)
    whole.unlink()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("site-screenshots"), help="where the PNGs go")
    parser.add_argument("--chromium", default=None, help="the Chromium binary (default: found on PATH)")
    parser.add_argument("--tiles", type=int, default=6, help="tiles per page, from the top (default: 6)")
    args = parser.parse_args(argv)
    chromium = args.chromium or next(
        (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
    )
    if chromium is None:
        print("screenshots: no Chromium found; install one (apt-get install chromium) or pass --chromium",
              file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
                       cwd=ROOT, check=True)
        with serve(site) as base:
            for page, path in PAGES.items():
                for scheme, flags in SCHEMES.items():
                    for size, width, tile in SIZES:
                        stem = args.out / f"{page}-{scheme}-{size}"
                        for png in shoot(chromium, base + path, stem, width, tile, args.tiles, flags):
                            print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
