"""``coap-trio serve``: run the plugtest, file-server or proxy site until Ctrl-C or SIGTERM.

Owns the server side of the command: building the site
(:func:`coap_trio.plugtest.plugtest_site` or
:func:`coap_trio.fileserver.fileserver_site`) and running its ``run`` task
(the plugtest's observable resources change, the file server notices
changes on disk), opening a Context bound to
every ``--bind`` address, printing the real bound addresses on standard
output (one ``listening on coap://...`` line each, flushed, so a parent
process can read the port when it asked for port 0), and stopping cleanly
(exit status 0) on SIGINT or SIGTERM. ``serve proxy`` runs
:func:`coap_trio.proxy.open_proxy` instead (its HTTP listeners, with
``--http-bind``, get ``listening on http://...`` lines).

With ``--workers N`` (N > 1) the process becomes a parent of N worker
processes (``python -m coap_trio serve ... --worker-of PARENT_PID``) that
share each port through ``SO_REUSEPORT``: the parent picks the ports (port 0:
it binds once with ``SO_REUSEPORT`` to learn a free one, and holds that
socket until every worker has bound beside it), prints the ``listening on``
lines once, then a ``workers:`` line with the workers' process IDs, stops
them with SIGTERM at its own SIGINT or SIGTERM, and exits 0 when all of
them exited 0 (a worker that did not is reported on standard error). The
workers stay in the parent's process group, so Ctrl-C in a terminal (or
``kill -- -PGID``) reaches them too: a worker stops at its first SIGINT or
SIGTERM and ignores later ones (the parent's SIGTERM then), so a signal to
the whole group ends with status 0 as one to the parent alone does. The
kernel hashes each client address to one worker while the set of workers
stays the same, so a client's deduplication state and observations live in
one process; state shared between workers (a plugtest resource changed by
PUT, for instance) is not shared: each worker has its own site. A worker
writes its own counters to standard error when it stops, and stops by
itself when its parent is gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import trio

from ..context import bind_endpoints
from ..errors import UsageError
from ..fileserver import FileServerSite, fileserver_site
from ..hosting import serve_site
from ..plugtest import DEFAULT_OBS_PERIOD, PlugtestSite, plugtest_site
from .exitcodes import ExitStatus
from .parsing import dtls_credentials, read_credentials
from .trace import TracingNetwork

if TYPE_CHECKING:
    from ..context import ContextStatistics
    from ..protocol.dtls.credentials import DtlsCredentials
    from ..transports.udp import UDPNetwork

__all__ = ["DEFAULT_BIND", "WORKER_START_TIMEOUT", "format_address", "run_serve"]

#: Where ``serve`` listens without ``--bind``: every address, the CoAP port.
DEFAULT_BIND = ("::", 5683)

#: Seconds the parent of ``--workers`` waits for every worker to report its addresses.
WORKER_START_TIMEOUT = 30.0
#: Seconds the parent waits for the workers to stop after forwarding a signal (then kills).
_WORKER_STOP_TIMEOUT = 10.0
#: How often a worker checks that its parent is still there.
_PARENT_POLL = 0.5


def format_address(host: str, port: int, scheme: str = "coap") -> str:
    """``coap://host:port`` (or another scheme) with IPv6 literals in brackets."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _make_site(args: argparse.Namespace) -> PlugtestSite | FileServerSite:
    if args.site == "plugtest":
        period = args.obs_period if args.obs_period is not None else DEFAULT_OBS_PERIOD
        return plugtest_site(obs_period=period)
    return fileserver_site(args.directory, write=args.write)


async def run_serve(
    args: argparse.Namespace, report: Callable[[str], None], log: Callable[[str], None]
) -> ExitStatus:
    """Serve until SIGINT or SIGTERM; ``report`` gets the ``listening on`` lines,
    ``log`` (standard error) every datagram with ``-v``, and a worker's counters."""
    if args.site == "proxy":
        return await _run_proxy(args, report, log)
    if args.workers > 1 and args.credentials:
        raise UsageError(
            "--credentials cannot be used with --workers (processes would share "
            "a security context, and reuse its nonces)"
        )
    dtls = _dtls(args)
    if args.workers > 1 and args.worker_of is None:
        if dtls is not None:
            raise UsageError("--dtls-bind serves from one process: leave out --workers")
        return await _run_workers(args, report)
    binds = args.bind or [DEFAULT_BIND]
    worker = args.worker_of is not None
    credentials = read_credentials(args.credentials) if args.credentials else None
    network: UDPNetwork | TracingNetwork | None = None
    if args.verbose or worker:
        from ..transports.udp import UDPNetwork

        network = UDPNetwork(reuse_port=worker)
        if args.verbose:
            network = TracingNetwork(network, log)
    site = _make_site(args)
    if worker:
        # Ctrl-C in a terminal signals the whole process group: the worker gets it,
        # and then the parent's SIGTERM. The first one stops it (the receiver below);
        # one arriving once that receiver is closed must not kill it on its way out
        # (the receiver restores these when it closes).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # serve_site raises the Context's errors (an address in use) as themselves.
        async with serve_site(
            site,
            binds,
            network=network,
            oscore=credentials,
            dtls_bind=args.dtls_bind,
            dtls=dtls,
        ) as ctx:
            for address in [*ctx.addresses, *ctx.dtls_addresses]:
                report(f"listening on {format_address(address.host, address.port, address.scheme)}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
                if worker:
                    nursery.start_soon(_cancel_when_orphaned, args.worker_of, nursery.cancel_scope)
            if worker:
                log(f"coap-trio worker {os.getpid()}: {_counters(ctx.statistics)}")
    return ExitStatus.OK


def _dtls(args: argparse.Namespace) -> DtlsCredentials | None:
    """The server's DTLS credentials for ``--dtls-bind`` (None without it)."""
    credentials = dtls_credentials(args, server=args.dtls_bind is not None)
    if credentials is not None and not args.dtls_bind:
        raise UsageError("the DTLS options serve coaps:// on --dtls-bind: give it too")
    if args.dtls_bind and credentials is None:
        raise UsageError(
            "--dtls-bind needs server credentials: --psk-identity with --psk or --psk-file, "
            "--cert with --key, or --rpk"
        )
    return credentials


async def _run_proxy(
    args: argparse.Namespace, report: Callable[[str], None], log: Callable[[str], None]
) -> ExitStatus:
    """``serve proxy``: a forward proxy (and the HTTP cross-proxy) until a signal."""
    from ..proxy import AllowList, ResponseCache, open_proxy

    try:
        allow = AllowList(args.allow)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not allow:
        log("coap-trio: no --allow: every proxied request is refused (4.03)")
    network: TracingNetwork | None = None
    if args.verbose:
        from ..transports.udp import UDPNetwork

        network = TracingNetwork(UDPNetwork(), log)
    cache: ResponseCache | bool = False
    if not args.no_cache:
        cache = ResponseCache(max_entries=args.cache_entries, max_bytes=args.cache_bytes)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_proxy(
            args.bind or [DEFAULT_BIND],
            allow=allow,
            cache=cache,
            timeout=args.upstream_timeout,
            via=args.via,
            http_bind=args.http_bind,
            http_to_http=args.http_targets,
            network=network,
            client_endpoints=args.upstream_endpoints,
        ) as proxy:
            for address in proxy.context.addresses:
                report(f"listening on {format_address(address.host, address.port)}")
            for host, port in proxy.http_addresses:
                report(f"listening on http://{_bind_text(host, port)}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
    return ExitStatus.OK


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        break
    scope.cancel()


async def _cancel_when_orphaned(parent: int, scope: trio.CancelScope) -> None:
    while os.getppid() == parent:
        await trio.sleep(_PARENT_POLL)
    scope.cancel()


def _counters(statistics: ContextStatistics) -> str:
    received = sum(e.datagrams_received for e in statistics.endpoints)
    sent = sum(e.datagrams_sent for e in statistics.endpoints)
    return f"{received} datagrams received, {sent} sent"


# -- the parent of --workers ----------------------------------------------------------------


def _bind_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _worker_argv(args: argparse.Namespace, binds: list[tuple[str, int]]) -> list[str]:
    argv = [sys.executable, "-m", "coap_trio", "serve", args.site]
    if args.site == "plugtest":
        if args.obs_period is not None:
            argv += ["--obs-period", repr(args.obs_period)]
    else:
        argv.append(os.path.abspath(args.directory))
        if args.write:
            argv.append("--write")
    for host, port in binds:
        argv += ["--bind", _bind_text(host, port)]
    if args.verbose:
        argv.append("-v")
    return [*argv, "--worker-of", str(os.getpid())]


async def _read_ready(process: trio.Process, lines: int) -> list[str]:
    """The first ``lines`` lines a worker writes (its ``listening on`` lines)."""
    assert process.stdout is not None
    data = b""
    while data.count(b"\n") < lines:
        chunk = await process.stdout.receive_some()
        if not chunk:
            raise OSError(f"worker {process.pid} exited before serving")
        data += chunk
    return data.decode(errors="replace").splitlines()[:lines]


async def _stop_workers(processes: list[trio.Process], sig: int) -> None:
    """Send ``sig`` to every running worker; wait for all (kill stragglers)."""
    for process in processes:
        if process.returncode is None:
            process.send_signal(sig)
    with trio.move_on_after(_WORKER_STOP_TIMEOUT):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _run_workers(args: argparse.Namespace, report: Callable[[str], None]) -> ExitStatus:
    from ..transports.udp import UDPNetwork

    network = UDPNetwork(reuse_port=True)
    probes = []
    processes: list[trio.Process] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            for host, port in args.bind or [DEFAULT_BIND]:  # names: every address they have
                probes += await bind_endpoints(network, host, port)
            binds = [(p.local_address.host, p.local_address.port) for p in probes]
            argv = _worker_argv(args, binds)
            for _ in range(args.workers):
                processes.append(
                    await trio.lowlevel.open_process(
                        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
                    )
                )
            with trio.fail_after(WORKER_START_TIMEOUT):
                for process in processes:
                    await _read_ready(process, len(binds))
        except BaseException:
            await _stop_workers(processes, signal.SIGTERM)
            raise
        finally:
            for probe in probes:  # every worker is bound beside it (or failed): let go
                probe.close()
        for host, port in binds:
            report(f"listening on {format_address(host, port)}")
        report("workers: " + " ".join(str(p.pid) for p in processes))
        async with trio.open_nursery() as nursery:
            failed: list[trio.Process] = []

            async def watch(process: trio.Process) -> None:
                await process.wait()
                failed.append(process)
                nursery.cancel_scope.cancel()

            for process in processes:
                nursery.start_soon(watch, process)
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
        if failed and failed[0].returncode != 0:
            sys.stderr.write(
                f"coap-trio: worker {failed[0].pid} {_ended(failed[0])}; stopping the others\n"
            )
        await _stop_workers(processes, signal.SIGTERM)
        for process in processes:
            if process.stdout is not None:
                await process.stdout.aclose()
            if process.returncode != 0 and process not in failed[:1]:
                sys.stderr.write(f"coap-trio: worker {process.pid} {_ended(process)}\n")
    return ExitStatus.FAILURE if any(p.returncode != 0 for p in processes) else ExitStatus.OK


def _ended(process: trio.Process) -> str:
    """How a worker ended: ``exited with status N`` or ``was killed by SIGNAME``."""
    code = process.returncode
    assert code is not None
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
