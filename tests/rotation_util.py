"""Helpers for the key-rotation tests: paired homes, a serve process, a raw sync client.

Pairing is simulated by committing each other's certificate (pairing is tested
elsewhere); everything after that is real: real ``certpair serve`` processes, real
mutual TLS, the real sync machine.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from certpair.identity import Identity, create_identity, load_identity
from certpair.protocol.sync_frames import (
    SyncFrame,
    SyncFrameDecoder,
    SyncFrameType,
    SyncResult,
    encode_sync_frame,
)
from certpair.store import open_store
from certpair.trusted import connect
from tests.cliutil import CLI, LOOPBACK, Proc

__all__ = ["Fleet", "RawSync", "ServeProc", "fleet", "store_rows"]

WAIT = 30.0


class ServeProc(Proc):
    """``certpair serve --json`` on a free loopback port."""

    def __init__(self, home: Path) -> None:
        super().__init__([*CLI, "--home", str(home), "serve", "--json", "--listen", LOOPBACK,
                          "--port", "0"])
        listening = self.next_event()
        assert listening["event"] == "listening", listening
        self.port = int(listening["port"])
        self.address = f"{LOOPBACK}:{self.port}"


@dataclass
class Fleet:
    """alpha, beta and gamma; beta is paired with both others (each way)."""

    root: Path
    ids: dict[str, Identity]
    procs: list[Proc] = field(default_factory=list)

    def home(self, name: str) -> Path:
        return self.root / name

    def trust(self, who: str, whom: str) -> None:
        with open_store(self.home(who)) as store:
            store.commit_pairing(name=whom, cert_der=self.ids[whom].cert_der, mode="cpace",
                                 role="offerer", remote="test")

    def serve(self, name: str) -> ServeProc:
        server = ServeProc(self.home(name))
        self.procs.append(server)
        return server

    def run(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "--home", str(self.home(name)), *args],
                              capture_output=True, text=True, timeout=WAIT, check=False)

    def json_lines(self, name: str, *args: str) -> list[dict[str, Any]]:
        result = self.run(name, *args, "--json")
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def reload(self, name: str) -> Identity:
        self.ids[name] = load_identity(self.home(name))
        return self.ids[name]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    found = Fleet(tmp_path, {n: create_identity(tmp_path / n, n)
                             for n in ("alpha", "beta", "gamma")})
    for a, b in (("alpha", "beta"), ("beta", "alpha"), ("gamma", "beta"), ("beta", "gamma")):
        found.trust(a, b)
    yield found
    for proc in found.procs:
        proc.kill()


def store_rows(home: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read a home's trust store directly (the state a crash left)."""
    with sqlite3.connect(home / "trust.db") as db:
        return list(db.execute(sql))


class RawSync:
    """A sync client that speaks the frames itself over real mutual TLS: the adversary.

    It holds only what the device whose home it uses holds (that device's key, through
    the TLS context), and decides what to put in its STATEMENT.
    """

    def __init__(self, home: Path, port: int) -> None:
        self.tls: ssl.SSLSocket
        self.tls, self.peer = connect(LOOPBACK, port, home, timeout=WAIT)
        self.own_cert = load_identity(home).cert_der
        peer_cert = self.tls.getpeercert(binary_form=True)
        assert peer_cert is not None
        self.peer_cert = peer_cert
        self._decoder = SyncFrameDecoder()
        self.tls.sendall(b"sync\n" + encode_sync_frame(SyncFrameType.HELLO,
                                                       secrets.token_bytes(32)))
        self.peer_nonce = self.read(SyncFrameType.HELLO).body

    def read(self, expected: SyncFrameType) -> SyncFrame:
        while (frame := self._decoder.next_frame()) is None:
            data = self.tls.recv(65536)
            if not data:  # an OSError, as a cut that resets the connection is
                raise ConnectionAbortedError("the server closed the connection")
            self._decoder.feed(data)
        assert frame.type is expected, frame
        return frame

    def tell(self, body: bytes) -> SyncResult:
        """Send a STATEMENT body; answer the server's statement; return its ANSWER."""
        self.read(SyncFrameType.STATEMENT)
        self.tls.sendall(encode_sync_frame(SyncFrameType.STATEMENT, body))
        self.tls.sendall(encode_sync_frame(SyncFrameType.ANSWER, bytes([0])))
        return SyncResult(self.read(SyncFrameType.ANSWER).body[0])

    def close(self) -> None:
        self.tls.close()
