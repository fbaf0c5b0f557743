"""The exit statuses of the ``coap-trio`` command, and what maps onto them.

Owns the one table of exit statuses (:class:`ExitStatus`) and the two
mappings a verb needs: from a response code (:func:`status_for_code`) and
from an exception that ended a request (:func:`status_for_error`). Must not
print anything or know about argument parsing.
"""

from __future__ import annotations

import enum

from ..errors import (
    BadResponseError,
    CoapError,
    LocalProtocolError,
    NetworkError,
    RemoteProtocolError,
    RequestCancelledError,
    RequestTimeoutError,
    ResetByPeerError,
    UnresolvableHostError,
    UnsupportedTransportError,
)
from ..numbers.codes import Code
from ..uri import InvalidURIError

__all__ = ["ExitStatus", "exit_status_table", "status_for_code", "status_for_error"]


class ExitStatus(enum.IntEnum):
    """What the exit status of ``coap-trio`` says happened."""

    #: A 2.xx response (ping: the peer answered; observe: ended as asked).
    OK = 0
    #: Something went wrong that no other status describes (e.g. an output file
    #: could not be written).
    FAILURE = 1
    #: The command line is wrong: unknown verb or flag, bad URI, bad option value, a
    #: ``serve --bind`` name that does not resolve.
    USAGE = 2
    #: A 4.xx response (client error).
    CLIENT_ERROR = 3
    #: A 5.xx response (server error).
    SERVER_ERROR = 4
    #: No response within ``--timeout`` (or after all CoAP retransmissions).
    TIMEOUT = 5
    #: The network failed: the host did not resolve, ICMP unreachable, a Reset.
    NETWORK_ERROR = 6
    #: The peer broke the protocol: an unacceptable response, an unexpected code class.
    PROTOCOL_ERROR = 7
    #: The URI's scheme needs a transport coap_trio does not have here: coaps:// (DTLS)
    #: without the ``dtls`` extra (cryptography), or coap+ws:// and coaps+ws:// without
    #: the ``ws`` extra (wsproto).
    UNSUPPORTED_TRANSPORT = 8
    #: Interrupted (Ctrl-C) while waiting for a single response, or before the first
    #: response of ``observe``.
    INTERRUPTED = 130
    #: Standard output was closed by its reader (``| head``): the command stopped
    #: quietly, with the status a shell shows for a program that SIGPIPE ended (128 + 13).
    OUTPUT_CLOSED = 141


_DESCRIPTIONS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success: a 2.xx response (ping: answered; observe: ended as asked)",
    ExitStatus.FAILURE: "another failure (e.g. the output file could not be written)",
    ExitStatus.USAGE: "usage error: bad verb, flag, URI or option value, unresolvable --bind",
    ExitStatus.CLIENT_ERROR: "a 4.xx response (client error)",
    ExitStatus.SERVER_ERROR: "a 5.xx response (server error)",
    ExitStatus.TIMEOUT: "timeout: no response within --timeout or after all retransmissions",
    ExitStatus.NETWORK_ERROR: "network error: unresolvable host, ICMP unreachable, Reset",
    ExitStatus.PROTOCOL_ERROR: "protocol error: an unacceptable or unexpected response",
    ExitStatus.UNSUPPORTED_TRANSPORT: (
        "unsupported scheme: coaps:// without the dtls extra, coap(s)+ws:// without the ws one"
    ),
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C) while waiting for a response",
    ExitStatus.OUTPUT_CLOSED: "standard output closed by its reader (| head): stopped quietly",
}


def exit_status_table() -> str:
    """The exit statuses as text lines, for ``--help`` and the docs."""
    return "\n".join(f"  {int(status):>3}  {_DESCRIPTIONS[status]}" for status in ExitStatus)


def status_for_code(code: Code) -> ExitStatus:
    """The exit status a response with ``code`` gives."""
    if code.is_successful():
        return ExitStatus.OK
    code_class = int(code) >> 5
    if code_class == 4:
        return ExitStatus.CLIENT_ERROR
    if code_class == 5:
        return ExitStatus.SERVER_ERROR
    return ExitStatus.PROTOCOL_ERROR


def status_for_error(error: BaseException) -> ExitStatus:
    """The exit status an exception that ended a request gives."""
    if isinstance(error, UnsupportedTransportError):
        return ExitStatus.UNSUPPORTED_TRANSPORT
    if isinstance(error, InvalidURIError):
        return ExitStatus.USAGE
    if isinstance(error, RequestTimeoutError):
        return ExitStatus.TIMEOUT
    if isinstance(error, NetworkError | UnresolvableHostError | ResetByPeerError | OSError):
        return ExitStatus.NETWORK_ERROR
    if isinstance(error, BadResponseError | RemoteProtocolError):
        return ExitStatus.PROTOCOL_ERROR
    if isinstance(error, RequestCancelledError):
        return ExitStatus.INTERRUPTED
    if isinstance(error, LocalProtocolError):
        return ExitStatus.USAGE
    if isinstance(error, CoapError):
        return ExitStatus.FAILURE
    return ExitStatus.FAILURE
