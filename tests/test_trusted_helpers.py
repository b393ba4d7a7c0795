"""Trusted connections after pairing: peer_of, the asyncio and blocking helpers, and
third-party code (http.server, urllib) with the raw contexts.

Every handshake here is real TLS over loopback; pairing is simulated by committing each
other's certificate. The contexts themselves are tested in ``test_trusted.py``.
"""

from __future__ import annotations

import asyncio
import http.server
import queue
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.errors import BadInput, Expired, NetworkError
from certpair.store import Peer, open_store
from certpair.trusted import (
    NotPaired,
    client_context,
    connect,
    connection_error,
    make_server,
    measure_handshake,
    open_connection,
    peer_of,
    server_context,
    start_server,
)
from tests.trustedutil import TIMEOUT, Devices, make_devices, memory_handshake


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    return make_devices(tmp_path)


# -- third-party code with the raw contexts ------------------------------------------------


@pytest.fixture
def https_server(devices: Devices) -> Iterator[tuple[str, list[str]]]:
    """http.server behind alpha's server context; it answers with the peer's name."""
    home = devices.home("alpha")
    served: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert isinstance(self.request, ssl.SSLSocket)
            served.append(peer_of(self.request, home).name)
            body = served[-1].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = server_context(home).wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/", served
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


def fetch(url: str, context: ssl.SSLContext) -> str:
    with urllib.request.urlopen(url, context=context, timeout=TIMEOUT) as response:
        return str(response.read().decode())


def test_http_server_and_urllib_with_the_contexts_talk_between_paired_devices(
    devices: Devices, https_server: tuple[str, list[str]]
) -> None:
    url, served = https_server
    assert fetch(url, client_context(devices.home("beta"))) == "beta"
    assert served == ["beta"]


def test_http_server_refuses_an_unpaired_client_and_urllib_an_unpaired_server(
    devices: Devices, https_server: tuple[str, list[str]]
) -> None:
    url, served = https_server
    # TLS 1.3: the client finishes its handshake first, then reads the server's alert
    # (or, as http.server closes at once, sometimes only the reset that follows it).
    with pytest.raises(OSError):  # noqa: PT011  # SSLError or URLError, both refusals
        fetch(url, client_context(devices.home("gamma")))
    devices.forget("beta", "alpha")
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(url, client_context(devices.home("beta")))
    assert served == []


def test_http_server_refuses_a_removed_peer_on_the_next_request_without_a_restart(
    devices: Devices, https_server: tuple[str, list[str]]
) -> None:
    url, served = https_server
    client_ctx = client_context(devices.home("beta"))
    assert fetch(url, client_ctx) == "beta"
    devices.forget("alpha", "beta")
    with pytest.raises(OSError):  # noqa: PT011  # SSLError or URLError, both refusals
        fetch(url, client_ctx)
    assert served == ["beta"]


# -- peer_of and the helpers ---------------------------------------------------------------


def test_peer_of_names_the_stored_peer_and_refuses_an_unknown_certificate(
    devices: Devices,
) -> None:
    wires = tuple(ssl.MemoryBIO() for _ in range(4))
    server = server_context(devices.home("alpha")).wrap_bio(wires[0], wires[1], server_side=True)
    client = client_context(devices.home("beta")).wrap_bio(wires[2], wires[3])
    assert memory_handshake(server, client, wires) is None
    assert peer_of(server, devices.home("alpha")).name == "beta"
    with open_store(devices.home("beta")) as store:
        assert peer_of(client, store).fingerprint == devices.fp("alpha")
    assert peer_of(client).fingerprint == devices.fp("alpha")  # the context's own store
    devices.forget("alpha", "beta")
    with pytest.raises(NotPaired, match="not a paired device"):
        peer_of(server, devices.home("alpha"))
    with pytest.raises(NotPaired):
        peer_of(server)


def test_peer_of_needs_a_home_for_a_connection_made_with_another_context(
    devices: Devices,
) -> None:
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    identity = devices.ids["alpha"]
    plain.load_cert_chain(identity.cert_path, identity.key_path)
    plain.verify_mode = ssl.CERT_REQUIRED
    plain.load_verify_locations(cadata=devices.ids["beta"].cert_der)
    wires = tuple(ssl.MemoryBIO() for _ in range(4))
    server = plain.wrap_bio(wires[0], wires[1], server_side=True)
    client = client_context(devices.home("beta")).wrap_bio(wires[2], wires[3])
    assert memory_handshake(server, client, wires) is None
    with pytest.raises(BadInput):
        peer_of(server)
    assert peer_of(server, devices.home("alpha")).name == "beta"


async def test_async_helpers_connect_paired_devices_and_report_the_peer(
    devices: Devices,
) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   peer: Peer) -> None:
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.write(peer.name.encode() + b":" + line)
        await writer.drain()

    server = await start_server(echo, "127.0.0.1", 0, devices.home("alpha"))
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer, peer = await open_connection("127.0.0.1", port, devices.home("beta"))
        writer.write(b"hello\n")
        answer = await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.close()
    assert (peer.fingerprint, answer) == (devices.fp("alpha"), b"beta:hello\n")


async def test_async_server_reports_an_unpaired_client_as_refused(devices: Devices) -> None:
    refused: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    peer: Peer) -> None:
        raise AssertionError(f"{peer.name} got through")

    server = await start_server(never, "127.0.0.1", 0, devices.home("alpha"),
                                on_refused=lambda remote, why: refused.set_result((remote, why)))
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer, _ = await open_connection("127.0.0.1", port, devices.home("gamma"))
        writer.write(b"hello\n")
        # start_server sends the TLS alert before it drops the connection (asyncio alone
        # would not), so the client reads why: NotPaired, in certpair's words.
        with pytest.raises(NotPaired, match="refused this device"):
            await asyncio.wait_for(reader.readexactly(1), TIMEOUT)
        remote, why = await asyncio.wait_for(refused, TIMEOUT)
        writer.close()
    assert remote.startswith("127.0.0.1:") and why == "not a paired device"


async def test_async_client_refuses_an_unpaired_server(devices: Devices) -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   peer: Peer) -> None:
        pass

    devices.trust("gamma", "beta")
    server = await start_server(idle, "127.0.0.1", 0, devices.home("gamma"))
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(NotPaired, match="is not a paired device"):
            await open_connection("127.0.0.1", port, devices.home("beta"))


@pytest.fixture
def sync_server(devices: Devices) -> Iterator[tuple[int, queue.Queue[tuple[str, str]]]]:
    """make_server on alpha: answers each line with the peer's name; reports refusals."""
    refusals: queue.Queue[tuple[str, str]] = queue.Queue()

    def answer(tls: ssl.SSLSocket, peer: Peer) -> None:
        with tls.makefile("rb") as reader:
            line = reader.readline()
            tls.sendall(peer.name.encode() + b":" + line)

    server = make_server(answer, "127.0.0.1", 0, devices.home("alpha"), timeout=TIMEOUT,
                         on_refused=lambda remote, why: refusals.put((remote, why)))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_address[1], refusals
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_sync_helpers_connect_paired_devices_and_refuse_an_unpaired_one(
    devices: Devices, sync_server: tuple[int, queue.Queue[tuple[str, str]]]
) -> None:
    port, refusals = sync_server
    tls, peer = connect("127.0.0.1", port, devices.home("beta"), timeout=TIMEOUT)
    with tls:
        tls.sendall(b"hi\n")
        assert tls.recv(100) == b"beta:hi\n"
        assert tls.gettimeout() == TIMEOUT  # every later read is bounded
    assert peer.fingerprint == devices.fp("alpha")
    tls, _ = connect("127.0.0.1", port, devices.home("gamma"), timeout=TIMEOUT)
    with tls, pytest.raises(ssl.SSLError) as refused:
        tls.sendall(b"hi\n")
        tls.recv(100)
    assert isinstance(connection_error(refused.value, "alpha"), NotPaired)
    remote, why = refusals.get(timeout=TIMEOUT)
    assert remote.startswith("127.0.0.1:") and why == "not a paired device"
    assert refusals.empty()


def test_connect_reports_an_unreachable_port_as_a_network_error(tmp_path: Path,
                                                                 devices: Devices) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(NetworkError, match="cannot reach"):
        connect("127.0.0.1", port, devices.home("beta"), timeout=TIMEOUT)


def test_connect_times_out_on_a_silent_server(devices: Devices) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(Expired):
            connect("127.0.0.1", port, devices.home("beta"), timeout=0.2)


def test_measure_handshake_times_a_full_verified_connection(
    devices: Devices, sync_server: tuple[int, queue.Queue[tuple[str, str]]]
) -> None:
    port, _ = sync_server
    context = client_context(devices.home("beta"))
    start = time.perf_counter()
    took = measure_handshake("127.0.0.1", port, context, timeout=TIMEOUT)
    assert 0 < took <= time.perf_counter() - start
    with pytest.raises(NotPaired):
        measure_handshake("127.0.0.1", port, client_context(devices.home("gamma")))


async def test_open_connection_pinned_to_one_device_refuses_another(devices: Devices) -> None:
    devices.trust("gamma", "beta")
    devices.trust("beta", "gamma")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      peer: Peer) -> None:
        writer.write(b"x")
        await writer.drain()

    server = await start_server(handler, "127.0.0.1", 0, devices.home("beta"))
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NotPaired):
            await open_connection("127.0.0.1", port, devices.home("gamma"), peer="alpha")
        _, writer, peer = await open_connection("127.0.0.1", port, devices.home("gamma"),
                                                peer="beta")
        writer.close()
        assert peer.fingerprint == devices.fp("beta")
    finally:
        server.close()
