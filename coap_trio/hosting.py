"""Hosting a site that has a background task of its own, such as the plugtest or file server.

Owns :func:`serve_site`: open a Context serving a site and run the site's
``run`` task beside it (ticking observable resources, polling files), both
ended when the block is left. Must not know what the site serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from .context import Context, open_context
from .interfaces import Resource

__all__ = ["RunningSite", "serve_site"]


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
