"""The public names of ``coap_trio`` and ``coap_trio.testing``: pinned, documented, referenced.

As trio's ``test_exports``: the names are listed here literally, so adding or
removing a public name is a decision this file records. Each one must have
a docstring of its own (classes, functions and modules; constants are
members of documented enums) and appear in the API reference: in the object
inventory (``objects.inv``) of the built site, under its public name or the
name of the module that defines it; and so must the public methods and
properties of each public class.
"""

from __future__ import annotations

import enum
import inspect
import types
from collections.abc import Iterator

import pytest
from docs_helpers import DocsBuild

import coap_trio
import coap_trio.testing

COAP_TRIO_NAMES = [
    "ACK",
    "BadResponseError",
    "BlockValue",
    "BlockwiseConfig",
    "CHANGED",
    "CON",
    "CONTENT",
    "CREATED",
    "CoapError",
    "Code",
    "ConnectError",
    "ConnectionAbortedByPeerError",
    "ConnectionLostError",
    "ConnectionReleasedError",
    "ContentFormat",
    "Context",
    "ContextStatistics",
    "DELETE",
    "DELETED",
    "DatagramRemote",
    "DtlsAlertError",
    "DtlsCredentials",
    "DtlsEndpointStatistics",
    "DtlsLimits",
    "DtlsPeer",
    "DtlsRemote",
    "FETCH",
    "FormatErrorKind",
    "FrameErrorKind",
    "FrameTooLarge",
    "GET",
    "GroupResponses",
    "HandshakeError",
    "HandshakeTimeoutError",
    "InvalidURIError",
    "LocalProtocolError",
    "Message",
    "MessageEncodeError",
    "MessageFormatError",
    "MessageTooLargeError",
    "MessagingConfig",
    "MulticastRemote",
    "NON",
    "NetworkError",
    "ObservableResource",
    "Observation",
    "ObservationError",
    "OptionNumber",
    "Options",
    "Origin",
    "OscoreRemote",
    "PATCH",
    "POST",
    "PUT",
    "RST",
    "RemoteProtocolError",
    "RepresentationChangedError",
    "Request",
    "RequestCancelledError",
    "RequestError",
    "RequestTimeoutError",
    "ResetByPeerError",
    "Resource",
    "ResponseStream",
    "ResponseTooLargeError",
    "Site",
    "StreamLimits",
    "StreamStatistics",
    "TransmissionParameters",
    "Type",
    "UnresolvableHostError",
    "UnsupportedTransportError",
    "VALID",
    "__version__",
    "codec",
    "iPATCH",
    "linkformat",
    "open_context",
    "response_errors",
    "serve",
]

TESTING_NAMES = [
    "CapturedDatagram",
    "Fate",
    "LinkConditions",
    "MemoryEndpoint",
    "MemoryGroupEndpoint",
    "MemoryNetwork",
    "NetworkStatistics",
]

MODULES = [(coap_trio, COAP_TRIO_NAMES), (coap_trio.testing, TESTING_NAMES)]
MODULE_IDS = ["coap_trio", "coap_trio.testing"]


def public_objects() -> Iterator[tuple[str, str, object]]:
    """(module name, public name, object) of every pinned name."""
    for module, names in MODULES:
        for name in names:
            yield module.__name__, name, getattr(module, name)


@pytest.mark.parametrize(("module", "names"), MODULES, ids=MODULE_IDS)
def test_the_public_names_are_exactly_these(module: types.ModuleType, names: list[str]) -> None:
    assert sorted(module.__all__) == names
    for name in names:
        assert hasattr(module, name), name
    # Nothing of coap_trio's own is reachable there under a public name without
    # being exported (submodules are reached as such, not exported).
    stray = {
        name
        for name in dir(module)
        if not name.startswith("_")
        and name not in names
        and not inspect.ismodule(getattr(module, name))
        and str(getattr(getattr(module, name), "__module__", "")).startswith("coap_trio")
    }
    assert stray == set()


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for module_name, name, obj in public_objects():
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            # A class's own docstring, not one inherited from its base.
            own = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
            if not (own or "").strip():
                missing.append(f"{module_name}.{name}")
        elif isinstance(obj, enum.Enum):
            assert (type(obj).__doc__ or "").strip(), f"{module_name}.{name}"
    assert missing == []


def reference_names(module_name: str, name: str, obj: object) -> set[str]:
    """The names under which ``obj`` may be listed in the reference."""
    names = {f"{module_name}.{name}"}
    if inspect.ismodule(obj):
        names.add(obj.__name__)
    elif isinstance(obj, enum.Enum):
        cls = type(obj)
        names.add(f"{cls.__module__}.{cls.__qualname__}.{obj.name}")
    elif inspect.isclass(obj) or inspect.isfunction(obj):
        names.add(f"{obj.__module__}.{obj.__qualname__}")
    return names


def test_every_public_name_is_in_the_reference(docs_build: DocsBuild) -> None:
    inventory = docs_build.inventory()
    missing = [
        f"{module_name}.{name}"
        for module_name, name, obj in public_objects()
        if not reference_names(module_name, name, obj) & inventory.keys()
    ]
    assert missing == []


def test_the_public_members_of_public_classes_are_in_the_reference(
    docs_build: DocsBuild,
) -> None:
    inventory = docs_build.inventory()
    missing = []
    for module_name, name, obj in public_objects():
        if not inspect.isclass(obj) or issubclass(obj, BaseException | enum.Enum):
            continue
        homes = sorted(reference_names(module_name, name, obj) & inventory.keys())
        assert homes, f"{module_name}.{name}"
        for member_name, member in vars(obj).items():
            if member_name.startswith("_"):
                continue
            routine = inspect.isfunction(member) or isinstance(member, property | classmethod)
            if routine and not any(f"{home}.{member_name}" in inventory for home in homes):
                missing.append(f"{module_name}.{name}.{member_name}")
    assert missing == []


def test_the_testing_reference_shows_the_network_and_its_knobs(docs_build: DocsBuild) -> None:
    inventory = docs_build.inventory()
    for member in (
        "set_conditions",
        "add_host",
        "icmp_unreachable",
        "default_host",
        "capture",
        "statistics",
    ):
        assert f"coap_trio.testing.MemoryNetwork.{member}" in inventory, member
    assert inventory["coap_trio.testing.Fate"] == "py:data"
    page = (docs_build.html / "reference" / "testing.html").read_text(encoding="utf-8")
    for text in ("max_capture", "icmp_unreachable", "undeliverable", "memory_network"):
        assert text in page, text


def test_the_general_index_lists_every_public_class_and_function(docs_build: DocsBuild) -> None:
    index = (docs_build.html / "genindex.html").read_text(encoding="utf-8")
    missing = [
        f"{module_name}.{name}"
        for module_name, name, obj in public_objects()
        if (inspect.isclass(obj) or inspect.isfunction(obj))
        and not any(f">{entry}" in index for entry in (f"{name} (", f"{name}() (", f"{name}</a>"))
    ]
    assert missing == []
