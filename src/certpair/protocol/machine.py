"""What both pairing machines share: labels, states, names, and the session base.

The base decodes frames, dispatches each (state, frame type) pair through the
subclass's transition table, queues bytes for :meth:`SessionBase.data_to_send`, and
makes every failure terminal. The two machines are in :mod:`certpair.protocol.session`.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from certpair.protocol import cpace
from certpair.protocol.events import Channel, Failed, FailureReason, Paired
from certpair.protocol.frames import Frame, FrameDecoder, FrameType, ProtocolError, encode_frame

__all__ = [
    "AD_JOINER_LABEL",
    "AD_OFFERER_LABEL",
    "CI_LABEL",
    "EXPORTER_LABEL",
    "AuthFailure",
    "Event",
    "SessionBase",
    "SessionState",
    "cpace_ad",
    "cpace_ci",
    "decode_name",
]

# Labels carry the protocol version and, where a message has a direction, the role.
EXPORTER_LABEL = b"EXPORTER-certpair/1 pairing"
CI_LABEL = b"certpair/1 cpace ci"
AD_JOINER_LABEL = b"certpair/1 cpace joiner"
AD_OFFERER_LABEL = b"certpair/1 cpace offerer"
_MAX_NAME = 64
# Reasons an ERROR frame may carry; CONNECTION_LOST is local only.
_WIRE_REASONS = frozenset(int(r) for r in FailureReason) - {FailureReason.CONNECTION_LOST}

Event = Paired | Failed


class SessionState(enum.Enum):
    """States of both machines."""

    START = "start"
    AWAIT_RESPONSE = "await_response"
    AWAIT_SHARE_B = "await_share_b"
    AWAIT_PROOF = "await_proof"
    AWAIT_CONFIRM = "await_confirm"
    DONE = "done"
    FAILED = "failed"


class AuthFailure(Exception):
    """Internal: a proof did not check. Reported to the peer as PAIRING_FAILED."""


def cpace_ci(channel: Channel) -> bytes:
    """CPace channel identifier: the label and both observed certificates, joiner first."""
    return cpace.lv_cat(CI_LABEL, channel.cert_joiner, channel.cert_offerer)


def cpace_ad(label: bytes, name: bytes) -> bytes:
    """CPace associated data: the role's label (version, mode, role) and the name."""
    return cpace.lv_cat(label, name)


def decode_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("peer name is not UTF-8") from None
    if not name or any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in name):
        raise ProtocolError("peer name is empty or has control characters")
    return name


def _encode_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= _MAX_NAME:
        raise ValueError("own name must be 1..64 bytes of UTF-8")
    return raw


class SessionBase:
    """What both machines share: decoding, the output buffer, terminal states."""

    # (state, frame type) -> name of the handler method; anything absent is an error.
    _table: ClassVar[dict[tuple[SessionState, FrameType], str]]

    def __init__(self, *, channel: Channel, name: str) -> None:
        self.channel = channel
        self._name = _encode_name(name)
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self.state = SessionState.START
        self._now = 0.0

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the peer."""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def finished(self) -> bool:
        """Whether the session has reached DONE or FAILED."""
        return self.state in (SessionState.DONE, SessionState.FAILED)

    def _send(self, frame_type: FrameType, body: bytes) -> None:
        self._out += encode_frame(frame_type, body)

    def _receive(self, data: bytes) -> list[Event]:
        if self.finished:
            raise RuntimeError(f"session is {self.state.value}; no more input")
        events: list[Event] = []
        try:
            for frame in self._decoder.feed(data):
                if self.finished:
                    # The outcome is decided; bytes that trail it change nothing.
                    break
                event = self._dispatch(frame)
                if event is not None:
                    events.append(event)
        except ProtocolError:
            events.append(self._fail(FailureReason.PROTOCOL_ERROR))
        return events

    def _dispatch(self, frame: Frame) -> Event | None:
        if frame.type is FrameType.ERROR:
            return self._fail_remote(frame.body[0])
        handler = self._table.get((self.state, frame.type))
        if handler is None:
            return self._unexpected(frame)
        try:
            event: Event | None = getattr(self, handler)(frame)
            return event
        except AuthFailure:
            return self._fail(FailureReason.PAIRING_FAILED)

    def _unexpected(self, frame: Frame) -> Event:
        del frame
        raise ProtocolError("unexpected frame")

    def _fail_remote(self, code: int) -> Failed:
        reason = (
            FailureReason(code) if code in _WIRE_REASONS else FailureReason.PROTOCOL_ERROR
        )
        self._abandon()
        self.state = SessionState.FAILED
        return Failed(reason=reason, remote=True)

    def _fail(self, reason: FailureReason, *, tell_peer: bool = True) -> Failed:
        self._abandon()
        if tell_peer and reason is not FailureReason.CONNECTION_LOST:
            self._send(FrameType.ERROR, bytes([reason]))
        self.state = SessionState.FAILED
        return Failed(reason=reason)

    def _abandon(self) -> None:
        """Hook: give back whatever the session holds (the offer)."""

    def connection_lost(self) -> Failed | None:
        """Tell the session the connection ended; returns Failed unless it was finished."""
        if self.finished:
            return None
        return self._fail(FailureReason.CONNECTION_LOST, tell_peer=False)
