"""Serving a site: trio-style until cancelled, or beside a background task of its own.

Owns :func:`serve`, the entry point for a server (like :func:`trio.serve_tcp`:
``await nursery.start(coap_trio.serve, site)`` binds, reports the bound
addresses, and serves until cancelled), and :func:`serve_site`: open a
Context serving a site and run the site's ``run`` task beside it (ticking
observable resources, polling files, as the plugtest and file servers do),
both ended when the block is left. Both are built on
:func:`~coap_trio.context.open_context`. Must not know what the site serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, Protocol

import trio

from .context import Context, open_context
from .interfaces import Resource
from .remote import DatagramRemote

__all__ = ["DEFAULT_BIND", "RunningSite", "serve", "serve_site"]

#: Where :func:`serve` listens unless told otherwise: every address, the CoAP port (5683).
DEFAULT_BIND: tuple[str, int] = ("::", 5683)


async def serve(
    site: Resource,
    bind: tuple[str, int] | Sequence[tuple[str, int]] = DEFAULT_BIND,
    *,
    task_status: trio.TaskStatus[list[DatagramRemote]] = trio.TASK_STATUS_IGNORED,
    **context_options: Any,
) -> NoReturn:
    """Serve ``site`` on ``bind`` until cancelled; report the bound addresses when serving.

    The trio-style entry point of a server, like :func:`trio.serve_tcp`::

        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(coap_trio.serve, site, ("::1", 0))
            print(addresses[0].uri_base)  # coap://[::1]:49152
            ...
            nursery.cancel_scope.cancel()  # stops serving, closes the sockets

    ``bind`` is one ``(host, port)`` or a sequence of them (port 0: any free
    port). ``task_status.started()`` is given a list of
    :class:`~coap_trio.remote.DatagramRemote`: every bound UDP address, then
    every stream listener's (``tcp_bind``...), each with its real port and
    its scheme; ``str()`` of one is its URI base (``coap://[::1]:49152``).
    Any other keyword is passed to :func:`~coap_trio.context.open_context`
    (``network=`` a :class:`~coap_trio.testing.MemoryNetwork` to serve
    without sockets, ``tcp_bind=``, ``config=``...).

    Runs until cancelled, then closes every socket it bound; errors of
    binding (an address in use: ``OSError``) propagate before anything was
    reported. To run code with the :class:`~coap_trio.context.Context`
    itself, use :func:`~coap_trio.context.open_context` directly.
    """
    async with open_context(bind=bind, site=site, **context_options) as context:
        task_status.started(
            [*context.addresses, *context.stream_addresses, *context.dtls_addresses]
        )
        await trio.sleep_forever()
    raise AssertionError("unreachable: serving ends only by cancellation")


class RunningSite(Resource, Protocol):
    """A site with a background task: ``await nursery.start(site.run)``."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; report started once serving may begin."""
        ...


@asynccontextmanager
async def serve_site(
    site: RunningSite,
    bind: tuple[str, int] | Sequence[tuple[str, int]],
    **context_options: Any,
) -> AsyncIterator[Context]:
    """Serve ``site`` on ``bind`` while the block runs; yields the Context.

    Owns a nursery holding ``site.run`` and the Context
    (``open_context(bind=bind, site=site, **context_options)``); leaving the
    block stops both. Exceptions from opening the Context (an address in
    use) and from the body propagate as themselves, not in an ExceptionGroup.
    """
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(site.run)
        try:
            async with open_context(bind=bind, site=site, **context_options) as context:
                yield context
        except BaseException as error:  # re-raised below, outside the nursery
            body_error = error
        finally:
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
