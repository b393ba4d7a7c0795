"""What a running tunnel keeps track of (tunnel/watch.py), in-process: the connection
slots, cutting tracked relays by device, the refusal windows, and the trust watch
cutting a live connection whose peer left the store (two relays over real TLS)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.store import TrustStore, open_store
from certpair.tunnel.pump import DONE, Relay
from certpair.tunnel.watch import Connections, Refusals, TrustWatch
from tests.trustedutil import Devices, make_devices
from tests.tunnelpipe import (
    WAIT,
    in_thread,
    make_pipe,
    read_exactly,
    server_link,
    tcp_pair,
    what_the_end_saw,
)


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    """alpha trusts beta and gamma; beta trusts alpha."""
    found = make_devices(tmp_path)
    found.trust("alpha", "gamma")
    return found


@pytest.fixture
def store(devices: Devices) -> Iterator[TrustStore]:
    with open_store(devices.home("alpha")) as opened:
        yield opened


@pytest.fixture
def idle_relays(devices: Devices) -> Iterator[list[Relay]]:
    """Relays never attached: cuttable, carrying nothing."""
    sockets: list[socket.socket] = []
    relays = []
    for _ in range(3):
        near, far = tcp_pair()
        sockets += (near, far)
        relays.append(Relay(server_link(devices, near), idle_timeout=None))
    yield relays
    for sock in sockets:
        sock.close()


def device(store: TrustStore, name: str) -> str:
    return next(p.device_id for p in store.peers() if p.name == name)


def test_slots_stop_at_the_limit_and_come_back_when_released() -> None:
    connections = Connections(limit=2)
    assert [connections.take_slot() for _ in range(3)] == [True, True, False]
    assert connections.busy == 2
    connections.release_slot()
    assert connections.busy == 1
    assert connections.take_slot()
    assert not connections.take_slot()


def test_wait_idle_returns_once_the_last_connection_ends_and_not_before() -> None:
    connections = Connections(limit=4)
    connections.take_slot()
    connections.take_slot()
    assert not connections.wait_idle(time.monotonic())  # busy, deadline passed
    waited = in_thread(lambda: connections.wait_idle(time.monotonic() + WAIT))
    connections.release_slot()
    connections.release_slot()
    assert waited() is True
    assert connections.wait_idle(time.monotonic())  # idle: at once


def test_cut_unless_cuts_exactly_the_tracked_relays_of_untrusted_devices(
    idle_relays: list[Relay],
) -> None:
    kept, doomed, untracked = idle_relays
    connections = Connections(limit=8)
    connections.track("device-kept", kept)
    connections.track("device-gone", doomed)
    finished = connections.track("device-gone", untracked)
    connections.untrack(finished)  # a finished relay is no longer cut
    assert connections.cut_unless(lambda d: d == "device-kept", "unpaired") == 1
    assert (kept.cut_reason, doomed.cut_reason, untracked.cut_reason) == (
        None, "unpaired", None)
    assert connections.cut_unless(lambda _: False, "shutdown") == 2
    assert kept.cut_reason == "shutdown"
    assert doomed.cut_reason == "unpaired"  # the first reason stays


def test_a_refusal_is_reported_at_once_and_repeats_as_one_count_per_window() -> None:
    seen: list[tuple[str, str, int]] = []
    refusals = Refusals(lambda *row: seen.append(row), window=3600.0)
    for _ in range(5):
        refusals.add("192.0.2.1", "not a paired device")
    refusals.add("192.0.2.1", "too many connections")
    refusals.add("192.0.2.2", "not a paired device")
    assert seen == [("192.0.2.1", "not a paired device", 1),
                    ("192.0.2.1", "too many connections", 1),
                    ("192.0.2.2", "not a paired device", 1)]
    refusals.flush()  # no window has ended: nothing more yet
    assert len(seen) == 3
    refusals.flush(everything=True)
    assert seen[3:] == [("192.0.2.1", "not a paired device", 4)]
    assert refusals.total == 7
    refusals.add("192.0.2.1", "not a paired device")  # a new window: reported at once
    assert seen[4:] == [("192.0.2.1", "not a paired device", 1)]


def test_a_window_that_ended_is_flushed_as_its_count_once() -> None:
    seen: list[tuple[str, str, int]] = []
    refusals = Refusals(lambda *row: seen.append(row), window=0.0)
    for _ in range(3):
        refusals.add("192.0.2.9", "bad certificate")
    refusals.flush()
    refusals.flush()
    assert seen == [("192.0.2.9", "bad certificate", 1), ("192.0.2.9", "bad certificate", 2)]


def test_the_watch_cuts_only_the_connection_whose_peer_was_unpaired(
    devices: Devices, store: TrustStore, idle_relays: list[Relay],
) -> None:
    pipe = make_pipe(devices)  # beta's live connection to alpha
    try:
        connections = Connections(limit=8)
        connections.track(device(store, "beta"), pipe.b)
        connections.track(device(store, "gamma"), idle_relays[0])
        watch = TrustWatch(store, connections, Refusals(lambda *_: None), lambda d: d)
        watch.check()
        assert idle_relays[0].cut_reason is None and pipe.b.cut_reason is None
        devices.forget("alpha", "gamma")
        watch.check()
        assert idle_relays[0].cut_reason == "unpaired"
        assert watch.admits(device(store, "beta"))
        pipe.app_a.sendall(b"still carried")
        assert read_exactly(pipe.app_b, 13) == b"still carried"
        assert pipe.b.cut_reason is None
    finally:
        pipe.close()


def test_the_running_watch_cuts_a_live_connection_once_its_peer_left_the_store(
    devices: Devices, store: TrustStore,
) -> None:
    pipe = make_pipe(devices)
    connections = Connections(limit=8)
    watch = TrustWatch(store, connections, Refusals(lambda *_: None), lambda d: d)
    try:
        beta = device(store, "beta")
        connections.track(beta, pipe.b)
        assert watch.admits(beta)
        watch.start()
        pipe.app_a.sendall(b"hello")
        assert read_exactly(pipe.app_b, 5) == b"hello"
        devices.forget("alpha", "beta")
        reason_a, reason_b = pipe.reasons()
        assert reason_b == "unpaired" and reason_a != DONE
        assert what_the_end_saw(pipe.app_b) == "reset"  # the service sees a cut
        assert what_the_end_saw(pipe.app_a) == "reset"  # and so does the client
        assert not watch.admits(beta)
    finally:
        watch.stop()
        watch.join(WAIT)
        pipe.close()


def test_allow_keeps_out_a_paired_device_it_does_not_name(
    devices: Devices, store: TrustStore, idle_relays: list[Relay],
) -> None:
    beta, gamma = device(store, "beta"), device(store, "gamma")
    connections = Connections(limit=8)
    connections.track(beta, idle_relays[0])
    connections.track(gamma, idle_relays[1])
    watch = TrustWatch(store, connections, Refusals(lambda *_: None),
                       lambda d: d & frozenset({beta}))
    assert watch.admits(beta) and not watch.admits(gamma)
    watch.check()
    assert (idle_relays[0].cut_reason, idle_relays[1].cut_reason) == (None, "unpaired")


def test_an_ending_cuts_every_connection_and_calls_on_end_once(
    devices: Devices, store: TrustStore, idle_relays: list[Relay],
) -> None:
    beta, gamma = device(store, "beta"), device(store, "gamma")
    connections = Connections(limit=8)
    connections.track(beta, idle_relays[0])
    connections.track(gamma, idle_relays[1])
    watch = TrustWatch(store, connections, Refusals(lambda *_: None), lambda d: d,
                       ending=lambda d: None if beta in d else "beta was unpaired")
    ends = threading.Semaphore(0)
    watch.on_end = ends.release
    watch.check()
    assert watch.ended is None and idle_relays[1].cut_reason is None
    devices.forget("alpha", "beta")
    watch.check()
    assert watch.ended == "beta was unpaired"
    assert [r.cut_reason for r in idle_relays[:2]] == ["beta was unpaired"] * 2
    assert not watch.admits(gamma)  # an ended tunnel admits nobody
    devices.forget("alpha", "gamma")
    watch.check()
    assert ends.acquire(timeout=0) and not ends.acquire(timeout=0)
