"""What both pairing machines share: labels, states, names, and the session base.

The base decodes frames, dispatches each (state, frame type) pair through the
subclass's transition table, queues bytes for :meth:`SessionBase.data_to_send`, and
makes every failure terminal. The two machines are in :mod:`certpair.protocol.session`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from certpair.names import BadName, check_name
from certpair.protocol import cpace
from certpair.protocol.events import (
    Channel,
    Confirmed,
    Failed,
    FailureReason,
    Paired,
    Unconfirmed,
)
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
    "Table",
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

Event = Paired | Failed | Confirmed | Unconfirmed


class SessionState(enum.Enum):
    """States of both machines."""

    START = "start"
    AWAIT_RESPONSE = "await_response"
    AWAIT_SHARE_B = "await_share_b"
    AWAIT_PROOF = "await_proof"
    AWAIT_CONFIRM = "await_confirm"
    # The proof checked and Paired was returned: the driver stores the peer, then calls
    # committed() or commit_failed(). Nothing is read meanwhile.
    COMMITTING = "committing"
    # This side has said its last word and waits for the peer's COMMITTED.
    AWAIT_COMMITTED = "await_committed"
    DONE = "done"
    UNCONFIRMED = "unconfirmed"
    FAILED = "failed"


_TERMINAL = frozenset({SessionState.DONE, SessionState.UNCONFIRMED, SessionState.FAILED})


class AuthFailure(Exception):
    """Internal: a proof did not check. Reported to the peer as PAIRING_FAILED."""


def cpace_ci(channel: Channel) -> bytes:
    """CPace channel identifier: the label and both observed certificates, joiner first."""
    return cpace.lv_cat(CI_LABEL, channel.cert_joiner, channel.cert_offerer)


def cpace_ad(label: bytes, name: bytes) -> bytes:
    """CPace associated data: the role's label (version, mode, role) and the name."""
    return cpace.lv_cat(label, name)


def decode_name(raw: bytes) -> str:
    """The peer's name from a frame; a name that breaks the rule is a protocol error.

    The rule (:func:`certpair.names.check_name`): 1..64 bytes of UTF-8, not blank, no
    control characters, no Unicode format characters (bidi overrides, zero-width).
    """
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("peer name is not UTF-8") from None
    try:
        return check_name(name)
    except BadName as exc:
        raise ProtocolError(f"peer name refused: {exc}") from None


def _encode_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= _MAX_NAME:
        raise ValueError("own name must be 1..64 bytes of UTF-8")
    return raw


Table = Mapping[tuple[SessionState, FrameType], Callable[[Any, Frame], "Event | None"]]
"""A machine's transition table: (state, frame type) -> handler function."""


class SessionBase:
    """What both machines share: decoding, the output buffer, terminal states."""

    # (state, frame type) -> the handler (a function of the subclass, called with the
    # session and the frame); anything absent is an error.
    _table: ClassVar[Table]

    def __init__(self, *, channel: Channel, name: str) -> None:
        self.channel = channel
        self._name = _encode_name(name)
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self.state = SessionState.START
        self._now = 0.0
        # The authenticated peer, once the proof has checked.
        self._proven: Paired | None = None
        # Frames that arrived behind the proof, judged once the commit is done.
        self._held: list[Frame] = []
        self._started = False

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the peer."""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def finished(self) -> bool:
        """Whether the session has reached DONE, UNCONFIRMED or FAILED."""
        return self.state in _TERMINAL

    def _send(self, frame_type: FrameType, body: bytes) -> None:
        self._out += encode_frame(frame_type, body)

    def _receive(self, data: bytes) -> list[Event]:
        if self.finished:
            raise RuntimeError(f"session is {self.state.value}; no more input")
        if self.state is SessionState.COMMITTING:
            raise RuntimeError("committed() or commit_failed() must come first")
        self._started = True
        try:
            return self._run(self._decoder.feed(data))
        except ProtocolError:
            return [self._protocol_error()]

    def _run(self, frames: list[Frame]) -> list[Event]:
        events: list[Event] = []
        try:
            for position, frame in enumerate(frames):
                if self.finished:
                    # The outcome is decided; bytes that trail it change nothing.
                    break
                if self.state is SessionState.COMMITTING:
                    self._held = frames[position:]
                    break
                event = self._dispatch(frame)
                if event is not None:
                    events.append(event)
        except ProtocolError:
            events.append(self._protocol_error())
        return events

    def _protocol_error(self) -> Failed | Unconfirmed:
        if self.state is not SessionState.AWAIT_COMMITTED:
            return self._fail(FailureReason.PROTOCOL_ERROR)
        # Proven, but the peer's word is garbled: whether it stored this device is
        # unknown, which is what Unconfirmed says. Only an ERROR frame means "I did not".
        self._send(FrameType.ERROR, bytes([FailureReason.PROTOCOL_ERROR]))
        return self._unconfirmed()

    def _unconfirmed(self) -> Unconfirmed:
        self._held = []
        self.state = SessionState.UNCONFIRMED
        event = self._peer_event(Unconfirmed)
        assert isinstance(event, Unconfirmed)
        return event

    def committed(self) -> list[Event]:
        """Tell the session the driver has stored the peer that ``Paired`` named.

        Queues what tells the peer so (m2 or COMMITTED) and judges any frames that
        arrived behind the proof.

        Returns:
            Events from those frames; usually none.

        Raises:
            RuntimeError: no ``Paired`` is waiting for its commit (a local error).
        """
        if self.state is not SessionState.COMMITTING:
            raise RuntimeError(f"session is {self.state.value}; nothing to commit")
        self._after_commit()
        held, self._held = self._held, []
        return self._run(held)

    def commit_failed(self) -> Failed:
        """Tell the session the driver could not store the peer.

        Queues ERROR(STORE_FAILED), so the peer stores nothing (or undoes its commit).

        Returns:
            The session's ``Failed`` event.

        Raises:
            RuntimeError: no ``Paired`` is waiting for its commit (a local error).
        """
        if self.state is not SessionState.COMMITTING:
            raise RuntimeError(f"session is {self.state.value}; nothing to commit")
        self._held = []
        return self._fail(FailureReason.STORE_FAILED)

    def _after_commit(self) -> None:
        """Hook: queue the message that follows this side's commit; set the next state."""
        raise NotImplementedError

    def _prove(self, paired: Paired) -> Paired:
        """The proof checked: remember the peer and wait for the driver's commit."""
        self._proven = paired
        self.state = SessionState.COMMITTING
        return paired

    def _peer_event(self, kind: type[Confirmed] | type[Unconfirmed]) -> Confirmed | Unconfirmed:
        proven = self._proven
        assert proven is not None
        return kind(peer_name=proven.peer_name, peer_cert_der=proven.peer_cert_der,
                    mode=proven.mode)

    def _dispatch(self, frame: Frame) -> Event | None:
        if frame.type is FrameType.ERROR:
            return self._fail_remote(frame.body[0])
        handler = self._table.get((self.state, frame.type))
        if handler is None:
            return self._unexpected(frame)
        try:
            return handler(self, frame)
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

    def refuse_certificate(self) -> Failed:
        """End the session before any proof because the peer's certificate is refused.

        Queues ``ERROR(CERTIFICATE_REFUSED)`` for the peer. Call it right after the TLS
        handshake, before any input: nothing secret-dependent has been sent or judged.

        Raises:
            RuntimeError: the session has already started (a local error).
        """
        return self.refuse_at_start(FailureReason.CERTIFICATE_REFUSED)

    def refuse_at_start(self, reason: FailureReason) -> Failed:
        """End the session before it has exchanged any frame, telling the peer ``reason``.

        For the checks a driver makes right after the TLS handshake: the peer's
        certificate (``CERTIFICATE_REFUSED``), or a store that cannot be read
        (``STORE_FAILED``). Nothing secret-dependent has been sent or judged. Allowed in
        each machine's first state: ``START`` (the joiner, before it sends its proof)
        and ``AWAIT_PROOF`` (the offerer, which starts waiting for the joiner's first
        frame), as long as no frame has gone either way.

        Raises:
            RuntimeError: the session has already started (a local error).
        """
        if self.state not in (SessionState.START, SessionState.AWAIT_PROOF) or self._started:
            raise RuntimeError("refuse_at_start() after the session started")
        return self._fail(reason)

    def connection_lost(self) -> Failed | Unconfirmed | None:
        """Tell the session the connection ended (closed, reset or timed out).

        Returns:
            None if the session had finished; ``Unconfirmed`` if the proof had checked
            but the peer's commitment never arrived (the outcome on the other side is
            unknown); else ``Failed(CONNECTION_LOST)``.
        """
        if self.finished:
            return None
        if self.state in (SessionState.COMMITTING, SessionState.AWAIT_COMMITTED):
            return self._unconfirmed()
        return self._fail(FailureReason.CONNECTION_LOST, tell_peer=False)
