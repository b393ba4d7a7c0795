"""Helpers for the sans-I/O protocol tests: fixed certificates, channels, an in-memory link.

No fixtures and no I/O: the certificates are built in memory from fixed Ed25519 seeds
(Ed25519 signatures are deterministic, so the DER is the same on every run), and the
:class:`Link` plays the part of the network between a :class:`JoinerSession` and an
:class:`OffererSession`, the way h11's ``tests/helpers.py`` pairs two connections.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certpair.codes import Mode, Secret, damm_check_digit, generate_hmac_key, parse_secret
from certpair.protocol.events import Channel, Failed, FailureReason, Paired
from certpair.protocol.frames import Frame, FrameDecoder, FrameType, encode_frame
from certpair.protocol.offer import Offer
from certpair.protocol.session import Event, JoinerSession, OffererSession

__all__ = [
    "BODY_BOUNDS",
    "EXPORTER_1",
    "EXPORTER_2",
    "JOINER_CERT",
    "JOINER_NAME",
    "JOINER_SCALAR",
    "MALLORY_CERT",
    "OFFERER_CERT",
    "OFFERER_NAME",
    "OFFERER_SCALAR",
    "Direction",
    "Link",
    "error_frame",
    "failed_with",
    "fixed_randbelow",
    "make_channel",
    "make_code",
    "make_hmac_key",
    "make_joiner",
    "make_link",
    "make_offer",
    "make_offerer",
    "make_secret",
    "make_self_signed_cert",
    "split_frames",
]

_NOT_BEFORE: Final = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER: Final = datetime.datetime(2036, 1, 1, tzinfo=datetime.UTC)


def make_self_signed_cert(name: str, seed: int) -> bytes:
    """Return the DER of a fixed self-signed Ed25519 certificate for ``name``.

    The same ``(name, seed)`` always gives the same bytes.
    """
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"key %d" % seed).digest())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(1000 + seed)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, None)
    )
    return cert.public_bytes(Encoding.DER)


JOINER_CERT: Final = make_self_signed_cert("joiner.test", 1)
OFFERER_CERT: Final = make_self_signed_cert("offerer.test", 2)
# The active attacker's own certificate: all it can present in a TLS handshake.
MALLORY_CERT: Final = make_self_signed_cert("mallory.test", 3)

EXPORTER_1: Final = hashlib.sha256(b"exporter 1").digest()
EXPORTER_2: Final = hashlib.sha256(b"exporter 2").digest()
JOINER_SCALAR: Final = hashlib.sha256(b"scalar joiner").digest()
OFFERER_SCALAR: Final = hashlib.sha256(b"scalar offerer").digest()
JOINER_NAME: Final = "joiner-laptop"
OFFERER_NAME: Final = "offerer-desktop"

# The body-length bounds of docs/PROTOCOL.md section 3, written out independently.
BODY_BOUNDS: Final = {
    FrameType.HMAC_REQUEST: (33, 96),
    FrameType.HMAC_RESPONSE: (33, 96),
    FrameType.CPACE_SHARE_A: (33, 96),
    FrameType.CPACE_SHARE_B: (97, 160),
    FrameType.CPACE_CONFIRM_A: (64, 64),
    FrameType.COMMITTED: (0, 0),
    FrameType.ERROR: (1, 1),
}


def fixed_randbelow(values: list[int]) -> Callable[[int], int]:
    """A ``randbelow`` stand-in that returns ``values`` in turn, cycling."""
    position = 0

    def randbelow(n: int) -> int:
        nonlocal position
        value = values[position % len(values)]
        position += 1
        assert 0 <= value < n
        return value

    return randbelow


def make_code(digits: str) -> Secret:
    """Return the cpace code whose random digits are ``digits`` (check digit appended)."""
    return parse_secret(digits + str(damm_check_digit(digits)))


def make_hmac_key(seed: int, bits: int = 80) -> Secret:
    """Return a fixed, valid hmac key that differs for every ``seed``."""
    stream = hashlib.sha256(b"hmac key %d" % seed).digest()
    return generate_hmac_key(bits, randbelow=fixed_randbelow([b % 32 for b in stream]))


def make_secret(mode: Mode) -> Secret:
    """The fixed secret of ``mode`` that the protocol tests offer and join with."""
    return make_code("31415926") if mode is Mode.CPACE else make_hmac_key(1)


def make_channel(
    *,
    cert_joiner: bytes = JOINER_CERT,
    cert_offerer: bytes = OFFERER_CERT,
    exporter: bytes = EXPORTER_1,
) -> Channel:
    """A channel as both sides of one honest TLS connection see it."""
    return Channel(cert_offerer=cert_offerer, cert_joiner=cert_joiner, exporter=exporter)


def make_offer(secret: Secret, *, expires_at: float = 300.0) -> Offer:
    """An offer of ``secret`` that expires at ``expires_at``, with the default budget."""
    return Offer(secret=secret, expires_at=expires_at)


def make_joiner(
    secret: Secret,
    *,
    channel: Channel | None = None,
    name: str = JOINER_NAME,
    scalar: bytes = JOINER_SCALAR,
) -> JoinerSession:
    """A joiner session over ``channel`` (the honest default channel if None)."""
    return JoinerSession(
        secret=secret, channel=channel or make_channel(), name=name, scalar=scalar
    )


def make_offerer(
    offer: Offer,
    *,
    channel: Channel | None = None,
    name: str = OFFERER_NAME,
    scalar: bytes = OFFERER_SCALAR,
) -> OffererSession:
    """An offerer session for one connection over ``channel``."""
    return OffererSession(offer=offer, channel=channel or make_channel(), name=name, scalar=scalar)


def failed_with(reason: FailureReason, *, remote: bool = False) -> list[Event]:
    """The events of a session that has just failed for ``reason``."""
    return [Failed(reason=reason, remote=remote)]


def error_frame(reason: int) -> bytes:
    """An ERROR frame carrying ``reason``."""
    return encode_frame(FrameType.ERROR, bytes([reason]))


def split_frames(data: bytes) -> list[Frame]:
    """Decode a byte string that holds whole frames only."""
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    assert decoder.pending == 0, "trailing partial frame"
    return frames


class Direction(enum.Enum):
    """Which way bytes travel over the :class:`Link`."""

    TO_OFFERER = "joiner->offerer"
    TO_JOINER = "offerer->joiner"


Tamper = Callable[[Direction, bytes], bytes]


@dataclass
class Link:
    """An in-memory connection between one joiner and one offerer session.

    :meth:`run` starts the joiner, shuttles ``data_to_send()`` both ways until neither
    side has anything to say, then closes the connection (sides still waiting get
    ``connection_lost``). Every message sent is kept in :attr:`transcript` as the sender
    wrote it; ``tamper`` may rewrite (or drop, by returning ``b""``) each one in flight,
    like an attacker on the path. Bytes sent to a finished side are discarded, as a
    closed connection would. ``chunk_size`` splits each delivery, down to one byte.
    Like a driver, the link answers each ``Paired`` with ``committed()``, or with
    ``commit_failed()`` for the sides named in ``store_fails``.
    """

    joiner: JoinerSession
    offerer: OffererSession
    now: float = 0.0
    chunk_size: int | None = None
    tamper: Tamper | None = None
    store_fails: frozenset[str] = frozenset()
    joiner_events: list[Event] = field(default_factory=list)
    offerer_events: list[Event] = field(default_factory=list)
    transcript: list[tuple[Direction, bytes]] = field(default_factory=list)
    received_by_joiner: bytearray = field(default_factory=bytearray)
    received_by_offerer: bytearray = field(default_factory=bytearray)

    def _chunks(self, data: bytes) -> list[bytes]:
        size = self.chunk_size or len(data)
        return [data[i : i + size] for i in range(0, len(data), size)]

    def _carry(self, direction: Direction, data: bytes) -> bytes:
        self.transcript.append((direction, data))
        return self.tamper(direction, data) if self.tamper is not None else data

    def to_offerer(self) -> bool:
        """Deliver what the joiner has queued; return whether there was anything."""
        sent = self.joiner.data_to_send()
        if not sent:
            return False
        data = self._carry(Direction.TO_OFFERER, sent)
        if data and not self.offerer.finished:
            self.received_by_offerer += data
            for chunk in self._chunks(data):
                if self.offerer.finished:
                    break
                self.offerer_events += self._commit(
                    self.offerer, "offerer", self.offerer.receive_data(chunk, now=self.now))
        return True

    def to_joiner(self) -> bool:
        """Deliver what the offerer has queued; return whether there was anything."""
        sent = self.offerer.data_to_send()
        if not sent:
            return False
        data = self._carry(Direction.TO_JOINER, sent)
        if data and not self.joiner.finished:
            self.received_by_joiner += data
            for chunk in self._chunks(data):
                if self.joiner.finished:
                    break
                self.joiner_events += self._commit(
                    self.joiner, "joiner", self.joiner.receive_data(chunk))
        return True

    def _commit(
        self, session: JoinerSession | OffererSession, side: str, events: list[Event]
    ) -> list[Event]:
        out: list[Event] = []
        for event in events:
            out.append(event)
            if isinstance(event, Paired):
                if side in self.store_fails:
                    out.append(session.commit_failed())
                else:
                    out += self._commit(session, side, session.committed())
        return out

    def pump(self) -> None:
        """Shuttle bytes both ways until both sides are quiet."""
        while self.to_offerer() | self.to_joiner():
            pass

    def close(self) -> None:
        """End the connection: every side that has not finished loses it."""
        lost = self.joiner.connection_lost()
        if lost is not None:
            self.joiner_events.append(lost)
        lost = self.offerer.connection_lost()
        if lost is not None:
            self.offerer_events.append(lost)

    def run(self) -> Link:
        """Start the joiner, pump to quiet, close; returns self for chaining."""
        self.joiner.start()
        self.pump()
        self.close()
        return self

    def sent(self, direction: Direction) -> list[bytes]:
        """Messages sent in ``direction``, as the sender wrote them."""
        return [data for way, data in self.transcript if way is direction]


def make_link(
    offer: Offer,
    joiner_secret: Secret | None = None,
    *,
    now: float = 0.0,
    exporter: bytes = EXPORTER_1,
) -> Link:
    """A link between a joiner of ``joiner_secret`` (the offer's own if None) and an
    offerer of ``offer``, both over one honest TLS connection with ``exporter``."""
    channel = make_channel(exporter=exporter)
    return Link(
        joiner=make_joiner(joiner_secret or offer.secret, channel=channel),
        offerer=make_offerer(offer, channel=channel),
        now=now,
    )


def started_joiner(mode: Mode, *, exporter: bytes = EXPORTER_1) -> tuple[JoinerSession, bytes]:
    """A joiner of a fresh ``mode`` secret, started, and its first message."""
    joiner = make_joiner(make_secret(mode), channel=make_channel(exporter=exporter))
    joiner.start()
    return joiner, joiner.data_to_send()


def honest_link(mode: Mode, offer: Offer | None = None, exporter: bytes = EXPORTER_1) -> Link:
    """A link between the two honest sides of ``offer`` (a fresh ``mode`` one if None)."""
    return make_link(offer or make_offer(make_secret(mode)), exporter=exporter)


def nobody_paired(link: Link) -> bool:
    """Whether neither side of ``link`` saw ``Paired``."""
    return not any(isinstance(event, Paired) for event in link.joiner_events + link.offerer_events)
