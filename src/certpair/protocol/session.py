"""The pairing state machines, one per side, each driven by a transition table.

A session takes decrypted bytes from the pairing TLS connection
(:meth:`receive_data`) and returns events; bytes to send accumulate in a buffer the
driver drains with :meth:`data_to_send`. A (state, frame type) pair missing from the
table is a protocol error; every error is terminal, and a terminal session refuses
further input.

Message flow (joiner = CPace initiator = TLS client)::

    hmac:   J -> O  HMAC_REQUEST  m1 || name_j
            O -> J  HMAC_RESPONSE m2 || name_o           (O: Paired)   (J: Paired)
    cpace:  J -> O  CPACE_SHARE_A Ya || name_j
            O -> J  CPACE_SHARE_B Yb || Tb || name_o
            J -> O  CPACE_CONFIRM_A Ta                   (J: Paired)   (O: Paired)
"""

from __future__ import annotations

import enum
from typing import ClassVar

from certpair.codes import Mode, Secret
from certpair.protocol import cpace, hmac_proof
from certpair.protocol.events import Channel, Failed, FailureReason, Paired
from certpair.protocol.frames import Frame, FrameDecoder, FrameType, ProtocolError, encode_frame
from certpair.protocol.offer import Offer, OfferUnavailable

__all__ = [
    "AD_JOINER_LABEL",
    "AD_OFFERER_LABEL",
    "CI_LABEL",
    "EXPORTER_LABEL",
    "Event",
    "JoinerSession",
    "OffererSession",
    "SessionState",
    "cpace_ad",
    "cpace_ci",
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


class _AuthFailure(Exception):
    """Internal: a proof did not check. Reported to the peer as PAIRING_FAILED."""


def cpace_ci(channel: Channel) -> bytes:
    """CPace channel identifier: the label and both observed certificates, joiner first."""
    return cpace.lv_cat(CI_LABEL, channel.cert_joiner, channel.cert_offerer)


def cpace_ad(label: bytes, name: bytes) -> bytes:
    """CPace associated data: the role's label (version, mode, role) and the name."""
    return cpace.lv_cat(label, name)


def _decode_name(raw: bytes) -> str:
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


class _Session:
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
        except _AuthFailure:
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


class JoinerSession(_Session):
    """Device B: holds the typed secret, speaks first, TLS client, CPace initiator."""

    def __init__(
        self, *, secret: Secret, channel: Channel, name: str, scalar: bytes | None = None
    ) -> None:
        """Create the joiner's machine.

        Args:
            secret: the parsed secret; its format alone chose the mode.
            channel: the pairing connection's certificates and exporter.
            name: this device's name, sent to the offerer.
            scalar: 32 random bytes for CPace (required in cpace mode).

        Raises:
            ValueError: cpace mode without a 32-byte scalar (a local error).
        """
        super().__init__(channel=channel, name=name)
        self.secret = secret
        if secret.mode is Mode.CPACE and (scalar is None or len(scalar) != 32):
            raise ValueError("cpace mode needs a 32-byte scalar")
        self._scalar = scalar or b""
        self._ya = b""

    def start(self) -> None:
        """Queue the first message (m1 or Ya)."""
        if self.state is not SessionState.START:
            raise RuntimeError("start() called twice")
        ch = self.channel
        if self.secret.mode is Mode.HMAC:
            m1 = hmac_proof.compute(
                self.secret.value, hmac_proof.REQUEST_LABEL, ch.cert_joiner, ch.cert_offerer
            )
            self._send(FrameType.HMAC_REQUEST, m1 + self._name)
            self.state = SessionState.AWAIT_RESPONSE
        else:
            g = cpace.calculate_generator(self.secret.value, cpace_ci(ch), ch.exporter)
            self._ya = cpace.public_share(self._scalar, g)
            self._send(FrameType.CPACE_SHARE_A, self._ya + self._name)
            self.state = SessionState.AWAIT_SHARE_B

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the offerer; returns Paired or Failed when the run ends."""
        return self._receive(data)

    def _on_hmac_response(self, frame: Frame) -> Event:
        m2, name = frame.body[:32], _decode_name(frame.body[32:])
        ch = self.channel
        try:
            hmac_proof.verify(
                self.secret.value, hmac_proof.RESPONSE_LABEL, ch.cert_joiner, ch.cert_offerer, m2
            )
        except hmac_proof.InvalidProof:
            raise _AuthFailure from None
        self.state = SessionState.DONE
        return Paired(peer_name=name, peer_cert_der=ch.cert_offerer, mode=Mode.HMAC)

    def _on_share_b(self, frame: Frame) -> Event:
        yb, tb = frame.body[:32], frame.body[32:96]
        raw_name = frame.body[96:]
        name = _decode_name(raw_name)
        if yb == self._ya:
            raise _AuthFailure
        ch = self.channel
        ada = cpace_ad(AD_JOINER_LABEL, self._name)
        adb = cpace_ad(AD_OFFERER_LABEL, raw_name)
        try:
            k = cpace.shared_point(self._scalar, yb)
        except cpace.InvalidShare:
            raise _AuthFailure from None
        isk = cpace.intermediate_session_key(ch.exporter, k, self._ya, ada, yb, adb)
        mac_key = cpace.confirmation_key(ch.exporter, isk)
        try:
            cpace.verify_confirmation_tag(mac_key, yb, adb, tb)
        except cpace.InvalidTag:
            raise _AuthFailure from None
        self._send(FrameType.CPACE_CONFIRM_A, cpace.confirmation_tag(mac_key, self._ya, ada))
        self.state = SessionState.DONE
        return Paired(peer_name=name, peer_cert_der=ch.cert_offerer, mode=Mode.CPACE)

    _table: ClassVar[dict[tuple[SessionState, FrameType], str]] = {
        (SessionState.AWAIT_RESPONSE, FrameType.HMAC_RESPONSE): "_on_hmac_response",
        (SessionState.AWAIT_SHARE_B, FrameType.CPACE_SHARE_B): "_on_share_b",
    }


class OffererSession(_Session):
    """Device A: showed the secret, listens, TLS server, CPace responder.

    One session per accepted connection; all of them share one :class:`Offer`, which
    admits one proof at a time and counts failures. ``attempt_spent`` becomes true when
    this session's proof counted as a failed attempt against the offer.
    """

    def __init__(
        self, *, offer: Offer, channel: Channel, name: str, scalar: bytes | None = None
    ) -> None:
        """Create the offerer's machine for one connection.

        Args:
            offer: the shown secret and its budget.
            channel: the pairing connection's certificates and exporter.
            name: this device's name, sent to the joiner with m2 (hmac, after m1
                checks) or with Yb and Tb (cpace).
            scalar: 32 random bytes for CPace (required in cpace mode).

        Raises:
            ValueError: cpace mode without a 32-byte scalar (a local error).
        """
        super().__init__(channel=channel, name=name)
        self.offer = offer
        if offer.mode is Mode.CPACE and (scalar is None or len(scalar) != 32):
            raise ValueError("cpace mode needs a 32-byte scalar")
        self._scalar = scalar or b""
        self._claimed = False
        self.attempt_spent = False
        self._mac_key = b""
        self._ya = b""
        self._ada = b""
        self._joiner_name = ""
        self.state = SessionState.AWAIT_PROOF

    def receive_data(self, data: bytes, *, now: float) -> list[Event]:
        """Feed bytes from the joiner.

        Args:
            data: decrypted bytes, in order.
            now: the current time, for the offer's expiry.

        Returns:
            Paired or Failed when the run ends, else nothing.
        """
        self._now = now
        return self._receive(data)

    def _claim(self) -> Event | None:
        try:
            self.offer.claim(self._now)
        except OfferUnavailable as exc:
            return self._fail(exc.reason)
        self._claimed = True
        return None

    def _abandon(self) -> None:
        # Any claimed run that does not end in Paired spends one attempt: a joiner that
        # received Tb and vanished has still had its guess checked.
        if self._claimed:
            self._claimed = False
            self.attempt_spent = True
            self.offer.release(paired=False)

    def _succeed(self, name: str, mode: Mode) -> Paired:
        self._claimed = False
        self.offer.release(paired=True)
        self.state = SessionState.DONE
        return Paired(peer_name=name, peer_cert_der=self.channel.cert_joiner, mode=mode)

    def _unexpected(self, frame: Frame) -> Event:
        if self.state is SessionState.AWAIT_PROOF and frame.type in (
            FrameType.HMAC_REQUEST,
            FrameType.CPACE_SHARE_A,
        ):
            return self._fail(FailureReason.MODE_MISMATCH)
        return super()._unexpected(frame)

    def _on_hmac_request(self, frame: Frame) -> Event | None:
        if self.offer.mode is not Mode.HMAC:
            return self._fail(FailureReason.MODE_MISMATCH)
        m1, name = frame.body[:32], _decode_name(frame.body[32:])
        refused = self._claim()
        if refused is not None:
            return refused
        ch = self.channel
        key = self.offer.secret.value
        try:
            hmac_proof.verify(key, hmac_proof.REQUEST_LABEL, ch.cert_joiner, ch.cert_offerer, m1)
        except hmac_proof.InvalidProof:
            raise _AuthFailure from None
        m2 = hmac_proof.compute(key, hmac_proof.RESPONSE_LABEL, ch.cert_joiner, ch.cert_offerer)
        self._send(FrameType.HMAC_RESPONSE, m2 + self._name)
        return self._succeed(name, Mode.HMAC)

    def _on_share_a(self, frame: Frame) -> Event | None:
        if self.offer.mode is not Mode.CPACE:
            return self._fail(FailureReason.MODE_MISMATCH)
        ya, raw_name = frame.body[:32], frame.body[32:]
        self._joiner_name = _decode_name(raw_name)
        refused = self._claim()
        if refused is not None:
            return refused
        ch = self.channel
        g = cpace.calculate_generator(self.offer.secret.value, cpace_ci(ch), ch.exporter)
        yb = cpace.public_share(self._scalar, g)
        if ya == yb:
            raise _AuthFailure
        try:
            k = cpace.shared_point(self._scalar, ya)
        except cpace.InvalidShare:
            raise _AuthFailure from None
        self._ya, self._ada = ya, cpace_ad(AD_JOINER_LABEL, raw_name)
        adb = cpace_ad(AD_OFFERER_LABEL, self._name)
        isk = cpace.intermediate_session_key(ch.exporter, k, ya, self._ada, yb, adb)
        self._mac_key = cpace.confirmation_key(ch.exporter, isk)
        tb = cpace.confirmation_tag(self._mac_key, yb, adb)
        self._send(FrameType.CPACE_SHARE_B, yb + tb + self._name)
        self.state = SessionState.AWAIT_CONFIRM
        return None

    def _on_confirm_a(self, frame: Frame) -> Event:
        try:
            cpace.verify_confirmation_tag(self._mac_key, self._ya, self._ada, frame.body)
        except cpace.InvalidTag:
            raise _AuthFailure from None
        return self._succeed(self._joiner_name, Mode.CPACE)

    _table: ClassVar[dict[tuple[SessionState, FrameType], str]] = {
        (SessionState.AWAIT_PROOF, FrameType.HMAC_REQUEST): "_on_hmac_request",
        (SessionState.AWAIT_PROOF, FrameType.CPACE_SHARE_A): "_on_share_a",
        (SessionState.AWAIT_CONFIRM, FrameType.CPACE_CONFIRM_A): "_on_confirm_a",
    }

