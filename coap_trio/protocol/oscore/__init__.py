"""OSCORE (RFC 8613): the sans-I/O engine that protects and verifies CoAP messages.

Layout, bottom up: :mod:`.algorithms` (AEADs and HKDF through
``cryptography``), :mod:`.replay` (replay window, sequence numbers and their
persistence), :mod:`.context` (the security context), :mod:`.option` (the
OSCORE option value), :mod:`.classes` (Inner and Outer options),
:mod:`.binding` (what each side keeps between a request and its
responses), :mod:`.protect` (one message protected or opened) and
:mod:`.engine` (:class:`OscoreEngine`: contexts, replay, Echo, errors,
counters). Needs the ``oscore`` extra (``cryptography`` and ``cbor2``).
"""

from __future__ import annotations

try:
    import cbor2  # noqa: F401
    import cryptography  # noqa: F401
except ImportError as _missing:  # pragma: no cover - depends on the installation
    raise ImportError("OSCORE needs cryptography and cbor2: pip install 'coap-trio[oscore]'") from (
        _missing
    )

from .algorithms import A128GCM, AES_CCM_16_64_128, ALGORITHMS, CHACHA20_POLY1305, Aead
from .binding import ClientBinding, ServerBinding
from .context import SecurityContext
from .engine import (
    OscoreConfig,
    OscoreEngine,
    OscoreStatistics,
    RequestRejected,
    RequestVerified,
    ResponseRejected,
    ResponseRepeat,
    ResponseVerified,
    is_protected,
)
from .replay import MemorySequenceStore, ReplayWindow, SequenceStore

__all__ = [
    "A128GCM",
    "AES_CCM_16_64_128",
    "ALGORITHMS",
    "CHACHA20_POLY1305",
    "Aead",
    "ClientBinding",
    "MemorySequenceStore",
    "OscoreConfig",
    "OscoreEngine",
    "OscoreStatistics",
    "ReplayWindow",
    "RequestRejected",
    "RequestVerified",
    "ResponseRejected",
    "ResponseRepeat",
    "ResponseVerified",
    "SecurityContext",
    "SequenceStore",
    "ServerBinding",
    "is_protected",
]
