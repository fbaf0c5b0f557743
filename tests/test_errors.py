"""The exception hierarchy: every exception class of coap_trio, where it lives and what it is.

Documented choices checked here:

- Every exception class coap_trio defines is defined in ``coap_trio.errors``
  (handler-raised responses in ``coap_trio.response_errors``) and is a
  ``CoapError``; the response errors derive from ``RenderableError``, but
  for ``ObservationError``, which lives beside them because it carries a
  ``Message`` (``errors`` sits below the message model).
- The tree in ``coap_trio.errors``' docstring names every class of the
  module, each under a class it derives from.
- Every public exception class appears in the API reference (the object
  inventory of the built site), and names that lived in other public
  modules stay importable from there.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from docs_helpers import DocsBuild

import coap_trio
from coap_trio import errors, response_errors
from coap_trio.errors import CoapError
from coap_trio.response_errors import RenderableError


def all_exception_classes() -> set[type[BaseException]]:
    """Every exception class defined in the coap_trio package, once all its modules are imported."""
    for info in pkgutil.walk_packages(coap_trio.__path__, "coap_trio."):
        importlib.import_module(info.name)
    found: set[type[BaseException]] = set()
    pending: list[type[BaseException]] = [BaseException]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub not in found:
                found.add(sub)
                pending.append(sub)
    return {cls for cls in found if cls.__module__.split(".")[0] == "coap_trio"}


def test_every_exception_class_is_defined_in_the_error_modules() -> None:
    misplaced = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in all_exception_classes()
        if cls.__module__ not in ("coap_trio.errors", "coap_trio.response_errors")
    )
    assert misplaced == []


def test_every_exception_class_is_a_coap_error() -> None:
    classes = all_exception_classes()
    assert {cls for cls in classes if not issubclass(cls, CoapError)} == set()
    renderable = {cls for cls in classes if cls.__module__ == "coap_trio.response_errors"}
    not_renderable = {cls for cls in renderable if not issubclass(cls, RenderableError)}
    assert not_renderable == {response_errors.ObservationError}
    assert len(renderable) > 20


def test_every_public_exception_class_is_in_the_api_reference(docs_build: DocsBuild) -> None:
    inventory = docs_build.inventory()
    public = {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in all_exception_classes()
        if not cls.__name__.startswith("_")
    }
    assert public - inventory.keys() == set()
    assert {inventory[name] for name in public} == {"py:exception"}


def test_the_error_modules_export_every_class_they_define() -> None:
    for module in (errors, response_errors):
        defined = {
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and value.__module__ == module.__name__
        }
        assert defined - set(module.__all__) == set(), module.__name__


def test_the_docstring_tree_names_every_error_under_a_base_it_has() -> None:
    doc = errors.__doc__
    assert doc is not None
    tree = doc[doc.index("    CoapError\n") :].split("\n\n")[0].splitlines()
    parents: list[type] = []
    named = set()
    for line in tree:
        match = re.match(r"^ {4}((?:[│ ]   )*)(?:[├└]── )?([\w.]+)", line)
        assert match, line
        depth = len(match.group(1)) // 4 + (1 if "── " in line else 0)
        path = match.group(2)
        module = response_errors if path.startswith("response_errors.") else errors
        cls = getattr(module, path.rsplit(".", 1)[-1])
        del parents[depth:]
        if parents:
            assert issubclass(cls, parents[-1]), f"{cls.__name__} is not a {parents[-1].__name__}"
        parents.append(cls)
        named.add(cls)
    defined = {
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == "coap_trio.errors"
    }
    assert defined - named == set()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("coap_trio", "InvalidURIError"),
        ("coap_trio", "ObservationError"),
        ("coap_trio.errors", "IdleTimeoutError"),
        ("coap_trio.uri", "InvalidURIError"),
        ("coap_trio.linkformat", "LinkFormatError"),
        ("coap_trio.protocol.blockwise", "BlockOutOfRange"),
        ("coap_trio.protocol.blockwise", "BertNotAllowed"),
        ("coap_trio.protocol.signaling", "SignalingError"),
        ("coap_trio.protocol.dtls.pki", "DtlsPkiError"),
        ("coap_trio.transports.stream_connection", "IdleTimeoutError"),
        ("coap_trio.cli.parsing", "UsageError"),
        ("coap_trio.cli.client", "OutputError"),
    ],
)
def test_moved_errors_stay_importable_from_their_public_modules(module: str, name: str) -> None:
    imported = importlib.import_module(module)
    assert name in imported.__all__
    home = response_errors if name == "ObservationError" else errors
    assert getattr(imported, name) is getattr(home, name)


def test_second_bases_are_the_documented_ones() -> None:
    """Only these errors are also a standard error (see errors.py for why)."""
    also_standard = {
        cls.__name__
        for cls in all_exception_classes()
        if any(base.__module__ == "builtins" and base is not Exception for base in cls.__bases__)
    }
    assert also_standard == {
        "LocalProtocolError",
        "LinkFormatError",
        "IdleTimeoutError",
        "ConnectFailure",
    }
