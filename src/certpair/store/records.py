"""What the store holds: peer and event records, and the store's errors."""

from __future__ import annotations

import datetime
import functools
import math
from dataclasses import dataclass, field

from certpair.errors import BadInput, LocalStateError
from certpair.identity import fingerprint

__all__ = [
    "MIN_PREFIX_DIGITS",
    "AmbiguousPeer",
    "Event",
    "Peer",
    "PeerNotFound",
    "StoreUnusable",
    "iso_time",
]

# Fewer hex digits than this match too many fingerprints to be a deliberate choice.
MIN_PREFIX_DIGITS = 4


class StoreUnusable(LocalStateError):
    """The trust store cannot be opened or is corrupt."""


class PeerNotFound(BadInput):
    """No paired device matches the given name or fingerprint."""


class AmbiguousPeer(BadInput):
    """Several paired devices match the given name or fingerprint prefix."""


@dataclass(frozen=True, kw_only=True)
class Peer:
    """A trusted remote identity.

    ``given_name`` is set only on the record a pairing returns, when the name the peer
    gave was already another paired device's and ``name`` is the distinguishable one
    it was stored under (``beta (2)``); it is not stored.

    ``device_id`` names the device whatever its current certificate: it survives the
    peer's key rotations (store/devices.py); look a device up with
    :meth:`~certpair.store.TrustStore.peer_by_device`. Empty only on a record that
    was never stored.
    """

    name: str
    fingerprint: str
    cert_der: bytes = field(repr=False)
    mode: str
    paired_at: str
    # False while this device does not know whether the peer stored the pairing too
    # (the connection ended before its word came); settled by the next trusted contact.
    confirmed: bool = True
    given_name: str | None = field(default=None, compare=False)
    device_id: str = ""

    @property
    def intact(self) -> bool:
        """Whether the stored fingerprint is the SHA-256 of the stored certificate.

        A row whose bytes were damaged (on disk, or by hand) is not: such a peer must be
        flagged, never trusted or exported.
        """
        return fingerprint(self.cert_der) == self.fingerprint


@dataclass(frozen=True, kw_only=True)
class Event:
    """One row of the audit log.

    ``kind`` is ``pairing``, ``connection``, ``unpairing`` or ``rename``. ``count`` is
    how many refusals of the same source, reason and minute the row stands for.
    """

    at: str
    kind: str
    role: str
    remote: str
    mode: str
    outcome: str
    reason: str
    peer_fingerprint: str | None = None
    peer_name: str | None = None
    count: int = 1


def iso_time(at: float) -> str:
    """Seconds since the epoch as the store writes times: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _iso_second(math.floor(at))


@functools.lru_cache(maxsize=4)  # a busy tunnel logs many connections in one second
def _iso_second(second: int) -> str:
    moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
