"""The pairing state machines, one per side, each driven by a transition table.

A session takes decrypted bytes from the pairing TLS connection
(:meth:`receive_data`) and returns events; bytes to send accumulate in a buffer the
driver drains with :meth:`data_to_send`. A (state, frame type) pair missing from the
table is a protocol error; every error is terminal, and a terminal session refuses
further input.

Message flow (joiner = CPace initiator = TLS client)::

    hmac:   J -> O  HMAC_REQUEST  m1 || name_j           (O: Paired, commits)
            O -> J  HMAC_RESPONSE m2 || name_o           (J: Paired, commits)
            J -> O  COMMITTED                            (O: Confirmed)
    cpace:  J -> O  CPACE_SHARE_A Ya || name_j
            O -> J  CPACE_SHARE_B Yb || Tb || name_o
            J -> O  CPACE_CONFIRM_A Ta                   (O: Paired, commits)
            O -> J  COMMITTED                            (J: Paired, commits)
            J -> O  COMMITTED                            (O: Confirmed)

On ``Paired`` the driver stores the peer and then calls :meth:`committed` (which
queues the next message: m2 in hmac mode, COMMITTED otherwise) or
:meth:`commit_failed` (which queues ERROR(STORE_FAILED) instead). A side whose
connection ends after the proof checked but before the peer's COMMITTED (or m2) gets
``Unconfirmed`` from :meth:`connection_lost`: the peer may or may not trust it.
"""

from __future__ import annotations

from typing import ClassVar

from certpair.codes import Mode, Secret
from certpair.protocol import cpace, hmac_proof
from certpair.protocol.events import Channel, Confirmed, FailureReason, Paired
from certpair.protocol.frames import Frame, FrameType
from certpair.protocol.machine import (
    AD_JOINER_LABEL,
    AD_OFFERER_LABEL,
    CI_LABEL,
    EXPORTER_LABEL,
    AuthFailure,
    Event,
    SessionBase,
    SessionState,
    Table,
    cpace_ad,
    cpace_ci,
    decode_name,
)
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


class JoinerSession(SessionBase):
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
        self._started = True
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
        m2, name = frame.body[:32], decode_name(frame.body[32:])
        ch = self.channel
        try:
            hmac_proof.verify(
                self.secret.value, hmac_proof.RESPONSE_LABEL, ch.cert_joiner, ch.cert_offerer, m2
            )
        except hmac_proof.InvalidProof:
            raise AuthFailure from None
        # m2 is the offerer's word that it has stored this device.
        return self._prove(Paired(peer_name=name, peer_cert_der=ch.cert_offerer,
                                  mode=Mode.HMAC))

    def _on_share_b(self, frame: Frame) -> Event | None:
        yb, tb = frame.body[:32], frame.body[32:96]
        raw_name = frame.body[96:]
        name = decode_name(raw_name)
        if yb == self._ya:
            raise AuthFailure
        ch = self.channel
        ada = cpace_ad(AD_JOINER_LABEL, self._name)
        adb = cpace_ad(AD_OFFERER_LABEL, raw_name)
        try:
            k = cpace.shared_point(self._scalar, yb)
        except cpace.InvalidShare:
            raise AuthFailure from None
        isk = cpace.intermediate_session_key(ch.exporter, k, self._ya, ada, yb, adb)
        mac_key = cpace.confirmation_key(ch.exporter, isk)
        try:
            cpace.verify_confirmation_tag(mac_key, yb, adb, tb)
        except cpace.InvalidTag:
            raise AuthFailure from None
        self._send(FrameType.CPACE_CONFIRM_A, cpace.confirmation_tag(mac_key, self._ya, ada))
        # Authenticated, but the offerer has not stored this device yet: wait for its word.
        self._proven = Paired(peer_name=name, peer_cert_der=ch.cert_offerer, mode=Mode.CPACE)
        self.state = SessionState.AWAIT_COMMITTED
        return None

    def _on_committed(self, frame: Frame) -> Event:
        del frame
        assert self._proven is not None
        return self._prove(self._proven)

    def _after_commit(self) -> None:
        self._send(FrameType.COMMITTED, b"")
        self.state = SessionState.DONE

    # The handlers themselves, not their names: a renamed handler fails mypy, not a peer.
    _table: ClassVar[Table] = {
        (SessionState.AWAIT_RESPONSE, FrameType.HMAC_RESPONSE): _on_hmac_response,
        (SessionState.AWAIT_SHARE_B, FrameType.CPACE_SHARE_B): _on_share_b,
        (SessionState.AWAIT_COMMITTED, FrameType.COMMITTED): _on_committed,
    }


class OffererSession(SessionBase):
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
        # What tells the joiner this side has committed: m2, or COMMITTED.
        self._reply: tuple[FrameType, bytes] = (FrameType.COMMITTED, b"")
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
        return self._prove(Paired(peer_name=name, peer_cert_der=self.channel.cert_joiner,
                                  mode=mode))

    def _after_commit(self) -> None:
        self._send(*self._reply)
        self.state = SessionState.AWAIT_COMMITTED

    def _on_committed(self, frame: Frame) -> Event:
        del frame
        self.state = SessionState.DONE
        event = self._peer_event(Confirmed)
        assert isinstance(event, Confirmed)
        return event

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
        m1, name = frame.body[:32], decode_name(frame.body[32:])
        refused = self._claim()
        if refused is not None:
            return refused
        ch = self.channel
        key = self.offer.secret.value
        try:
            hmac_proof.verify(key, hmac_proof.REQUEST_LABEL, ch.cert_joiner, ch.cert_offerer, m1)
        except hmac_proof.InvalidProof:
            raise AuthFailure from None
        m2 = hmac_proof.compute(key, hmac_proof.RESPONSE_LABEL, ch.cert_joiner, ch.cert_offerer)
        # m2 goes out only once the driver has committed: it is this side's word.
        self._reply = (FrameType.HMAC_RESPONSE, m2 + self._name)
        return self._succeed(name, Mode.HMAC)

    def _on_share_a(self, frame: Frame) -> Event | None:
        if self.offer.mode is not Mode.CPACE:
            return self._fail(FailureReason.MODE_MISMATCH)
        ya, raw_name = frame.body[:32], frame.body[32:]
        self._joiner_name = decode_name(raw_name)
        # K = yb·Ya needs no secret: a low-order (invalid) Ya is refused before the offer
        # is claimed, since it cannot be a guess at the code and must spend nothing.
        try:
            k = cpace.shared_point(self._scalar, ya)
        except cpace.InvalidShare:
            return self._fail(FailureReason.PROTOCOL_ERROR)
        refused = self._claim()
        if refused is not None:
            return refused
        ch = self.channel
        g = cpace.calculate_generator(self.offer.secret.value, cpace_ci(ch), ch.exporter)
        yb = cpace.public_share(self._scalar, g)
        if ya == yb:
            raise AuthFailure
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
            raise AuthFailure from None
        return self._succeed(self._joiner_name, Mode.CPACE)

    _table: ClassVar[Table] = {
        (SessionState.AWAIT_PROOF, FrameType.HMAC_REQUEST): _on_hmac_request,
        (SessionState.AWAIT_PROOF, FrameType.CPACE_SHARE_A): _on_share_a,
        (SessionState.AWAIT_CONFIRM, FrameType.CPACE_CONFIRM_A): _on_confirm_a,
        (SessionState.AWAIT_COMMITTED, FrameType.COMMITTED): _on_committed,
    }
