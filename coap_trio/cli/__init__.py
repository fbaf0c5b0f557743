"""The ``coap-trio`` command (also ``python -m coap_trio``): a CoAP client and server.

Client verbs send one request (``get``, ``post``, ``put``, ``delete``,
``fetch``, ``patch``, ``ipatch``), follow a resource (``observe``), list a
server's resources (``discover``) or check that it is alive (``ping``);
``serve plugtest`` and ``serve fileserver`` run a server; ``demo`` and
``codec-demo`` show the stack at work. The exit status says what happened
(:class:`~coap_trio.cli.exitcodes.ExitStatus`; ``docs/cli.md`` is the
reference).

Modules: :mod:`~coap_trio.cli.parsing` (arguments and values),
:mod:`~coap_trio.cli.output` (payload rendering, progress),
:mod:`~coap_trio.cli.exitcodes`, :mod:`~coap_trio.cli.client` (client verbs),
:mod:`~coap_trio.cli.serve`, :mod:`~coap_trio.cli.trace` (``-v``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .exitcodes import ExitStatus

__all__ = ["ExitStatus", "main"]


def _run_trio(function: object, *args: object) -> int:
    import trio

    try:
        return int(trio.run(function, *args))  # type: ignore[arg-type]
    except KeyboardInterrupt:
        sys.stderr.write("coap-trio: interrupted\n")
        return int(ExitStatus.INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``coap-trio`` command with ``argv`` (default: the process's) and
    return its exit status."""
    from .parsing import CLIENT_VERBS, build_parser

    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on a usage error
    if args.verb == "demo":
        from ..demo import run_demo

        return _run_trio(run_demo)
    if args.verb == "codec-demo":
        from .codecdemo import codec_demo

        return codec_demo()
    if args.verb == "serve":
        from .serve import run_serve

        def report(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        def log(line: str) -> None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

        return _serve(run_serve, args, report, log)
    assert args.verb in CLIENT_VERBS
    from .client import Console, run_client

    try:
        status = _run_trio(run_client, args, Console.system())
    except BrokenPipeError:  # the reader of our output went away (``| head``)
        status = int(ExitStatus.OUTPUT_CLOSED)
    except BaseExceptionGroup as group:
        if group.split(BrokenPipeError)[1] is not None:
            raise
        status = int(ExitStatus.OUTPUT_CLOSED)
    if status == ExitStatus.OUTPUT_CLOSED:
        _silence_stdout()  # what is still buffered must not fail again at exit
    return status


def _serve(run: object, *args: object) -> int:
    import socket

    from ..errors import CoapError, UsageError

    try:
        return _run_trio(run, *args)
    except UsageError as error:  # e.g. a malformed --allow pattern
        sys.stderr.write(f"coap-trio: {error}\n")
        return int(ExitStatus.USAGE)
    except socket.gaierror as error:  # a --bind name that does not resolve
        sys.stderr.write(f"coap-trio: cannot serve: {error.strerror or error}\n")
        return int(ExitStatus.USAGE)
    except ValueError as error:  # a --bind address refused as malformed
        sys.stderr.write(f"coap-trio: cannot serve: {error}\n")
        return int(ExitStatus.USAGE)
    except (OSError, CoapError) as error:  # e.g. the address is in use, no such directory
        sys.stderr.write(f"coap-trio: cannot serve: {error}\n")
        return int(ExitStatus.FAILURE)


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:  # pragma: no cover - nothing more to do
        pass
