"""Output that nobody reads never stalls a tunnel (issue 20): both ends write stdout
through one thread and a bounded queue (cli/output.py), never on a connection's path;
lines put together go out in one write (issue 23).

A pipe holds ~64 KiB: on main ``tunnel serve --json`` stopped carrying connections
from about the 151st, text output from about the 720th, on either end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from certpair.cli import output
from tests.cliutil import LOOPBACK, certpair_argv
from tests.tunnelutil import WAIT, Service, echo, make_devices

CONNECTIONS = 3000


def _unread(argv: list[str], as_json: bool) -> tuple[subprocess.Popen[bytes], int]:
    """Start a tunnel end, read its first line for the port, then never read again."""
    proc = subprocess.Popen([*argv, *(["--json"] if as_json else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()
    assert first, proc.stderr.read() if proc.stderr else b""
    if as_json:
        return proc, int(json.loads(first)["port"])
    return proc, int(first.split(" listening on ")[1].split()[0].rsplit(":", 1)[1])


def test_both_tunnel_ends_carry_3000_connections_while_nobody_reads_their_output(
    tmp_path: Path,
) -> None:
    devices = make_devices(tmp_path)
    service = Service(echo)
    # One end prints JSON, the other text: both kinds of line fill the pipe.
    server, server_port = _unread(certpair_argv(
        devices.home("alpha"), "tunnel", "serve", "--to", service.address, "--listen",
        LOOPBACK, "--port", "0", "--no-advertise"), as_json=True)
    client, client_port = _unread(certpair_argv(
        devices.home("beta"), "tunnel", "connect", "alpha", "--to",
        f"{LOOPBACK}:{server_port}", "--listen", "0"), as_json=False)
    try:
        async def one(gate: asyncio.Semaphore) -> bool:
            async with gate:
                reader, writer = await asyncio.open_connection(LOOPBACK, client_port)
                writer.write(b"x")
                writer.write_eof()
                answer = await reader.read()
                writer.close()
                return answer == b"x"

        async def many() -> list[bool]:
            gate = asyncio.Semaphore(8)
            return await asyncio.wait_for(
                asyncio.gather(*(one(gate) for _ in range(CONNECTIONS))), 120)

        # On main this times out after ~151 connections (the JSON end's pipe is full).
        assert all(asyncio.run(many()))
        assert service.accepted == CONNECTIONS
        outputs = []
        for proc in (server, client):
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=WAIT)  # reading now: the backlog drains
            assert proc.returncode == 0 and b"Traceback" not in err, err
            outputs.append(out.decode())
        # Nothing was lost either: the queue held what the pipe could not.
        served = [json.loads(line) for line in outputs[0].splitlines()]
        assert sum(e["event"] == "closed" and e["reason"] == "done" for e in served) \
            == CONNECTIONS
        assert outputs[1].count(": closed (done)") == CONNECTIONS
    finally:
        for proc in (server, client):
            proc.kill()
            proc.wait(WAIT)
        service.close()


def test_lines_put_together_go_out_in_a_few_writes_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A short connection puts two lines; one write() and one wake-up of the writer
    # per line were ~10 % of its CPU. Lines that come while a write is under way wait
    # for the next one (GATHER): counted here, not timed.
    read_end, write_end = os.pipe()
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        if fd == write_end:
            writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    monkeypatch.setattr(output, "_stdout_fd", lambda: write_end)
    writer = output.LineWriter(as_json=True)
    for n in range(200):
        writer.put({"event": "closed", "id": n, "reason": "done ✓"})
    writer.close()
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        lines = [json.loads(line) for line in pipe.read().splitlines()]
    assert [line["id"] for line in lines] == list(range(200))
    assert lines[0]["reason"] == "done ✓"  # as json.dumps(ensure_ascii=False) wrote it
    assert 1 <= len(writes) <= 10, writes  # one per line before
