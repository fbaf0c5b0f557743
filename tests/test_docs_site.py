"""The documentation site builds with Sphinx, without a single warning.

Sphinx and myst-parser come with the ``docs`` extra, which ``scripts/test``
installs. The build is offline (no intersphinx) and runs as CI runs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
BUILD_TIMEOUT = 300  # seconds


def test_site_builds_without_warnings(tmp_path: Path) -> None:
    output = tmp_path / "html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pages = {path.stem for path in DOCS.glob("*.md")}
    built = {path.stem for path in output.glob("*.html")}
    assert pages <= built, f"pages not built: {sorted(pages - built)}"
    index = (output / "index.html").read_text(encoding="utf-8")
    for page in sorted(pages - {"index"}):
        assert f'href="{page}.html"' in index, f"index.html does not link to {page}"
