"""The four CoAP message types (RFC 7252 §3, §4).

Owns the two-bit Type field; knows nothing of how messages of each type are
handled (that is the reliability layer's business).
"""

from __future__ import annotations

import enum

__all__ = ["ACK", "CON", "NON", "RST", "Type"]


class Type(enum.IntEnum):
    """The message type carried in the two T bits of the UDP header."""

    #: Confirmable: retransmitted until acknowledged or reset (§4.2).
    CON = 0
    #: Non-confirmable: sent once, never acknowledged (§4.3).
    NON = 1
    #: Acknowledgement of a CON message, possibly piggybacking a response.
    ACK = 2
    #: Reset: the recipient could not process a message.
    RST = 3

    def __str__(self) -> str:
        return self.name


CON = Type.CON
NON = Type.NON
ACK = Type.ACK
RST = Type.RST
