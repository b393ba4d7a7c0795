"""The wire format: versioned, typed, length-prefixed frames with a hard size cap.

::

    +---------+------+------------------+----------------+
    | version | type | length (u16, BE) | body (length)  |
    +---------+------+------------------+----------------+

The header is checked (version, known type, length within the type's bounds) as soon
as its four bytes arrive, before any body byte is buffered.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "HEADER_SIZE",
    "MAX_BODY",
    "VERSION",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "ProtocolError",
    "encode_frame",
]

VERSION = 1
HEADER_SIZE = 4
MAX_BODY = 256
_HEADER = struct.Struct(">BBH")


class ProtocolError(Exception):
    """The peer broke the wire format or the message order (a remote error)."""


class FrameType(enum.IntEnum):
    """Frame types; the body layout of each is in docs/PROTOCOL.md."""

    HMAC_REQUEST = 0x01
    HMAC_RESPONSE = 0x02
    CPACE_SHARE_A = 0x11
    CPACE_SHARE_B = 0x12
    CPACE_CONFIRM_A = 0x13
    COMMITTED = 0x20
    ERROR = 0x7F


# Inclusive body-length bounds per type. Names are 1..64 bytes.
_BOUNDS: dict[FrameType, tuple[int, int]] = {
    FrameType.HMAC_REQUEST: (32 + 1, 32 + 64),
    FrameType.HMAC_RESPONSE: (32 + 1, 32 + 64),
    FrameType.CPACE_SHARE_A: (32 + 1, 32 + 64),
    FrameType.CPACE_SHARE_B: (32 + 64 + 1, 32 + 64 + 64),
    FrameType.CPACE_CONFIRM_A: (64, 64),
    FrameType.COMMITTED: (0, 0),
    FrameType.ERROR: (1, 1),
}
_KNOWN_TYPES = frozenset(int(t) for t in FrameType)
assert max(high for _, high in _BOUNDS.values()) <= MAX_BODY


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One decoded frame."""

    type: FrameType
    body: bytes


def encode_frame(frame_type: FrameType, body: bytes) -> bytes:
    """Encode one frame.

    Args:
        frame_type: the frame's type.
        body: the body; its length must fit the type's bounds.

    Returns:
        Header and body.

    Raises:
        ValueError: the body does not fit the type (a local error).
    """
    low, high = _BOUNDS[frame_type]
    if not low <= len(body) <= high:
        raise ValueError(f"a {frame_type.name} body is {low}..{high} bytes, not {len(body)}")
    return _HEADER.pack(VERSION, frame_type, len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed bytes, take whole frames.

    After the first :class:`ProtocolError` the decoder refuses every further call.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes and return every frame now complete.

        Args:
            data: bytes from the peer, in order.

        Returns:
            Complete frames, in order; possibly none.

        Raises:
            ProtocolError: bad version, unknown type, or a length outside the type's
                bounds (checked on the header, before the body is buffered).
        """
        if self._broken:
            raise ProtocolError("decoder already failed")
        frames: list[Frame] = []
        view = memoryview(data)
        while view:
            if len(self._buffer) < HEADER_SIZE:
                take = HEADER_SIZE - len(self._buffer)
                self._buffer += view[:take]
                view = view[take:]
                if len(self._buffer) < HEADER_SIZE:
                    break
                self._check_header()
            _, _, length = _HEADER.unpack_from(self._buffer)
            missing = HEADER_SIZE + length - len(self._buffer)
            self._buffer += view[:missing]
            view = view[missing:]
            if len(self._buffer) == HEADER_SIZE + length:
                frames.append(
                    Frame(type=FrameType(self._buffer[1]), body=bytes(self._buffer[HEADER_SIZE:]))
                )
                self._buffer.clear()
        return frames

    def _check_header(self) -> None:
        version, type_byte, length = _HEADER.unpack_from(self._buffer)
        try:
            if version != VERSION:
                raise ProtocolError("unsupported protocol version")
            if type_byte not in _KNOWN_TYPES:
                raise ProtocolError("unknown frame type")
            low, high = _BOUNDS[FrameType(type_byte)]
            if not low <= length <= high:
                raise ProtocolError("frame length out of bounds")
        except ProtocolError:
            self._broken = True
            raise

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held in the buffer."""
        return len(self._buffer)
