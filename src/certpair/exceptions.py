"""Every exception a caller of certpair may catch, in one place.

As with ``cryptography.exceptions``: import what you catch from here, whatever module
raised it. Each derives from one of the five families of :mod:`certpair.errors`, and the
CLI maps each family to one exit status (docs/LIBRARY.md has the table):

=====================  ====  ==============================================================
family                 exit  members
=====================  ====  ==============================================================
``BadInput``           2     MalformedSecret, WrongCheckCharacter, WeakSecret, MalformedURI,
                             BadName, PeerNotFound, AmbiguousPeer, AmbiguousOfferers,
                             PairedIdentity, RotationPending, NoRotationPending
``PairingFailed``      1     NotPaired (OtherDevice), CertificateRefused
``Expired``            3     NoOfferer
``NetworkError``       4     PairingUnconfirmed, DiscoveryError, SyncNotSupported,
                             RelayError, RelayClosed
``LocalStateError``    5     NotInitialised, IdentityExists, StoreUnusable, PeersNotTold,
                             InsecurePath
=====================  ====  ==============================================================

``CertpairError`` is the base of all of them. A failure of a third-party HTTP client
(httpx, aiohttp, requests, urllib) on a certpair context is turned into one of these by
:func:`certpair.why_refused`.
"""

from __future__ import annotations

from certpair.codes import MalformedSecret, WeakSecret, WrongCheckCharacter
from certpair.discovery import AmbiguousOfferers, DiscoveryError, NoOfferer
from certpair.errors import (
    BadInput,
    CertpairError,
    Expired,
    LocalStateError,
    NetworkError,
    PairingFailed,
    PairingUnconfirmed,
)
from certpair.filemodes import InsecurePath
from certpair.identity import IdentityExists, NotInitialised, PairedIdentity
from certpair.names import BadName
from certpair.profile import CertificateRefused
from certpair.relay.connect import RelayClosed, RelayError
from certpair.rotation.exchange import SyncNotSupported
from certpair.rotation.pending import NoRotationPending, RotationPending
from certpair.rotation.status import PeersNotTold
from certpair.store import AmbiguousPeer, PeerNotFound, StoreUnusable
from certpair.trusted import NotPaired
from certpair.trusted.dial import OtherDevice
from certpair.uri import MalformedURI

__all__ = [
    "AmbiguousOfferers",
    "AmbiguousPeer",
    "BadInput",
    "BadName",
    "CertificateRefused",
    "CertpairError",
    "DiscoveryError",
    "Expired",
    "IdentityExists",
    "InsecurePath",
    "LocalStateError",
    "MalformedSecret",
    "MalformedURI",
    "NetworkError",
    "NoOfferer",
    "NoRotationPending",
    "NotInitialised",
    "NotPaired",
    "OtherDevice",
    "PairedIdentity",
    "PairingFailed",
    "PairingUnconfirmed",
    "PeerNotFound",
    "PeersNotTold",
    "RelayClosed",
    "RelayError",
    "RotationPending",
    "StoreUnusable",
    "SyncNotSupported",
    "WeakSecret",
    "WrongCheckCharacter",
]
