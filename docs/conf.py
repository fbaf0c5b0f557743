"""Sphinx configuration of the coap_trio documentation.

The guides are the Markdown files in this directory, read by myst-parser as
they are (they also read well on a forge); the API reference is the
reStructuredText pages in ``reference/``, one per public area, generated
from the docstrings by autodoc (napoleon reads their "Arguments:" and
similar sections). Build with::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Everything here works offline: no intersphinx, no remote themes.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from docutils.nodes import Element
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext import napoleon

# Import the checkout being documented, not some installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import coap_trio
import coap_trio.context
from coap_trio.oscore_credentials import CredentialsMap
from coap_trio.protocol.oscore.context import SecurityContext
from coap_trio.protocol.oscore.edhoc import EdhocCredentials
from coap_trio.protocol.oscore.engine import OscoreStatistics

# The Context names the types of the oscore extra only for type checkers (so
# that importing coap_trio does not import cryptography); autodoc evaluates
# signatures in the module's namespace, so they are put there for the build.
for _name, _value in (
    ("CredentialsMap", CredentialsMap),
    ("EdhocCredentials", EdhocCredentials),
    ("OscoreStatistics", OscoreStatistics),
    ("SecurityContext", SecurityContext),
):
    setattr(coap_trio.context, _name, _value)

# The DTLS names the Context's signatures import under ``if TYPE_CHECKING:``
# only (they need the ``dtls`` extra, which the Context does not import
# unless asked to): given to its module here, so that autodoc can evaluate
# those signatures (else it would fall back to their text, and resolve the
# other names in them as bare words).
for _name in ("DtlsCredentials", "DtlsLimits", "DtlsEndpointStatistics"):
    setattr(coap_trio.context, _name, getattr(coap_trio, _name))

project = "coap_trio"
author = "coap_trio developers"
copyright = "coap_trio developers"
release = coap_trio.__version__
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# Not pages: build output.
exclude_patterns = ["_build", "conf.py", "Thumbs.db", ".DS_Store"]

# The reference: members in the order of the source, with their docstrings.
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"

# Headings get anchors so pages can link to sections (``page.md#section``).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"coap_trio {release}"
html_static_path: list[str] = []

# Docstrings are reST with Google-style sections ("Arguments:", "Returns:"),
# which napoleon turns into fields; but not those of attributes: their
# ``#: Text: more`` comments would be read as "type: description".
_NAPOLEON = napoleon.Config(napoleon_google_docstring=True, napoleon_numpy_docstring=False)
_PLAIN = frozenset({"attribute", "data", "property"})


def _google_sections(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what not in _PLAIN:
        lines[:] = napoleon.GoogleDocstring(lines, _NAPOLEON, app, what, name, obj, options).lines()


def _documented_home(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve a Python reference to an object re-exported where it is written.

    ``:class:`Message``` in a module that imports Message, or a type in a
    signature, names the object where it is used; this finds the object
    and links to where the reference documents it (its defining module, or
    its public name, which autodoc records as an alias of the defining one).
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].removeprefix("~").lstrip(".")
    obj = _find(node.get("py:module"), node.get("py:class"), target)
    if obj is None:
        return None
    domain = env.get_domain("py")
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    home = f"{module}.{qualname}"
    if home not in domain.objects:
        return None
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], home, node, contnode
    )


def _find(module: str | None, cls: str | None, target: str) -> object | None:
    """The object ``target`` names, seen from ``module`` (and ``cls``), or None."""
    scopes = []
    if module:
        if cls:
            scopes.append(f"{module}.{cls}")
        scopes.append(module)
    scopes.append("")
    for scope in scopes:
        dotted = f"{scope}.{target}" if scope else target
        parts = dotted.split(".")
        for split in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            try:
                for attribute in parts[split:]:
                    obj = getattr(obj, attribute)
            except AttributeError:
                break
            return obj
    return None


def _public_bases(app: Sphinx, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Leave out the bases that live in private modules (not in the reference)."""
    bases[:] = [
        base
        for base in bases
        if not any(part.startswith("_") for part in base.__module__.split("."))
    ]


def setup(app: Sphinx) -> None:
    """Google-style sections in docstrings, references to re-exported names,
    and no private base classes."""
    app.connect("autodoc-process-docstring", _google_sections)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("missing-reference", _documented_home)
