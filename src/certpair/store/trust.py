"""The trust store object: one lock, one transaction per change, one error type.

Each public change writes its table rows, its identity keys and its audit-log row in a
single SQLite transaction. The object is the sum of the store's jobs, one class each
(all deriving from :class:`~certpair.store.base.StoreBase`, none overriding another):
pairing commits (:mod:`~certpair.store.pairing`), confirmations
(:mod:`~certpair.store.confirmations`), event records and refusal counting
(:mod:`~certpair.store.refusals`), successors' admission
(:mod:`~certpair.store.successors`), the rotating side's records
(:mod:`~certpair.store.told`), where peers are (:mod:`~certpair.store.address_book`),
reads (:mod:`~certpair.store.pages`), and device ids (:mod:`~certpair.store.devices`).
"""

from __future__ import annotations

from certpair.store.address_book import AddressBook
from certpair.store.confirmations import Confirmations
from certpair.store.devices import DeviceReads
from certpair.store.pages import PagedReads
from certpair.store.pairing import PairingCommits
from certpair.store.refusals import EventRecords
from certpair.store.successors import SuccessorAdmission
from certpair.store.told import RotatingSide

__all__ = ["TrustStore"]


class TrustStore(PairingCommits, Confirmations, EventRecords, SuccessorAdmission,
                 RotatingSide, AddressBook, PagedReads, DeviceReads):
    """Peers and events of one device. Use :func:`~certpair.store.open_store` to get one.

    One store may be shared between threads: every database call holds a lock.
    """
