"""Per-pairing work does not grow with the number of peers (issue 23): counted, not
timed. The store's commit of one pairing and the pairing handshake's collision check,
at 10 and at 1,000 peers: SQLite virtual-machine steps (which grow with every row a
query reads, while an index seek is one step) and certificates parsed."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from bench.fleet import make_fillers
from cryptography import x509

from certpair.identity import Identity, create_identity
from certpair.net.admission import check_new_peer
from certpair.store import TrustStore, open_store
from certpair.store.anchors import row_hash
from certpair.store.identity_keys import key_of_name, peer_keys

SMALL, BIG = 10, 1000
_FILLERS = make_fillers(BIG + 4)


def _hub(root: Path, size: int) -> tuple[Identity, Path]:
    """A home with ``size`` peers written as rows, with their identity keys."""
    identity = create_identity(root, f"hub{size}")
    open_store(root).close()
    with sqlite3.connect(root / "trust.db") as db:
        for i, filler in enumerate(_FILLERS[:size]):
            fp = "sha256:" + hashlib.sha256(filler.der).hexdigest()
            db.execute("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at,"
                       " subject_hash) VALUES (?, ?, ?, 'cpace', '2026-01-01T00:00:00Z', ?)",
                       (fp, f"filler-{i}", filler.der, row_hash(filler.der)))
            db.executemany("INSERT INTO identity_keys (key, owner) VALUES (?, ?)",
                           [(k, fp) for k in peer_keys(filler.der)])
            db.execute("INSERT INTO peer_names (key, owner) VALUES (?, ?)",
                       (key_of_name(f"filler-{i}"), fp))
    open_store(root).close()  # files the anchors
    return identity, root


@pytest.fixture(scope="module")
def hubs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Identity, Path]]:
    root = tmp_path_factory.mktemp("hubs")
    return {size: _hub(root / str(size), size) for size in (SMALL, BIG)}


class Counts:
    def __init__(self) -> None:
        self.steps = 0
        self.parsed = 0


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Callable[[TrustStore], Counts]:
    """Count certificates parsed (every parse goes through x509.load_der_x509_certificate,
    called through) and the store connection's VM steps."""
    counts: list[Counts] = []
    real = x509.load_der_x509_certificate

    def parse(data: bytes) -> x509.Certificate:
        if counts:
            counts[-1].parsed += 1  # the measurement under way
        return real(data)

    monkeypatch.setattr(x509, "load_der_x509_certificate", parse)

    def start(store: TrustStore) -> Counts:
        c = Counts()
        counts.append(c)

        def step() -> int:
            c.steps += 1
            return 0

        store._db.set_progress_handler(step, 1)  # white-box count
        return c

    return start


def _commit(home: Path, der: bytes, counting: Callable[[TrustStore], Counts]) -> Counts:
    with open_store(home) as store:
        c = counting(store)
        store.commit_pairing(name="fresh", cert_der=der, mode="cpace", role="offerer",
                             remote="192.0.2.1:1")
        return c


def test_committing_a_pairing_reads_as_much_at_1000_peers_as_at_10(
    hubs: dict[int, tuple[Identity, Path]], counting: Callable[[TrustStore], Counts],
) -> None:
    small = _commit(hubs[SMALL][1], _FILLERS[BIG].der, counting)
    big = _commit(hubs[BIG][1], _FILLERS[BIG + 1].der, counting)
    assert big.parsed == small.parsed
    assert big.steps <= small.steps * 1.1 + 20, (small.steps, big.steps)


def test_the_handshake_collision_check_reads_as_much_at_1000_peers_as_at_10(
    hubs: dict[int, tuple[Identity, Path]], counting: Callable[[TrustStore], Counts],
) -> None:
    seen = {}
    for size in (SMALL, BIG):
        identity, home = hubs[size]
        with open_store(home) as store:
            c = counting(store)
            check_new_peer(store, identity, _FILLERS[BIG + 2].der)
            seen[size] = c
    assert seen[BIG].parsed == seen[SMALL].parsed <= 4
    assert seen[BIG].steps <= seen[SMALL].steps * 1.1 + 20, (seen[SMALL].steps,
                                                              seen[BIG].steps)
