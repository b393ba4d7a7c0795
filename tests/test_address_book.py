"""Addresses: one writer and one reader of HOST:PORT, the address book, the order a peer's
addresses are tried in, and the race that reports which one answered (loopback only)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import certpair.trusted.dial as dial_module
from certpair.addresses import format_address, host_of, parse_address
from certpair.errors import BadInput, NetworkError
from certpair.identity import create_identity
from certpair.reach import (
    ANNOUNCED,
    CONTACT,
    MAX_CANDIDATES,
    PAIRING,
    RELAYED,
    SERVE,
    TUNNEL,
    Candidate,
    PeerAddress,
    candidates,
    relayed_via,
)
from certpair.store import open_store
from certpair.store.address_book import MAX_PER_PEER
from certpair.trusted.dial import dial
from certpair.tunnel.targets import parse_listen, split_host_port
from tests.test_store import V10_UNDONE

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
HOSTS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.tuples(st.ip_addresses(v=6).map(str), st.from_regex(r"[a-z][a-z0-9]{0,7}",
                                                           fullmatch=True)).map("%".join),
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
)
PORTS = st.integers(1, 65535)


@given(HOSTS, PORTS)
def test_every_written_address_reads_back_as_the_same_host_and_port(host: str,
                                                                    port: int) -> None:
    text = format_address(host, port)
    assert parse_address(text, None) == (host, port)
    assert split_host_port(text, None) == (host, port)  # the tunnel reads it the same way
    assert host_of(text) == host


@given(HOSTS, PORTS)
def test_a_host_written_alone_reads_back_with_the_default_port(host: str, port: int) -> None:
    assert parse_address(format_address(host), port) == (host, port)


def test_an_ipv6_address_is_bracketed_and_never_read_as_a_host_with_a_port_stuck_on() -> None:
    assert format_address("fe80::1", 47820) == "[fe80::1]:47820"
    assert format_address("fe80::1%eth0", 47820) == "[fe80::1%eth0]:47820"
    with pytest.raises(BadInput):  # how the pairing log used to write it
        split_host_port("fe80::1:47820", 47822)
    assert parse_listen("[::1]:0", unsafe=False) == ("::1", 0)


def _entry(host: str, port: int | None, service: str, source: str, at: str) -> PeerAddress:
    return PeerAddress(host=host, port=port, service=service if port else "", source=source,
                       seen_at=at)


def test_the_order_tries_the_service_where_it_answered_newest_first_then_the_hosts() -> None:
    book = [
        _entry("10.0.0.1", None, "", PAIRING, "2026-01-01"),
        _entry("10.0.0.2", 5000, TUNNEL, CONTACT, "2026-01-02"),
        _entry("10.0.0.3", 47821, SERVE, CONTACT, "2026-01-04"),
        _entry("10.0.0.4", 6000, TUNNEL, ANNOUNCED, "2026-01-03"),
    ]
    got = [(str(c), c.source) for c in candidates(book, service=TUNNEL, default_port=47822)]
    assert got == [("10.0.0.4:6000", ANNOUNCED), ("10.0.0.2:5000", CONTACT),
                   ("10.0.0.3:47822", CONTACT), ("10.0.0.1:47822", PAIRING)]
    given_first = Candidate(host="10.0.0.2", port=5000, source="given")
    assert candidates(book, service=TUNNEL, default_port=47822, first=[given_first])[:2] == [
        given_first, Candidate(host="10.0.0.4", port=6000, source=ANNOUNCED)]
    many = [_entry(f"10.0.1.{i}", None, "", PAIRING, f"2026-02-{i:02}") for i in range(1, 20)]
    assert len(candidates(many, service=SERVE, default_port=1)) == MAX_CANDIDATES


def test_a_via_relay_entry_is_never_dialled_as_the_peers_address_only_named() -> None:
    relayed = PeerAddress(host="192.0.2.9", port=4001, service=SERVE, source=CONTACT,
                          seen_at="2026-01-05", kind=RELAYED)
    book = [_entry("10.0.0.1", None, "", PAIRING, "2026-01-01"), relayed]
    assert [str(c) for c in candidates(book, service=SERVE, default_port=4491)] == [
        "10.0.0.1:4491"]  # newest, yet not a host of the peer: the relay's
    assert relayed_via(book, service=SERVE) == Candidate(
        host="192.0.2.9", port=4001, source=CONTACT, kind=RELAYED)
    assert relayed_via(book, service=TUNNEL) is None


def test_the_book_keeps_structured_rows_per_peer_bounded_and_they_go_with_the_peer(
    tmp_path: Path,
) -> None:
    alpha = create_identity(tmp_path / "alpha", "alpha")
    create_identity(tmp_path / "beta", "beta")
    with open_store(tmp_path / "beta") as store:
        peer = store.commit_pairing(name="alpha", cert_der=alpha.cert_der, mode="cpace",
                                    role="joiner", remote="[fd00::1]:47820", at=1000.0)
        (paired,) = store.address_book(peer)
        assert (paired.host, paired.port, paired.service, paired.source) == (
            "fd00::1", None, "", PAIRING)
        store.note_address(peer, "10.0.0.9", 47821, service=SERVE, at=2000.0)
        for i in range(2 * MAX_PER_PEER):
            store.note_address(peer, f"10.9.0.{i}", 47822, service=TUNNEL, source=ANNOUNCED,
                               at=3000.0 + i)
        book = store.address_book(peer)
        assert len(book) == MAX_PER_PEER
        assert book[0].host == f"10.9.0.{2 * MAX_PER_PEER - 1}"
        store.note_address("sha256:" + "0" * 64, "10.0.0.1")  # not a peer: nothing stored
        store.remove_peer(peer.fingerprint)
        assert store.address_book(peer) == []


def test_step_5s_serve_addresses_move_into_the_book(tmp_path: Path) -> None:
    alpha = create_identity(tmp_path / "alpha", "alpha")
    home = tmp_path / "beta"
    create_identity(home, "beta")
    with open_store(home) as store:
        peer = store.commit_pairing(name="alpha", cert_der=alpha.cert_der, mode="cpace",
                                    role="joiner", remote="")
    with sqlite3.connect(home / "trust.db") as db:
        db.executescript(V10_UNDONE + "PRAGMA user_version = 9;")
        db.execute("INSERT INTO peer_addresses VALUES (?, '[fe80::1%eth0]:47821', '2026')",
                   (peer.fingerprint,))
    with open_store(home) as store:
        assert [(a.host, a.port, a.service, a.source) for a in store.address_book(peer)] == [
            ("fe80::1%eth0", 47821, SERVE, CONTACT)]
        assert store.addresses() == {peer.fingerprint: "[fe80::1%eth0]:47821"}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_race_reports_the_address_that_answered_and_names_every_failure() -> None:
    with socket.create_server(("127.0.0.2", 0)) as listener:
        port = int(listener.getsockname()[1])
        dead = Candidate(host="127.0.0.1", port=_closed_port(), source=CONTACT)
        alive = Candidate(host="127.0.0.2", port=port, source=PAIRING)
        reached = dial([dead, alive], timeout=5, what="alpha")
        with reached.sock:
            assert reached.candidate == alive
            assert reached.sock.getpeername()[:2] == ("127.0.0.2", port)
    with pytest.raises(NetworkError, match=f"cannot reach alpha at {dead}"):
        dial([dead], timeout=5, what="alpha")


def test_an_address_that_answers_within_the_delay_is_reached_without_an_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The common case (loopback, a LAN, last time's winner) costs a connect, not an
    # event loop and a resolver thread per connection (docs/PERFORMANCE.md).
    loops: list[object] = []
    real_run = asyncio.run

    def counting_run(main: Any, **kwargs: Any) -> Any:
        loops.append(main)
        return real_run(main, **kwargs)

    monkeypatch.setattr(asyncio, "run", counting_run)
    threads = threading.active_count()
    with socket.create_server(("127.0.0.2", 0)) as listener:
        alive = Candidate(host="127.0.0.2", port=int(listener.getsockname()[1]),
                          source=CONTACT)
        dead = Candidate(host="127.0.0.1", port=_closed_port(), source=PAIRING)
        for _ in range(3):
            reached = dial([alive, dead], timeout=5, what="alpha")
            with reached.sock:
                assert reached.candidate == alive
                assert reached.sock.gettimeout() == 5  # blocking, as from the race
        assert (loops, threading.active_count()) == ([], threads)
        reached = dial([dead, alive], timeout=5, what="alpha")  # refused: the race
        with reached.sock:
            assert reached.candidate == alive
        assert len(loops) == 1


def test_the_first_attempt_still_connecting_after_the_delay_stays_in_the_race(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A full accept queue drops the SYN: the first attempt is still connecting when the
    # race starts; the other address is refused; the SYN's retransmission (~1 s) wins.
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        queued.connect(("127.0.0.1", port))  # fills the queue (backlog 0 holds one)
        slow = Candidate(host="127.0.0.1", port=port, source=CONTACT)
        dead = Candidate(host="127.0.0.1", port=_closed_port(), source=PAIRING)
        started = threading.Event()

        def make_room() -> None:
            started.wait(5)
            listener.accept()[0].close()

        thread = threading.Thread(target=make_room, daemon=True)
        thread.start()
        real = dial_module._answered

        def answered(attempt: Any, wait: float) -> bool | None:
            result = real(attempt, wait)
            started.set()  # the SYN was dropped; room is made for its retransmission
            return result

        monkeypatch.setattr(dial_module, "_answered", answered)
        reached = dial([slow, dead], timeout=10, what="alpha", delay=0.05)
        with reached.sock:
            assert reached.candidate == slow
        thread.join(5)


def test_an_announced_address_is_raced_as_it_comes_when_the_known_ones_fail() -> None:
    with socket.create_server(("127.0.0.3", 0)) as listener:
        port = int(listener.getsockname()[1])
        dead = Candidate(host="127.0.0.1", port=_closed_port(), source=CONTACT)
        asked = threading.Event()

        def discover(stop: threading.Event) -> list[Candidate]:
            asked.set()
            return [Candidate(host="127.0.0.3", port=port, source=ANNOUNCED)]

        reached = dial([dead], timeout=5, what="alpha", discover=discover)
        with reached.sock:
            assert asked.is_set()
            assert (str(reached.candidate), reached.candidate.source) == (
                f"127.0.0.3:{port}", ANNOUNCED)
    assert ipaddress.ip_address("127.0.0.3").is_loopback  # test traffic stays on loopback
