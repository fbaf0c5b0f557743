"""Seams, not reach-ins: no module of coap_trio uses another module's private names.

An underscore name (``_name``, not ``__dunder__``) is private to the module
that defines it, or, for a module inside a private subpackage (a package
whose own name starts with an underscore, such as ``coap_trio/_client/``),
to the modules of that subpackage: its *privacy unit*. A module is private
when a component of its dotted name is (``coap_trio.testing._addresses``);
it may be imported from the package that holds its innermost private
component and from that package's modules (import-linter's private-module
rule): ``coap_trio.context`` may import ``coap_trio._client.request``,
``coap_trio.cli`` may not import ``coap_trio.testing._addresses``.

Documented choices checked here:

- ``from X import _name`` is a reach when the importing module is outside
  the privacy unit of ``X``; ``import X`` and ``from P import M`` of a
  private module are reaches when the importer is outside the package that
  holds the innermost private component.
- ``x._name`` (read or written) is a reach when ``x`` is not ``self``,
  ``cls`` or ``super()`` and no module of the reaching module's privacy unit
  defines ``_name``. Without types, a name defined in the unit is taken to
  be the unit's own (a reach into another module's ``_name`` of the same
  spelling goes unseen); every other one is a reach.
- A module defines the names of its functions, classes and methods, the
  names it assigns (module globals, class attributes, locals), attributes
  it assigns on ``self``/``cls`` (also through ``setattr`` and
  ``object.__setattr__``), its ``__slots__`` entries and its import aliases.
- Private names of the standard library and third-party packages used on
  purpose are listed in ``ALLOWED_ATTRIBUTES``, each with its reason.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import coap_trio

PACKAGE_DIR = Path(coap_trio.__file__).parent

#: Private attributes of code outside coap_trio that coap_trio uses on
#: purpose, whatever the receiver: name -> why it is fine.
ALLOWED_ATTRIBUTES: dict[str, str] = {
    # enum: a member made outside the class body (an IntEnum's pseudo-member
    # for an unregistered value) is given its name and value through these
    # documented "_sunder_" attributes, as enum's own __new__ does.
    "_name_": "enum member name, documented for custom member creation",
    "_value_": "enum member value, documented for custom member creation",
}

#: Receivers whose private attributes are the class's own.
OWN_RECEIVERS = frozenset({"self", "cls"})


@dataclass(frozen=True)
class SourceModule:
    """One module's parsed source: its dotted name and where it lives."""

    name: str
    path: str
    is_package: bool
    tree: ast.Module


def is_private(component: str) -> bool:
    """Whether a name or module name component is private (underscore, not dunder)."""
    return component.startswith("_") and not (
        component.startswith("__") and component.endswith("__")
    )


def is_within(module: str, unit: str) -> bool:
    """Whether ``module`` is ``unit`` or one of its submodules."""
    return module == unit or module.startswith(unit + ".")


def privacy_unit(module: str, packages: set[str]) -> str:
    """The innermost private package holding ``module``, else the module itself."""
    parts = module.split(".")
    unit = module
    for length in range(2, len(parts) + 1):
        prefix = ".".join(parts[:length])
        if is_private(parts[length - 1]) and prefix in packages:
            unit = prefix
    return unit


def may_import_module(importer: str, target: str) -> bool:
    """Whether ``importer`` may import ``target``: private modules stay in their package."""
    parts = target.split(".")
    innermost = None
    for position in range(1, len(parts)):
        if is_private(parts[position]):
            innermost = position
    if innermost is None:
        return True
    return is_within(importer, ".".join(parts[:innermost]))


def _assigned_names(target: ast.expr) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Attribute):
        if isinstance(target.value, ast.Name) and target.value.id in OWN_RECEIVERS:
            yield target.attr
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _assigned_names(element)
    elif isinstance(target, ast.Starred):
        yield from _assigned_names(target.value)


def _string_constants(node: ast.expr) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for element in node.elts:
            yield from _string_constants(element)


def defined_names(tree: ast.Module) -> set[str]:
    """Every name the module defines (see the module docstring for what counts)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(_assigned_names(target))
                if isinstance(target, ast.Name) and target.id == "__slots__":
                    names.update(_string_constants(node.value))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            names.update(_assigned_names(node.target))
            if (
                isinstance(node.target, ast.Name)
                and node.target.id == "__slots__"
                and node.value is not None
            ):
                names.update(_string_constants(node.value))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Call):
            function = node.func
            sets_attribute = (isinstance(function, ast.Name) and function.id == "setattr") or (
                isinstance(function, ast.Attribute) and function.attr == "__setattr__"
            )
            if sets_attribute and len(node.args) >= 2:
                names.update(_string_constants(node.args[1]))
    return names


def _is_own_receiver(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in OWN_RECEIVERS
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def _absolute_module(module: SourceModule, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def find_reaches(modules: Iterable[SourceModule]) -> list[str]:
    """Every reach into another unit's private names, as ``path:line: what``."""
    modules = list(modules)
    known = {module.name for module in modules}
    packages = {module.name for module in modules if module.is_package}
    names_by_module = {module.name: defined_names(module.tree) for module in modules}
    names_by_unit: dict[str, set[str]] = {}
    for module in modules:
        unit = privacy_unit(module.name, packages)
        names_by_unit.setdefault(unit, set()).update(names_by_module[module.name])

    reaches = []
    for module in modules:
        unit = privacy_unit(module.name, packages)
        own_names = names_by_unit[unit]

        def reach(node: ast.stmt | ast.expr, what: str, module: SourceModule = module) -> None:
            reaches.append(f"{module.path}:{node.lineno}: {what}")

        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known and not may_import_module(module.name, alias.name):
                        reach(node, f"import {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                source = _absolute_module(module, node)
                if source not in known:
                    continue
                if not may_import_module(module.name, source):
                    reach(node, f"from {source} import ...")
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in known:
                        if not may_import_module(module.name, submodule):
                            reach(node, f"from {source} import {alias.name}")
                    elif is_private(alias.name) and not is_within(
                        module.name, privacy_unit(source, packages)
                    ):
                        reach(node, f"from {source} import {alias.name}")
            elif isinstance(node, ast.Attribute) and is_private(node.attr):
                if _is_own_receiver(node.value) or node.attr in own_names:
                    continue
                if node.attr in ALLOWED_ATTRIBUTES:
                    continue
                reach(node, f"{ast.unparse(node.value)}.{node.attr}")
    return sorted(reaches, key=_path_and_line)


def _path_and_line(reach: str) -> tuple[str, int]:
    path, line, _ = reach.split(":", 2)
    return path, int(line)


def load_package(directory: Path) -> list[SourceModule]:
    """Every module of the package in ``directory``, paths relative to its parent."""
    modules = []
    for path in sorted(directory.rglob("*.py")):
        relative = path.relative_to(directory.parent)
        parts = relative.with_suffix("").parts
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules.append(SourceModule(".".join(parts), relative.as_posix(), is_package, tree))
    return modules


def snippets(**sources: str) -> list[SourceModule]:
    """Modules from source snippets, keyed by dotted name with ``__`` for the dots.

    ``pkg___inner__core="..."`` is ``pkg/_inner/core.py``; a name that others
    extend (``pkg``, ``pkg___inner``) is a package.
    """
    modules = []
    names = {key.replace("__", ".") for key in sources}
    for key, source in sources.items():
        name = key.replace("__", ".")
        is_package = any(other.startswith(name + ".") for other in names)
        path = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        tree = ast.parse(textwrap.dedent(source))
        modules.append(SourceModule(name, path, is_package, tree))
    return modules


def test_an_attribute_defined_in_another_module_is_a_reach() -> None:
    modules = snippets(
        pkg="",
        pkg__model="""\
            class Model:
                def __init__(self):
                    self._state = 0
            """,
        pkg__user="""\
            from pkg.model import Model

            def peek(model: Model) -> int:
                return model._state
            """,
    )
    assert find_reaches(modules) == ["pkg/user.py:4: model._state"]


def test_a_private_name_used_in_its_own_module_is_no_reach() -> None:
    modules = snippets(
        pkg="",
        pkg__model="""\
            class Model:
                __slots__ = ("_state",)

                def merge(self, other: "Model") -> None:
                    self._state += other._state
                    other._reset()

                def _reset(self) -> None:
                    super()._reset()
            """,
    )
    assert find_reaches(modules) == []


def test_a_private_name_shared_inside_a_private_subpackage_is_no_reach() -> None:
    modules = snippets(
        pkg="",
        pkg___inner="",
        pkg___inner__core="""\
            class Core:
                def __init__(self):
                    self._pending = {}

            def _spawn(core): ...
            """,
        pkg___inner__feature="""\
            from pkg._inner.core import _spawn

            def start(core):
                core._pending.clear()
                _spawn(core)
            """,
        pkg__wiring="""\
            from pkg._inner.core import Core
            from pkg._inner import feature
            """,
    )
    assert find_reaches(modules) == []


def test_reaching_into_a_private_subpackage_from_outside_is_a_reach() -> None:
    modules = snippets(
        pkg="",
        pkg___inner="",
        pkg___inner__core="""\
            class Core:
                def __init__(self):
                    self._pending = {}

            def _spawn(core): ...
            """,
        pkg__outside="""\
            from pkg._inner.core import Core, _spawn

            def count(core: Core) -> int:
                return len(core._pending)
            """,
    )
    assert find_reaches(modules) == [
        "pkg/outside.py:1: from pkg._inner.core import _spawn",
        "pkg/outside.py:4: core._pending",
    ]


def test_a_private_module_of_another_package_is_a_reach() -> None:
    modules = snippets(
        pkg="",
        pkg__helpers="",
        pkg__helpers___addresses="def free_port(): ...\n",
        pkg__helpers__public="from ._addresses import free_port\n",
        pkg__cli="""\
            from pkg.helpers._addresses import free_port
            from pkg.helpers import _addresses
            import pkg.helpers._addresses
            """,
    )
    assert find_reaches(modules) == [
        "pkg/cli.py:1: from pkg.helpers._addresses import ...",
        "pkg/cli.py:2: from pkg.helpers import _addresses",
        "pkg/cli.py:3: import pkg.helpers._addresses",
    ]


def test_writing_another_objects_private_attribute_is_a_reach() -> None:
    modules = snippets(
        pkg="",
        pkg__model="class Model:\n    _count = 0\n",
        pkg__user="def bump(model):\n    model._count = 1\n",
    )
    assert find_reaches(modules) == ["pkg/user.py:2: model._count"]


def test_coap_trio_reaches_no_private_name_of_another_unit() -> None:
    reaches = find_reaches(load_package(PACKAGE_DIR))
    assert not reaches, "private names reached from outside their module:\n" + "\n".join(reaches)


def test_the_shell_needs_no_type_ignore() -> None:
    """The trio shell's private packages and the runner are typed without escapes:
    ``mypy --strict`` checks them whole (no ``# type: ignore`` comments)."""
    package = Path(coap_trio.__file__).parent
    files = [
        *sorted((package / "_client").glob("*.py")),
        *sorted((package / "_server").glob("*.py")),
        package / "_runner.py",
        package / "context.py",
    ]
    found = [
        f"{path.relative_to(package.parent)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "type: ignore" in line
    ]
    assert not found, found
