"""Command-line parsing of ``coap-trio``: the argument parser and the value parsers.

Owns how text from the command line becomes values: Content-Format names
(:func:`parse_content_format`), ``--option NUMBER=VALUE``
(:func:`parse_option`), ``--bind HOST:PORT`` (:func:`parse_bind`), payload
sources (:func:`read_payload`), DTLS credentials from their flags and files
(:func:`dtls_credentials`), the version (:func:`package_version`), and
the :mod:`argparse` parser with every verb and flag (:func:`build_parser`).
Value parsers raise :class:`UsageError`; nothing here performs network I/O.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import attrs

from ..errors import CredentialsError, UnsupportedTransportError, UsageError
from ..numbers.contentformat import ContentFormat
from ..numbers.optionnumbers import OptionFormat, OptionNumber, option_spec, registered_options
from ..options import encode_uint
from .exitcodes import exit_status_table

if TYPE_CHECKING:
    from ..oscore_credentials import CredentialsMap
    from ..protocol.dtls.credentials import DtlsCredentials

T = TypeVar("T")

__all__ = [
    "CLIENT_VERBS",
    "METHOD_VERBS",
    "UsageError",
    "build_parser",
    "dtls_credentials",
    "package_version",
    "parse_bind",
    "parse_content_format",
    "parse_option",
    "read_payload",
]

#: Verbs that send one request with the method of the same name.
METHOD_VERBS = ("get", "post", "put", "delete", "fetch", "patch", "ipatch")
#: Every client verb.
CLIENT_VERBS = (*METHOD_VERBS, "observe", "discover", "ping")

_BLOCK_SIZES = (16, 32, 64, 128, 256, 512, 1024)

#: Short names for common Content-Formats (besides media types and numbers).
_CONTENT_FORMAT_ALIASES: dict[str, int] = {
    "text": 0,
    "text/plain": 0,
    "plain": 0,
    "link": 40,
    "link-format": 40,
    "linkformat": 40,
    "xml": 41,
    "octet-stream": 42,
    "octets": 42,
    "binary": 42,
    "exi": 47,
    "json": 50,
    "json-patch": 51,
    "merge-patch": 52,
    "cbor": 60,
    "cwt": 61,
    "cbor-seq": 63,
    "senml+json": 110,
    "senml-json": 110,
    "senml+cbor": 112,
    "senml-cbor": 112,
}


def parse_content_format(text: str) -> ContentFormat:
    """A Content-Format from a number (``50``), a short name (``json``, ``cbor``,
    ``text``, ``link-format``) or a registered media type (``application/json``)."""
    name = text.strip()
    if name.isdigit():
        number = int(name)
        if number > 0xFFFF:
            raise UsageError(f"content format {number} is not in 0..65535")
        return ContentFormat(number)
    alias = _CONTENT_FORMAT_ALIASES.get(name.lower())
    if alias is not None:
        return ContentFormat(alias)
    for candidate in (name, f"application/{name}"):
        try:
            return ContentFormat.by_media_type(candidate)
        except KeyError:
            continue
    raise UsageError(
        f"unknown content format {text!r} (use a number, a media type such as "
        "application/json, or one of: " + ", ".join(sorted(_CONTENT_FORMAT_ALIASES)) + ")"
    )


def _option_number(text: str) -> int:
    name = text.strip()
    if name.isdigit():
        number = int(name)
        if number > 0xFFFF:
            raise UsageError(f"option number {number} is not in 0..65535")
        return number
    for spec in registered_options():
        if spec.name.lower() == name.lower() or spec.attribute == name.lower():
            return spec.number
    raise UsageError(f"unknown option {text!r}: give its number or registered name")


def _parse_int(text: str) -> int:
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an integer") from None
    if value < 0:
        raise UsageError(f"{text!r} is negative")
    return value


def _parse_hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise UsageError(f"{text!r} is not valid hex") from None


def parse_option(text: str) -> tuple[int, bytes]:
    """``NUMBER=VALUE`` (or ``NAME=VALUE``) as a raw option: ``(number, bytes)``.

    The value is read according to the option's registered format: uint
    options take an integer (decimal or ``0x`` hex), string options take text,
    opaque options take ``0x`` hex or text (UTF-8), empty options take
    nothing. Unregistered numbers are opaque. The registered length bounds
    are checked.
    """
    name, equals, value = text.partition("=")
    if not equals and not name:
        raise UsageError(f"--option {text!r}: expected NUMBER=VALUE")
    number = _option_number(name)
    spec = option_spec(number)
    raw: bytes
    if spec.format is OptionFormat.EMPTY:
        if value:
            raise UsageError(f"{spec.name} takes no value")
        raw = b""
    elif spec.format is OptionFormat.UINT:
        raw = b"" if value == "" else encode_uint(_parse_int(value))
    elif spec.format is OptionFormat.STRING:
        raw = value.encode("utf-8")
    else:
        raw = _parse_hex(value) if value.lower().startswith("0x") else value.encode("utf-8")
    if not spec.length_ok(len(raw)):
        raise UsageError(
            f"{spec.name} ({int(OptionNumber(number))}) takes {spec.min_length}.."
            f"{spec.max_length} bytes, {value!r} gives {len(raw)}"
        )
    return number, raw


def parse_bind(text: str, default_port: int = 5683) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``HOST`` or ``[IPV6]`` as ``(host, port)``.

    A bare IPv6 address (``::1``) is accepted too, with the default port.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise UsageError(f"--bind {text!r}: expected [IPV6]:PORT")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise UsageError(f"--bind {text!r}: no host")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"--bind {text!r}: {host!r} is not an IPv6 address") from None
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or int(port_text) > 0xFFFF:
        raise UsageError(f"--bind {text!r}: port {port_text!r} is not in 0..65535")
    return host, int(port_text)


def package_version() -> str:
    """The installed version of coap-trio, from its package metadata.

    Falls back to ``coap_trio.__version__`` when the package is imported
    from a source tree that was never installed (no metadata to read).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("coap-trio")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def read_payload(text: str | None, file: str | None, stdin: BinaryIO | None = None) -> bytes:
    """The request payload: ``--payload`` text (UTF-8), or the bytes of
    ``--payload-file`` (``-`` reads standard input), or nothing."""
    if text is not None and file is not None:
        raise UsageError("give --payload or --payload-file, not both")
    if text is not None:
        return text.encode("utf-8")
    if file is None:
        return b""
    if file == "-":
        source = stdin if stdin is not None else sys.stdin.buffer
        return source.read()
    try:
        with open(file, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise UsageError(f"--payload-file {file!r}: {error.strerror or error}") from None


def read_credentials(path: str) -> CredentialsMap:
    """The OSCORE credentials of ``--credentials`` (aiocoap's format, JSON or EDN).

    Raises :class:`~coap_trio.errors.UsageError` naming the file and entry at
    fault, or the missing ``oscore`` extra.
    """
    try:
        from ..oscore_credentials import load_credentials
    except ImportError as error:
        raise UsageError(f"--credentials: {error}") from None
    try:
        return load_credentials(path)
    except CredentialsError as error:
        raise UsageError(f"--credentials: {error}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _typed(parser: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a value parser so argparse reports its UsageError as a usage error."""

    def convert(text: str) -> T:
        try:
            return parser(text)
        except UsageError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parser, "__name__", "value").removeprefix("parse_")
    return convert


_SCHEMES = (
    "URI schemes: coap:// (UDP), coaps:// (DTLS: give its credentials, see the\n"
    "DTLS options), coap+tcp://, coaps+tcp:// (TLS), coap+ws://, coaps+ws://\n"
    "(WebSockets; these two need the 'ws' extra). serve listens on UDP, and on\n"
    "DTLS with --dtls-bind."
)
_EPILOG = (
    _SCHEMES
    + "\n\nexit status:\n"
    + exit_status_table()
    + "\n\nSee docs/cli.md for the full reference."
)


def _add_dtls_flags(parser: argparse.ArgumentParser, *, server: bool) -> None:
    """The DTLS credentials flags (libcoap's -u, -k, -c, -j, -C, -M, -n)."""
    group = parser.add_argument_group(
        "DTLS (coaps://)",
        "the credentials of a DTLS server (with --dtls-bind)"
        if server
        else "the credentials of coaps:// requests",
    )
    group.add_argument(
        "--psk-identity",
        metavar="TEXT",
        help="the identity of the pre-shared key (UTF-8)"
        + ("; a client must send it" if server else ""),
    )
    psk = group.add_mutually_exclusive_group()
    psk.add_argument("--psk", metavar="TEXT", help="the pre-shared key (UTF-8 text)")
    psk.add_argument(
        "--psk-file", metavar="FILE", help="the pre-shared key: the bytes of FILE as they are"
    )
    group.add_argument(
        "--cert", metavar="FILE", help="our certificate chain, PEM, leaf first (ECDSA P-256)"
    )
    group.add_argument(
        "--key", metavar="FILE", help="the private key of --cert, PEM (when not in --cert)"
    )
    group.add_argument(
        "--cacert",
        metavar="FILE",
        help="trusted CA certificates, PEM"
        + (
            ": clients must then present a certificate they issued"
            if server
            else ": the server's certificate is checked against them and the URI's host"
        ),
    )
    group.add_argument(
        "--rpk",
        metavar="FILE",
        help="our raw public key (RFC 7250): a PEM P-256 private key, presented as its public key",
    )
    group.add_argument(
        "--trust-rpk",
        metavar="FILE",
        action="append",
        default=[],
        help="a peer's raw public key we accept, PEM (a public or private key, or a "
        "certificate); repeatable" + (": clients must then present one of them" if server else ""),
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="do not check the peer's certificate or raw public key (testing only)",
    )


def dtls_credentials(args: argparse.Namespace, *, server: bool) -> DtlsCredentials | None:
    """The DTLS credentials the flags of :func:`build_parser` give (None: no DTLS flag).

    A server that was given ``--cacert`` or ``--trust-rpk`` requires client
    certificates (or raw public keys) checked against them. Raises
    :class:`UsageError` for files that cannot be read or do not fit, and
    :class:`~coap_trio.errors.UnsupportedTransportError` without the ``dtls``
    extra.
    """
    given = [
        args.psk_identity,
        args.psk,
        args.psk_file,
        args.cert,
        args.key,
        args.cacert,
        args.rpk,
        *args.trust_rpk,
    ]
    if all(value is None for value in given) and not args.insecure:
        return None
    try:
        from ..protocol.dtls.credentials import DtlsCredentials
    except ImportError as error:
        raise UnsupportedTransportError(
            f"coaps:// needs the 'dtls' extra: pip install 'coap-trio[dtls]' ({error})"
        ) from None
    if (args.psk is not None or args.psk_file is not None) and args.psk_identity is None:
        raise UsageError("--psk and --psk-file need --psk-identity")
    try:
        credentials = DtlsCredentials.from_files(
            psk_identity=args.psk_identity,
            psk=args.psk,
            psk_file=args.psk_file,
            cert=args.cert,
            key=args.key,
            cacert=args.cacert,
            rpk=args.rpk,
            trusted_rpk=args.trust_rpk,
            insecure=args.insecure,
        )
        if server and (args.cacert is not None or args.trust_rpk):
            credentials = attrs.evolve(credentials, require_client_auth=True)
    except OSError as error:
        raise UsageError(
            f"{error.filename or 'DTLS credentials'}: {error.strerror or error}"
        ) from None
    except (ValueError, TypeError) as error:
        raise UsageError(f"DTLS credentials: {error}") from None
    if server and not credentials.suites(server=True):
        raise UsageError(
            "--dtls-bind needs server credentials: --psk-identity with --psk or --psk-file, "
            "--cert with --key, or --rpk"
        )
    return credentials


def _add_client_flags(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "uri",
        help="the target, e.g. coap://[::1]:5683/sensors/temp or coap+tcp://host/sensors/temp",
    )
    if verb in ("post", "put", "fetch", "patch", "ipatch", "get", "delete", "observe"):
        parser.add_argument("--payload", metavar="TEXT", help="request payload (UTF-8 text)")
        parser.add_argument(
            "--payload-file", metavar="FILE", help="request payload from FILE ('-': stdin)"
        )
        parser.add_argument(
            "--content-format",
            "--ct",
            metavar="FORMAT",
            type=_typed(parse_content_format),
            help="Content-Format of the payload: a number, json, cbor, text, "
            "link-format, or a media type",
        )
    if verb != "ping":
        parser.add_argument(
            "--proxy",
            metavar="URI",
            help="send the request through the forward proxy at URI (coap://host:port); "
            "the target URI then goes in Proxy-Uri and may be http:// for a cross-proxy",
        )
        parser.add_argument(
            "--accept",
            metavar="FORMAT",
            type=_typed(parse_content_format),
            help="the Content-Format asked for (same names as --content-format)",
        )
        parser.add_argument(
            "--non",
            action="store_true",
            help="send the request as NON (default: CON; UDP only)",
        )
        parser.add_argument(
            "--option",
            "-O",
            metavar="NUMBER=VALUE",
            action="append",
            default=[],
            type=_typed(parse_option),
            help="add an option (repeatable); VALUE as text, 0x-hex or integer, "
            "per the option's registered format",
        )
        parser.add_argument(
            "--block-size",
            type=int,
            choices=_BLOCK_SIZES,
            metavar="BYTES",
            help="block size for block-wise transfers (16..1024, a power of two)",
        )
        parser.add_argument(
            "--raw", action="store_true", help="write the payload bytes as they are"
        )
        parser.add_argument(
            "--output",
            "-o",
            metavar="FILE",
            help="write the payload to FILE (raw bytes) instead of standard output",
        )
    if verb != "ping":
        parser.add_argument(
            "--credentials",
            metavar="FILE",
            help="OSCORE credentials (RFC 8613): a file in aiocoap's --credentials "
            "format (JSON, or diagnostic notation in a .diag file); a request whose URI "
            "matches an entry is protected, after EDHOC for an edhoc-oscore entry",
        )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="give up after SECONDS in all (exit status 5)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show every datagram sent and received (UDP) and the response on standard error",
    )
    _add_dtls_flags(parser, server=False)


_VERB_HELP = {
    "get": "GET a resource",
    "post": "POST a payload",
    "put": "PUT a payload",
    "delete": "DELETE a resource",
    "fetch": "FETCH (RFC 8132) with a payload as the query",
    "patch": "PATCH (RFC 8132) a resource",
    "ipatch": "iPATCH (RFC 8132) a resource",
    "observe": "observe a resource (RFC 7641), printing each notification",
    "discover": "list a server's resources (GET /.well-known/core)",
    "ping": "send a CoAP ping (an empty CON; 7.02 Ping over TCP/WebSockets), wait for the answer",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``coap-trio`` argument parser: client verbs, ``serve`` and the demos."""
    parser = argparse.ArgumentParser(
        prog="coap-trio",
        description="A CoAP (RFC 7252) client and server built on Trio.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"coap-trio {package_version()}",
        help="print the version of coap-trio and exit",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in CLIENT_VERBS:
        sub = verbs.add_parser(
            verb,
            help=_VERB_HELP[verb],
            description=_VERB_HELP[verb] + ".",
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_client_flags(sub, verb)
        if verb == "observe":
            sub.add_argument(
                "--count",
                type=_positive_int,
                metavar="N",
                help="stop after N responses (the first one included)",
            )
            sub.add_argument(
                "--duration",
                type=_positive_float,
                metavar="SECONDS",
                help="stop after SECONDS",
            )
        if verb == "discover":
            sub.add_argument(
                "--multicast",
                action="store_true",
                help="URI names a multicast group (e.g. coap://224.0.1.187, "
                "coap://[ff02::fd%%eth0]): print every member's resources, each under "
                "a line naming the member",
            )
            sub.add_argument(
                "--wait",
                type=_positive_float,
                default=5.0,
                metavar="SECONDS",
                help="with --multicast: how long to collect answers (default 5; servers "
                "wait up to their Leisure, 5 s by default, before answering)",
            )
            sub.add_argument("--rt", metavar="TYPE", help="only resources with this rt (* ends)")
            sub.add_argument(
                "--if", dest="if_", metavar="INTERFACE", help="only resources with this if"
            )
    serve = verbs.add_parser(
        "serve",
        help="run a server (plugtest, fileserver or proxy) until Ctrl-C or SIGTERM",
        description="Run a server until Ctrl-C or SIGTERM; prints its bound addresses first.",
    )
    sites = serve.add_subparsers(dest="site", required=True, metavar="SITE")
    plugtest = sites.add_parser("plugtest", help="the ETSI CoAP plugtest resources")
    fileserver = sites.add_parser("fileserver", help="serve the files of a directory")
    proxy = sites.add_parser(
        "proxy",
        help="a forward proxy (RFC 7252 §5.7) with a cache, and an HTTP-CoAP cross-proxy",
        description="Forward CoAP requests carrying Proxy-Uri or Proxy-Scheme to the "
        "destinations --allow names (none by default: an open proxy is an amplifier), "
        "and with --http-bind, HTTP requests for /hc/coap://host/path (RFC 8075).",
    )
    proxy.add_argument(
        "--bind",
        action="append",
        type=_typed(parse_bind),
        metavar="HOST:PORT",
        help="UDP address to serve CoAP on, repeatable (default [::]:5683; port 0: any free port)",
    )
    proxy.add_argument(
        "--http-bind",
        action="append",
        type=_typed(lambda text: parse_bind(text, default_port=8080)),
        metavar="HOST:PORT",
        help="TCP address to serve the HTTP-CoAP cross-proxy on, repeatable (default port 8080)",
    )
    proxy.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a destination served: [SCHEME://]HOST[:PORT], * globs allowed ('*': all), "
        "repeatable; without any, every proxied request is refused (4.03)",
    )
    proxy.add_argument(
        "--via", metavar="URI", help="send every request on through the next proxy at URI"
    )
    proxy.add_argument(
        "--http-targets",
        action="store_true",
        help="let CoAP clients reach http:// and https:// URIs too (Proxy-Scheme http)",
    )
    proxy.add_argument("--no-cache", action="store_true", help="keep no responses")
    proxy.add_argument(
        "--cache-entries",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="responses kept at most (default 10000)",
    )
    proxy.add_argument(
        "--cache-bytes",
        type=_positive_int,
        default=64 * 1024 * 1024,
        metavar="BYTES",
        help="bytes of responses kept at most (default 64 MiB)",
    )
    proxy.add_argument(
        "--upstream-endpoints",
        type=_positive_int,
        default=1,
        metavar="N",
        help="local UDP ports requests go upstream from (default 1; each sends about "
        "265 requests/s to one destination, sustained, RFC 7252 §4.4)",
    )
    proxy.add_argument(
        "--upstream-timeout",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="answer 5.04 when the destination has not answered within SECONDS (default 60)",
    )
    proxy.add_argument(
        "-v", "--verbose", action="store_true", help="log each datagram on standard error"
    )
    proxy.set_defaults(workers=1, worker_of=None)
    fileserver.add_argument("directory", help="the directory to serve")
    fileserver.add_argument("--write", action="store_true", help="allow PUT and DELETE of files")
    plugtest.add_argument(
        "--obs-period",
        type=_positive_float,
        metavar="SECONDS",
        help="period of the observable resources' changes",
    )
    for site_parser in (plugtest, fileserver):
        site_parser.add_argument(
            "--bind",
            action="append",
            type=_typed(parse_bind),
            metavar="HOST:PORT",
            help="UDP address to serve on, repeatable (default [::]:5683; port 0: any free "
            "port); a host name is bound on every address it resolves to, on one port",
        )
        site_parser.add_argument(
            "-v", "--verbose", action="store_true", help="log each request on standard error"
        )
        site_parser.add_argument(
            "--workers",
            type=_positive_int,
            default=1,
            metavar="N",
            help="serve from N processes sharing each port (SO_REUSEPORT; default 1)",
        )
        site_parser.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
        site_parser.add_argument(
            "--credentials",
            metavar="FILE",
            help="OSCORE credentials (RFC 8613), aiocoap's format (JSON, or diagnostic "
            "notation in a .diag file): requests protected with its security contexts are "
            "verified and answered protected; its edhoc-oscore entries answer EDHOC (not "
            "with --workers: processes must not share a security context)",
        )
        site_parser.add_argument(
            "--dtls-bind",
            action="append",
            type=_typed(lambda text: parse_bind(text, default_port=5684)),
            metavar="HOST:PORT",
            help="also serve coaps:// (DTLS) there, repeatable (default port 5684; port 0: any "
            "free port); needs the server credentials below",
        )
        _add_dtls_flags(site_parser, server=True)
    verbs.add_parser("demo", help="serve and query real CoAP over loopback, and print it")
    verbs.add_parser("codec-demo", help="encode and decode a request and a response")
    return parser
