"""The docs stay true: the reference covers the public modules; public names have docstrings."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import coap_trio

DOCS = Path(__file__).resolve().parent.parent / "docs"
REFERENCE = DOCS / "reference"

_AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)$", re.M)

#: The public modules: each has a section of the reference (docs/reference/).
PUBLIC_MODULES = [
    "coap_trio",
    "coap_trio.block",
    "coap_trio.cli",
    "coap_trio.cli.exitcodes",
    "coap_trio.codec",
    "coap_trio.context",
    "coap_trio.edn",
    "coap_trio.errors",
    "coap_trio.fileserver",
    "coap_trio.hosting",
    "coap_trio.interfaces",
    "coap_trio.linkformat",
    "coap_trio.message",
    "coap_trio.numbers",
    "coap_trio.numbers.codes",
    "coap_trio.numbers.constants",
    "coap_trio.numbers.contentformat",
    "coap_trio.numbers.optionnumbers",
    "coap_trio.numbers.types",
    "coap_trio.observable",
    "coap_trio.options",
    "coap_trio.oscore_credentials",
    "coap_trio.oscore_storage",
    "coap_trio.plugtest",
    "coap_trio.proxy",
    "coap_trio.proxy.allow",
    "coap_trio.proxy.cache",
    "coap_trio.proxy.forward",
    "coap_trio.proxy.http",
    "coap_trio.proxy.reverse",
    "coap_trio.proxy.server",
    "coap_trio.proxy.upstream",
    "coap_trio.remote",
    "coap_trio.resource",
    "coap_trio.response_errors",
    "coap_trio.testing",
    "coap_trio.testing.pytest_plugin",
    "coap_trio.transports.base",
    "coap_trio.transports.dtls",
    "coap_trio.transports.udp",
    "coap_trio.uri",
]


def documented_modules() -> list[str]:
    """The modules the reference pages document with ``automodule``."""
    return sorted(
        name
        for page in REFERENCE.glob("*.rst")
        for name in _AUTOMODULE.findall(page.read_text(encoding="utf-8"))
    )


def test_the_reference_documents_the_public_modules_and_no_internal_one() -> None:
    modules = documented_modules()
    assert modules == sorted(set(modules)), "a module is documented twice"
    assert modules == PUBLIC_MODULES
    internal = [m for m in modules if any(p.startswith("_") for p in m.split("."))]
    assert internal == []
    assert not any(m.startswith("coap_trio.protocol") for m in modules)


def test_the_generated_single_page_reference_is_gone() -> None:
    assert not (DOCS / "api.md").exists()
    assert not (DOCS / "gen_api.py").exists()


def test_every_public_name_is_documented() -> None:
    undocumented = []
    for module_name in documented_modules():
        module = importlib.import_module(module_name)
        assert inspect.getdoc(module), f"{module_name} has no module docstring"
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                undocumented.append(f"{module_name}.{name}")
            if inspect.isclass(obj):
                for member_name, member in vars(obj).items():
                    if member_name.startswith("_"):
                        continue
                    if (inspect.isfunction(member) or isinstance(member, property)) and not (
                        inspect.getdoc(member)
                    ):
                        undocumented.append(f"{module_name}.{name}.{member_name}")
    assert not undocumented


def test_top_level_exports_resolve() -> None:
    for name in coap_trio.__all__:
        assert hasattr(coap_trio, name), name


def test_architecture_names_existing_modules() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    package = Path(coap_trio.__file__).parent
    for line in text.splitlines():
        if "[built]" in line and not line.startswith("  "):
            module = line.split()[0]
            assert (package / module).exists(), f"architecture.md lists {module} as built"


async def test_testing_guide_example_runs(autojump_clock: object) -> None:
    """The example in docs/testing.md is executed, so the guide cannot rot."""
    import re

    from coap_trio.testing import MemoryNetwork

    text = (DOCS / "testing.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "docs/testing.md", "exec"), namespace)
    test = namespace["test_survives_loss"]
    await test(MemoryNetwork, autojump_clock)  # type: ignore[operator]


def test_testing_guide_says_how_to_turn_on_trio_mode() -> None:
    """docs/testing.md shows the pytest-trio setting its async tests need, as TOML that parses."""
    import tomllib

    text = (DOCS / "testing.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    settings = tomllib.loads(blocks[0])
    assert settings["tool"]["pytest"]["ini_options"]["trio_mode"] is True
    assert "pytest-trio" in text
    ours = tomllib.loads((DOCS.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert ours["tool"]["pytest"]["ini_options"]["trio_mode"] is True


def test_the_product_speaks_of_itself() -> None:
    """Code and docs describe the software, not how it was made; history carries dates."""
    import re

    root = DOCS.parent
    words = re.compile(
        r"\b(?:sessions? \d|issue \d|issue #\d|the brief|development vm|later issues)", re.I
    )
    found = []
    for folder in ("coap_trio", "docs", "benchmarks", "scripts"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".py", ".md", ".rst", "") or "_build" in path.parts:
                continue
            if not path.is_file():
                continue
            for number, line in enumerate(path.read_text("utf-8", "replace").splitlines(), 1):
                if words.search(line):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    readme = (root / "README.md").read_text(encoding="utf-8")
    found += [line for line in readme.splitlines() if words.search(line)]
    assert found == []


def test_no_merge_conflict_markers_are_left() -> None:
    """No file carries the markers a merge leaves where it could not join two changes."""
    import re

    root = DOCS.parent
    marker = re.compile(r"^(<{7}|>{7}) ", re.M)
    found = []
    for folder in ("coap_trio", "docs", "tests", "benchmarks", "fuzz", "scripts"):
        for path in sorted((root / folder).rglob("*")):
            if "_build" in path.parts or not path.is_file():
                continue
            if path.suffix not in (".py", ".md", ".rst", ".toml", ".txt", ""):
                continue
            if marker.search(path.read_text("utf-8", "replace")):
                found.append(str(path.relative_to(root)))
    for name in ("README.md", "pyproject.toml"):
        if marker.search((root / name).read_text(encoding="utf-8")):
            found.append(name)
    assert found == []
