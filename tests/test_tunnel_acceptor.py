"""The accept loop both tunnel ends share (tunnel/acceptor.py), in-process: each
connection run by the thread that accepted it, the worker pool, the connection limit
(a reset and a counted refusal over it, room again once a connection ends), a failing
handler, the stop when the trust watch ends the tunnel, and SIGTERM: drain for the
timeout, then cut what is still open."""

from __future__ import annotations

import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certpair.store import TrustStore, open_store
from certpair.tunnel import threads
from certpair.tunnel.acceptor import listen, run_acceptor
from certpair.tunnel.events import Failed, Stopped, Stopping, TunnelEvent
from certpair.tunnel.threads import Workers
from certpair.tunnel.watch import Connections, Refusals, TrustWatch
from tests.trustedutil import Devices, make_devices
from tests.tunnelpipe import LOOPBACK, WAIT, in_thread, make_pipe, what_the_end_saw


def test_the_pool_runs_every_submitted_job_at_the_same_time() -> None:
    workers = Workers()
    together = threading.Barrier(6, timeout=WAIT)

    def meet() -> None:
        together.wait()

    for _ in range(5):
        workers.submit(meet)
    together.wait()  # breaks (and raises) unless all five run at once


def until(predicate: Callable[[], bool]) -> None:
    """Wait (bounded) for a state the code under test reaches without telling anyone."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        threading.Event().wait(0.001)


def test_the_pool_hands_the_next_job_to_a_thread_that_finished_one() -> None:
    workers = Workers()
    ran: queue.Queue[int] = queue.Queue()
    for _ in range(20):
        workers.submit(lambda: ran.put(threading.get_ident()))
        # The thread counts itself idle just after its job returned.
        until(lambda: workers._idle == 1)
    threads = {ran.get(timeout=WAIT) for _ in range(20)}
    assert len(threads) == 1, threads  # one thread ran all, none was started anew


@dataclass
class Harness:
    """``run_acceptor`` in a thread on a loopback listener; ``handle`` holds each
    connection until the test releases it."""

    store: TrustStore
    devices: Devices
    limit: int
    events: queue.Queue[TunnelEvent] = field(default_factory=queue.Queue)
    refused: queue.Queue[tuple[str, str, int]] = field(default_factory=queue.Queue)
    started: queue.Queue[str] = field(default_factory=queue.Queue)
    release: dict[str, threading.Event] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)
    port: int = 0
    ended: Callable[..., object] = lambda *_: None
    stop_now: threading.Event = field(default_factory=threading.Event)
    listener: socket.socket | None = None
    ran_in: dict[str, bool] = field(default_factory=dict)

    def start(self) -> None:
        self.connections = Connections(limit=self.limit)
        self.refusals = Refusals(lambda *row: self.refused.put(row))
        self.watch = TrustWatch(self.store, self.connections, self.refusals, lambda d: d,
                                ending=lambda _: "stopped" if self.stop_now.is_set() else None)
        listener = self.listener or listen(LOOPBACK, 0)
        self.port = listener.getsockname()[1]
        self.ended = in_thread(lambda: run_acceptor(
            listener, self.handle, connections=self.connections, refusals=self.refusals,
            watch=self.watch, on_event=self.events.put, drain_timeout=1.0))

    def handle(self, sock: socket.socket, remote: str) -> TunnelEvent | None:
        accepted_by = getattr(self.listener, "accepted_by", {})
        with sock:
            name = sock.recv(16).decode()
            self.ran_in[name] = accepted_by.get(sock.fileno()) == threading.get_ident()
            self.started.put(name)
            if name in self.fail:
                raise RuntimeError("the store went away")
            self.release.setdefault(name, threading.Event()).wait(WAIT)
            sock.sendall(b"bye " + name.encode())
        return Failed(remote=remote, reason=f"{name} done")

    def open(self, name: str) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self.port), timeout=WAIT)
        self.release.setdefault(name, threading.Event())
        sock.sendall(name.encode())
        return sock

    def over_the_limit(self) -> str:
        """What a connection sees that is refused: the reset may come in connect()."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=WAIT) as sock:
                return what_the_end_saw(sock)
        except ConnectionResetError:
            return "reset"

    def stop(self) -> None:
        self.stop_now.set()
        self.devices.forget("alpha", "beta")  # a change the watch sees: it ends the tunnel
        self.ended()


class RecordingListener(socket.socket):
    """A listener that notes which thread accepted each connection (by descriptor)."""

    accepted_by: dict[int, int]

    def accept(self) -> tuple[socket.socket, object]:
        sock, address = super().accept()
        self.accepted_by[sock.fileno()] = threading.get_ident()
        return sock, address


@pytest.mark.parametrize("epoll", [True, False], ids=["epoll", "poll"])
def test_each_connection_runs_in_the_thread_that_accepted_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epoll: bool,
) -> None:
    """No hand-off from an accepting thread to a worker (two thread switches per
    connection): the thread that accepts a connection runs it, with epoll (Linux) and
    with a poll in each waiting thread."""
    monkeypatch.setattr(threads, "_EPOLL", epoll)
    listener = RecordingListener(socket.AF_INET, socket.SOCK_STREAM)
    listener.accepted_by = {}
    listener.bind((LOOPBACK, 0))
    listener.listen(16)
    devices = make_devices(tmp_path)
    with open_store(devices.home("alpha")) as store:
        made = Harness(store, devices, limit=8, listener=listener)
        made.start()
        try:
            for name in ("one", "two", "three", "four", "five"):
                with made.open(name) as sock:
                    assert made.started.get(timeout=WAIT) == name
                    made.release[name].set()
                    assert sock.recv(16) == b"bye " + name.encode()
            assert made.ran_in == dict.fromkeys(("one", "two", "three", "four", "five"), True)
        finally:
            made.stop()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    devices = make_devices(tmp_path)
    with open_store(devices.home("alpha")) as store:
        made = Harness(store, devices, limit=2)
        made.start()
        try:
            yield made
        finally:
            for event in made.release.values():
                event.set()
            if not made.stop_now.is_set():
                made.stop()


def test_over_the_limit_a_connection_is_reset_and_counted_until_one_ends(
    harness: Harness,
) -> None:
    one, two = harness.open("one"), harness.open("two")
    assert {harness.started.get(timeout=WAIT) for _ in range(2)} == {"one", "two"}
    assert harness.over_the_limit() == "reset"
    assert harness.refused.get(timeout=WAIT) == (LOOPBACK, "too many connections", 1)
    assert harness.connections.busy == 2
    harness.release["one"].set()
    assert one.recv(16) == b"bye one"
    # The slot is free once the handler's last event is reported.
    assert harness.events.get(timeout=WAIT) == Failed(remote=one_remote(one), reason="one done")
    four = harness.open("four")
    assert harness.started.get(timeout=WAIT) == "four"
    harness.release["four"].set()
    harness.release["two"].set()
    assert four.recv(16) == b"bye four" and two.recv(16) == b"bye two"
    for sock in (one, two, four):
        sock.close()


def one_remote(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_a_handler_that_raises_is_reported_and_frees_its_slot(harness: Harness) -> None:
    harness.fail.add("bad")
    with harness.open("bad") as bad:
        assert harness.started.get(timeout=WAIT) == "bad"
        event = harness.events.get(timeout=WAIT)
        assert event == Failed(remote=one_remote(bad),
                               reason="internal error: the store went away")
        assert bad.recv(16) == b""  # its socket was closed
    assert harness.connections.busy == 0


def test_the_watch_ending_the_tunnel_stops_the_accept_loop_and_reports_the_stop(
    harness: Harness,
) -> None:
    with harness.open("last") as sock:
        assert harness.started.get(timeout=WAIT) == "last"
        harness.release["last"].set()
        assert sock.recv(16) == b"bye last"
    assert isinstance(harness.events.get(timeout=WAIT), Failed)
    harness.stop()  # returns once run_acceptor returned
    rest = [harness.events.get(timeout=WAIT) for _ in range(2)]
    assert rest == [Stopping(open=0, drain_timeout=1.0), Stopped(cut=0)]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, harness.port), timeout=WAIT).close()


def test_a_signal_drains_for_the_timeout_then_cuts_what_is_still_open(
    tmp_path: Path,
) -> None:
    devices = make_devices(tmp_path)
    pipe = make_pipe(devices)  # a live connection the accept loop's handler carries
    events: queue.Queue[TunnelEvent] = queue.Queue()
    carried = threading.Event()
    with open_store(devices.home("alpha")) as store:
        connections = Connections(limit=4)
        refusals = Refusals(lambda *_: None)
        watch = TrustWatch(store, connections, refusals, lambda d: d)
        beta = next(p.device_id for p in store.peers() if p.name == "beta")

        def handle(sock: socket.socket, remote: str) -> TunnelEvent | None:
            sock.close()
            tracked = connections.track(beta, pipe.b)
            carried.set()
            try:
                return Failed(remote=remote, reason=str(pipe.ended_b()))
            finally:
                connections.untrack(tracked)

        listener = listen(LOOPBACK, 0)
        port = listener.getsockname()[1]
        main = threading.main_thread().ident
        assert main is not None and threading.current_thread().ident == main

        def client() -> None:
            socket.create_connection((LOOPBACK, port), timeout=WAIT).close()
            assert carried.wait(WAIT)
            signal.pthread_kill(main, signal.SIGTERM)  # as `kill` would, to the loop

        started = in_thread(client)
        run_acceptor(listener, handle, connections=connections, refusals=refusals,
                     watch=watch, on_event=events.put, drain_timeout=0.3)
        started()
    seen = [events.get(timeout=WAIT) for _ in range(3)]
    assert seen[0] == Stopping(open=1, drain_timeout=0.3)
    assert Stopped(cut=1) in seen[1:]  # the open connection did not end by itself
    assert any(isinstance(e, Failed) and e.reason == "shutdown" for e in seen[1:])
    assert what_the_end_saw(pipe.app_b) == "reset"
    assert what_the_end_saw(pipe.app_a) == "reset"
    pipe.close()
