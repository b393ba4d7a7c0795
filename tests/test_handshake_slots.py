"""The slots of unproven connections (certpair.trusted.handshakes) over socket pairs:
per-source cap, displacement of the busiest source's oldest, the whole-handshake
deadline, and a slot left before its socket closes is never cut."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from certpair.trusted.handshakes import (
    DISPLACED,
    EXPIRED,
    TOO_MANY,
    HandshakeSlots,
    Slot,
    source_of,
)


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def _pair(made: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket,
                                                                       socket.socket]:
    server, client = socket.socketpair()
    client.settimeout(10)
    made.append((server, client))
    return server, client


def _cut(client: socket.socket) -> bool:
    """Whether the server side was shut down (the client reads the end)."""
    return client.recv(1) == b""


def test_a_source_at_its_cap_is_refused_and_others_still_get_in(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    gate = HandshakeSlots(total=10, per_source=3, deadline=60)
    for _ in range(3):
        assert isinstance(gate.admit("10.0.0.1", _pair(pairs)[0]), Slot)
    assert gate.admit("10.0.0.1", _pair(pairs)[0]) == TOO_MANY
    assert isinstance(gate.admit("10.0.0.2", _pair(pairs)[0]), Slot)
    assert gate.busy == 4
    gate.stop()


def test_when_all_are_taken_a_newcomer_displaces_the_busiest_sources_oldest(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    gate = HandshakeSlots(total=4, per_source=4, deadline=60)
    flood = [_pair(pairs) for _ in range(4)]
    slots = [gate.admit("10.0.0.9", server) for server, _ in flood]
    assert all(isinstance(s, Slot) for s in slots)
    assert gate.admit("10.0.0.9", _pair(pairs)[0]) == TOO_MANY  # it is the busiest
    device = gate.admit("192.0.2.7", _pair(pairs)[0])
    assert isinstance(device, Slot)
    assert _cut(flood[0][1])  # the oldest of the flood was cut
    first = slots[0]
    assert isinstance(first, Slot) and first.reason == DISPLACED
    assert gate.busy == 4
    gate.stop()


def test_a_slot_expires_for_the_whole_handshake_and_a_left_one_is_never_cut(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    gate = HandshakeSlots(deadline=0.2)
    idle_server, idle_client = _pair(pairs)
    proven_server, proven_client = _pair(pairs)
    idle = gate.admit("10.0.0.1", idle_server)
    proven = gate.admit("10.0.0.1", proven_server)
    assert isinstance(idle, Slot) and isinstance(proven, Slot)
    proven.leave()
    assert _cut(idle_client)  # the deadline thread shut it down
    assert idle.reason == EXPIRED and gate.busy == 0
    proven_server.sendall(b"x")  # still open: leaving took it out of the gate's hands
    assert proven_client.recv(1) == b"x"
    gate.stop()


@pytest.mark.parametrize(("host", "source"), [
    ("127.0.0.2", "127.0.0.2"),
    ("[2001:db8:1:2:3:4:5:6]", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("local", "local"),
])
def test_sources_are_addresses_and_ipv6_counts_per_64(host: str, source: str) -> None:
    assert source_of(host) == source
