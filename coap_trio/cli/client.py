"""The client verbs of ``coap-trio``: one request, observe, discover, ping.

Owns how a parsed command line becomes a request (:func:`build_request`),
how the exchange runs inside one :func:`~coap_trio.context.open_context`
(with ``--timeout`` over all of it, ``-v`` tracing every datagram), where the
payload goes (standard output rendered for its content format, or
``--output FILE`` as bytes, streamed when the body is large), and which exit
status results. Every failure ends as one line on standard error and an
:class:`~coap_trio.cli.exitcodes.ExitStatus`; no traceback.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from contextlib import AbstractAsyncContextManager
from typing import BinaryIO, TextIO

import attrs
import trio

from ..context import Context, open_context
from ..errors import CoapError, OutputError, UsageError
from ..message import Message
from ..numbers.codes import Code
from ..numbers.contentformat import ContentFormat
from ..numbers.types import Type
from ..protocol.config import BlockwiseConfig
from ..response_errors import ObservationError
from ..transports.base import DatagramNetwork
from .exitcodes import ExitStatus, status_for_code, status_for_error
from .output import ProgressBar, describe_response, payload_kind, render_payload
from .parsing import dtls_credentials, read_credentials, read_payload
from .trace import TracingNetwork

__all__ = ["Console", "OutputError", "build_request", "run_client"]

_METHODS: dict[str, Code] = {
    "get": Code.GET,
    "post": Code.POST,
    "put": Code.PUT,
    "delete": Code.DELETE,
    "fetch": Code.FETCH,
    "patch": Code.PATCH,
    "ipatch": Code.iPATCH,
    "observe": Code.GET,
    "discover": Code.GET,
}

#: Content formats written to a pipe or file as they arrive (no rendering needed).
_STREAMED_KINDS = frozenset({"text", "binary", "unknown"})


@attrs.define
class Console:
    """Where the command writes: payloads to ``stdout`` (bytes), the rest to ``stderr``."""

    stdout: BinaryIO
    stderr: TextIO
    stdin: BinaryIO
    #: Whether standard output is a terminal (hex dumps instead of raw bytes).
    stdout_tty: bool
    #: Whether standard error is a terminal (progress bars).
    stderr_tty: bool

    @classmethod
    def system(cls) -> Console:
        """The process's own standard streams."""
        return cls(
            stdout=sys.stdout.buffer,
            stderr=sys.stderr,
            stdin=sys.stdin.buffer,
            stdout_tty=sys.stdout.isatty(),
            stderr_tty=sys.stderr.isatty(),
        )

    def error(self, text: str) -> None:
        """One line on standard error, prefixed with the program's name."""
        self.stderr.write(f"coap-trio: {text}\n")
        self.stderr.flush()

    def note(self, text: str) -> None:
        """A line of ``-v`` or informational output on standard error."""
        self.stderr.write(text + "\n")
        self.stderr.flush()


def build_request(args: argparse.Namespace, console: Console) -> Message:
    """The request message a client verb's arguments describe.

    Raises :class:`~coap_trio.cli.parsing.UsageError` (bad payload source) and
    :class:`~coap_trio.uri.InvalidURIError` (bad URI).
    """
    verb = args.verb
    proxy = getattr(args, "proxy", None)
    if proxy is not None and not args.uri.lower().startswith("coap"):
        message = Message(code=_METHODS[verb])  # an http:// target, for a cross-proxy
        message.set_request_uri(args.uri, proxy=proxy)
    else:
        message = Message(code=_METHODS[verb], uri=args.uri)
    if args.non:
        message.mtype = Type.NON
    if verb == "discover":
        message.opt.uri_path = (".well-known", "core")
        queries = list(message.opt.uri_query)
        if args.rt:
            queries.append(f"rt={args.rt}")
        if args.if_:
            queries.append(f"if={args.if_}")
        message.opt.uri_query = queries
    else:
        message.payload = read_payload(args.payload, args.payload_file, console.stdin)
        if args.content_format is not None:
            message.opt.content_format = args.content_format
        elif args.payload:  # --payload is text; a file's format is not guessed
            message.opt.content_format = ContentFormat.TEXT
    if args.accept is not None:
        message.opt.accept = args.accept
    for number, raw in args.option:
        message.opt.add(number, raw)
    if proxy is not None and message.opt.proxy_uri is None:
        # The whole target URI (discovery's path and query included) goes in Proxy-Uri.
        message.set_request_uri(message.get_request_uri(), proxy=proxy)
    return message


def _network(args: argparse.Namespace, console: Console) -> DatagramNetwork | None:
    if not args.verbose:
        return None
    from ..transports.udp import UDPNetwork

    return TracingNetwork(UDPNetwork(), console.note)


def _context(args: argparse.Namespace, console: Console) -> AbstractAsyncContextManager[Context]:
    block_size = getattr(args, "block_size", None)
    blockwise = BlockwiseConfig(block_size=block_size) if block_size else None
    credentials = getattr(args, "credentials", None)
    dtls = dtls_credentials(args, server=False)
    targets = [args.uri, getattr(args, "proxy", None) or ""]
    if dtls is None and any(uri.lower().startswith("coaps://") for uri in targets):
        raise UsageError(
            "coaps:// needs DTLS credentials: --psk-identity with --psk or --psk-file, "
            "--cert with --key, --rpk, or --cacert (see --help)"
        )
    return open_context(
        network=_network(args, console),
        blockwise=blockwise,
        oscore=read_credentials(credentials) if credentials else None,
        dtls=dtls,
    )


def _progress(console: Console) -> ProgressBar | None:
    return ProgressBar(console.stderr) if console.stderr_tty else None


def _kind_of(response: Message) -> str:
    content_format = response.opt.content_format
    return payload_kind(None if content_format is None else int(content_format))


class _Sink:
    """Where a response payload goes: ``--output FILE`` (bytes) or standard output."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self._console = console
        self._raw = bool(getattr(args, "raw", False))
        self._path: str | None = getattr(args, "output", None)
        self._file: BinaryIO | None = None

    @property
    def to_file(self) -> bool:
        return self._path is not None

    def streams(self, response: Message) -> bool:
        """Whether this response's body can be written as it arrives."""
        if self._path is not None or self._raw:
            return True
        return not self._console.stdout_tty and _kind_of(response) in _STREAMED_KINDS

    def write_chunk(self, chunk: bytes) -> None:
        if self._path is None:
            self._console.stdout.write(chunk)
            return
        try:
            if self._file is None:
                self._file = open(self._path, "wb")  # noqa: SIM115 - closed in close()
            self._file.write(chunk)
        except OSError as error:
            raise OutputError(f"--output {self._path!r}: {error.strerror or error}") from None

    def write_response(self, response: Message, payload: bytes, *, separate: bool) -> None:
        """Write a whole payload, rendered for its content format (unless raw or a file)."""
        if self._path is not None:
            self.write_chunk(payload)
            return
        content_format = response.opt.content_format
        rendered = render_payload(
            payload,
            None if content_format is None else int(content_format),
            terminal=self._console.stdout_tty,
            raw=self._raw,
        )
        if rendered.note:
            self._console.note(f"coap-trio: {rendered.note}")
        data = rendered.data
        # A notification is a line of its own; on a terminal, so is the last line of a
        # text payload (else the prompt would follow it). Pipes get the exact bytes.
        if (
            data
            and not data.endswith(b"\n")
            and (
                (separate and _kind_of(response) != "binary")
                or (self._console.stdout_tty and not self._raw)
            )
        ):
            data += b"\n"
        self._console.stdout.write(data)
        self._console.stdout.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        else:
            self._console.stdout.flush()


def _report_error_response(response: Message, console: Console) -> None:
    line = f"{response.code.dotted} {response.code.name_printable}"
    if response.payload:
        try:
            diagnostic = response.payload.decode("utf-8")
        except UnicodeDecodeError:
            diagnostic = response.payload.hex(" ")
        line += f": {diagnostic}"
    console.error(line)


def _finish(response: Message, args: argparse.Namespace, console: Console) -> ExitStatus:
    status = status_for_code(response.code)
    if args.verbose or (status is ExitStatus.OK and response.opt.location_path):
        console.note(describe_response(response))
    if status is not ExitStatus.OK:
        _report_error_response(response, console)
    return status


async def _one_request(
    ctx: Context, message: Message, args: argparse.Namespace, console: Console
) -> ExitStatus:
    sink = _Sink(args, console)
    progress = _progress(console)
    try:
        if message.code is Code.GET and (sink.to_file or not console.stdout_tty):
            return await _streamed(ctx, message, sink, progress, args, console)
        response = await ctx.request(message, progress=progress).response
        if progress is not None:
            progress.close()
        status = _finish(response, args, console)
        if status is ExitStatus.OK:
            sink.write_response(response, response.payload, separate=False)
        return status
    finally:
        if progress is not None:  # a transfer that did not finish: erase its bar
            progress.clear()
        sink.close()


async def _streamed(
    ctx: Context,
    message: Message,
    sink: _Sink,
    progress: ProgressBar | None,
    args: argparse.Namespace,
    console: Console,
) -> ExitStatus:
    """GET to a pipe or file: the body is written block by block as it arrives
    (unless it must be rendered whole: JSON, CBOR, link-format)."""
    async with ctx.stream(message, progress=progress) as body:
        response = body.response
        if not response.code.is_successful():
            return _finish(response, args, console)
        if sink.streams(response):
            sink.write_chunk(b"")  # an empty body still makes an (empty) output file
            async for chunk in body:
                sink.write_chunk(chunk)
            if progress is not None:
                progress.close()
            return _finish(response, args, console)
        collected = bytearray()
        async for chunk in body:
            collected += chunk
        if progress is not None:
            progress.close()
        status = _finish(response, args, console)
        sink.write_response(response, bytes(collected), separate=False)
        return status


async def _cancel_on_signal(
    scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Cancel ``scope`` at the first SIGINT or SIGTERM (an orderly stop, not an error)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()
            return


@attrs.define
class _Observation:
    """What ``observe`` has seen so far."""

    #: Responses received (the first one included).
    seen: int = 0
    #: Whether the last response carried no Observe option (it ends the observation).
    final: bool = False


async def _observe(
    ctx: Context, message: Message, args: argparse.Namespace, console: Console
) -> ExitStatus:
    """Print each response until --count, --duration, a signal, or a final response."""
    outcome: list[ExitStatus] = []
    observation = _Observation()
    async with trio.open_nursery() as nursery:
        # The signal receiver is in place before the request goes out.
        await nursery.start(_cancel_on_signal, nursery.cancel_scope)
        try:
            outcome.append(await _follow(ctx, message, args, console, observation))
        except CoapError as error:  # reported here: a nursery would wrap it in a group
            outcome.append(_report_error(error, console))
        except BrokenPipeError:  # the reader of standard output went away (``| head``)
            outcome.append(ExitStatus.OUTPUT_CLOSED)
        nursery.cancel_scope.cancel()
    if not outcome:  # stopped by a signal
        if observation.seen == 0:
            console.error("interrupted before any response")
            return ExitStatus.INTERRUPTED
        return ExitStatus.OK
    return outcome[0]


async def _follow(
    ctx: Context,
    message: Message,
    args: argparse.Namespace,
    console: Console,
    observation: _Observation,
) -> ExitStatus:
    sink = _Sink(args, console)
    status = ExitStatus.OK
    # --timeout bounds the wait for the first response; --duration the whole run.
    first = trio.CancelScope(
        deadline=trio.current_time() + args.timeout if args.timeout else math.inf
    )
    counted = False
    try:
        with trio.move_on_after(args.duration if args.duration else math.inf), first:
            async with ctx.observe(message) as notifications:
                async for response in notifications:
                    first.deadline = math.inf
                    observation.seen += 1
                    observation.final = response.opt.observe is None
                    status = status_for_code(response.code)
                    if args.verbose:
                        observe = response.opt.observe
                        label = "final" if observe is None else f"observe={observe}"
                        console.note(f"{describe_response(response)} ({label})")
                    sink.write_response(response, response.payload, separate=True)
                    if args.count is not None and observation.seen >= args.count:
                        counted = True
                        break
    except ObservationError as error:
        _report_error_response(error.response, console)
        return status_for_code(error.response.code)
    finally:
        sink.close()
    if observation.seen == 0:
        if first.cancelled_caught:
            console.error(f"no response within --timeout {args.timeout:g} s")
            return ExitStatus.TIMEOUT
        if args.duration:
            console.error(f"no response within --duration {args.duration:g} s")
            return ExitStatus.TIMEOUT
    elif observation.final and not counted and status is ExitStatus.OK:
        if observation.seen == 1:
            console.error("not observable: the response has no Observe option")
        else:
            console.error("the server ended the observation: a response without Observe")
    return status


async def _ping(ctx: Context, args: argparse.Namespace, console: Console) -> ExitStatus:
    rtt = await ctx.ping(args.uri)
    console.stdout.write(f"pong from {args.uri}: {rtt * 1000:.2f} ms\n".encode())
    console.stdout.flush()
    return ExitStatus.OK


async def _run(args: argparse.Namespace, console: Console) -> ExitStatus:
    if args.verb == "ping":
        Message(code=Code.GET, uri=args.uri)  # a bad URI is a usage error before any I/O
        async with _context(args, console) as ctx:
            return await _ping(ctx, args, console)
    message = build_request(args, console)
    async with _context(args, console) as ctx:
        if args.verb == "observe":
            return await _observe(ctx, message, args, console)
        if args.verb == "discover" and args.multicast:
            return await _discover_group(ctx, message, args, console)
        return await _one_request(ctx, message, args, console)


async def _discover_group(
    ctx: Context, message: Message, args: argparse.Namespace, console: Console
) -> ExitStatus:
    """Discovery across a multicast group (RFC 7252 §8, RFC 6690): each member's
    links under a ``# <member> <code>`` line, as they arrive; exit status 5 when no
    member answered within ``--wait`` seconds."""
    message.mtype = Type.NON
    sink = _Sink(args, console)
    answered = 0
    try:
        async with ctx.multicast(message, timeout=args.wait) as responses:
            async for remote, response in responses:
                answered += 1
                console.stdout.write(f"# {remote} {response.code}\n".encode())
                sink.write_response(response, response.payload, separate=True)
                console.stdout.flush()
    finally:
        sink.close()
    if not answered:
        console.error(f"no member of the group answered within {args.wait:g} s")
        return ExitStatus.TIMEOUT
    return ExitStatus.OK


async def run_client(args: argparse.Namespace, console: Console) -> ExitStatus:
    """Run one client verb (parsed ``args``) and return its exit status.

    ``--timeout`` bounds everything (exit status 5), except for ``observe``,
    where it bounds the wait for the first response; errors are reported on
    ``console`` in one line.
    """
    timeout = args.timeout if args.timeout and args.verb != "observe" else math.inf
    try:
        with trio.fail_after(timeout):
            return await _run(args, console)
    except trio.TooSlowError:
        console.error(f"no response within --timeout {args.timeout:g} s")
        return ExitStatus.TIMEOUT
    except UsageError as error:
        console.error(str(error))
        return ExitStatus.USAGE
    except OutputError as error:
        console.error(str(error))
        return ExitStatus.FAILURE
    except BrokenPipeError:  # the reader of standard output went away (``| head``): no error
        return ExitStatus.OUTPUT_CLOSED
    except (CoapError, OSError) as error:
        return _report_error(error, console)


def _report_error(error: BaseException, console: Console) -> ExitStatus:
    """One line about ``error`` on standard error; its exit status."""
    status = status_for_error(error)
    text = str(error) or type(error).__name__
    prefix = {
        ExitStatus.TIMEOUT: "timeout: ",
        ExitStatus.NETWORK_ERROR: "network error: ",
        ExitStatus.PROTOCOL_ERROR: "protocol error: ",
    }.get(status, "")
    console.error(prefix + text)
    return status
