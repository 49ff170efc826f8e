"""Render an HTML page (the demo's ``index.html``, an export's ``report.html``) in headless
Chromium and save a screenshot, so a person can look at the page as a reader would; first
check that every image and link the page names exists.

    python benchmarks/screenshot_report.py build/demo/index.html [--out shot.png]
        [--width 1200] [--height 4000]

Needs Debian's ``chromium`` (``apt-get install chromium``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse


def missing_references(page: Path) -> list[str]:
    """Local ``src``/``href`` targets of ``page`` that do not exist (relative to the page)."""
    text = page.read_text(errors="replace")
    missing = []
    for ref in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', text):
        parsed = urlparse(ref)
        if parsed.scheme in ("http", "https", "data", "mailto") or ref.startswith("#"):
            continue
        if not (page.parent / unquote(parsed.path)).exists():
            missing.append(ref)
    return missing


def screenshot(page: Path, out: Path, width: int, height: int) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("screenshot_report: chromium is not installed; apt-get install chromium")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", f"--screenshot={out.resolve()}",
           page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"screenshot_report: chromium failed ({done.returncode}): "
                         f"{done.stderr.strip()[-500:]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="HTML file to render")
    parser.add_argument("--out", type=Path, help="PNG to write (default: beside the page)")
    parser.add_argument("--width", type=int, default=1200, help="window width, px")
    parser.add_argument("--height", type=int, default=4000, help="window height, px")
    args = parser.parse_args()
    if not args.page.is_file():
        raise SystemExit(f"screenshot_report: {args.page} does not exist")
    missing = missing_references(args.page)
    for ref in missing:
        print(f"missing: {ref}", file=sys.stderr)
    out = screenshot(args.page, args.out or args.page.with_suffix(".png"), args.width,
                     args.height)
    print(out)
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
