"""``coap-trio -v``: a capture of every datagram the command sends and receives.

Owns :class:`TracingNetwork`, a :class:`~coap_trio.transports.base.DatagramNetwork`
that wraps another (real UDP by default) and reports each datagram, decoded,
to a callback before it is sent or after it is received; so ``-v`` shows
retransmissions, empty ACKs, Resets and every block, as they were on the
wire. Must not change what is sent or received.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from .. import codec
from ..errors import MessageFormatError, RequestError
from ..remote import DatagramRemote
from ..transports.base import (
    DatagramEndpoint,
    DatagramHandler,
    DatagramNetwork,
    EndpointStatistics,
    ErrorHandler,
)

__all__ = ["TracingNetwork", "describe_datagram"]


_DTLS_CONTENT = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application data"}


def describe_datagram(data: bytes, remote: DatagramRemote) -> str:
    """A datagram as one line: the decoded message's repr, or why it does not decode
    (a DTLS record, of coaps://, is named as one: its content stays encrypted)."""
    if len(data) >= 13 and data[0] in _DTLS_CONTENT and data[1] == 0xFE:
        return f"{len(data)} bytes of DTLS, first record: {_DTLS_CONTENT[data[0]]}"
    try:
        message = codec.decode(data, remote)
    except MessageFormatError as error:
        return f"{len(data)} bytes, not CoAP: {error}"
    text = repr(message)
    if message.payload and len(message.payload) <= 64:
        text += f" payload={message.payload!r}"
    return text


class _TracingEndpoint:
    def __init__(self, inner: DatagramEndpoint, report: Callable[[str], None]) -> None:
        self._inner = inner
        self._report = report

    @property
    def local_address(self) -> DatagramRemote:
        return self._inner.local_address

    @property
    def statistics(self) -> EndpointStatistics:
        return self._inner.statistics

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        return self._inner.remote_for(host, port)

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        self._report(f"-> {remote}  {describe_datagram(data, remote)}")
        self._inner.send(data, remote)

    async def run(
        self,
        on_datagrams: DatagramHandler,
        on_error: ErrorHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        report = self._report

        def received(batch: list[tuple[bytes, DatagramRemote]]) -> None:
            for data, remote in batch:
                report(f"<- {remote}  {describe_datagram(data, remote)}")
            on_datagrams(batch)

        def failed(remote: DatagramRemote, error: OSError | RequestError) -> None:
            report(f"!! {remote}  {error}")
            on_error(remote, error)

        await self._inner.run(received, failed, task_status=task_status)

    def close(self) -> None:
        self._inner.close()


class TracingNetwork:
    """A network that reports every datagram of ``inner`` through ``report`` (one line each).

    ``-> remote  <Message ...>`` for what is sent, ``<- remote  <Message ...>``
    for what is received, ``!! remote  error`` for errors the OS reports.
    """

    def __init__(self, inner: DatagramNetwork, report: Callable[[str], None]) -> None:
        self._inner = inner
        self._report = report

    def open_endpoint(self, host: str, port: int) -> DatagramEndpoint:
        """Open an endpoint of the wrapped network, traced."""
        return _TracingEndpoint(self._inner.open_endpoint(host, port), self._report)

    def open_group_endpoint(
        self, group: str, port: int, reply: DatagramEndpoint, interface: str | None = None
    ) -> DatagramEndpoint:
        """Join a multicast group through the wrapped network, traced."""
        inner = self._inner.open_group_endpoint(group, port, reply, interface)
        return _TracingEndpoint(inner, self._report)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Resolve through the wrapped network."""
        return await self._inner.resolve(host, port)
