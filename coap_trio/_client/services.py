"""What the client features need of the client core, as a protocol.

Owns :class:`ClientServices`: the public methods of
:class:`~coap_trio._client.core.ClientCore` that block-wise transfers,
streams and observations use. The core calls into block-wise handling
from its receive path, so :mod:`.blockwise` types against this protocol
rather than importing the core (no import cycle). Must not hold state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Protocol

from ..message import Message
from ..protocol.config import BlockwiseConfig
from .block_messages import UploadTags

if TYPE_CHECKING:
    from .._runner import EndpointRunner
    from .request import ExchangeOwner, Request

__all__ = ["ClientServices"]


class ClientServices(Protocol):
    """The client core as its features see it (see the module)."""

    @property
    def closed(self) -> bool:
        """Whether the Context was left: nothing new is sent or spawned."""

    @property
    def blockwise(self) -> BlockwiseConfig:
        """Block-wise transfer tunables."""

    @property
    def upload_tags(self) -> UploadTags:
        """Request-Tags of the block-wise uploads in flight (RFC 9175)."""

    def new_request(self, message: Message) -> Request:
        """A Request for ``message`` that is not started yet."""

    def send(self, owner: ExchangeOwner, runner: EndpointRunner, remote: Hashable) -> None:
        """Send ``owner.wire`` on ``runner`` to ``remote``."""

    def abandon(self, owner: ExchangeOwner) -> None:
        """Stop the exchange of ``owner`` at once."""

    def track(self, request: Request) -> None:
        """Count ``request`` as in flight."""

    def untrack(self, request: Request) -> None:
        """``request`` ended: no longer in flight."""

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start a task in the Context's nursery; False once the Context is closed."""
