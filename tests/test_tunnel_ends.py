"""How a tunnelled connection ends, as the applications on either side see it
(docs/TUNNEL.md, "How a connection ends"): a killed tunnel end is a reset, never a
clean end; a half-closed connection is bounded by default; a service that is down is
an EOF to every client, whether or not it had sent bytes. Real processes, real sockets.
"""

from __future__ import annotations

import asyncio
import queue
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cliutil import LOOPBACK, run
from tests.tunnelutil import WAIT, Devices, Service, dial, echo, read_all, running_devices


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    with running_devices(tmp_path) as found:
        yield found


class _OneService:
    """A service that takes connections, echoes the first byte of each, then reports
    how the connection ended: ``eof`` (a clean end) or ``reset``."""

    def __init__(self) -> None:
        self.listener = socket.create_server((LOOPBACK, 0))
        self.address = f"{LOOPBACK}:{self.listener.getsockname()[1]}"
        self.ends: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(sock,), daemon=True).start()

    def _one(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(WAIT)
            try:
                sock.sendall(sock.recv(1))
                self.ends.put("eof" if read_all(sock) == b"" else "data")
            except ConnectionResetError:
                self.ends.put("reset")
            except OSError as exc:
                self.ends.put(f"error {exc}")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def one_service() -> Iterator[_OneService]:
    service = _OneService()
    yield service
    service.close()


def test_a_killed_tunnel_connect_resets_its_client_instead_of_a_clean_end(
    devices: Devices, one_service: _OneService,
) -> None:
    _, client = devices.pipe(one_service.address)
    with dial(client.port) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"  # the byte went through: nothing unread anywhere
        client.proc.send_signal(signal.SIGKILL)
        with pytest.raises(ConnectionResetError):
            read_all(sock)  # on main: b"", a cut-off download that looks complete


def test_a_killed_tunnel_serve_resets_the_service_connection_instead_of_a_clean_end(
    devices: Devices, one_service: _OneService,
) -> None:
    server, client = devices.pipe(one_service.address)
    with dial(client.port) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        server.proc.send_signal(signal.SIGKILL)
        assert one_service.ends.get(timeout=WAIT) == "reset"  # on main: "eof"
        with pytest.raises(ConnectionResetError):
            read_all(sock)  # the far end's death reaches the client as a reset too
    assert client.event("closed")["reason"] != "done"


def test_an_orderly_end_is_still_a_clean_end_on_both_sides(
    devices: Devices, one_service: _OneService,
) -> None:
    _, client = devices.pipe(one_service.address)
    with dial(client.port) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b""
    assert one_service.ends.get(timeout=WAIT) == "eof"
    assert client.event("closed")["reason"] == "done"


def test_a_half_closed_connection_whose_service_never_reads_ends_after_the_bound(
    devices: Devices,
) -> None:
    held: list[socket.socket] = []
    with socket.create_server((LOOPBACK, 0)) as listener:
        def hold() -> None:  # accepts, never reads, never closes
            held.append(listener.accept()[0])

        threading.Thread(target=hold, daemon=True).start()
        server, client = devices.pipe(f"{LOOPBACK}:{listener.getsockname()[1]}",
                                      "--half-close-timeout", "1")
        with dial(client.port) as sock:
            sock.sendall(b"request" * 100)
            sock.shutdown(socket.SHUT_WR)  # the client is done; the service never reads
            # on main (no bound): nothing ends, the waits below time out
            assert server.event("closed")["reason"] == "half-close timeout"
            with pytest.raises(ConnectionResetError):
                read_all(sock)  # a cut, never a clean end
    for sock in held:
        sock.close()
    help_text = run(devices.home("alpha"), "tunnel", "serve", "--help").stdout
    assert "--half-close-timeout" in help_text and "default: 60" in help_text


def test_service_down_is_a_reset_for_every_client_even_one_that_sent_bytes(
    devices: Devices,
) -> None:
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
    server, client = devices.pipe(f"{LOOPBACK}:{port}")

    async def one(number: int) -> bytes | str:
        try:  # the reset can come before asyncio has seen the connect complete
            reader, writer = await asyncio.open_connection(LOOPBACK, client.port)
        except ConnectionResetError:
            return "reset"
        try:
            writer.write(b"GET / HTTP/1.0\r\n\r\n" * (number + 1))
            await writer.drain()
            return await reader.read()
        except ConnectionResetError:
            return "reset"
        finally:
            writer.close()

    async def many() -> list[bytes | str]:
        return await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(30))), WAIT)

    # Told by tunnel serve's status byte (tunnel/preamble.py): a failure to every client,
    # never an empty reply that reads as success.
    assert asyncio.run(many()) == ["reset"] * 30
    for _ in range(30):
        assert server.event("failed")["reason"].startswith(
            f"the service {LOOPBACK}:{port} is unreachable")
        assert client.event("closed")["reason"].startswith("service unavailable")


def test_an_echo_through_the_armed_sockets_still_ends_cleanly_under_load(
    devices: Devices,
) -> None:
    service = Service(echo)
    try:
        _, client = devices.pipe(service.address)

        async def one() -> bool:
            reader, writer = await asyncio.open_connection(LOOPBACK, client.port)
            writer.write(b"y" * 70000)
            writer.write_eof()
            answer = await reader.read()
            writer.close()
            return answer == b"y" * 70000

        async def many() -> list[bool]:
            return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(50))), WAIT)

        assert all(asyncio.run(many()))
        assert {client.event("closed")["reason"] for _ in range(50)} == {"done"}
    finally:
        service.close()
