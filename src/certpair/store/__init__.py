"""The trust store: paired peers and the audit log, in one SQLite file (WAL).

A pairing commits its peer row and its event row in a single transaction, so after
any crash the store holds both or neither; removing or renaming a peer does the same.

Every change to the peers table, from any process, bumps a counter kept by SQLite
triggers (:meth:`TrustStore.peers_version`), so long-lived readers such as the trusted
TLS contexts can notice a change with one cheap query per connection.

The package is split by job: ``records`` (what a row is), ``schema`` (the file, its
version and migrations), ``peers`` and ``events`` (the SQL of each table),
``identity_keys`` (one device, one identity: the index of subjects, certificate names
and person-readable peer names), ``changes`` (the change counter), and the parts of
:class:`TrustStore` (``base``: connection, lock, errors; ``pairing``, ``confirmations``,
``refusals``, ``successors``, ``told``, ``pages``; joined in ``trust``).
"""

from __future__ import annotations

from certpair.store.pairing import PairingCommit
from certpair.store.records import (
    MIN_PREFIX_DIGITS,
    AmbiguousPeer,
    Event,
    Peer,
    PeerNotFound,
    StoreUnusable,
)
from certpair.store.schema import open_store
from certpair.store.successors import KeyAlarm, Refusal, Successor, SuccessorVerdict
from certpair.store.trust import TrustStore

__all__ = [
    "MIN_PREFIX_DIGITS",
    "AmbiguousPeer",
    "Event",
    "KeyAlarm",
    "PairingCommit",
    "Peer",
    "PeerNotFound",
    "Refusal",
    "StoreUnusable",
    "Successor",
    "SuccessorVerdict",
    "TrustStore",
    "open_store",
]
