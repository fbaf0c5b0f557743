"""P-256 ECDHE and ECDSA-SHA256 of TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (protocol/dtls/ecc.py).

Known answers: the ECDH-256 example of RFC 5903 §8.1 and the deterministic
ECDSA P-256/SHA-256 signatures of RFC 6979 A.2.5, both checked through this
module's functions; the published public keys are checked against the
private keys too, so a mistyped vector cannot pass.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.errors import DtlsPkiError
from coap_trio.protocol.dtls import ecc, pki

# RFC 5903 §8.1 (ECDH-256): the initiator's and responder's private values,
# their public points, and the shared secret's x coordinate.
RFC5903_I = "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433"
RFC5903_GI = (
    "04"
    "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
    "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3"
)
RFC5903_R = "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53"
RFC5903_GR = (
    "04"
    "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
    "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB"
)
RFC5903_GIRX = "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE"

# RFC 6979 A.2.5 (ECDSA, 256 bits, P-256): private key, public key, and the
# SHA-256 signatures (r, s) of "sample" and "test".
RFC6979_X = "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721"
RFC6979_U = (
    "04"
    "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
)
RFC6979_SHA256 = [
    (
        b"sample",
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716",
        "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
    ),
    (
        b"test",
        "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367",
        "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083",
    ),
]

# The prime of P-256: a coordinate must be below it.
P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1


def private_key(hex_value: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(hex_value, 16), ec.SECP256R1())


def point_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def test_rfc5903_ecdh_256_both_ways() -> None:
    initiator, responder = private_key(RFC5903_I), private_key(RFC5903_R)
    assert point_of(initiator) == bytes.fromhex(RFC5903_GI)
    assert point_of(responder) == bytes.fromhex(RFC5903_GR)
    expected = bytes.fromhex(RFC5903_GIRX)
    assert ecc.ecdhe_shared_secret(initiator, bytes.fromhex(RFC5903_GR)) == expected
    assert ecc.ecdhe_shared_secret(responder, bytes.fromhex(RFC5903_GI)) == expected


@pytest.mark.parametrize(("message", "r", "s"), RFC6979_SHA256)
def test_rfc6979_p256_sha256_signatures_verify(message: bytes, r: str, s: str) -> None:
    key = private_key(RFC6979_X)
    assert point_of(key) == bytes.fromhex(RFC6979_U)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(RFC6979_U))
    signature = encode_dss_signature(int(r, 16), int(s, 16))
    assert ecc.verify(public, message, signature)
    assert not ecc.verify(public, message + b"!", signature)
    wrong_s = encode_dss_signature(int(r, 16), int(s, 16) ^ 1)
    assert not ecc.verify(public, message, wrong_s)


def test_generated_pairs_agree_and_points_are_uncompressed() -> None:
    ours, our_point = ecc.generate_ecdhe()
    theirs, their_point = ecc.generate_ecdhe()
    assert len(our_point) == 65
    assert our_point[0] == 4
    assert our_point == point_of(ours)
    secret = ecc.ecdhe_shared_secret(ours, their_point)
    assert len(secret) == 32
    assert secret == ecc.ecdhe_shared_secret(theirs, our_point)
    assert our_point != their_point


def compressed(point: bytes) -> bytes:
    y = int.from_bytes(point[33:], "big")
    return bytes([2 + (y & 1)]) + point[1:33]


def off_curve(point: bytes) -> bytes:
    y = int.from_bytes(point[33:], "big")
    return point[:33] + ((y + 1) % P256_PRIME).to_bytes(32, "big")


@pytest.mark.parametrize(
    "make_bad",
    [
        pytest.param(lambda point: b"\x00", id="point at infinity"),
        pytest.param(lambda point: b"\x04" + bytes(64), id="(0, 0)"),
        pytest.param(lambda point: b"", id="empty"),
        pytest.param(lambda point: point[:-1], id="64 bytes"),
        pytest.param(lambda point: point + b"\x00", id="66 bytes"),
        pytest.param(compressed, id="compressed"),
        pytest.param(lambda point: b"\x06" + point[1:], id="hybrid form"),
        pytest.param(off_curve, id="not on the curve"),
        pytest.param(
            lambda point: b"\x04" + P256_PRIME.to_bytes(32, "big") + point[33:], id="x = p"
        ),
    ],
)
def test_shared_secret_refuses_points_that_are_not_p256_points(
    make_bad: Callable[[bytes], bytes],
) -> None:
    ours, _ = ecc.generate_ecdhe()
    _, their_point = ecc.generate_ecdhe()
    bad = make_bad(their_point)
    with pytest.raises(DtlsPkiError) as caught:
        ecc.ecdhe_shared_secret(ours, bad)
    assert caught.value.alert == pki.ALERT_ILLEGAL_PARAMETER


def test_shared_secret_wants_a_p256_private_key() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    _, point = ecc.generate_ecdhe()
    with pytest.raises(ValueError, match="secp256r1"):
        ecc.ecdhe_shared_secret(other, point)


def test_params_layout_and_round_trip() -> None:
    _, point = ecc.generate_ecdhe()
    params = ecc.ecdhe_params(point)
    assert params == b"\x03\x00\x17\x41" + point
    assert ecc.parse_ecdhe_params(params + b"rest") == (params, point, b"rest")
    assert ecc.parse_ecdhe_params(params) == (params, point, b"")


def test_params_refuse_a_point_that_is_not_ours_to_encode() -> None:
    _, point = ecc.generate_ecdhe()
    with pytest.raises(ValueError):
        ecc.ecdhe_params(point[:-1])
    with pytest.raises(ValueError):
        ecc.ecdhe_params(compressed(point))


@pytest.mark.parametrize(
    ("make_bad", "alert"),
    [
        pytest.param(lambda p: b"", pki.ALERT_DECODE_ERROR, id="empty"),
        pytest.param(lambda p: p[:3], pki.ALERT_DECODE_ERROR, id="no point length"),
        pytest.param(lambda p: p[:40], pki.ALERT_DECODE_ERROR, id="point cut short"),
        pytest.param(lambda p: p[:-1], pki.ALERT_DECODE_ERROR, id="one byte short"),
        pytest.param(lambda p: b"\x01" + p[1:], pki.ALERT_ILLEGAL_PARAMETER, id="explicit prime"),
        pytest.param(lambda p: b"\x02" + p[1:], pki.ALERT_ILLEGAL_PARAMETER, id="explicit char2"),
        pytest.param(
            lambda p: b"\x03\x00\x18" + p[3:], pki.ALERT_ILLEGAL_PARAMETER, id="secp384r1"
        ),
        pytest.param(lambda p: b"\x03\x00\x1d" + p[3:], pki.ALERT_ILLEGAL_PARAMETER, id="x25519"),
        pytest.param(
            lambda p: b"\x03\x00\x17\x21" + compressed(p[4:]),
            pki.ALERT_ILLEGAL_PARAMETER,
            id="compressed point",
        ),
        pytest.param(
            lambda p: p[:4] + off_curve(p[4:]), pki.ALERT_ILLEGAL_PARAMETER, id="off the curve"
        ),
        pytest.param(lambda p: b"\x03\x00\x17\x01\x00", pki.ALERT_ILLEGAL_PARAMETER, id="infinity"),
    ],
)
def test_parse_params_refuses_anything_else(make_bad: Callable[[bytes], bytes], alert: int) -> None:
    _, point = ecc.generate_ecdhe()
    bad = make_bad(ecc.ecdhe_params(point))
    with pytest.raises(DtlsPkiError) as caught:
        ecc.parse_ecdhe_params(bad)
    assert caught.value.alert == alert


_VALID_PARAMS = ecc.ecdhe_params(bytes.fromhex(RFC5903_GR))


@settings(deadline=None, max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=120),
        st.binary(max_size=80).map(lambda tail: _VALID_PARAMS[:4] + tail),
        st.tuples(st.integers(0, len(_VALID_PARAMS) - 1), st.integers(0, 255)).map(
            lambda change: (
                _VALID_PARAMS[: change[0]] + bytes([change[1]]) + _VALID_PARAMS[change[0] + 1 :]
            )
        ),
    )
)
def test_parse_params_never_raises_anything_else(data: bytes) -> None:
    try:
        params, point, rest = ecc.parse_ecdhe_params(data)
    except DtlsPkiError as error:
        alert = error.alert
    else:
        assert params + rest == data
        assert params == ecc.ecdhe_params(point)
        return
    assert alert in (pki.ALERT_DECODE_ERROR, pki.ALERT_ILLEGAL_PARAMETER)


def test_signature_round_trip_and_signed_data() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    data = ecc.server_key_exchange_signed_data(b"c" * 32, b"s" * 32, b"params")
    assert data == b"c" * 32 + b"s" * 32 + b"params"
    signature = ecc.sign(key, data)
    assert signature[0] == 0x30  # DER SEQUENCE
    assert ecc.verify(key.public_key(), data, signature)
    assert not ecc.verify(key.public_key(), data[:-1], signature)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not ecc.verify(other, data, signature)
    assert ecc.SIGNATURE_ALGORITHM == (4, 3)


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=100))
def test_verify_answers_false_for_any_signature_bytes(signature: bytes) -> None:
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(RFC6979_U))
    assert ecc.verify(public, b"sample", signature) is False
