"""``certpair tunnel`` end to end: real ``tunnel serve`` and ``tunnel connect`` processes,
real sockets on loopback, real services behind them."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cliutil import LOOPBACK, run
from tests.tunnelutil import (
    WAIT,
    Devices,
    Service,
    blocks,
    dial,
    echo,
    make_devices,
    read_all,
)

CURL = shutil.which("curl")


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    found = make_devices(tmp_path)
    yield found
    for tunnel in found.started:
        if tunnel.proc.poll() is None:
            code, _, err = tunnel.stop()
            assert code == 0 and "Traceback" not in err, err
        tunnel.kill()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.close()


def start(services: list[Service], handler: object) -> Service:
    service = Service(handler)  # type: ignore[arg-type]  # the handlers below fit
    services.append(service)
    return service


@pytest.mark.skipif(CURL is None, reason="needs curl (Debian: apt install curl)")
def test_curl_reaches_an_http_server_through_the_tunnel_and_both_ends_report_it(
    devices: Devices, tmp_path: Path,
) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hello through the tunnel\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        server, client = devices.pipe(f"{LOOPBACK}:{httpd.server_address[1]}")
        assert CURL is not None
        got = subprocess.run([CURL, "-sS", "--fail", "--max-time", str(WAIT),
                              f"http://{LOOPBACK}:{client.port}/hello.txt"],
                             capture_output=True, text=True, timeout=WAIT, check=False)
        assert got.returncode == 0, got.stderr
        assert got.stdout == "hello through the tunnel\n"
    finally:
        httpd.shutdown()
        httpd.server_close()
    opened = server.event("opened")
    assert opened["peer"] == {"name": "beta", "fingerprint": devices.fp("beta")}
    closed = server.event("closed")
    assert closed["reason"] == "done" and closed["bytes_down"] > len("hello through")
    assert client.event("opened")["peer"] == {"name": "alpha",
                                              "fingerprint": devices.fp("alpha")}
    assert client.event("closed")["bytes_up"] == closed["bytes_up"]
    assert client.listening["address_from"] == "--to"


def test_half_close_carries_each_eof_while_the_other_direction_keeps_flowing(
    devices: Devices, services: list[Service],
) -> None:
    async def greet_then_digest(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        # The service finishes its side first, then keeps reading the client's request.
        writer.write(b"hello\n")
        writer.write_eof()
        request = await reader.read()
        service.results.put(hashlib.sha256(request).hexdigest())

    async def digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A request/response protocol that needs the client's EOF to answer.
        writer.write(hashlib.sha256(await reader.read()).hexdigest().encode())
        await writer.drain()

    service = start(services, greet_then_digest)
    _, client = devices.pipe(service.address)
    with dial(client.port) as sock:
        assert read_all(sock) == b"hello\n"  # its EOF arrived, our direction is still open
        sock.sendall(b"still talking after your EOF")
        sock.shutdown(socket.SHUT_WR)
        assert service.results.get(timeout=WAIT) == hashlib.sha256(
            b"still talking after your EOF").hexdigest()

    answering = start(services, digest)
    _, client2 = devices.pipe(answering.address)
    request = b"".join(blocks(3, 100_000))
    with dial(client2.port) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == hashlib.sha256(request).hexdigest().encode()


def test_64_mib_each_way_at_once_arrive_with_equal_sha256(
    devices: Devices, services: list[Service],
) -> None:
    service = start(services, echo)
    server, client = devices.pipe(service.address)
    sent = hashlib.sha256()

    def upload(sock: socket.socket) -> None:
        for block in blocks(64):
            sent.update(block)
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)

    with dial(client.port) as sock:
        writer = threading.Thread(target=upload, args=(sock,))
        writer.start()
        received = hashlib.sha256()
        total = 0
        while data := sock.recv(1 << 18):
            received.update(data)
            total += len(data)
        writer.join(WAIT)
    assert total == 64 << 20 and received.hexdigest() == sent.hexdigest()
    closed = server.event("closed")
    assert (closed["bytes_up"], closed["bytes_down"], closed["reason"]) == (
        64 << 20, 64 << 20, "done")


def test_a_one_way_upload_to_a_service_that_answers_only_at_eof_never_stalls(
    devices: Devices, services: list[Service],
) -> None:
    # Nothing comes back until the end, and the service reads slowly through a small
    # buffer: records left in OpenSSL's buffer while it caught up must still be read.
    async def digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = hashlib.sha256()
        while data := await reader.read(4096):
            got.update(data)
        writer.write(got.hexdigest().encode())
        await writer.drain()

    service = Service(digest, receive_buffer=4096)
    services.append(service)
    _, client = devices.pipe(service.address)
    sent = hashlib.sha256()
    with dial(client.port) as sock:
        for block in blocks(16):
            sent.update(block)
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == sent.hexdigest().encode()


def test_500_concurrent_connections_all_complete(
    devices: Devices, services: list[Service],
) -> None:
    service = start(services, echo)
    _, client = devices.pipe(service.address)

    async def one(number: int) -> bool:
        reader, writer = await asyncio.open_connection(LOOPBACK, client.port)
        payload = number.to_bytes(4, "big") * 1000
        writer.write(payload)
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        return answer == payload

    async def many() -> list[bool]:
        return await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(500))), WAIT)

    assert all(asyncio.run(many()))
    assert service.accepted == 500


def test_sigterm_mid_transfer_drains_the_open_connection_and_refuses_new_ones(
    devices: Devices, services: list[Service],
) -> None:
    size = 32 << 20

    async def download(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for block in blocks(size >> 20):
            writer.write(block)
            await writer.drain()

    service = start(services, download)
    server, client = devices.pipe(service.address)
    expected = hashlib.sha256(b"".join(blocks(size >> 20))).hexdigest()
    with dial(client.port) as sock:
        got = hashlib.sha256()
        first = sock.recv(1 << 16)
        got.update(first)
        server.proc.send_signal(signal.SIGTERM)
        assert server.event("stopping")["open"] == 1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
        total = len(first)
        while data := sock.recv(1 << 18):
            got.update(data)
            total += len(data)
    assert (total, got.hexdigest()) == (size, expected)
    code, rest, err = server.finish(WAIT)
    assert code == 0, err
    assert next(e for e in rest if e["event"] == "closed")["reason"] == "done"
    assert rest[-1] == {"event": "stopped", "cut": 0}


def test_drain_timeout_cuts_what_is_still_open(devices: Devices,
                                               services: list[Service]) -> None:
    service = start(services, echo)
    server, client = devices.pipe(service.address, "--drain-timeout", "0.2")
    with dial(client.port) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionResetError):
            read_all(sock)  # a cut is a reset, never a clean end
    code, rest, _ = server.finish(WAIT)
    assert code == 0
    assert [e["reason"] for e in rest if e["event"] == "closed"] == ["shutdown"]
    assert rest[-1] == {"event": "stopped", "cut": 1}


def test_service_down_is_told_as_unavailable_never_as_done_and_leaks_nothing(
    devices: Devices,
) -> None:
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
    server, client = devices.pipe(f"{LOOPBACK}:{port}")
    # Checked at start, without a connection: a warning, and the tunnel serves.
    warned = server.event("target_unreachable")
    assert warned["to"] == f"{LOOPBACK}:{port}" and "refused" in warned["reason"]
    with dial(client.port) as sock, pytest.raises(ConnectionResetError):
        read_all(sock)  # a failure to the application (curl: reset), never an empty reply
    failed = server.event("failed")
    assert failed["peer"]["name"] == "beta"
    assert failed["reason"].startswith(f"the service {LOOPBACK}:{port} is unreachable")
    closed = client.event("closed")
    assert closed["reason"].startswith("service unavailable: alpha's tunnel"), closed
    before = server.fds(), client.fds()
    for _ in range(50):
        with dial(client.port) as sock, pytest.raises(ConnectionResetError):
            read_all(sock)
    for _ in range(50):
        server.event("failed")
    reasons = {client.event("closed")["reason"] for _ in range(50)}
    assert len(reasons) == 1 and "service unavailable" in reasons.pop()
    assert (server.fds(), client.fds()) == before


def test_a_target_off_this_host_needs_unsafe_target_and_a_wide_listen_needs_unsafe_listen(
    devices: Devices,
) -> None:
    alpha, beta = devices.home("alpha"), devices.home("beta")
    refused = run(alpha, "tunnel", "serve", "--to", "192.0.2.1:80", "--port", "0")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--unsafe-target" in refused.stderr
    allowed = devices.serve("192.0.2.1:80", "--unsafe-target")
    assert allowed.listening["to"] == "192.0.2.1:80"
    wide = run(beta, "tunnel", "connect", "alpha", "--to", "127.0.0.1", "--listen",
               "0.0.0.0:0")
    assert wide.returncode == 2 and "--unsafe-listen" in wide.stderr, wide.stderr
    assert run(beta, "tunnel", "serve", "--to", "nonsense").returncode == 2
    assert run(beta, "tunnel", "connect", "nobody", "--listen", "0").returncode == 2
