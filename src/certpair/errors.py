"""Errors raised by certpair.

Every error a user can cause or meet derives from :class:`CertpairError`; the CLI maps
each family to one exit status in one place (``certpair.cli.main``). Messages never
contain a secret.
"""

from __future__ import annotations

__all__ = [
    "BadInput",
    "CertpairError",
    "Expired",
    "LocalStateError",
    "NetworkError",
    "PairingFailed",
    "PairingUnconfirmed",
    "counted",
]


class CertpairError(Exception):
    """Base class of every error certpair raises on purpose."""


class BadInput(CertpairError):
    """The caller gave something unusable: a malformed or weak secret, a bad option."""


class PairingFailed(CertpairError):
    """The pairing proof did not check: wrong secret, tampered or hostile connection.

    ``wrong_secret`` is true when the proof itself failed (a wrong secret, or a
    connection tampered with: the two cannot be told apart), which burns a cpace code;
    false for the other refusals (a protocol error, the other mode, a refused
    certificate, a store that failed).
    """

    def __init__(self, message: str, *, wrong_secret: bool = False) -> None:
        super().__init__(message)
        self.wrong_secret = wrong_secret


class Expired(CertpairError):
    """A secret expired or a wait timed out."""


class NetworkError(CertpairError):
    """The peer could not be reached, refused, or the connection broke."""


class LocalStateError(CertpairError):
    """This device's own state is missing or unusable (no identity, broken store)."""


class PairingUnconfirmed(NetworkError):
    """The proof checked but the connection ended before the peer's word came: the
    peer is stored marked unconfirmed, and it may or may not trust this device.

    ``peer`` is the stored record (a :class:`certpair.store.Peer`).
    """

    def __init__(self, message: str, *, peer: object) -> None:
        super().__init__(message)
        self.peer = peer



def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``1 peer``, ``2 peers``: a number with its noun in the right form, for messages."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
