"""Helpers for the tunnel tests: paired homes, tunnel processes, loopback services."""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certpair.identity import Identity, create_identity
from certpair.store import open_store
from tests.cliutil import LOOPBACK, Proc, certpair_argv

WAIT = 30.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Tunnel(Proc):
    """A ``certpair tunnel serve|connect --json`` process; its first event is read."""

    def __init__(self, home: Path, *args: str) -> None:
        super().__init__(certpair_argv(home, "tunnel", *args, "--json"))
        self.seen: list[dict[str, Any]] = []
        self.listening = self.next_event()
        assert self.listening["event"] == "listening", self.listening
        self.port = int(self.listening["port"])

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = WAIT) -> dict[str, Any]:
        """Read events until one matches (all are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.1, deadline - time.monotonic()))
            self.seen.append(event)
            if predicate(event):
                return event

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The next event of this kind whose fields have these values."""
        return self.wait_for(lambda e: e["event"] == kind and all(
            e.get(k) == v for k, v in fields.items()))

    def stop(self) -> tuple[int, list[dict[str, Any]], str]:
        """SIGTERM, then the exit status, the remaining events and stderr."""
        self.proc.terminate()
        return self.finish(WAIT)

    def fds(self) -> int:
        """Open file descriptors of the process."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@dataclass
class Devices:
    """alpha serves. beta and delta are paired with alpha both ways; gamma trusts alpha,
    but alpha does not trust gamma."""

    root: Path
    ids: dict[str, Identity]
    started: list[Tunnel] = field(default_factory=list)

    def home(self, name: str) -> Path:
        return self.root / name

    def fp(self, name: str) -> str:
        return self.ids[name].fingerprint

    def trust(self, who: str, whom: str) -> None:
        with open_store(self.home(who)) as store:
            store.commit_pairing(name=whom, cert_der=self.ids[whom].cert_der, mode="cpace",
                                 role="offerer", remote=f"{LOOPBACK}:4490")

    def serve(self, to: str, *args: str, home: str = "alpha", advertise: bool = False
              ) -> Tunnel:
        quiet = () if advertise else ("--no-advertise",)
        self.started.append(Tunnel(self.home(home), "serve", "--to", to, "--listen", LOOPBACK,
                                   "--port", "0", *quiet, *args))
        return self.started[-1]

    def connect(self, who: str, peer: str, port: int, *args: str) -> Tunnel:
        self.started.append(Tunnel(self.home(who), "connect", peer, "--to",
                                   f"{LOOPBACK}:{port}", "--listen", "0", *args))
        return self.started[-1]

    def pipe(self, to: str, *serve_args: str, who: str = "beta") -> tuple[Tunnel, Tunnel]:
        """alpha's ``tunnel serve --to TO`` and ``who``'s ``tunnel connect alpha`` to it."""
        server = self.serve(to, *serve_args)
        return server, self.connect(who, "alpha", server.port)


def make_devices(root: Path) -> Devices:
    found = Devices(root, {n: create_identity(root / n, n)
                           for n in ("alpha", "beta", "gamma", "delta")})
    for a, b in (("alpha", "beta"), ("beta", "alpha"), ("alpha", "delta"),
                 ("delta", "alpha"), ("gamma", "alpha")):
        found.trust(a, b)
    return found


@contextmanager
def running_devices(root: Path) -> Iterator[Devices]:
    """:func:`make_devices`; every tunnel process started through them is killed at the
    end, whatever happened."""
    found = make_devices(root)
    try:
        yield found
    finally:
        for tunnel in found.started:
            tunnel.kill()


class Service:
    """A TCP service on loopback, run by an asyncio loop in a thread.

    ``accepted`` counts its connections; handlers may put results in ``results``.
    """

    def __init__(self, handler: Handler, *, receive_buffer: int | None = None) -> None:
        self.accepted = 0
        self.results: queue.Queue[Any] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        async def start() -> asyncio.Server:
            listener = socket.socket()
            if receive_buffer is not None:  # inherited by accepted connections (Linux)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            listener.bind((LOOPBACK, 0))
            return await asyncio.start_server(accept, sock=listener, backlog=1024)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(WAIT)
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.address = f"{LOOPBACK}:{self.port}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back everything; close after the client's EOF."""
    while data := await reader.read(1 << 18):
        writer.write(data)
        await writer.drain()


def dial(port: int) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout=WAIT)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 18):
        chunks.append(data)
    return b"".join(chunks)


def through(port: int) -> bytes:
    """What comes back of ``hello`` through a tunnel's local port to an echo service
    (nothing when the far end refused the connection)."""
    with dial(port) as sock:
        try:
            sock.sendall(b"hello")
            sock.shutdown(socket.SHUT_WR)
            return read_all(sock)
        except ConnectionResetError:
            return b""


def blocks(count: int, size: int = 1 << 20, seed: int = 7) -> Iterator[bytes]:
    """``count`` pseudo-random blocks (reproducible, cheap)."""
    import random

    rng = random.Random(seed)
    for _ in range(count):
        yield rng.randbytes(size)
