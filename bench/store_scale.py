"""Trusted-connection handshake time with 10,000 peers in the store versus 10."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from certpair.identity import create_identity
from certpair.store import open_store


def _filler_certs(count: int) -> list[bytes]:
    """Distinct, valid self-signed certificates (Ed25519: cheap to make; CA:FALSE, so
    they meet the profile and get their anchor files)."""
    from bench.fleet import make_fillers

    return [filler.der for filler in make_fillers(count)]


def _fill(home: Path, certs: list[bytes]) -> None:
    with sqlite3.connect(home / "trust.db") as db:
        db.executemany(
            "INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
            " VALUES (?, ?, ?, 'cpace', '2026-01-01T00:00:00Z')",
            [("sha256:" + hashlib.sha256(c).hexdigest(), f"filler-{i}", c)
             for i, c in enumerate(certs)],
        )


async def _handshakes(server_home: Path, client_home: Path, repeats: int) -> list[float]:
    from certpair.trusted import client_context, server_context

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(1))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context(server_home))
    port = server.sockets[0].getsockname()[1]
    client_ctx = client_context(client_home)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        writer.write(b"x")
        await reader.readexactly(1)
        times.append(time.perf_counter() - start)
        writer.close()
    server.close()
    return times


def store_scale(quick: bool = False) -> dict[str, Any]:
    """``store_10k_vs_10_ratio``: median handshake with 10,000 peers / with 10."""
    repeats = 20 if quick else 60
    with tempfile.TemporaryDirectory(prefix="certpair-scale-") as tmp:
        root = Path(tmp)
        beta = create_identity(root / "beta", "beta")
        fillers = _filler_certs(9999)
        medians = {}
        for size in (10, 10000):
            home = root / f"alpha{size}"
            alpha = create_identity(home, "alpha")
            with open_store(home) as store:
                store.commit_pairing(name="beta", cert_der=beta.cert_der, mode="cpace",
                                     role="offerer", remote="bench")
            _fill(home, fillers[: size - 1])
            with open_store(root / "beta") as store:
                store.commit_pairing(name="alpha", cert_der=alpha.cert_der, mode="cpace",
                                     role="joiner", remote="bench")
            medians[size] = statistics.median(
                asyncio.run(_handshakes(home, root / "beta", repeats)))
    return {
        "store_10k_vs_10_ratio": round(medians[10000] / medians[10], 3),
        "store_scale": {"handshake_ms_10": round(medians[10] * 1000, 3),
                        "handshake_ms_10000": round(medians[10000] * 1000, 3),
                        "repeats": repeats},
    }
