"""The sans-I/O core reads no clock: time comes in as an argument.

Documented choices checked here:

- Every module below the trio line (the ``forbidden`` contract of
  pyproject.toml: ``protocol/`` with the DTLS and OSCORE engines, the codec,
  the message model, errors, registries) is read as source: none imports
  ``time``, and none calls ``now()``, ``utcnow()`` or ``today()`` (of
  ``datetime`` or ``date``). The shell reads the clocks and passes them in:
  trio's clock as ``now``, and for the DTLS engine the wall-clock time
  certificates are checked at (``DtlsSession.receive(..., wall_time)``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import coap_trio

PACKAGE_DIR = Path(coap_trio.__file__).parent
#: The sans-I/O modules and packages (pyproject.toml: "import no trio").
CORE = [
    "interfaces.py",
    "response_errors.py",
    "protocol",
    "codec.py",
    "message.py",
    "options.py",
    "uri.py",
    "remote.py",
    "block.py",
    "linkformat.py",
    "errors.py",
    "numbers",
]
_CLOCK_CALLS = frozenset({"now", "utcnow", "today"})


def core_files() -> list[Path]:
    files: list[Path] = []
    for entry in CORE:
        path = PACKAGE_DIR / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def clock_reads(source: str) -> list[str]:
    """Where ``source`` imports ``time`` or calls ``now()``, ``utcnow()`` or ``today()``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import time" for a in node.names if a.name == "time"]
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found.append(f"line {node.lineno}: from time import ...")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _CLOCK_CALLS
        ):
            found.append(f"line {node.lineno}: .{node.func.attr}()")
    return found


def test_the_checker_finds_clock_reads() -> None:
    source = (
        "import time\nfrom time import monotonic\nimport datetime\nx = datetime.datetime.now()\n"
    )
    assert clock_reads(source) == [
        "line 1: import time",
        "line 2: from time import ...",
        "line 4: .now()",
    ]
    assert clock_reads("def f(now: float) -> float:\n    return now + 1\n") == []


def test_the_core_list_covers_the_dtls_engine() -> None:
    names = {path.relative_to(PACKAGE_DIR).as_posix() for path in core_files()}
    assert "protocol/dtls/session.py" in names
    assert "protocol/dtls/pki.py" in names
    assert len(names) > 20


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_no_core_module_reads_a_clock(path: Path) -> None:
    assert clock_reads(path.read_text()) == []
