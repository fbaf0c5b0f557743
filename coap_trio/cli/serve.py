"""``coap-trio serve``: run the plugtest or file-server site until Ctrl-C or SIGTERM.

Owns the server side of the command: building the site
(:func:`coap_trio.plugtest.plugtest_site` or
:func:`coap_trio.fileserver.fileserver_site`) and running its ``run`` task
(the plugtest's observable resources change, the file server notices
changes on disk), opening a Context bound to
every ``--bind`` address, printing the real bound addresses on standard
output (one ``listening on coap://...`` line each, flushed, so a parent
process can read the port when it asked for port 0), and stopping cleanly
(exit status 0) on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable

import trio

from ..fileserver import FileServerSite, fileserver_site
from ..hosting import serve_site
from ..plugtest import DEFAULT_OBS_PERIOD, PlugtestSite, plugtest_site
from .exitcodes import ExitStatus
from .trace import TracingNetwork

__all__ = ["DEFAULT_BIND", "format_address", "run_serve"]

#: Where ``serve`` listens without ``--bind``: every address, the CoAP port.
DEFAULT_BIND = ("::", 5683)


def format_address(host: str, port: int) -> str:
    """``coap://host:port`` with IPv6 literals in brackets."""
    return f"coap://[{host}]:{port}" if ":" in host else f"coap://{host}:{port}"


def _make_site(args: argparse.Namespace) -> PlugtestSite | FileServerSite:
    if args.site == "plugtest":
        period = args.obs_period if args.obs_period is not None else DEFAULT_OBS_PERIOD
        return plugtest_site(obs_period=period)
    return fileserver_site(args.directory, write=args.write)


async def run_serve(
    args: argparse.Namespace, report: Callable[[str], None], log: Callable[[str], None]
) -> ExitStatus:
    """Serve until SIGINT or SIGTERM; ``report`` gets the ``listening on`` lines,
    ``log`` (with ``-v``) every datagram."""
    binds = args.bind or [DEFAULT_BIND]
    network = None
    if args.verbose:
        from ..transports.udp import UDPNetwork

        network = TracingNetwork(UDPNetwork(), log)
    site = _make_site(args)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # serve_site raises the Context's errors (an address in use) as themselves.
        async with serve_site(site, binds, network=network) as ctx:
            for address in ctx.addresses:
                report(f"listening on {format_address(address.host, address.port)}")
            async for _ in signals:
                break
    return ExitStatus.OK
