"""The documentation site builds with Sphinx, without a single warning, and links up.

Sphinx and myst-parser come with the ``docs`` extra, which ``scripts/test``
installs. The build (the ``docs_build`` fixture of ``conftest.py``, made once per run) is
offline (no intersphinx) and runs as CI runs it, in nitpicky mode: so the
references to Python objects that resolve to nothing are listed too. Those
into the standard library, trio and other projects cannot resolve offline;
every reference to coap_trio must, but for the few named in
``UNDOCUMENTED_TARGETS``.
"""

from __future__ import annotations

from docs_helpers import DOCS, DocsBuild

REFERENCE = DOCS / "reference"

#: coap_trio modules that docstrings may name although the reference leaves
#: them out, and why.
UNDOCUMENTED_MODULES = {
    # The modules of the command line's implementation, named by its docstring.
    "coap_trio.cli.client": "implementation of the command",
    "coap_trio.cli.output": "implementation of the command",
    "coap_trio.cli.parsing": "implementation of the command",
    "coap_trio.cli.serve": "implementation of the command",
    "coap_trio.cli.trace": "implementation of the command",
}


def is_implementation(target: str) -> bool:
    """Whether ``target`` lives in a private module or in the sans-I/O core."""
    parts = target.split(".")
    return any(part.startswith("_") for part in parts) or parts[:2] == ["coap_trio", "protocol"]


def test_site_builds_without_warnings(docs_build: DocsBuild) -> None:
    assert docs_build.returncode == 0, docs_build.output
    unresolved = set(docs_build.unresolved)
    others = [w for w in docs_build.warnings if "reference target not found" not in w]
    assert others == [], docs_build.output
    assert unresolved, "the build is not nitpicky: unresolved references go unseen"


def test_every_page_is_built_and_linked_from_the_index(docs_build: DocsBuild) -> None:
    output = docs_build.html
    pages = {path.stem for path in DOCS.glob("*.md")}
    built = {path.stem for path in output.glob("*.html")}
    assert pages <= built, f"pages not built: {sorted(pages - built)}"
    index = (output / "index.html").read_text(encoding="utf-8")
    for page in sorted(pages - {"index"}):
        assert f'href="{page}.html"' in index, f"index.html does not link to {page}"
    references = sorted(path.stem for path in REFERENCE.glob("*.rst"))
    assert len(references) >= 10
    for page in references:
        assert (output / "reference" / f"{page}.html").is_file(), page
        assert f'href="reference/{page}.html"' in index, f"index.html does not link to {page}"


def test_references_to_coap_trio_resolve(docs_build: DocsBuild) -> None:
    """Every :class:`...`, :meth:`...` written in a docstring or page and naming
    coap_trio is a link; so is every type in a signature, but for the types of
    the implementation (private modules, the sans-I/O core), shown as names."""
    unresolved = []
    for where, target in docs_build.unresolved_from():
        target = target.removeprefix("~")
        if target.split(".")[0] != "coap_trio" or target in UNDOCUMENTED_MODULES:
            continue
        if where == "<unknown>:1" and is_implementation(target):  # a type in a signature
            continue
        unresolved.append(f"{where}: {target}")
    assert unresolved == []


def test_roles_are_rendered_not_shown_as_text(docs_build: DocsBuild) -> None:
    """Docstrings are reST: no ``:class:`` role survives into a page as literal text."""
    shown = []
    for page in sorted((docs_build.html / "reference").glob("*.html")):
        text = page.read_text(encoding="utf-8")
        for role in (":class:", ":meth:", ":func:", ":attr:", ":mod:", ":data:", ":exc:"):
            if role in text:
                shown.append(f"{page.name}: {role}")
    assert shown == []


def test_context_addresses_say_what_they_hold(docs_build: DocsBuild) -> None:
    """Where ``ctx.addresses`` is introduced, its elements are explained and linked."""
    inventory = docs_build.inventory()
    for member in ("host", "port", "scheme", "uri_base"):
        assert f"coap_trio.remote.DatagramRemote.{member}" in inventory, member
    page = (docs_build.html / "reference" / "client.html").read_text(encoding="utf-8")
    start = page.index('id="coap_trio.context.Context.addresses"')
    entry = page[start : page.index("</dd>", start)]
    assert 'href="#coap_trio.remote.DatagramRemote"' in entry
    for text in (".host", ".port", ".uri_base", "str()"):
        assert text in entry, text
    tutorial = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    introduced = tutorial[tutorial.index("`ctx.addresses` lists") :][:800]
    for text in ("DatagramRemote", "`.host`", "`.port`", "`.uri_base`", "`str()`"):
        assert text in introduced, text
