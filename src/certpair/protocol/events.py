"""Inputs and outputs of the pairing state machines that are not frames."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from certpair.codes import Mode

__all__ = ["Channel", "Confirmed", "Failed", "FailureReason", "Paired", "Role", "Unconfirmed"]


class Role(enum.Enum):
    """Which side of a pairing this device plays."""

    OFFERER = "offerer"
    JOINER = "joiner"


class FailureReason(enum.IntEnum):
    """Why a pairing ended without trust; the value is the ERROR frame's code byte.

    ``PAIRING_FAILED`` covers every authentication failure alike (wrong secret, bad tag,
    certificate mismatch) so the peer learns nothing about which one it was.
    ``STORE_FAILED``: the proof checked but the sender could not store the pairing, so
    the receiver must not store it either (or must undo its own commit).
    ``CERTIFICATE_REFUSED`` is sent right after the TLS handshake, before any proof,
    when the peer's certificate breaks certpair's profile (:mod:`certpair.profile`);
    it spends no attempt, and says nothing about the secret.
    """

    PAIRING_FAILED = 1
    PROTOCOL_ERROR = 2
    MODE_MISMATCH = 3
    BUSY = 4
    EXPIRED = 5
    CONNECTION_LOST = 6
    STORE_FAILED = 7
    CERTIFICATE_REFUSED = 8

    @property
    def text(self) -> str:
        """A short lowercase phrase for users and logs."""
        return self.name.lower().replace("_", " ")


@dataclass(frozen=True, kw_only=True)
class Channel:
    """What both sides know about the pairing TLS connection after its handshake.

    Certificates are DER, exactly as observed on the wire (for one's own, as sent).
    ``exporter`` is the RFC 8446 section 7.5 exporter value with certpair's label.
    """

    cert_offerer: bytes = field(repr=False)
    cert_joiner: bytes = field(repr=False)
    exporter: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Paired:
    """The proof checked: the peer with this certificate may be trusted now."""

    peer_name: str
    peer_cert_der: bytes = field(repr=False)
    mode: Mode


@dataclass(frozen=True, kw_only=True)
class Confirmed:
    """The peer said it stored this pairing too: both sides trust each other now."""

    peer_name: str
    peer_cert_der: bytes = field(repr=False)
    mode: Mode


@dataclass(frozen=True, kw_only=True)
class Unconfirmed:
    """The connection ended after the proof checked but before the peer's commitment
    was known: the peer may or may not trust this device. The driver keeps (or stores)
    the peer marked unconfirmed, for the next trusted contact to settle."""

    peer_name: str
    peer_cert_der: bytes = field(repr=False)
    mode: Mode


@dataclass(frozen=True, kw_only=True)
class Failed:
    """The pairing ended without trust.

    ``remote`` is true when the peer reported the failure in an ERROR frame, false when
    this side detected it.
    """

    reason: FailureReason
    remote: bool = False
