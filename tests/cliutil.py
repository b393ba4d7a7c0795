"""Helpers for tests that run real ``certpair`` processes: argv, homes, offerers."""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

LOOPBACK = "127.0.0.1"
CLI = [sys.executable, "-m", "certpair"]


def certpair_argv(home: Path, *args: str, prefix: Sequence[str] = ()) -> list[str]:
    """``certpair --home HOME ARGS``, run under ``prefix`` (e.g. ``ip netns exec NS``)."""
    return [*prefix, *CLI, "--home", str(home), *args]


def run(home: Path, *args: str, prefix: Sequence[str] = (),
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(certpair_argv(home, *args, prefix=prefix), capture_output=True,
                          text=True, timeout=timeout, check=False)


def init(home: Path, name: str) -> None:
    result = run(home, "init", "--name", name)
    assert result.returncode == 0, result.stderr


def cert_fingerprint(home: Path) -> str:
    cert = x509.load_pem_x509_certificate((home / "identity" / "cert.pem").read_bytes())
    return "sha256:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def peers(home: Path) -> list[dict[str, Any]]:
    result = run(home, "peers", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def events(home: Path) -> list[tuple[str, str]]:
    """The audit rows (outcome, reason) of a home's trust store; none without a store."""
    if not (home / "trust.db").exists():
        return []
    with sqlite3.connect(home / "trust.db") as db:
        return list(db.execute("SELECT outcome, reason FROM events"))


class Proc:
    """A certpair process whose stdout lines are read by a thread (no blocking reads)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self, timeout: float = 30) -> str:
        line = self.lines.get(timeout=timeout)
        if line is None:
            self.proc.wait(10)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"process ended ({self.proc.returncode}): {err}")
        return line

    def next_event(self, timeout: float = 30) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.next_line(timeout))
        return event

    def finish(self, timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
        """Wait for the exit: (status, the JSON lines not read yet, stderr)."""
        code = self.proc.wait(timeout)
        rest: list[dict[str, Any]] = []
        while (line := self.lines.get(timeout=10)) is not None:
            rest.append(json.loads(line))
        err = self.proc.stderr.read() if self.proc.stderr else ""
        return code, rest, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Offerer(Proc):
    """``certpair pair --json --port 0``; its first line says where it listens.

    ``listen=None`` leaves the default listen address; ``advertise=False`` adds
    ``--no-advertise``; ``prefix`` runs it elsewhere (e.g. in a network namespace).
    """

    def __init__(self, home: Path, *args: str, listen: str | None = LOOPBACK,
                 advertise: bool = True, prefix: Sequence[str] = ()) -> None:
        where = ["--listen", listen] if listen is not None else []
        quiet = [] if advertise else ["--no-advertise"]
        super().__init__(certpair_argv(home, "pair", "--json", "--port", "0", *where, *quiet,
                                       *args, prefix=prefix))
        self.listen = listen
        self.listening = self.next_event()
        assert self.listening["event"] == "listening", self.listening

    @property
    def code(self) -> str:
        return str(self.listening["code"])

    @property
    def address(self) -> str:
        """``HOST:PORT`` to join, for an offerer given an explicit listen address."""
        assert self.listen is not None, "no explicit listen address"
        return f"{self.listen}:{self.listening['port']}"
