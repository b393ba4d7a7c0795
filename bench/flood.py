"""A paired device while unpaired hosts hold idle sockets (issue 20's target: through
within 1 s while one host holds 1,000 and while eight hold 2,000).

Real processes on loopback with their default limits: alpha's ``tunnel serve`` (behind
it an echo) and ``serve``; beta's ``tunnel connect``. For each sample the adversary
opens its idle TCP connections (bound to 127.0.0.2..9, opened before the device's, so
the server accepts them first), then the device's tunnel connection (connect, 1-byte
echo) and a trusted connection to ``serve`` as ``ping`` makes it (handshake, peer
check, first answer) are timed, then the flood is closed. The baseline is the same
with no flood, in the same run.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.stats import Figure, python_env, summary
from bench.tunnel_ends import LOOPBACK, Pair, Service, echo
from certpair.trusted import client_context, measure_handshake

_WAIT = 30.0
FLOODS = {"none": (0, 0), "one_host_1000": (1, 1000), "eight_hosts_2000": (8, 250)}


def _start(home: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "certpair", "--home", str(home), *args,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=python_env())
    assert proc.stdout is not None
    port = int(json.loads(proc.stdout.readline())["port"])
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # never a full pipe
    return proc, port


def _flood(ports: list[int], hosts: int, each: int) -> list[socket.socket]:
    held = []
    for port in ports:
        for _ in range(each):
            for n in range(hosts):
                sock = socket.socket()
                held.append(sock)
                sock.bind((f"127.0.0.{2 + n}", 0))
                with contextlib.suppress(ConnectionResetError):  # refused at once
                    sock.connect((LOOPBACK, port))
    return held


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def handshake_flood(quick: bool = False) -> Figure:
    """Median ms of a paired device's tunnel connection and trusted connection to
    ``serve``, with no flood and under each flood."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 16384):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    repeats = 3 if quick else 10
    pair = Pair()
    service = Service(echo)
    procs: list[subprocess.Popen[str]] = []
    try:
        tunnel, tunnel_port = _start(pair.home("alpha"), "tunnel", "serve", "--to",
                                     f"{LOOPBACK}:{service.port}", "--listen", LOOPBACK,
                                     "--port", "0", "--no-advertise")
        connect, local_port = _start(pair.home("beta"), "tunnel", "connect", "alpha",
                                     "--to", f"{LOOPBACK}:{tunnel_port}", "--listen", "0")
        serve, serve_port = _start(pair.home("alpha"), "serve", "--listen", LOOPBACK,
                                   "--port", "0")
        procs += [tunnel, connect, serve]
        context = client_context(pair.home("beta"))

        def through_tunnel() -> None:
            with socket.create_connection((LOOPBACK, local_port), timeout=_WAIT) as sock:
                sock.sendall(b"x")
                if sock.recv(1) != b"x":
                    raise RuntimeError("the tunnel did not carry the byte")

        results: Figure = {"tunnel": {}, "ping": {}}
        for name, (hosts, each) in FLOODS.items():
            tunnel_ms, ping_ms = [], []
            for _ in range(repeats):
                held = _flood([tunnel_port, serve_port], hosts, each)
                try:
                    tunnel_ms.append(_timed(through_tunnel))
                    ping_ms.append(measure_handshake(LOOPBACK, serve_port, context))
                finally:
                    for sock in held:
                        sock.close()
                time.sleep(0.2)  # bench pacing: the servers see the flood's closes
            results["tunnel"][name] = summary(tunnel_ms, 1000)
            results["ping"][name] = summary(ping_ms, 1000)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
        service.close()
        pair.close()
    flooded = [k for k in FLOODS if k != "none"]
    return {  # the worse flood's median; the slowest sample is in the details
        "flood_tunnel_ms": max(results["tunnel"][k]["median"] for k in flooded),
        "flood_ping_ms": max(results["ping"][k]["median"] for k in flooded),
        "handshake_flood": {**results, "unit": "ms, median of the samples",
                            "floods": {k: {"hosts": h, "sockets": h * e}
                                       for k, (h, e) in FLOODS.items()}},
    }
