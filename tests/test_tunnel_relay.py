"""The relay (tunnel/pump.py) in-process: two relays back to back over real TLS on
loopback, and what each plain end saw. Both directions, half-close, backpressure, and
what a cut or a truncated stream looks like to the ends (a reset, never a clean EOF);
the buffers a thread keeps for its next connection."""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Iterator

import pytest

from certpair.tunnel.link import CHUNK, reset, thread_buffer
from certpair.tunnel.pump import _OUT, _PLAIN_CHUNK, DONE, Relay
from tests.trustedutil import Devices, make_devices
from tests.tunnelpipe import (
    WAIT,
    Pipe,
    client_link,
    in_thread,
    make_pipe,
    read_all,
    read_exactly,
    server_link,
    stalled_after,
    tcp_pair,
    what_the_end_saw,
)


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> Devices:
    return make_devices(tmp_path_factory.mktemp("relay"))


@pytest.fixture
def pipe(devices: Devices) -> Iterator[Pipe]:
    made = make_pipe(devices)
    try:
        yield made
    finally:
        made.close()


def test_both_directions_carry_every_byte_at_once_and_end_in_order(pipe: Pipe) -> None:
    up, down = os.urandom(3 << 20), os.urandom(2 << 20)

    def send(sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    sent_up = in_thread(lambda: send(pipe.app_a, up))
    sent_down = in_thread(lambda: send(pipe.app_b, down))
    got_down = in_thread(lambda: read_all(pipe.app_a))
    got_up = read_all(pipe.app_b)  # an orderly EOF, after every byte
    assert got_up == up
    assert got_down() == down
    sent_up(), sent_down()
    assert pipe.reasons() == (DONE, DONE)
    assert (pipe.a.sent, pipe.b.received) == (len(up), len(up))
    assert (pipe.b.sent, pipe.a.received) == (len(down), len(down))


def test_an_eof_ends_one_direction_and_the_other_keeps_flowing(pipe: Pipe) -> None:
    pipe.app_a.sendall(b"request")
    pipe.app_a.shutdown(socket.SHUT_WR)
    assert read_all(pipe.app_b) == b"request"  # the client's EOF arrived as an EOF
    # The answer is written only after the EOF was seen: the direction back is open.
    pipe.app_b.sendall(b"response " * 1000)
    assert read_exactly(pipe.app_a, 9000) == b"response " * 1000
    pipe.app_b.shutdown(socket.SHUT_WR)
    assert read_all(pipe.app_a) == b""
    assert pipe.reasons() == (DONE, DONE)


def test_an_eof_from_the_service_side_first_ends_in_order_too(pipe: Pipe) -> None:
    pipe.app_b.sendall(b"banner")
    pipe.app_b.shutdown(socket.SHUT_WR)
    assert read_all(pipe.app_a) == b"banner"
    pipe.app_a.sendall(b"late words")
    pipe.app_a.shutdown(socket.SHUT_WR)
    assert read_all(pipe.app_b) == b"late words"
    assert pipe.reasons() == (DONE, DONE)


def test_a_reader_that_does_not_read_stops_the_writer_and_loses_nothing(pipe: Pipe) -> None:
    data = os.urandom(32 << 20)
    taken = stalled_after(pipe.app_a, data)
    # Kernel buffers of six sockets (64 KiB, doubled) plus about one CHUNK per
    # direction and relay: far below the 32 MiB offered. Unbounded buffering takes all.
    assert taken < 4 << 20, taken
    assert pipe.a.sent <= taken
    # The stalled direction does not hold up the other one (one thread, both ways).
    pipe.app_b.sendall(b"still here")
    assert read_exactly(pipe.app_a, 10) == b"still here"
    got = in_thread(lambda: read_exactly(pipe.app_b, len(data)))
    pipe.app_a.sendall(data[taken:])
    assert got(30.0) == data
    pipe.app_a.shutdown(socket.SHUT_WR)
    pipe.app_b.shutdown(socket.SHUT_WR)
    assert read_all(pipe.app_a) == b""
    assert pipe.reasons() == (DONE, DONE)


def test_a_cut_resets_both_plain_ends_and_is_the_reason_given(pipe: Pipe) -> None:
    pipe.app_a.sendall(b"before the cut")
    assert read_exactly(pipe.app_b, 14) == b"before the cut"
    pipe.b.cut("unpaired")
    reason_a, reason_b = pipe.reasons()
    assert reason_b == "unpaired" and pipe.b.cut_reason == "unpaired"
    assert reason_a != DONE  # the far relay saw a broken stream, not an end
    assert what_the_end_saw(pipe.app_b) == "reset"
    assert what_the_end_saw(pipe.app_a) == "reset"


def test_a_cut_before_attach_refuses_the_plain_side(devices: Devices) -> None:
    tls, other = tcp_pair()
    relay = Relay(server_link(devices, tls), idle_timeout=None)
    relay.cut("shutdown")
    app, plain = tcp_pair()
    try:
        assert not relay.attach(plain)
        assert plain.fileno() == -1  # closed, never carried
        assert what_the_end_saw(app) == "reset"
    finally:
        for sock in (app, other, tls):
            sock.close()


def test_a_tls_stream_ended_without_close_notify_resets_the_service_side(
    devices: Devices,
) -> None:
    tls_a, tls_b = tcp_pair()
    link_a, link_b = client_link(devices, tls_a), server_link(devices, tls_b)
    deadline = time.monotonic() + WAIT
    shaken = in_thread(lambda: link_b.handshake(deadline))
    link_a.handshake(deadline)
    shaken()
    relay = Relay(link_b, idle_timeout=None)
    app, plain = tcp_pair()
    assert relay.attach(plain)
    ended = in_thread(relay.run)
    try:
        link_a.tls.write(b"half a messa")
        link_a.flush(deadline)
        assert read_exactly(app, 12) == b"half a messa"
        tls_a.close()  # a FIN without close_notify: a truncation
        assert ended() == "the tunnel connection closed without close_notify"
        assert what_the_end_saw(app) == "reset"
    finally:
        app.close()


def test_a_reset_from_the_service_resets_the_tunnel_side(pipe: Pipe) -> None:
    pipe.app_a.sendall(b"x")
    assert read_exactly(pipe.app_b, 1) == b"x"
    reset(pipe.app_b)
    reason_a, reason_b = pipe.reasons()
    assert str(reason_b).startswith("the service side broke"), reason_b
    assert reason_a != DONE
    assert what_the_end_saw(pipe.app_a) == "reset"


def test_a_half_closed_connection_on_which_nothing_moves_ends_as_a_cut(
    devices: Devices,
) -> None:
    pipe = make_pipe(devices, half_close_timeout=0.5)
    try:
        pipe.app_a.shutdown(socket.SHUT_WR)  # the client left; the service never answers
        assert "half-close timeout" in pipe.reasons()
        # The client, still reading, learns that its answer will never come complete
        # (the service's side had the client's EOF, in order, before the cut).
        assert what_the_end_saw(pipe.app_a) == "reset"
    finally:
        pipe.close()


def test_an_open_connection_on_which_nothing_moves_ends_at_the_idle_timeout(
    devices: Devices,
) -> None:
    pipe = make_pipe(devices, idle_timeout=0.5)
    try:
        assert "idle timeout" in pipe.reasons()
        assert what_the_end_saw(pipe.app_a) == "reset"
        assert what_the_end_saw(pipe.app_b) == "reset"
    finally:
        pipe.close()


def test_one_full_plain_read_fills_exactly_one_64_kib_read_of_a_transit_relay(
    devices: Devices,
) -> None:
    """The pump's plain reads are sized so that their TLS records, as negotiated here,
    are exactly CHUNK (64 KiB) on the wire: a transit relay, which reads 64 KiB at a
    time, takes each in one read, not 65,536 bytes and an 88-byte tail."""
    tls_a, tls_b = tcp_pair()
    link_a, link_b = client_link(devices, tls_a), server_link(devices, tls_b)
    try:
        deadline = time.monotonic() + WAIT
        shaken = in_thread(lambda: link_b.handshake(deadline))
        link_a.handshake(deadline)
        shaken()
        link_a.collect()
        assert link_a.outgoing.pending == 0
        link_a.tls.write(b"\0" * _PLAIN_CHUNK)
        assert link_a.outgoing.pending == CHUNK
    finally:
        tls_a.close()
        tls_b.close()


def test_a_thread_keeps_its_buffers_for_the_next_connection_and_frees_their_pages(
    devices: Devices,
) -> None:
    """A thread maps its buffers once, not per connection (each map and unmap cost
    system calls and page faults on the connection's path); after a connection that
    filled them, their pages are given back (they read as zeros), so an idle thread
    does not keep them resident."""
    tls_a, tls_b = tcp_pair()
    link_a, link_b = client_link(devices, tls_a), server_link(devices, tls_b)
    assert link_a.scratch.obj is link_b.scratch.obj  # one thread, one buffer
    deadline = time.monotonic() + WAIT
    shaken = in_thread(lambda: link_b.handshake(deadline))
    link_a.handshake(deadline)
    shaken()
    relays = [Relay(link, idle_timeout=None) for link in (link_a, link_b)]
    apps = []
    for relay in relays:
        app, plain = tcp_pair()
        assert relay.attach(plain)
        apps.append(app)

    def carry_then_look(relay: Relay) -> tuple[object, bool, bool]:
        used = relay.link.scratch.obj  # the buffers this thread's relay reads into
        reason = relay.run()
        return (reason, relay.link.scratch.obj is used,
                any(relay.link.scratch) or any(thread_buffer("out", _OUT)))

    ended = [in_thread(functools.partial(carry_then_look, relay)) for relay in relays]
    data = os.urandom(256 * 1024)
    sent = in_thread(lambda: apps[0].sendall(data))
    assert read_exactly(apps[1], len(data)) == data
    sent()
    for app in apps:
        app.shutdown(socket.SHUT_WR)
    for app in apps:
        assert read_all(app) == b""
    for each in ended:
        assert each() == (DONE, True, False)  # the same buffers, all pages given back
    for app in apps:
        app.close()
