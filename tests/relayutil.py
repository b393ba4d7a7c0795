"""Relays for tests: the real magic-wormhole transit relay as a process, and a hostile
relay of the tests' own that speaks the same protocol, records every byte and may glue
a connection to someone else.

The real relay is ``twistd -n transitrelay`` from the test extra (``.venv/bin/twistd``,
beside the running Python). It is told to listen on port 0 and its log line "starting
on PORT" gives the port, so no port is guessed and nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certpair.relay import CONNECTING_SIDE, RelayAddress

TWISTD = Path(sys.executable).with_name("twistd")
_STARTED = re.compile(r"starting on (\d+)")
_LINE = re.compile(rb"please relay ([0-9a-f]{64}) for side ([0-9a-f]{16})\n")


class RealRelay:
    """``twistd -n transitrelay`` on ``host`` (port chosen by the kernel unless given)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 prefix: Sequence[str] = ()) -> None:
        if not TWISTD.exists():
            message = f"needs the transit relay of the test extra ({TWISTD})"
            if os.environ.get("CI"):
                pytest.fail(message)  # CI installs the test extra: missing is a defect
            pytest.skip(message)
        self.host = host
        self.proc = subprocess.Popen(
            [*prefix, str(TWISTD), "-n", "--pidfile=", "transitrelay",
             f"--port=tcp:{port}:interface={host}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._wait_port()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _wait_port(self) -> int:
        seen: list[str] = []
        while True:
            line = self.lines.get(timeout=30)
            if line is None:
                raise AssertionError("the transit relay did not start: " + "".join(seen[-20:]))
            seen.append(line)
            match = _STARTED.search(line)
            if match:
                return int(match[1])

    @property
    def address(self) -> RelayAddress:
        return RelayAddress(host=self.host, port=self.port)

    @property
    def arg(self) -> str:
        return str(self.address)

    def kill(self) -> None:
        """Die at once (SIGKILL): the kernel closes every connection it carried."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@contextlib.contextmanager
def real_relay(**kwargs: object) -> Iterator[RealRelay]:
    relay = RealRelay(**kwargs)  # type: ignore[arg-type]  # keyword pass-through
    try:
        yield relay
    finally:
        relay.kill()


@dataclass
class _Waiting:
    token: str
    side: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    glued: asyncio.Future[None]


@dataclass
class HostileRelay:
    """A transit relay of the test's own: same protocol, but it records every byte it
    carries (``capture``), and ``redirect`` may send a connection that asks for one
    token to whoever waits under another (a third party)."""

    redirect: Callable[[str, str], str] = lambda token, side: token
    capture: bytearray = field(default_factory=bytearray)
    tokens: list[str] = field(default_factory=list)
    glued: int = 0
    waiting: dict[str, list[_Waiting]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> RelayAddress:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return RelayAddress(host="127.0.0.1", port=self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for entries in self.waiting.values():
            for entry in entries:
                entry.writer.close()

    async def wait_for(self, token: str) -> None:
        """Until someone waits under ``token``."""
        while not self.waiting.get(token):
            self.arrived.clear()
            await self.arrived.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.capture += line
        match = _LINE.fullmatch(line)
        if match is None:
            writer.close()
            return
        token, side = match[1].decode(), match[2].decode()
        self.tokens.append(token)
        target = self.redirect(token, side)
        partners = [w for w in self.waiting.get(target, []) if w.side != side]
        if not partners:
            entry = _Waiting(token, side, reader, writer,
                             asyncio.get_running_loop().create_future())
            self.waiting.setdefault(token, []).append(entry)
            self.arrived.set()
            return
        other = partners[0]
        self.waiting[target].remove(other)
        self.glued += 1
        for w in (writer, other.writer):
            w.write(b"ok\n")
        for src, dst in ((reader, other.writer), (other.reader, writer)):
            task = asyncio.get_running_loop().create_task(self._copy(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _copy(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                self.capture += data
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # As the real relay does: one side gone, the other is closed too.
            dst.close()


class ThreadedRelay:
    """A transit relay of the test's own in threads (for tests whose client is a real
    process): it glues two connections with the same token and different sides, after
    ``redirect`` may have swapped the token (a third party's), copies bytes both ways,
    and lists the connections that did not start with a relay handshake (``strays``).

    ``mode`` makes it hostile instead: ``"glue-close"`` answers ``ok`` to every
    handshake at once (glued to nobody) and closes; ``"glue-hold"`` answers ``ok`` and
    holds the connection silent; ``"close"`` closes every handshake unanswered. An honest
    one may still cut the first ``cut_first`` connecting ends right after their ``ok``
    (as when a squatter was glued to the waiting connection first).
    """

    def __init__(self, mode: str = "honest",
                 redirect: Callable[[bytes], bytes] = lambda token: token,
                 cut_first: int = 0) -> None:
        self.mode, self.redirect, self.cut_first = mode, redirect, cut_first
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self.strays: list[bytes] = []
        self.lock = threading.Lock()
        self.held: list[socket.socket] = []
        self.waiting: dict[bytes, list[tuple[bytes, socket.socket]]] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def arg(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._one, args=(sock,), daemon=True).start()

    def _one(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        line = b""
        with contextlib.suppress(OSError):
            while not line.endswith(b"\n") and len(line) < 200:
                chunk = sock.recv(1)
                if not chunk:
                    break
                line += chunk
        match = _LINE.fullmatch(line)
        if match is None:
            with self.lock:
                self.strays.append(line[:16])  # recorded before the close it sees
            sock.close()
            return
        if self.mode != "honest":
            self._hostile(sock)
            return
        token, side = self.redirect(match[1]), match[2]
        with self.lock:
            cut = side == CONNECTING_SIDE.encode() and self.cut_first > 0
            self.cut_first -= cut
        if cut:
            with contextlib.suppress(OSError):
                sock.sendall(b"ok\n")
            sock.close()
            return
        with self.lock:
            pending = self.waiting.setdefault(token, [])
            partner = next((p for p in pending if p[0] != side), None)
            if partner is None:
                pending.append((side, sock))
                return
            pending.remove(partner)
        other = partner[1]
        sock.settimeout(None)
        other.settimeout(None)
        with contextlib.suppress(OSError):
            sock.sendall(b"ok\n")
            other.sendall(b"ok\n")
        for a, b in ((sock, other), (other, sock)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def _hostile(self, sock: socket.socket) -> None:
        if self.mode == "close":
            sock.close()
            return
        with contextlib.suppress(OSError):
            sock.sendall(b"ok\n")
        if self.mode == "glue-hold":
            with self.lock:
                self.held.append(sock)
            return
        sock.close()

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for sock in self.held:
                sock.close()
            for entries in self.waiting.values():
                for _, sock in entries:
                    sock.close()


def _pump(a: socket.socket, b: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := a.recv(65536):
            b.sendall(data)
    for sock in (a, b):  # as the real relay: one side gone, both closed
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
