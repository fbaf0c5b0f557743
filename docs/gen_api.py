"""Generate docs/api.md from the docstrings of coap_trio's public modules.

Run ``python docs/gen_api.py`` after changing the public API; the test
``tests/test_docs.py`` fails when the committed api.md is out of date or a
public name has no docstring.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
from pathlib import Path

MODULES = [
    "coap_trio.message",
    "coap_trio.options",
    "coap_trio.block",
    "coap_trio.uri",
    "coap_trio.codec",
    "coap_trio.errors",
    "coap_trio.numbers.types",
    "coap_trio.numbers.codes",
    "coap_trio.numbers.optionnumbers",
    "coap_trio.numbers.contentformat",
    "coap_trio.numbers.constants",
    "coap_trio.linkformat",
    "coap_trio.context",
    "coap_trio.resource",
    "coap_trio.response_errors",
    "coap_trio.observable",
    "coap_trio.plugtest",
    "coap_trio.fileserver",
    "coap_trio.hosting",
    "coap_trio.interfaces",
    "coap_trio.remote",
    "coap_trio.transports.base",
    "coap_trio.transports.udp",
    "coap_trio.transports.stream",
    "coap_trio.transports.stream_connection",
    "coap_trio.transports.tls",
    "coap_trio.transports.tcp",
    "coap_trio.transports.websocket",
    "coap_trio.testing",
    "coap_trio.protocol.messaging",
    "coap_trio.protocol.stream_messaging",
    "coap_trio.protocol.deadline_fifo",
    "coap_trio.protocol.stream_state",
    "coap_trio.protocol.framing",
    "coap_trio.protocol.signaling",
    "coap_trio.protocol.config",
    "coap_trio.protocol.exchanges",
    "coap_trio.protocol.reliability",
    "coap_trio.protocol.randomness",
    "coap_trio.protocol.blockwise",
    "coap_trio.protocol.blockwise_client",
    "coap_trio.protocol.block2cache",
    "coap_trio.protocol.oscore",
    "coap_trio.protocol.oscore.algorithms",
    "coap_trio.protocol.oscore.replay",
    "coap_trio.protocol.oscore.context",
    "coap_trio.protocol.oscore.option",
    "coap_trio.protocol.oscore.classes",
    "coap_trio.protocol.oscore.binding",
    "coap_trio.protocol.oscore.protect",
    "coap_trio.protocol.oscore.engine",
    "coap_trio.oscore_storage",
    "coap_trio.oscore_credentials",
    "coap_trio.cli",
    "coap_trio.cli.parsing",
    "coap_trio.cli.output",
    "coap_trio.cli.exitcodes",
    "coap_trio.cli.client",
    "coap_trio.cli.serve",
    "coap_trio.cli.trace",
    "coap_trio.cli.codecdemo",
]


def _doc(obj: object) -> str:
    return inspect.cleandoc(getattr(obj, "__doc__", None) or "")


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _members(cls: type) -> list[str]:
    lines = []
    for name, member in cls.__dict__.items():
        if name.startswith("_") and name not in ("__init__",):
            continue
        if isinstance(member, property):
            summary = _doc(member).split("\n\n")[0].replace("\n", " ")
            lines.append(f"- `{name}` (property): {summary}")
        elif isinstance(member, classmethod | staticmethod):
            func = member.__func__
            summary = _doc(func).split("\n\n")[0].replace("\n", " ")
            lines.append(f"- `{name}{_signature(func)}`: {summary}")
        elif inspect.isfunction(member) and name != "__init__":
            summary = _doc(member).split("\n\n")[0].replace("\n", " ")
            lines.append(f"- `{name}{_signature(member)}`: {summary}")
        elif type(member).__name__ in ("_Single", "_Repeated", "_Flag"):
            spec = member.spec
            kind = {"_Single": "value or None", "_Repeated": "tuple", "_Flag": "bool"}[
                type(member).__name__
            ]
            lines.append(
                f"- `{name}`: option {spec.number} {spec.name} ({spec.format.value}, {kind})"
            )
    return lines


def render() -> str:
    """The complete text of api.md."""
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.",
        "Everything listed in `coap_trio.__all__` is importable from `coap_trio` directly.",
        "",
    ]
    top = importlib.import_module("coap_trio")
    out += [
        "## `coap_trio`",
        "",
        _doc(top),
        "",
        "Exports: " + ", ".join(f"`{name}`" for name in sorted(top.__all__)),
        "",
    ]
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        out += [f"## `{module_name}`", "", _doc(module), ""]
        for name in module.__all__:
            obj = getattr(module, name)
            home = getattr(obj, "__module__", module_name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and home != module_name:
                out += [f"`{name}`: see `{home}`.", ""]
                continue
            if inspect.isclass(obj):
                if issubclass(obj, enum.Enum):
                    members = ", ".join(f"`{m.name}` = {m.value!r}" for m in obj)
                    out += [f"### class `{name}`", "", _doc(obj), "", f"Members: {members}", ""]
                else:
                    out += [f"### class `{name}{_signature(obj)}`", "", _doc(obj), ""]
                out += _members(obj)
                out.append("")
            elif callable(obj):
                out += [f"### `{name}{_signature(obj)}`", "", _doc(obj), ""]
            else:
                out += [f"### `{name}`", "", f"Constant: `{obj!r}`", ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    target = Path(__file__).with_name("api.md")
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
