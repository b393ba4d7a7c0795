"""The two tunnels the tunnel benchmark compares, started the same way on loopback.

``certpair tunnel serve --no-advertise`` (a bench sends nothing beyond loopback, and
stunnel advertises nothing either) + ``tunnel connect`` and stunnel 4 (server + client mode),
with the same certificates: alpha serves, beta connects, each trusting exactly the
other (certpair through its store; stunnel through ``certpair export``'s PEM files with
``verifyPeer``). Both chains are client -> client-side tunnel -> server-side tunnel ->
a service in the bench process. Services here: a sink that answers the byte count
after the client's EOF, and an echo.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.stats import python_env
from certpair.identity import Identity, create_identity
from certpair.store import open_store

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPBACK = "127.0.0.1"
_WAIT = 30.0


def stunnel_binary() -> str | None:
    """stunnel 4's executable (Debian: ``stunnel4``), or None."""
    return shutil.which("stunnel4") or shutil.which("stunnel")


def fd_count(pid: int) -> int:
    """Open descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + _WAIT
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # bench set-up: waiting for a process to listen


class Service:
    """A TCP service on loopback run by an asyncio loop in a thread."""

    def __init__(self, handler: Handler) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except OSError:
                pass
            finally:
                writer.close()

        async def start() -> asyncio.Server:
            return await asyncio.start_server(accept, LOOPBACK, 0, backlog=1024,
                                              limit=1 << 20)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(_WAIT)
        self.port = int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_WAIT)


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Count bytes until EOF, then answer the count (one line)."""
    total = 0
    while data := await reader.read(1 << 20):
        total += len(data)
    writer.write(b"%d\n" % total)
    await writer.drain()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()


class Pair:
    """alpha and beta, paired both ways, with exported PEM files for stunnel."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="certpair-tunnel-bench-")
        self.root = Path(self._tmp.name)
        self.alpha: Identity = create_identity(self.root / "alpha", "alpha")
        self.beta: Identity = create_identity(self.root / "beta", "beta")
        self.trust("alpha", self.beta)
        self.trust("beta", self.alpha)
        self.exported = {name: self._export(name) for name in ("alpha", "beta")}

    def home(self, name: str) -> Path:
        return self.root / name

    def trust(self, who: str, whom: Identity) -> None:
        with open_store(self.home(who)) as store:
            store.commit_pairing(name=whom.name, cert_der=whom.cert_der, mode="cpace",
                                 role="offerer", remote=f"{LOOPBACK}:4490")

    def untrust(self, who: str, whom: Identity) -> None:
        with open_store(self.home(who)) as store:
            store.remove_peer(whom.fingerprint)

    def _export(self, name: str) -> dict[str, str]:
        out = self.root / f"export-{name}"
        found = subprocess.run(
            [sys.executable, "-m", "certpair", "--home", str(self.home(name)), "export",
             "--out", str(out), "--json"], capture_output=True, text=True, check=True)
        data: dict[str, str] = json.loads(found.stdout.splitlines()[0])
        return data

    def close(self) -> None:
        self._tmp.cleanup()


class Chain:
    """A running client-side + server-side tunnel to ``service_port``; ``port`` is where
    the client connects, ``server_pid`` the server side's process."""

    port: int
    server_pid: int

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_WAIT)


class CertpairChain(Chain):
    def __init__(self, pair: Pair, service_port: int) -> None:
        super().__init__()
        serve = self._start(pair.home("alpha"), "serve", "--to",
                            f"{LOOPBACK}:{service_port}", "--listen", LOOPBACK, "--port", "0",
                            "--max-connections", "5000", "--no-advertise")
        connect = self._start(pair.home("beta"), "connect", "alpha", "--to",
                              f"{LOOPBACK}:{serve[1]}", "--listen", "0",
                              "--max-connections", "5000")
        self.server_pid, self.port = serve[0].pid, connect[1]

    def _start(self, home: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "certpair", "--home", str(home), "tunnel", *args, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=python_env())
        self.procs.append(proc)
        assert proc.stdout is not None
        event = json.loads(proc.stdout.readline())
        # Drain the events so that the process never blocks on a full pipe.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        return proc, int(event["port"])


class StunnelChain(Chain):
    """stunnel's server and client. ``resume=False`` (the like-for-like setting) makes
    every connection a full handshake with certificates, as certpair's are: certpair
    issues no session tickets, so that a removed device cannot resume its way back in."""

    def __init__(self, pair: Pair, service_port: int, binary: str, *,
                 resume: bool = False) -> None:
        super().__init__()
        alpha, beta = pair.exported["alpha"], pair.exported["beta"]
        server_port, self.port = free_port(), free_port()
        common = ("foreground = yes\npid =\ndebug = 3\nsslVersionMin = TLSv1.3\n"
                  "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
                  f"[tunnel]\nsessionResume = {'yes' if resume else 'no'}\n")
        server = (f"{common}accept = {LOOPBACK}:{server_port}\n"
                  f"connect = {LOOPBACK}:{service_port}\ncert = {alpha['cert']}\n"
                  f"key = {alpha['key']}\nCAfile = {alpha['peers']}\nverifyPeer = yes\n")
        client = (f"{common}client = yes\naccept = {LOOPBACK}:{self.port}\n"
                  f"connect = {LOOPBACK}:{server_port}\ncert = {beta['cert']}\n"
                  f"key = {beta['key']}\nCAfile = {beta['peers']}\nverifyPeer = yes\n")
        for name, text, port in (("server", server, server_port), ("client", client,
                                                                    self.port)):
            conf = pair.root / f"stunnel-{name}-{server_port}.conf"
            conf.write_text(text)
            self.procs.append(subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, text=True))
            wait_listening(port)
        self.server_pid = self.procs[0].pid


class FloorChain(Chain):
    """The least a Python tunnel does per connection (bench/floor_tunnel.py), both ends,
    with the same certificates and trust as stunnel's chain."""

    def __init__(self, pair: Pair, service_port: int) -> None:
        super().__init__()
        alpha, beta = pair.exported["alpha"], pair.exported["beta"]
        server_port, self.port = free_port(), free_port()
        for role, listen, to, who in (("server", server_port, service_port, alpha),
                                      ("client", self.port, server_port, beta)):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.floor_tunnel", role, str(listen), str(to),
                 who["cert"], who["key"], who["peers"]],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                env=python_env()))
            wait_listening(listen)
        self.server_pid = self.procs[0].pid


def stream(port: int, size: int, timeout: float = 120.0) -> None:
    """Send ``size`` bytes through ``port`` to the sink, until it confirms the count."""
    block = memoryview(bytes(range(256)) * 4096)  # 1 MiB
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        left = size
        while left:
            left -= sock.send(block[:min(left, len(block))])
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(64):
            answer += data
    assert int(answer) == size, f"the sink got {answer!r}, not {size}"
