"""The docs stay true: api.md is regenerated from the docstrings, and every public name has one."""

from __future__ import annotations

import importlib
import inspect
import runpy
from pathlib import Path

import coap_trio

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_api_reference_is_current() -> None:
    generator = runpy.run_path(str(DOCS / "gen_api.py"))
    expected = generator["render"]()
    actual = (DOCS / "api.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/api.md is stale: run `python docs/gen_api.py`"


def test_every_public_name_is_documented() -> None:
    generator = runpy.run_path(str(DOCS / "gen_api.py"))
    undocumented = []
    for module_name in ["coap_trio", *generator["MODULES"]]:
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
