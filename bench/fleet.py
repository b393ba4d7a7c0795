"""A hub paired with many devices (issues 12 and 23): context build, unpair, handshakes,
memory, pairing commits and a whole ``join`` with N peers in the store (default
100,000) against 10.

The filler peers are Ed25519 certificates that meet certpair's profile (CA:FALSE), made
in-process (~0.12 ms each) and written straight into the store as rows, with their
identity keys and names indexed (store/identity_keys.py) as a pairing would; the next
open files them in the anchor directory, as it would a store upgraded from before it.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID

from certpair.codes import Mode, generate_code
from certpair.identity import Identity, create_identity
from certpair.net import Listening, OfferEvent, run_join, run_offer
from certpair.store import open_store
from certpair.store.anchors import row_hash
from certpair.store.identity_keys import key_of_name, peer_keys

_START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
_CA_FALSE = x509.BasicConstraints(ca=False, path_length=None)


@dataclass(frozen=True)
class Filler:
    """A filler peer: its certificate, and its key when it will connect itself."""

    der: bytes
    key_pem: bytes | None


def make_fillers(count: int, *, with_keys: int = 0, tag: str = "filler") -> list[Filler]:
    """``count`` distinct self-signed Ed25519 certificates (the first ``with_keys`` keep
    their private keys, to connect as clients)."""
    out = []
    for i in range(count):
        key = ed25519.Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{tag}-{i}")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(i + 1)
                .not_valid_before(_START).not_valid_after(_START + datetime.timedelta(3650))
                .add_extension(_CA_FALSE, critical=True).sign(key, None))
        pem = (key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
               if i < with_keys else None)
        out.append(Filler(cert.public_bytes(Encoding.DER), pem))
    return out


def fill_store(home: Path, fillers: list[Filler]) -> float:
    """Write the fillers as peer rows, then open the store (which files them in the
    anchor directory); returns the seconds that open took."""
    rows = [("sha256:" + hashlib.sha256(f.der).hexdigest(), f"filler-{i}", f.der)
            for i, f in enumerate(fillers)]
    with sqlite3.connect(home / "trust.db") as db:
        db.executemany(
            "INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at, subject_hash)"
            " VALUES (?, ?, ?, 'cpace', '2026-01-01T00:00:00Z', ?)",
            [(fp, name, der, row_hash(der)) for fp, name, der in rows])
        db.executemany("INSERT INTO identity_keys (key, owner) VALUES (?, ?)",
                       [(key, fp) for fp, _, der in rows for key in peer_keys(der)])
        db.executemany("INSERT INTO peer_names (key, owner) VALUES (?, ?)",
                       [(key_of_name(name), fp) for fp, name, _ in rows])
    start = time.perf_counter()
    open_store(home).close()
    return time.perf_counter() - start


class Hub:
    """Two homes, ``small`` (10 peers) and ``big`` (N peers), sharing the clients."""

    def __init__(self, root: Path, peers: int, clients: int) -> None:
        self.root = root
        self.fillers = make_fillers(max(peers - 1, clients), with_keys=clients)
        self.clients: list[Path] = []
        for i, filler in enumerate(self.fillers[:clients]):
            assert filler.key_pem is not None
            path = root / "clients" / f"{i}.pem"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(filler.key_pem + ssl.DER_cert_to_PEM_cert(filler.der).encode())
            self.clients.append(path)
        self.file_s: dict[str, float] = {}
        for label, size in (("small", 10), ("big", peers)):
            home = root / label
            create_identity(home, label)
            open_store(home).close()
            self.file_s[label] = fill_store(home, self.fillers[:size])

    def home(self, label: str) -> Path:
        return self.root / label

    def client_context(self, index: int) -> ssl.SSLContext:
        """A plain client that presents filler ``index`` (it checks nothing itself: the
        figures are about the hub's side)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(self.clients[index])
        return context


def _echo_server(home: Path) -> tuple[Any, int]:
    from certpair.trusted import make_server

    def echo(tls: ssl.SSLSocket, _peer: object) -> None:
        tls.sendall(tls.recv(1))

    server = make_server(echo, "127.0.0.1", 0, home, timeout=10.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _dial(port: int) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stalls
    return raw


def _exchange(port: int, context: ssl.SSLContext) -> bool:
    """One connection: handshake, one byte each way. True if the hub let it through."""
    try:
        with _dial(port) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"x")
            return tls.recv(1) == b"x"
    except OSError:
        return False


def context_build_ms(hub: Hub, repeats: int) -> dict[str, float]:
    """``server_context(home)`` from nothing (identity, store, context), median ms."""
    from certpair.trusted import server_context

    out = {}
    for label in ("small", "big"):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            server_context(hub.home(label))
            times.append(time.perf_counter() - start)
        out[label] = statistics.median(times) * 1000
    return out


def handshakes(hub: Hub, repeats: int) -> dict[str, float]:
    """Median ms of a full connection (handshake, exact-leaf check, 1 byte echoed) by
    the same client to the 10-peer and the N-peer hub, alternating."""
    servers = {label: _echo_server(hub.home(label)) for label in ("small", "big")}
    context = hub.client_context(0)
    times: dict[str, list[float]] = {"small": [], "big": []}
    for _ in range(repeats):
        for label, (_, port) in servers.items():
            start = time.perf_counter()
            assert _exchange(port, context), "a paired client must get through"
            times[label].append(time.perf_counter() - start)
    for server, _ in servers.values():
        server.shutdown()
        server.server_close()
    return {label: statistics.median(t) * 1000 for label, t in times.items()}


def unpair_effective_ms(hub: Hub, repeats: int) -> float:
    """From calling ``remove_peer`` (another store handle, as ``certpair unpair`` is
    another process) to the end of that peer's next connection attempt, refused, on a
    server that has been serving: median ms at N peers."""
    server, port = _echo_server(hub.home("big"))
    times = []
    with open_store(hub.home("big")) as store:
        for i in range(repeats):
            filler = hub.fillers[i + 1]
            context = hub.client_context(i + 1)
            assert _exchange(port, context), "paired: let through"
            fp = "sha256:" + hashlib.sha256(filler.der).hexdigest()
            start = time.perf_counter()
            store.remove_peer(fp)
            refused = not _exchange(port, context)
            times.append(time.perf_counter() - start)
            assert refused, "an unpaired client must be refused"
            store.commit_pairing(name=f"filler-{i + 1}", cert_der=filler.der, mode="cpace",
                                 role="offerer", remote="bench")
    server.shutdown()
    server.server_close()
    return statistics.median(times) * 1000


def pair_commits(hub: Hub, repeats: int) -> dict[str, float]:
    """``commit_pairing`` of a new peer (store row, audit row, anchor file), median ms,
    alternating between the 10-peer and the N-peer store."""
    fresh = make_fillers(2 * repeats, tag="fresh")
    times: dict[str, list[float]] = {"small": [], "big": []}
    stores = {label: open_store(hub.home(label)) for label in times}
    try:
        for i in range(repeats):
            for j, label in enumerate(times):
                der = fresh[2 * i + j].der
                start = time.perf_counter()
                stores[label].commit_pairing(name="fresh", cert_der=der, mode="cpace",
                                             role="offerer", remote="bench")
                times[label].append(time.perf_counter() - start)
    finally:
        for store in stores.values():
            store.close()
    return {label: statistics.median(t) * 1000 for label, t in times.items()}


def verify_peers_ms(hub: Hub, repeats: int) -> dict[str, float]:
    """``TrustStore.verify_peers`` (the check ``pair``, ``rotate``, ``sync``, ``serve``
    and ``tunnel`` make of the peers before they use the store) on the N-peer store,
    median ms, alternating with its baseline: one plain read of every peer
    (``iter_peers``), which those commands' own work costs at least once."""
    times: dict[str, list[float]] = {"verify": [], "read": []}
    with open_store(hub.home("big")) as store:
        for _ in range(repeats):
            start = time.perf_counter()
            store.verify_peers()
            times["verify"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for _peer in store.iter_peers():
                pass
            times["read"].append(time.perf_counter() - start)
    return {label: statistics.median(t) * 1000 for label, t in times.items()}


async def _join_once(hub_home: Path, hub: Identity, joiner_home: Path) -> float:
    """One real pairing (CPace, loopback) of a fresh device into ``hub_home``: seconds
    from ``run_join`` to its return (handshake, collision check, proof, both commits)."""
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()

    def on_event(event: OfferEvent) -> None:
        if isinstance(event, Listening) and not listening.done():
            listening.set_result(event)

    secret = generate_code()
    joiner = create_identity(joiner_home, "fresh")
    with open_store(hub_home) as hub_store, open_store(joiner_home) as joiner_store:
        offer = asyncio.ensure_future(run_offer(
            identity=hub, store=hub_store, mode=Mode.CPACE, host="127.0.0.1", port=0,
            on_event=on_event, secret=secret, once=True))
        port = (await listening).port
        start = time.perf_counter()
        await run_join(identity=joiner, store=joiner_store, host="127.0.0.1", port=port,
                       secret=secret)
        took = time.perf_counter() - start
        await offer
    return took


def joins(hub: Hub, repeats: int) -> dict[str, float]:
    """Median ms of a real ``join`` of a fresh device into the 10-peer and the N-peer
    hub, alternating (the hub's side: handshake-time collision check, commit)."""
    from certpair.identity import load_identity

    times: dict[str, list[float]] = {"small": [], "big": []}
    hubs = {label: load_identity(hub.home(label)) for label in times}
    for i in range(repeats):
        for label, took in times.items():
            joiner_home = hub.root / "joiners" / f"{label}-{i}"
            joiner_home.mkdir(parents=True)
            took.append(asyncio.run(_join_once(hub.home(label), hubs[label], joiner_home)))
    return {label: statistics.median(t) * 1000 for label, t in times.items()}


def serve_rss_mb(hub: Hub) -> float:
    """Peak RSS (VmHWM) of a ``certpair serve`` process with N peers after one
    connection from each of the distinct client peers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "certpair", "--home", str(hub.home("big")), "serve",
         "--json", "--listen", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    port = int(json.loads(proc.stdout.readline())["port"])
    out = proc.stdout
    threading.Thread(target=lambda: [None for _ in out], daemon=True).start()
    refused = 0
    for index in range(len(hub.clients)):
        try:
            with _dial(port) as raw, hub.client_context(index).wrap_socket(raw) as tls:
                tls.sendall(b"hello\n")
                if not tls.recv(1):
                    refused += 1
        except OSError:
            refused += 1
    assert refused == 0, f"{refused} paired clients were refused"
    # VmHWM of the running process, not ru_maxrss after exit: Linux carries the
    # parent's RSS at fork into the child's ru_maxrss (the bench holds 100k fillers).
    peak_kb = next(int(line.split()[1]) for line in
                   Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    proc.terminate()
    proc.wait(30)
    return peak_kb / 1024


def fleet(quick: bool = False, peers: int = 100_000, *, repeats: int | None = None,
          clients: int = 1000) -> dict[str, Any]:
    """The issue-12 figures at ``peers`` peers (ratios against 10 in the same run);
    ``clients`` distinct peers connect to the serve process measured for memory."""
    repeats = repeats or (10 if quick else 30)
    clients = min(clients, peers - 1)
    with tempfile.TemporaryDirectory(prefix="certpair-fleet-") as tmp:
        started = time.perf_counter()
        hub = Hub(Path(tmp), peers, clients)
        made_s = time.perf_counter() - started
        build = context_build_ms(hub, repeats)
        shakes = handshakes(hub, 3 * repeats)
        unpair = unpair_effective_ms(hub, max(5, repeats // 2))
        commits = pair_commits(hub, repeats)
        joined = joins(hub, repeats)
        rss = serve_rss_mb(hub)
        verified = verify_peers_ms(hub, max(3, repeats // 3))
    return {
        "trusted_context_build_ms": round(build["big"], 2),
        "unpair_effective_ms": round(unpair, 2),
        "handshake_100k_vs_10_ratio": round(shakes["big"] / shakes["small"], 3),
        "serve_rss_mb": round(rss, 1),
        "pair_commit_100k_vs_10_ratio": round(commits["big"] / commits["small"], 3),
        "join_into_hub_100k_vs_10_ratio": round(joined["big"] / joined["small"], 3),
        "verify_peers_100k_ms": round(verified["verify"], 1),
        "verify_peers_vs_read_all_ratio": round(verified["verify"] / verified["read"], 2),
        "fleet": {
            "peers": peers, "client_peers": clients, "repeats": repeats,
            "context_build_ms": {k: round(v, 2) for k, v in build.items()},
            "handshake_ms": {k: round(v, 3) for k, v in shakes.items()},
            "pair_commit_ms": {k: round(v, 3) for k, v in commits.items()},
            "join_into_hub_ms": {k: round(v, 2) for k, v in joined.items()},
            "read_all_peers_ms": round(verified["read"], 1),
            "anchor_directory_first_fill_s": round(hub.file_s["big"], 2),
            "setup_s": round(made_s, 1),
        },
    }
