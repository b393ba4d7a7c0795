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
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certpair.relay import RelayAddress

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
