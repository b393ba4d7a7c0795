"""Per-connection work of ``tunnel serve`` and ``tunnel connect`` is counted, not timed
(the times are in ``scripts/bench``): the store statements and SQLite VM steps one
tunnelled connection costs are the same at 10 and at 1,000 peers, the peer is admitted
without a store read while the peers are unchanged (one read of the change counter per
connection on each end; issue 26 §4: it was three peer reads, issue 23: one), no
write happens on a connection's path (the log rows go in batches), and no certificate
is parsed in Python per connection."""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from bench.fleet import Filler, fill_store, make_fillers
from cryptography import x509

from certpair.identity import Identity, create_identity
from certpair.store import TrustStore, open_store
from certpair.trusted import TrustedContext
from certpair.tunnel.connect import ConnectOptions, _Client
from certpair.tunnel.events import TunnelEvent
from certpair.tunnel.server import ServeOptions, TunnelServer
from certpair.tunnel.targets import parse_target
from tests.cliutil import LOOPBACK

_CONNECTIONS = 4
_VERSION_READ = "SELECT value FROM meta WHERE key = ?"


@dataclass
class _Counts:
    """What the store connections of one tunnel end executed."""

    statements: Counter[str] = field(default_factory=Counter)
    steps: int = 0

    def watch(self, db: sqlite3.Connection) -> None:
        db.set_trace_callback(self._statement)
        db.set_progress_handler(self._step, 10)

    def _statement(self, sql: str) -> None:
        # The statement, without the values bound to it (the trace expands them).
        self.statements[re.sub(r"'[^']*'|\b\d+\b", "?", " ".join(sql.split()))] += 1

    def _step(self) -> int:
        self.steps += 1
        return 0

    def peer_reads(self) -> int:
        return sum(n for sql, n in self.statements.items()
                   if sql.startswith("SELECT") and " FROM peers" in sql)


def _echo_service() -> tuple[socket.socket, threading.Thread]:
    listener = socket.create_server((LOOPBACK, 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@dataclass
class _Chain:
    server: TunnelServer
    client: _Client
    server_counts: _Counts
    client_counts: _Counts
    parsed: Counter[str]

    def connect_once(self) -> None:
        """One connection through client end -> server end -> echo, as the acceptors
        would hand them over, each end's ``handle`` in its own thread."""
        outer = socket.create_server((LOOPBACK, 0))
        inner = socket.create_server((LOOPBACK, 0))
        host, port = inner.getsockname()[:2]
        self.client.options = _with_far_end(self.client.options, host, port)
        results: list[object] = []

        def serve() -> None:
            sock, address = inner.accept()
            results.append(self.server.handle(sock, f"{address[0]}:{address[1]}"))

        def carry() -> None:
            sock, address = outer.accept()
            results.append(self.client.handle(sock, f"{address[0]}:{address[1]}"))

        threads = [threading.Thread(target=serve), threading.Thread(target=carry)]
        for thread in threads:
            thread.start()
        with socket.create_connection(outer.getsockname()[:2], timeout=30) as user:
            user.sendall(b"x")
            assert user.recv(1) == b"x"
        for thread in threads:
            thread.join(30)
        outer.close()
        inner.close()
        assert [type(r).__name__ for r in results] == ["Closed", "Closed"], results


def _with_far_end(options: ConnectOptions, host: str, port: int) -> ConnectOptions:
    return replace(options, host=host, port=port)


def _stores(end: TunnelServer | _Client) -> list[TrustStore]:
    context = end.context
    assert isinstance(context, TrustedContext)
    return [end.store, context._certpair.store]


@pytest.fixture(scope="module")
def fillers() -> list[bytes]:
    return [f.der for f in make_fillers(1000, tag="count")]


@pytest.fixture
def chain_at(tmp_path: Path, fillers: list[bytes],
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], _Chain]]:
    opened: list[TrustStore] = []
    parsed: Counter[str] = Counter()
    for name in ("load_der_x509_certificate", "load_pem_x509_certificate"):
        real = getattr(x509, name)

        def counting(*args: object, _real: object = real, _name: str = name,
                     **kwargs: object) -> object:
            parsed[_name] += 1
            return _real(*args, **kwargs)  # type: ignore[operator]  # the real parser

        monkeypatch.setattr(x509, name, counting)
    listener, _ = _echo_service()

    def make(peers: int) -> _Chain:
        root = tmp_path / str(peers)
        alpha: Identity = create_identity(root / "alpha", "alpha")
        beta: Identity = create_identity(root / "beta", "beta")
        for home, other in ((root / "alpha", beta), (root / "beta", alpha)):
            open_store(home).close()  # the schema
            fill_store(home, [Filler(der, None) for der in fillers[:peers - 1]])
            with open_store(home) as store:
                store.commit_pairing(name=other.name, cert_der=other.cert_der, mode="cpace",
                                     role="offerer", remote=f"{LOOPBACK}:1")
        events: list[TunnelEvent] = []
        server_store = open_store(root / "alpha")
        client_store = open_store(root / "beta")
        opened.extend([server_store, client_store])
        server = TunnelServer(ServeOptions(
            home=root / "alpha", host=LOOPBACK, port=0,
            target=parse_target(f"{LOOPBACK}:{listener.getsockname()[1]}", unsafe=False)),
            server_store, events.append)
        peer = client_store.find_peer("alpha")
        client = _Client(ConnectOptions(home=root / "beta", peer=peer, host=LOOPBACK, port=1,
                                        source="--to", listen_host=LOOPBACK, listen_port=0),
                         client_store, events.append)
        server.watch.check()  # what the running watch thread does every 100 ms
        client.watch.check()
        counts = _Counts(), _Counts()
        chain = _Chain(server, client, counts[0], counts[1], parsed)
        chain.connect_once()  # warm: the first connection may build a fresh context
        for end, end_counts in ((server, counts[0]), (client, counts[1])):
            for store in _stores(end):
                end_counts.watch(store._db)
        parsed.clear()
        return chain

    yield make
    listener.close()
    for store in opened:
        store.close()


def _per_connection(chain: _Chain) -> tuple[_Counts, _Counts, int]:
    for _ in range(_CONNECTIONS):
        chain.connect_once()
    return chain.server_counts, chain.client_counts, sum(chain.parsed.values())


def test_a_tunnelled_connection_costs_the_same_store_work_at_1000_peers_as_at_10(
        chain_at: Callable[[int], _Chain]) -> None:
    *small, small_parsed = _per_connection(chain_at(10))
    *big, big_parsed = _per_connection(chain_at(1000))
    for end, (few, many) in enumerate(zip(small, big, strict=True)):
        assert many.statements == few.statements, end
        # VM steps of the same statements: index lookups, not scans of the peers.
        assert many.steps <= few.steps * 1.2 + 2 * _CONNECTIONS, (end, few.steps, many.steps)
    assert small_parsed == big_parsed == 0  # no certificate parsed in Python per connection


def test_each_end_reads_only_the_change_counter_while_the_peers_are_unchanged(
        chain_at: Callable[[int], _Chain]) -> None:
    # The peer admitted at this peers_version is remembered (trusted/contexts.py): one
    # indexed read of the counter per connection and end, no peer read (it was one).
    chain = chain_at(10)
    server, client, _ = _per_connection(chain)
    assert server.statements == Counter({_VERSION_READ: _CONNECTIONS}), server.statements
    assert client.statements[_VERSION_READ] == _CONNECTIONS, client.statements
    assert client.peer_reads() == 0, client.statements
    # Nothing written on a connection's path: its log row waits for the watch's batch.
    assert [sql for sql in server.statements if not sql.startswith("SELECT")] == []
    chain.server.flush_log()
    assert server.statements["COMMIT"] == 1
    logged = [e for e in chain.server.store.events() if e.role == "tunnel-server"]
    # Counted per peer and minute (issue 19): every connection, the warm-up one too.
    assert sum(e.count for e in logged) == _CONNECTIONS + 1
    assert {(e.outcome, e.reason, e.peer_name) for e in logged} == {("accepted", "done", "beta")}


def test_a_change_to_the_peers_makes_the_next_connection_read_its_peer_again(
        chain_at: Callable[[int], _Chain]) -> None:
    chain = chain_at(10)
    beta = chain.server.store.find_peer("beta")
    chain.server.store.rename_peer(beta.fingerprint, "beta-renamed")  # moves the version
    chain.server.watch.check()  # as the watch thread does within 100 ms
    chain.server_counts.statements.clear()
    chain.connect_once()
    assert chain.server_counts.peer_reads() == 1, chain.server_counts.statements
    assert chain.client_counts.peer_reads() == 0, chain.client_counts.statements
    chain.server_counts.statements.clear()
    chain.connect_once()
    assert chain.server_counts.peer_reads() == 0  # remembered again
    chain.server.flush_log()
    names = [e.peer_name for e in chain.server.store.events() if e.role == "tunnel-server"]
    assert "beta-renamed" in names, names  # as the store says now, not as remembered
