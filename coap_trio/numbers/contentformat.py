"""CoAP Content-Formats (RFC 7252 §12.3 and the IANA registry).

Owns the number <-> (media type, content coding) table and its run-time
extension. Must not know how payloads are parsed or rendered.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["ContentFormat", "register_content_format"]


def _normalize(media_type: str) -> str:
    """Lower-case the type and drop whitespace around parameters."""
    parts = [part.strip() for part in media_type.split(";")]
    head = parts[0].lower()
    params = []
    for param in parts[1:]:
        name, _, value = param.partition("=")
        params.append(f"{name.strip().lower()}={value.strip()}")
    return ";".join([head, *params])


class ContentFormat(int):
    """A Content-Format number with its media type and content coding.

    ``ContentFormat(50)`` returns the registered instance (``media_type ==
    "application/json"``); unregistered numbers 0..65535 give an instance
    whose :meth:`is_known` is False. Named constants follow aiocoap
    (``ContentFormat.TEXT``, ``LINKFORMAT``, ``OCTETSTREAM``, ``JSON``,
    ``CBOR``...).
    """

    media_type: str | None
    encoding: str

    _by_number: ClassVar[dict[int, ContentFormat]] = {}
    _by_media_type: ClassVar[dict[tuple[str, str], ContentFormat]] = {}

    TEXT: ClassVar[ContentFormat]
    LINKFORMAT: ClassVar[ContentFormat]
    XML: ClassVar[ContentFormat]
    OCTETSTREAM: ClassVar[ContentFormat]
    EXI: ClassVar[ContentFormat]
    JSON: ClassVar[ContentFormat]
    JSON_PATCH: ClassVar[ContentFormat]
    MERGE_PATCH: ClassVar[ContentFormat]
    CBOR: ClassVar[ContentFormat]
    CWT: ClassVar[ContentFormat]
    SENML_JSON: ClassVar[ContentFormat]
    SENML_CBOR: ClassVar[ContentFormat]
    SENML: ClassVar[ContentFormat]

    def __new__(cls, number: int) -> ContentFormat:
        known = cls._by_number.get(number)
        if known is not None:
            return known
        if not isinstance(number, int) or not 0 <= number <= 0xFFFF:
            raise ValueError(f"content format {number!r} is not in 0..65535")
        instance = super().__new__(cls, number)
        instance.media_type = None
        instance.encoding = "identity"
        return instance

    @classmethod
    def by_media_type(cls, media_type: str, encoding: str = "identity") -> ContentFormat:
        """Look up a registered format by media type (parameters and case normalized).

        Raises KeyError when none is registered.
        """
        return cls._by_media_type[(_normalize(media_type), encoding)]

    @classmethod
    def registered(cls) -> tuple[ContentFormat, ...]:
        """Every registered format, in number order."""
        return tuple(cls._by_number[n] for n in sorted(cls._by_number))

    def is_known(self) -> bool:
        """True when this number is registered."""
        return self.media_type is not None

    def __repr__(self) -> str:
        if self.media_type is None:
            return f"<ContentFormat {int(self)}>"
        coding = "" if self.encoding == "identity" else f"@{self.encoding}"
        return f"<ContentFormat {int(self)} {self.media_type}{coding}>"

    def __str__(self) -> str:
        if self.media_type is None:
            return str(int(self))
        return (
            self.media_type if self.encoding == "identity" else f"{self.media_type}@{self.encoding}"
        )

    def __reduce__(self) -> tuple[type[ContentFormat], tuple[int]]:
        return (ContentFormat, (int(self),))


def register_content_format(
    number: int, media_type: str, encoding: str = "identity"
) -> ContentFormat:
    """Register (or re-register) a Content-Format at run time and return it."""
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"content format {number} is not in 0..65535")
    instance = int.__new__(ContentFormat, number)
    instance.media_type = media_type
    instance.encoding = encoding
    old = ContentFormat._by_number.get(number)
    if old is not None and old.media_type is not None:
        ContentFormat._by_media_type.pop((_normalize(old.media_type), old.encoding), None)
    ContentFormat._by_number[number] = instance
    ContentFormat._by_media_type[(_normalize(media_type), encoding)] = instance
    return instance


# The IANA "CoAP Content-Formats" registry (number, media type, content coding).
_IANA: tuple[tuple[int, str, str], ...] = (
    (0, "text/plain; charset=utf-8", "identity"),
    (16, 'application/cose; cose-type="cose-encrypt0"', "identity"),
    (17, 'application/cose; cose-type="cose-mac0"', "identity"),
    (18, 'application/cose; cose-type="cose-sign1"', "identity"),
    (19, "application/ace+cbor", "identity"),
    (21, "image/gif", "identity"),
    (22, "image/jpeg", "identity"),
    (23, "image/png", "identity"),
    (40, "application/link-format", "identity"),
    (41, "application/xml", "identity"),
    (42, "application/octet-stream", "identity"),
    (47, "application/exi", "identity"),
    (50, "application/json", "identity"),
    (51, "application/json-patch+json", "identity"),
    (52, "application/merge-patch+json", "identity"),
    (60, "application/cbor", "identity"),
    (61, "application/cwt", "identity"),
    (62, "application/multipart-core", "identity"),
    (63, "application/cbor-seq", "identity"),
    (96, 'application/cose; cose-type="cose-encrypt"', "identity"),
    (97, 'application/cose; cose-type="cose-mac"', "identity"),
    (98, 'application/cose; cose-type="cose-sign"', "identity"),
    (101, "application/cose-key", "identity"),
    (102, "application/cose-key-set", "identity"),
    (110, "application/senml+json", "identity"),
    (111, "application/sensml+json", "identity"),
    (112, "application/senml+cbor", "identity"),
    (113, "application/sensml+cbor", "identity"),
    (114, "application/senml-exi", "identity"),
    (115, "application/sensml-exi", "identity"),
    (140, "application/yang-data+cbor; id=sid", "identity"),
    (256, "application/coap-group+json", "identity"),
    (257, "application/concise-problem-details+cbor", "identity"),
    (258, "application/swid+cbor", "identity"),
    (271, "application/dots+cbor", "identity"),
    (272, "application/missing-blocks+cbor-seq", "identity"),
    (280, "application/pkcs7-mime; smime-type=server-generated-key", "identity"),
    (281, "application/pkcs7-mime; smime-type=certs-only", "identity"),
    (284, "application/pkcs8", "identity"),
    (285, "application/csrattrs", "identity"),
    (286, "application/pkcs10", "identity"),
    (287, "application/pkix-cert", "identity"),
    (290, "application/aif+cbor", "identity"),
    (291, "application/aif+json", "identity"),
    (310, "application/senml+xml", "identity"),
    (311, "application/sensml+xml", "identity"),
    (320, "application/senml-etch+json", "identity"),
    (322, "application/senml-etch+cbor", "identity"),
    (340, "application/yang-data+cbor", "identity"),
    (341, "application/yang-data+cbor; id=name", "identity"),
    (432, "application/td+json", "identity"),
    (10000, "application/vnd.ocf+cbor", "identity"),
    (10001, "application/oscore", "identity"),
    (10002, "application/javascript", "identity"),
    (11050, "application/json", "deflate"),
    (11060, "application/cbor", "deflate"),
    (11542, "application/vnd.oma.lwm2m+tlv", "identity"),
    (11543, "application/vnd.oma.lwm2m+json", "identity"),
    (11544, "application/vnd.oma.lwm2m+cbor", "identity"),
    (20000, "text/css", "identity"),
    (30000, "image/svg+xml", "identity"),
)

for _number, _media_type, _encoding in _IANA:
    register_content_format(_number, _media_type, _encoding)

ContentFormat.TEXT = ContentFormat(0)
ContentFormat.LINKFORMAT = ContentFormat(40)
ContentFormat.XML = ContentFormat(41)
ContentFormat.OCTETSTREAM = ContentFormat(42)
ContentFormat.EXI = ContentFormat(47)
ContentFormat.JSON = ContentFormat(50)
ContentFormat.JSON_PATCH = ContentFormat(51)
ContentFormat.MERGE_PATCH = ContentFormat(52)
ContentFormat.CBOR = ContentFormat(60)
ContentFormat.CWT = ContentFormat(61)
ContentFormat.SENML_JSON = ContentFormat(110)
ContentFormat.SENML_CBOR = ContentFormat(112)
ContentFormat.SENML = ContentFormat.SENML_CBOR
