"""DTLS 1.2 (RFC 6347) in the RFC 7925 profile, sans-I/O: bytes in, bytes out, time passed in.

The layers, bottom up: :mod:`.record` (records, epochs, AES-128-CCM-8,
the anti-replay window), :mod:`.keys` (the TLS 1.2 PRF and the key
schedule), :mod:`.messages` (handshake messages, fragmentation and bounded
reassembly, alerts), :mod:`.cookie` (the stateless HelloVerifyRequest
exchange) and :mod:`.session` (one peer's handshake and connection state
machine, :class:`~.session.DtlsSession`); beside them :mod:`.credentials`
(PSKs, certificates, raw public keys and trust), :mod:`.ecc` (ECDHE and
ECDSA on P-256) and :mod:`.pki` (checking a peer's chain or raw public
key). Needs the ``dtls`` extra
(``cryptography``); nothing here imports trio or opens a socket.
"""
