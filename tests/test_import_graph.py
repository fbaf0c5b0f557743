"""No import cycles anywhere in coap_trio, between modules.

import-linter's contracts in pyproject.toml check the layers; its
``acyclic_siblings`` contract sees cycles between the children of a package,
but neither a cycle between a package's ``__init__`` and its own modules nor
which modules form a cycle. This test reads the whole import graph with
grimp (import-linter's graph library) and fails with every strongly connected
component of more than one module, listing the imports inside it.

Documented choices checked here:

- Every import statement counts: at module level, under
  ``if TYPE_CHECKING:`` and inside functions (a type-only cycle is still a
  cycle in the design, and the next runtime import closes it).
- Edges are the modules an import statement names; importing
  ``a.b.c`` does not add edges to ``a`` and ``a.b``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

import coap_trio

PACKAGE_DIR = Path(coap_trio.__file__).parent


def strongly_connected_components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every component of ``graph`` (module -> imported modules) that holds a cycle.

    Tarjan's algorithm, iterative. A component holds a cycle when it has more
    than one module, or one module that imports itself. Each component comes
    sorted, and the list sorted by first member.
    """
    successors = {node: sorted(set(targets)) for node, targets in graph.items()}
    for targets in list(successors.values()):
        for target in targets:
            successors.setdefault(target, [])
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(successors):
        if root in index:
            continue
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(successors[root]))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = lowlink[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors[child])))
                elif child in on_stack:
                    lowlink[node] = min(lowlink[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in successors[node]:
                    found.append(sorted(component))
    return sorted(found)


def build_import_graph(package: str) -> grimp.ImportGraph:
    """grimp's graph of ``package``, type-only and function-local imports included."""
    return grimp.build_graph(package, exclude_type_checking_imports=False, cache_dir=None)


def describe_cycles(graph: grimp.ImportGraph) -> list[str]:
    """One paragraph per cyclic component: its modules and the imports between them."""
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    paragraphs = []
    for component in strongly_connected_components(imports):
        members = set(component)
        lines = [f"cycle among {len(component)} modules: {', '.join(component)}"]
        for importer in component:
            for imported in sorted(imports[importer] & members):
                details = graph.get_import_details(importer=importer, imported=imported)
                numbers = ", ".join(str(detail["line_number"]) for detail in details)
                lines.append(f"    {importer} (l.{numbers}) -> {imported}")
        paragraphs.append("\n".join(lines))
    return paragraphs


def test_a_two_module_cycle_is_found() -> None:
    graph = {"a": ["b"], "b": ["a"], "c": ["a"]}
    assert strongly_connected_components(graph) == [["a", "b"]]


def test_every_separate_cycle_is_found_once() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": ["f"]}
    assert strongly_connected_components(graph) == [["a", "b", "c"], ["d", "e"], ["f"]]


def test_a_graph_without_cycles_has_no_components() -> None:
    graph = {"a": ["b", "c"], "b": ["c"], "c": [], "d": ["a"]}
    assert strongly_connected_components(graph) == []


def test_a_long_chain_does_not_exhaust_the_stack() -> None:
    graph = {f"m{n}": [f"m{n + 1}"] for n in range(5000)}
    graph["m5000"] = ["m0"]
    assert strongly_connected_components(graph) == [sorted(graph)]


def test_type_only_and_function_local_imports_are_edges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "cyclepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text(
        textwrap.dedent(
            """\
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from cyclepkg.high import High


            def make():
                from cyclepkg import other
                return other
            """
        )
    )
    (package / "high.py").write_text("from cyclepkg import low\n\nclass High: ...\n")
    (package / "other.py").write_text("import cyclepkg.high\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = build_import_graph("cyclepkg")
    assert graph.find_modules_directly_imported_by("cyclepkg.low") == {
        "cyclepkg.high",
        "cyclepkg.other",
    }
    assert describe_cycles(graph) == [
        "cycle among 3 modules: cyclepkg.high, cyclepkg.low, cyclepkg.other\n"
        "    cyclepkg.high (l.1) -> cyclepkg.low\n"
        "    cyclepkg.low (l.4) -> cyclepkg.high\n"
        "    cyclepkg.low (l.8) -> cyclepkg.other\n"
        "    cyclepkg.other (l.1) -> cyclepkg.high"
    ]


def test_the_graph_covers_every_module_of_the_package() -> None:
    graph = build_import_graph("coap_trio")
    on_disk = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        on_disk.add(".".join(parts))
    assert graph.modules == on_disk


def test_coap_trio_has_no_import_cycles() -> None:
    cycles = describe_cycles(build_import_graph("coap_trio"))
    assert not cycles, "import cycles in coap_trio:\n" + "\n".join(cycles)
