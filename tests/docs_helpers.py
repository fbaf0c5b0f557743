"""Building the documentation site for the tests that read it (see ``conftest.py``)."""

from __future__ import annotations

import re
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
BUILD_TIMEOUT = 300  # seconds

_UNRESOLVED = re.compile(r"WARNING: py:\w+ reference target not found: (\S+)")
#: Terminal colour codes, which Sphinx writes when the environment forces colour
#: (``FORCE_COLOR``) even with ``--no-color``.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class DocsBuild:
    """The HTML site built from ``docs/`` and what Sphinx said while building it."""

    html: Path
    returncode: int
    output: str

    @property
    def warnings(self) -> list[str]:
        """Every warning line Sphinx printed."""
        return [line for line in self.output.splitlines() if "WARNING" in line]

    @property
    def unresolved(self) -> list[str]:
        """The targets of the Python references that resolved to nothing (nitpicky mode)."""
        return [target for _, target in self.unresolved_from()]

    def unresolved_from(self) -> list[tuple[str, str]]:
        """(where, target) of each unresolved reference: where is a docstring or a page,
        or ``<unknown>:1`` for a type in a signature or an annotation."""
        found = []
        for line in self.warnings:
            match = _UNRESOLVED.search(line)
            if match:
                found.append((line[: match.start()].rstrip(": "), match.group(1)))
        return found

    def inventory(self) -> dict[str, str]:
        """The object inventory (``objects.inv``): every documented name and its role."""
        data = (self.html / "objects.inv").read_bytes()
        header_lines = 4
        body = zlib.decompress(data.split(b"\n", header_lines)[header_lines]).decode("utf-8")
        entries = {}
        for line in body.splitlines():
            name, role, _ = line.split(" ", 2)
            entries[name] = role
        return entries


def build_docs(root: Path) -> DocsBuild:
    """Build the site into ``root/html`` as CI builds it, plus ``-n`` (nitpicky)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-n",
            "--no-color",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(root / "doctrees"),
            str(DOCS),
            str(root / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    output = _ANSI.sub("", result.stdout + result.stderr)
    return DocsBuild(root / "html", result.returncode, output)
