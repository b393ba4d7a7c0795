"""Through a magic-wormhole transit relay against direct, in one run (issue 22).

The relay is the real one (``twistd transitrelay`` of the test extra) on loopback.

* ``relay_pair_extra_rtts``: how many round trips pairing through the relay adds for
  the joiner. The joiner reaches what it connects to (the offerer, or the relay) through
  a ``DelayProxy`` adding ``delay`` each way; the offerer waits at the relay over
  loopback. Each pairing time is divided by the RTT measured through an identical proxy
  in the same run (as ``joiner_rtts`` of the pairing group); the figure is the median
  of the relay runs minus the median of the direct runs, interleaved. The relay's
  handshake (``please relay …`` / ``ok``) is one round trip, so 1 is the expectation.
* ``relay_tunnel_throughput_vs_direct``: one stream (256 MiB; 64 with ``--quick``)
  through ``tunnel connect --relay`` -> relay -> ``tunnel serve --relay`` to a sink,
  over the same stream through a direct chain of the same two processes' kind; best of
  the repeats, interleaved (> 0.8 is the target: the relay copies every byte twice).
  Beside it: the 1-minute load when it started, and the CPU seconds per stream of the
  two tunnel ends (and of the relay), with ``cpu_ratio`` = the direct path's CPU over
  the relayed path's (ends + relay), the figure wall time tends to on busy cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.proxy import DelayProxy, proxied_rtt
from bench.stats import Figure, cpu_seconds, python_env, ratio, summary
from bench.tunnel_ends import LOOPBACK, Pair, Service, sink, stream
from certpair.codes import generate_code, parse_secret
from certpair.identity import create_identity
from certpair.net import Listening, OfferEvent, RelayStatus, run_join, run_offer
from certpair.relay import RelayAddress
from certpair.store import open_store

_MIB = 1 << 20
_WAIT = 120.0
_STARTED = re.compile(r"starting on (\d+)")

__all__ = ["relay_pairing", "relay_tunnel"]


@contextlib.contextmanager
def _relay() -> Iterator[tuple[RelayAddress, int]]:
    """The real transit relay on loopback (its address and pid), for the block."""
    twistd = Path(sys.executable).with_name("twistd")
    proc = subprocess.Popen([str(twistd), "-n", "--pidfile=", "transitrelay",
                             f"--port=tcp:0:interface={LOOPBACK}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := _STARTED.search(line):
                break
        else:
            raise RuntimeError("the transit relay did not start")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield RelayAddress(host=LOOPBACK, port=int(match[1])), proc.pid
    finally:
        proc.kill()
        proc.wait(10)


async def _pair_once(root: Path, relay: RelayAddress, delay: float, through: bool) -> float:
    """One cpace pairing of two fresh devices; the joiner's time, in seconds."""
    alpha = create_identity(root / f"a{time.monotonic_ns()}", "alpha")
    beta = create_identity(root / f"b{time.monotonic_ns()}", "beta")
    with open_store(alpha.cert_path.parent.parent) as a_store, \
            open_store(beta.cert_path.parent.parent) as b_store:
        ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
        listening: list[Listening] = []

        def on_event(event: OfferEvent) -> None:
            if isinstance(event, Listening):
                listening.append(event)
            if (isinstance(event, RelayStatus) and event.waiting and listening
                    and not ready.done()):
                ready.set_result(listening[0])

        secret = generate_code()
        task = asyncio.ensure_future(run_offer(
            identity=alpha, store=a_store, host=LOOPBACK, port=0, on_event=on_event,
            secret=secret, relay=relay))
        event = await ready
        target = (relay.host, relay.port) if through else (LOOPBACK, event.port)
        async with DelayProxy(*target, delay) as proxy:
            start = time.perf_counter()
            if through:
                await run_join(identity=beta, store=b_store, host=None,
                               secret=parse_secret(event.code),
                               relay=RelayAddress(host=LOOPBACK, port=proxy.port))
            else:
                await run_join(identity=beta, store=b_store, host=LOOPBACK, port=proxy.port,
                               secret=secret)
            took = time.perf_counter() - start
            await task
    return took


def relay_pairing(quick: bool = False, delay: float = 0.05) -> Figure:
    """Joiner round trips of a pairing through the relay and direct (see the module)."""
    repeats = 3 if quick else 7

    async def run(relay: RelayAddress, root: Path) -> Figure:
        direct, through, rtts = [], [], []
        for _ in range(repeats):
            rtt = await proxied_rtt(delay)
            direct.append(await _pair_once(root, relay, delay, through=False) / rtt)
            through.append(await _pair_once(root, relay, delay, through=True) / rtt)
            rtts.append(rtt)
        return {"direct_rtts": summary(direct), "relay_rtts": summary(through),
                "measured_rtt_ms": summary(rtts, 1000),
                "extra_rtts": round(statistics.median(through) - statistics.median(direct),
                                    3)}

    with _relay() as (relay, _), tempfile.TemporaryDirectory(prefix="certpair-bench-") as tmp:
        figures = asyncio.run(run(relay, Path(tmp)))
    return {"relay_pair_extra_rtts": figures["extra_rtts"], "relay_pairing": figures}


def _start(home: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "certpair", "--home", str(home), "tunnel", *args, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=python_env())
    assert proc.stdout is not None
    event: dict[str, object] = json.loads(proc.stdout.readline())
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, event


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _stream(port: int, size: int) -> float:
    """Seconds to send ``size`` bytes through ``port`` to the sink, until it confirms."""
    start = time.perf_counter()
    stream(port, size, timeout=_WAIT)
    return time.perf_counter() - start


def relay_tunnel(quick: bool = False) -> Figure:
    """Tunnel throughput through the relay over direct (see the module)."""
    size = (64 if quick else 256) * _MIB
    repeats = 2 if quick else 3
    procs: list[subprocess.Popen[str]] = []
    pair, service = Pair(), Service(sink)
    try:
        with _relay() as (relay, relay_pid):
            serve, event = _start(pair.home("alpha"), "serve", "--to",
                                  f"{LOOPBACK}:{service.port}", "--listen", LOOPBACK,
                                  "--port", "0", "--relay", str(relay))
            procs.append(serve)
            direct, direct_ev = _start(pair.home("beta"), "connect", "alpha", "--to",
                                       f"{LOOPBACK}:{event['port']}", "--listen", "0")
            # A closed port as the address: refused at once, so the relay carries it.
            relayed, relayed_ev = _start(pair.home("beta"), "connect", "alpha", "--to",
                                         f"{LOOPBACK}:{_closed_port()}", "--listen", "0",
                                         "--relay", str(relay))
            procs += [direct, relayed]
            times: dict[str, list[float]] = {"direct": [], "relay": []}
            ends_cpu: dict[str, list[float]] = {"direct": [], "relay": []}
            relay_cpu = []
            load = os.getloadavg()[0]
            for _ in range(repeats):  # interleaved, so drift hits both alike
                for path, client, port in (("direct", direct, direct_ev["port"]),
                                           ("relay", relayed, relayed_ev["port"])):
                    pids = (serve.pid, client.pid, relay_pid)
                    before = [cpu_seconds(pid) for pid in pids]
                    times[path].append(_stream(int(str(port)), size))
                    used = [cpu_seconds(pid) - was for pid, was in zip(pids, before, strict=True)]
                    ends_cpu[path].append(used[0] + used[1])
                    if path == "relay":
                        relay_cpu.append(used[2])
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
        service.close()
        pair.close()
    mib = size / _MIB
    direct_cpu = statistics.median(ends_cpu["direct"])
    relayed_cpu = statistics.median(ends_cpu["relay"]) + statistics.median(relay_cpu)
    return {
        "relay_tunnel_throughput_vs_direct": ratio(min(times["direct"]), min(times["relay"])),
        "relay_tunnel": {"mib": mib, "load_1min": round(load, 2),
                         # CPU seconds per stream, the two tunnel ends (and the relay):
                         # what the wall figure comes to when the cores are the limit.
                         "cpu_ratio": round(direct_cpu / relayed_cpu, 3),
                         "ends_cpu_s_direct": summary(ends_cpu["direct"]),
                         "ends_cpu_s_relay": summary(ends_cpu["relay"]),
                         "direct_mib_s": round(mib / min(times["direct"]), 1),
                         "relay_mib_s": round(mib / min(times["relay"]), 1),
                         "direct_s": summary(times["direct"]),
                         "relay_s": summary(times["relay"]),
                         # The relay's own CPU per stream: what it takes from the same
                         # cores the two tunnel ends and the sink use.
                         "relay_cpu_s": summary(relay_cpu)},
    }
