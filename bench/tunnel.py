"""``certpair tunnel`` against stunnel 4, side by side in one run (bench/tunnel_ends.py).

* ``tunnel_throughput_vs_stunnel``: 1 GiB through one connection (client -> client-side
  tunnel -> server-side tunnel -> sink), until the sink's byte count comes back;
  certpair's MB/s divided by stunnel's, runs interleaved.
* ``tunnel_connect_ms_vs_stunnel``: a fresh connection and a 1-byte round trip through
  both ends to an echo; certpair's median over stunnel's.
* ``tunnel_rss_mb_500_conns``: the server side's resident memory with 500 connections
  open through the chain (stunnel's beside it).
* ``tunnel_unpair_cut_ms``: from the unpairing's commit to the open connection's end,
  as its client sees it. stunnel has nothing to compare: it never closes an open
  connection when trust changes.
* ``tunnel_fds_leaked_10000_conns``: the server side's descriptors after 10,000
  connections minus before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
from typing import Any

from bench.figures import summary
from bench.load import raise_fd_limit
from bench.tunnel_ends import (
    LOOPBACK,
    CertpairChain,
    Chain,
    Pair,
    Service,
    StunnelChain,
    echo,
    fd_count,
    rss_mb,
    sink,
    stunnel_binary,
)

Figure = dict[str, Any]
_WAIT = 60.0


def _throughput(port: int, size: int) -> float:
    """MB/s of ``size`` bytes sent through ``port`` to the sink, until it confirms."""
    block = memoryview(bytes(range(256)) * 4096)  # 1 MiB
    with socket.create_connection((LOOPBACK, port), timeout=_WAIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        left = size
        while left:
            left -= sock.send(block[:min(left, len(block))])
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(64):
            answer += data
        elapsed = time.perf_counter() - start
    assert int(answer) == size, f"the sink got {answer!r}, not {size}"
    return size / elapsed / 1e6


def _connect_ms(port: int) -> float:
    start = time.perf_counter()
    with socket.create_connection((LOOPBACK, port), timeout=_WAIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise RuntimeError("no echo")
    return (time.perf_counter() - start) * 1000


def _hold(port: int, count: int) -> list[socket.socket]:
    """``count`` connections through the chain, each proven open by one echo."""
    async def run() -> list[socket.socket]:
        async def one() -> socket.socket:
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"x")
            await reader.readexactly(1)
            sock: socket.socket = writer.get_extra_info("socket").dup()
            writer.close()
            return sock

        return list(await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))),
                                           _WAIT))

    return asyncio.run(run())


def _settle(pid: int) -> float:
    """RSS once it stopped growing (threads finish their start-up), bounded."""
    last, deadline = rss_mb(pid), time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)  # bench: sampling memory
        now = rss_mb(pid)
        if abs(now - last) < 0.5:
            return now
        last = now
    return last


def _cut_ms(pair: Pair, chain: Chain) -> float:
    with socket.create_connection((LOOPBACK, chain.port), timeout=_WAIT) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        start = time.perf_counter()
        pair.untrust("alpha", pair.beta)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(1 << 16):
                pass
        elapsed = (time.perf_counter() - start) * 1000
    pair.trust("alpha", pair.beta)
    return elapsed


def _fds_leaked(chain: Chain, count: int) -> int:
    async def run() -> None:
        room = asyncio.Semaphore(50)

        async def one() -> None:
            async with room:
                reader, writer = await asyncio.open_connection(LOOPBACK, chain.port)
                writer.write(b"x")
                writer.write_eof()
                await reader.read()
                writer.close()

        await asyncio.gather(*(one() for _ in range(count)))

    before = fd_count(chain.server_pid)
    asyncio.run(run())
    deadline = time.monotonic() + 10
    while fd_count(chain.server_pid) != before and time.monotonic() < deadline:
        time.sleep(0.05)  # bench: the last connections' threads finishing
    return fd_count(chain.server_pid) - before


def _chain(name: str, pair: Pair, port: int, binary: str | None) -> Chain:
    if name == "certpair":
        return CertpairChain(pair, port)
    assert binary is not None
    return StunnelChain(pair, port, binary)


def tunnel_figures(quick: bool = False) -> Figure:
    """Every tunnel figure, as one JSON-ready dict (see the module documentation)."""
    raise_fd_limit()
    binary = stunnel_binary()
    pair = Pair()
    sink_service, echo_service = Service(sink), Service(echo)
    chains: dict[str, tuple[Chain, Chain]] = {}
    try:
        size = (256 if quick else 1024) << 20
        repeats = 1 if quick else 3
        names = ["certpair"] + (["stunnel"] if binary else [])
        for name in names:
            chains[name] = (_chain(name, pair, sink_service.port, binary),
                            _chain(name, pair, echo_service.port, binary))
        speed: dict[str, list[float]] = {n: [] for n in names}
        connect: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(repeats):  # interleaved, so drift hits both alike
            for name in names:
                speed[name].append(_throughput(chains[name][0].port, size))
        for _ in range(20 if quick else 60):
            for name in names:
                connect[name].append(_connect_ms(chains[name][1].port))
        rss: Figure = {}
        for name in names:
            chain = chains[name][1]
            idle = _settle(chain.server_pid)
            held = _hold(chain.port, 500)
            rss[name] = {"idle_mb": round(idle, 1),
                         "open_500_mb": round(_settle(chain.server_pid), 1)}
            for sock in held:
                sock.close()
        cuts = [_cut_ms(pair, chains["certpair"][1]) for _ in range(5 if quick else 10)]
        leaked = None if quick else _fds_leaked(chains["certpair"][1], 10_000)
    finally:
        for both in chains.values():
            for chain in both:
                chain.close()
        sink_service.close()
        echo_service.close()
        pair.close()
    return _report(binary, size, speed, connect, rss, cuts, leaked)


def _report(binary: str | None, size: int, speed: dict[str, list[float]],
            connect: dict[str, list[float]], rss: Figure, cuts: list[float],
            leaked: int | None) -> Figure:
    detail: Figure = {
        "stunnel": binary or "not installed (Debian: apt-get install stunnel4); no ratios",
        "transfer_mib": size >> 20,
        "throughput_mb_s": {n: summary(v) for n, v in speed.items()},
        "connect_ms": {n: summary(v) for n, v in connect.items()},
        "server_rss_mb": rss,
        "unpair_cut_ms": summary(cuts),
        "fds_leaked_10000_conns": leaked,
    }
    has_baseline = "stunnel" in speed
    return {
        "tunnel_throughput_vs_stunnel": round(
            statistics.median(speed["certpair"]) / statistics.median(speed["stunnel"]), 3)
        if has_baseline else None,
        "tunnel_connect_ms_vs_stunnel": round(
            statistics.median(connect["certpair"]) / statistics.median(connect["stunnel"]), 3)
        if has_baseline else None,
        "tunnel_rss_mb_500_conns": rss["certpair"]["open_500_mb"],
        "tunnel_unpair_cut_ms": round(statistics.median(cuts), 1),
        "tunnel_fds_leaked_10000_conns": leaked,
        "tunnel": detail,
    }


__all__ = ["tunnel_figures"]
