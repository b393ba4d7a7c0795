"""The sync exchange's wire format: the pairing frame header, its own types and bounds.

A sync runs on a trusted (already authenticated) connection after ``sync\\n`` (see
docs/PROTOCOL.md §8). Frames keep the pairing layout — version, type, u16 big-endian
length, body — with their own type numbers and a larger cap, since a statement carries
a whole certificate. The header is checked as soon as its four bytes arrive.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from certpair.protocol.frames import HEADER_SIZE, VERSION, ProtocolError

__all__ = [
    "MAX_SYNC_BODY",
    "StatementKind",
    "SyncFrame",
    "SyncFrameDecoder",
    "SyncFrameType",
    "SyncResult",
    "encode_sync_frame",
]

MAX_SYNC_BODY = 4096
_HEADER = struct.Struct(">BBH")


class SyncFrameType(enum.IntEnum):
    """Frame types of the sync exchange (disjoint from the pairing ones)."""

    HELLO = 0x21
    STATEMENT = 0x22
    ANSWER = 0x23


class StatementKind(enum.IntEnum):
    """What a STATEMENT says. 0x02..0xFF are reserved (e.g. introducing a third device)."""

    NOTHING = 0x00
    ROTATION = 0x01


class SyncResult(enum.IntEnum):
    """The ANSWER's code: how the receiver of a statement dealt with it."""

    ACCEPTED = 0
    BAD_SIGNATURE = 1
    CERTIFICATE_REFUSED = 2
    CONFLICT = 3
    UNSUPPORTED = 4
    NOT_A_PEER = 5

    @property
    def text(self) -> str:
        """A short lowercase phrase for users and logs."""
        return _TEXTS[self]


_TEXTS = {
    SyncResult.ACCEPTED: "accepted",
    SyncResult.BAD_SIGNATURE: "signature does not verify for this connection",
    SyncResult.CERTIFICATE_REFUSED: "the new certificate breaks the profile",
    SyncResult.CONFLICT: "conflicts with another peer or another rotation",
    SyncResult.UNSUPPORTED: "statement kind not supported",
    SyncResult.NOT_A_PEER: "not a stored peer",
}

_BOUNDS: dict[SyncFrameType, tuple[int, int]] = {
    SyncFrameType.HELLO: (32, 32),
    SyncFrameType.STATEMENT: (1, MAX_SYNC_BODY),
    SyncFrameType.ANSWER: (1, 1),
}
_KNOWN = frozenset(int(t) for t in SyncFrameType)


@dataclass(frozen=True, kw_only=True)
class SyncFrame:
    """One decoded sync frame."""

    type: SyncFrameType
    body: bytes


def encode_sync_frame(frame_type: SyncFrameType, body: bytes) -> bytes:
    """Encode one sync frame.

    Raises:
        ValueError: the body does not fit the type's bounds (a local error).
    """
    low, high = _BOUNDS[frame_type]
    if not low <= len(body) <= high:
        raise ValueError(f"a {frame_type.name} body is {low}..{high} bytes, not {len(body)}")
    return _HEADER.pack(VERSION, frame_type, len(body)) + body


class SyncFrameDecoder:
    """Buffer bytes and hand out whole frames one at a time."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Add received bytes (checked when :meth:`next_frame` reaches them)."""
        self._buffer += data

    def next_frame(self) -> SyncFrame | None:
        """Return the next complete frame, or None if it has not arrived yet.

        Raises:
            ProtocolError: bad version, unknown type, or a length outside the bounds.
        """
        if len(self._buffer) < HEADER_SIZE:
            return None
        version, type_byte, length = _HEADER.unpack_from(self._buffer)
        if version != VERSION:
            raise ProtocolError("unsupported protocol version")
        if type_byte not in _KNOWN:
            raise ProtocolError("unknown frame type")
        low, high = _BOUNDS[SyncFrameType(type_byte)]
        if not low <= length <= high:
            raise ProtocolError("frame length out of bounds")
        if len(self._buffer) < HEADER_SIZE + length:
            return None
        body = bytes(self._buffer[HEADER_SIZE:HEADER_SIZE + length])
        del self._buffer[:HEADER_SIZE + length]
        return SyncFrame(type=SyncFrameType(type_byte), body=body)

    @property
    def pending(self) -> int:
        """Bytes received but not yet handed out as a frame."""
        return len(self._buffer)
