"""``certpair tunnel`` against stunnel 4, side by side in one run (bench/tunnel_ends.py).

Both chains are client -> client-side tunnel -> server-side tunnel -> a service in the
bench process; runs alternate between the two, so that drift hits both alike. Every
speed figure is a ratio "stunnel's time / certpair's time" (> 1: certpair is faster),
from the best of the repeats' wall times, and beside it the same ratio of the CPU time
the two tunnel processes used (``/proc/PID/stat``), which moves far less than wall time
on a shared machine.

* ``tunnel_throughput_1_vs_stunnel``: 1 stream of 256 MiB to a sink, until the sink's
  byte count comes back; ``tunnel_throughput_16_vs_stunnel``: 16 streams of 16 MiB at
  once.
* ``tunnel_fresh_seq_vs_stunnel``: 200 fresh connections one after another, each
  connect + 1-byte echo + close; ``tunnel_fresh_20x20_vs_stunnel``: 20 clients at once,
  20 such connections each. Beside them ``tunnel_fresh_*_floor_vs_stunnel``: the same
  through the least a Python tunnel does per connection (bench/floor_tunnel.py: a
  thread, one blocking ``SSLSocket`` handshake, a copy loop; no trust store, no checks),
  the floor under certpair's figures.
* ``tunnel_rss_vs_stunnel``: peak RSS (``VmHWM``) of the larger of certpair's two tunnel
  processes over stunnel's, after the 16-stream and 20x20 workloads; and
  ``tunnel_rss_mb_500_conns``: the server side's RSS with 500 connections open.
* ``tunnel_unpair_cut_ms``: from the unpairing's commit to the open connection's end,
  as its client sees it (stunnel never cuts an open connection when trust changes).
* ``tunnel_fds_leaked_10000_conns``: the server side's descriptors after 10,000
  connections minus before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

from bench.load import raise_fd_limit
from bench.stats import Figure, cpu_seconds, peak_rss_mb, ratio, rss_mb, summary
from bench.tunnel_ends import (
    LOOPBACK,
    CertpairChain,
    Chain,
    FloorChain,
    Pair,
    Service,
    StunnelChain,
    echo,
    fd_count,
    sink,
    stream,
    stunnel_binary,
)

_WAIT = 60.0
_MIB = 1 << 20


class Bench:
    """The two devices, a sink and an echo service, and for each tunnel (certpair, and
    stunnel when installed) one chain to each service."""

    def __init__(self) -> None:
        raise_fd_limit()
        self.binary = stunnel_binary()
        self.names = ["certpair"] + (["stunnel"] if self.binary else [])
        self.pair = Pair()
        self.sink, self.echo = Service(sink), Service(echo)
        self.to_sink: dict[str, Chain] = {}
        self.to_echo: dict[str, Chain] = {}
        try:
            for name in self.names:
                self.to_sink[name] = self._chain(name, self.sink.port)
                self.to_echo[name] = self._chain(name, self.echo.port)
        except BaseException:
            self.close()
            raise

    def _chain(self, name: str, port: int) -> Chain:
        if name == "certpair":
            return CertpairChain(self.pair, port)
        assert self.binary is not None
        return StunnelChain(self.pair, port, self.binary)

    def pids(self, name: str) -> list[int]:
        """Every tunnel process of ``name`` (both chains, both ends)."""
        return [p.pid for chains in (self.to_sink, self.to_echo) if name in chains
                for p in chains[name].procs]

    def close(self) -> None:
        for chain in [*self.to_sink.values(), *self.to_echo.values()]:
            chain.close()
        self.sink.close()
        self.echo.close()
        self.pair.close()


@contextlib.contextmanager
def _bench() -> Iterator[Bench]:
    bench = Bench()
    try:
        yield bench
    finally:
        bench.close()


# ------------------------------------------------------------------ the workloads


def _fresh(port: int, count: int) -> None:
    """``count`` fresh connections one after another: connect, 1-byte echo, close."""
    for _ in range(count):
        with socket.create_connection((LOOPBACK, port), timeout=_WAIT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise RuntimeError("no echo")


def _at_once(clients: int, job: Callable[[], None]) -> None:
    """Run ``job`` in ``clients`` threads at once; raise the first failure."""
    failures: list[BaseException] = []
    start = threading.Barrier(clients)

    def run() -> None:
        try:
            start.wait(_WAIT)
            job()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _measure(bench: Bench, name: str, job: Callable[[], None]) -> tuple[float, float]:
    """(wall, CPU of the tunnel processes) seconds of one run of ``job``."""
    pids = bench.pids(name)
    cpu = sum(cpu_seconds(pid) for pid in pids)
    start = time.perf_counter()
    job()
    wall = time.perf_counter() - start
    return wall, sum(cpu_seconds(pid) for pid in pids) - cpu


def _compare(bench: Bench, repeats: int, jobs: dict[str, Callable[[], None]],
             unit: float) -> Figure:
    """Run each name's job ``repeats`` times, interleaved; wall and CPU per ``unit``."""
    wall: dict[str, list[float]] = {name: [] for name in jobs}
    cpu: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            w, c = _measure(bench, name, job)
            wall[name].append(w)
            cpu[name].append(c / unit)
    out: Figure = {"wall_s": {n: summary(v) for n, v in wall.items()},
                   "cpu_s_per_unit": {n: summary(v) for n, v in cpu.items()}}
    if "stunnel" in jobs:
        out["wall_ratio"] = ratio(min(wall["stunnel"]), min(wall["certpair"]))
        out["cpu_ratio"] = ratio(min(cpu["stunnel"]), min(cpu["certpair"]))
    if "floor" in jobs:
        out["floor_ratio"] = ratio(min(wall["stunnel"]), min(wall["floor"]))
        out["floor_cpu_ratio"] = ratio(min(cpu["stunnel"]), min(cpu["floor"]))
    return out


# ------------------------------------------------------------------ the figures


def tunnel_throughput(quick: bool = False) -> Figure:
    """1 stream of 256 MiB and 16 streams of 16 MiB through each tunnel (CPU per GiB)."""
    scale = 4 if quick else 1
    repeats = 2 if quick else 3
    with _bench() as bench:
        one = _compare(bench, repeats, {
            n: partial(stream, bench.to_sink[n].port, 256 * _MIB // scale)
            for n in bench.names}, unit=256 / 1024 / scale)
        many = _compare(bench, repeats, {
            n: partial(_at_once, 16, partial(stream, bench.to_sink[n].port,
                                             16 * _MIB // scale)) for n in bench.names},
            unit=256 / 1024 / scale)
    return {
        "tunnel_throughput_1_vs_stunnel": one.get("wall_ratio"),
        "tunnel_throughput_16_vs_stunnel": many.get("wall_ratio"),
        "tunnel_throughput_1_cpu_vs_stunnel": one.get("cpu_ratio"),
        "tunnel_throughput_16_cpu_vs_stunnel": many.get("cpu_ratio"),
        "tunnel_throughput": {"stunnel": bench.binary or _NO_STUNNEL,
                              "mib": 256 // scale, "1_stream": one, "16_streams": many,
                              "cpu_unit": "s per GiB, both tunnel ends"},
    }


def tunnel_fresh(quick: bool = False) -> Figure:
    """Fresh connections: 200 one after another, and 20 clients x 20 at once."""
    count = 50 if quick else 200
    per = 5 if quick else 20
    repeats = 2 if quick else 3
    with _bench() as bench:
        if bench.binary:  # the floor is a figure against stunnel only
            floor = bench.to_echo["floor"] = FloorChain(bench.pair, bench.echo.port)
            bench.names.append("floor")
        try:
            seq = _compare(bench, repeats, {
                n: partial(_fresh, bench.to_echo[n].port, count) for n in bench.names},
                unit=count / 1000)
            many = _compare(bench, repeats, {
                n: partial(_at_once, 20, partial(_fresh, bench.to_echo[n].port, per))
                for n in bench.names}, unit=20 * per / 1000)
        finally:
            if bench.binary:
                floor.close()
                bench.names.remove("floor")
                del bench.to_echo["floor"]
    return {
        "tunnel_fresh_seq_vs_stunnel": seq.get("wall_ratio"),
        "tunnel_fresh_20x20_vs_stunnel": many.get("wall_ratio"),
        "tunnel_fresh_seq_cpu_vs_stunnel": seq.get("cpu_ratio"),
        "tunnel_fresh_20x20_cpu_vs_stunnel": many.get("cpu_ratio"),
        "tunnel_fresh_seq_floor_vs_stunnel": seq.get("floor_ratio"),
        "tunnel_fresh_20x20_floor_vs_stunnel": many.get("floor_ratio"),
        "tunnel_fresh": {"stunnel": bench.binary or _NO_STUNNEL, "sequential": seq,
                         "clients_20": many, "connections": {"sequential": count,
                                                             "clients_20": 20 * per},
                         "cpu_unit": "ms per connection, both tunnel ends"},
    }


def tunnel_rss(quick: bool = False) -> Figure:
    """Peak RSS of one tunnel process after 16 streams and 20 x 20 fresh connections;
    and the server side's RSS with 500 connections open."""
    with _bench() as bench:
        peak: Figure = {}
        held: Figure = {}
        for name in bench.names:
            _at_once(16, partial(stream, bench.to_sink[name].port, 16 * _MIB))
            _at_once(20, partial(_fresh, bench.to_echo[name].port, 20))
            peak[name] = round(max(peak_rss_mb(pid) for pid in bench.pids(name)), 1)
            chain = bench.to_echo[name]
            idle = _settle(chain.server_pid)
            socks = _hold(chain.port, 100 if quick else 500)
            held[name] = {"idle_mb": round(idle, 1),
                          "open_mb": round(_settle(chain.server_pid), 1)}
            for sock in socks:
                sock.close()
    return {
        "tunnel_rss_vs_stunnel": ratio(peak["certpair"], peak["stunnel"])
        if "stunnel" in peak else None,
        "tunnel_rss_mb_500_conns": held["certpair"]["open_mb"],
        "tunnel_rss": {"stunnel": bench.binary or _NO_STUNNEL, "peak_mb": peak,
                       "server_side_open_conns": 100 if quick else 500,
                       "server_side_mb": held},
    }


def tunnel_cut(quick: bool = False) -> Figure:
    """From an unpairing's commit to the open connection's end (certpair only)."""
    with _bench() as bench:
        cuts = [_cut_ms(bench.pair, bench.to_echo["certpair"]) for _ in range(
            5 if quick else 10)]
    return {"tunnel_unpair_cut_ms": round(sorted(cuts)[len(cuts) // 2], 1),
            "tunnel_unpair_cut": summary(cuts)}


def tunnel_fds(quick: bool = False) -> Figure:
    """Descriptors of certpair's server side after 10,000 connections minus before."""
    with _bench() as bench:
        leaked = _fds_leaked(bench.to_echo["certpair"], 1000 if quick else 10_000)
    return {"tunnel_fds_leaked_10000_conns": leaked}


_NO_STUNNEL = "not installed (Debian: apt-get install stunnel4); no ratios"


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


__all__ = ["tunnel_cut", "tunnel_fds", "tunnel_fresh", "tunnel_rss", "tunnel_throughput"]
