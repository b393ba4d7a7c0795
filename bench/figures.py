"""The in-process pairing figures of ``scripts/bench``; each with its own baseline.

Every figure is a median over repeats measured in one run, with the spread
(min..max) beside it. Nothing here asserts: the numbers go to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.proxy import DelayProxy, proxied_rtt
from bench.stats import Figure, summary
from certpair.codes import Mode, Secret, generate_code, generate_hmac_key
from certpair.identity import Identity, create_identity
from certpair.net import Listening, OfferEvent, run_join, run_offer
from certpair.protocol.events import Channel
from certpair.protocol.hmac_proof import REQUEST_LABEL
from certpair.protocol.offer import Offer
from certpair.protocol.session import JoinerSession, OffererSession
from certpair.store import open_store


class Devices:
    """Two fresh devices in a temporary folder; stores reopened per pairing."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="certpair-bench-")
        root = Path(self._tmp.name)
        self.alpha = create_identity(root / "alpha", "alpha")
        self.beta = create_identity(root / "beta", "beta")
        self.alpha_store = open_store(root / "alpha")
        self.beta_store = open_store(root / "beta")

    def close(self) -> None:
        self.alpha_store.close()
        self.beta_store.close()
        self._tmp.cleanup()


# ---------------------------------------------------------------- cpace cost per side


def cpace_ms_per_side(devices: Devices, repeats: int = 200) -> Figure:
    """CPace compute per side (generator, share, K, ISK, tags), in ms."""
    channel = Channel(cert_offerer=devices.alpha.cert_der, cert_joiner=devices.beta.cert_der,
                      exporter=os.urandom(32))
    joiner_t: list[float] = []
    offerer_t: list[float] = []
    for _ in range(repeats):
        code = generate_code()
        joiner = JoinerSession(secret=code, channel=channel, name="beta",
                               scalar=secrets.token_bytes(32))
        offerer = OffererSession(offer=Offer(secret=code, expires_at=1e18), channel=channel,
                                 name="alpha", scalar=secrets.token_bytes(32))
        t0 = time.perf_counter()
        joiner.start()
        a = joiner.data_to_send()
        t1 = time.perf_counter()
        offerer.receive_data(a, now=0.0)
        b = offerer.data_to_send()
        t2 = time.perf_counter()
        joiner.receive_data(b)
        c = joiner.data_to_send()
        t3 = time.perf_counter()
        events = offerer.receive_data(c, now=0.0)
        t4 = time.perf_counter()
        assert events, "bench run must pair"
        joiner_t.append((t1 - t0) + (t3 - t2))
        offerer_t.append((t2 - t1) + (t4 - t3))
    return {"joiner": summary(joiner_t, 1000), "offerer": summary(offerer_t, 1000)}


# ------------------------------------------------------- whole pairing vs bare mTLS


async def _pair_once(devices: Devices, mode: Mode, via: Callable[[int], Awaitable[int]] | None
                     = None) -> tuple[float, float]:
    """One pairing over loopback; (joiner done, offerer done) seconds after join starts."""
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    offer_done = 0.0

    def on_event(event: OfferEvent) -> None:
        if isinstance(event, Listening) and not listening.done():
            listening.set_result(event)

    secret: Secret = generate_code() if mode is Mode.CPACE else generate_hmac_key()
    offer_task = asyncio.ensure_future(run_offer(
        identity=devices.alpha, store=devices.alpha_store, mode=mode, host="127.0.0.1",
        port=0, on_event=on_event, secret=secret))
    event = await listening
    port = event.port if via is None else await via(event.port)
    start = time.perf_counter()

    def offer_finished(_: object) -> None:
        nonlocal offer_done
        offer_done = time.perf_counter()

    offer_task.add_done_callback(offer_finished)
    await run_join(identity=devices.beta, store=devices.beta_store, host="127.0.0.1",
                   port=port, secret=secret)
    join_done = time.perf_counter()
    await offer_task
    return join_done - start, offer_done - start


def _mtls_contexts(a: Identity, b: Identity) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for ctx, own, other in ((server, a, b), (client, b, a)):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(own.cert_path, own.key_path)
        ctx.load_verify_locations(cafile=str(other.cert_path))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.verify_mode = ssl.CERT_REQUIRED
    client.check_hostname = False
    return server, client


async def _bare_tls_once(devices: Devices) -> float:
    """Stdlib mutual TLS 1.3 connect plus one round trip (1 byte echoed)."""
    server_ctx, client_ctx = _mtls_contexts(devices.alpha, devices.beta)
    served: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(1))
        await writer.drain()
        writer.close()
        served.set_result(None)

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
    writer.write(b"x")
    await reader.readexactly(1)
    await served
    elapsed = time.perf_counter() - start
    writer.close()
    server.close()
    return elapsed


def pair_vs_tls(devices: Devices, repeats: int = 30) -> Figure:
    """Whole cpace pairing (both sides done, trust stored) / bare stdlib mTLS + 1 RTT."""

    async def run() -> tuple[list[float], list[float]]:
        pair_t, tls_t = [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            joined, offered = await _pair_once(devices, Mode.CPACE)
            pair_t.append(max(joined, offered))
            tls_t.append(await _bare_tls_once(devices))
        return pair_t, tls_t

    pair_t, tls_t = asyncio.run(run())
    ratio = statistics.median(pair_t) / statistics.median(tls_t)
    return {"pair_ms": summary(pair_t, 1000), "bare_mtls_ms": summary(tls_t, 1000),
            "ratio": round(ratio, 3)}


# -------------------------------------------------------------- round trips (proxy)


def round_trips(devices: Devices, delay: float = 0.05, repeats: int = 5) -> Figure:
    """Pairing time through a delay proxy divided by the RTT through the same proxy.

    The baseline RTT is a 1-byte echo through an identical proxy in the same run
    (nominally 2 x delay), so the proxy's own timer lateness is not charged to certpair.
    """

    async def run(mode: Mode) -> Figure:
        proxies: list[DelayProxy] = []

        async def via(port: int) -> int:
            proxy = DelayProxy("127.0.0.1", port, delay)
            await proxy.__aenter__()
            proxies.append(proxy)
            return proxy.port

        joiner, offerer, rtts = [], [], []
        for _ in range(repeats):
            rtt = await proxied_rtt(delay)
            j, o = await _pair_once(devices, mode, via)
            joiner.append(j / rtt)
            offerer.append(o / rtt)
            rtts.append(rtt)
            await proxies.pop().__aexit__(None, None, None)
        return {"joiner_rtts": summary(joiner), "offerer_rtts": summary(offerer),
                "measured_rtt_ms": summary(rtts, 1000)}

    return {"nominal_rtt_ms": 2000 * delay, "cpace": asyncio.run(run(Mode.CPACE)),
            "hmac": asyncio.run(run(Mode.HMAC))}


# ---------------------------------------------------------------- hmac guessing rate


def hmac_guesses_per_second(devices: Devices, seconds: float = 2.0) -> Figure:
    """Offline guesses per second on one core against the seed's m1 (real certs)."""
    from cryptography.hazmat.primitives import hashes, hmac

    message = REQUEST_LABEL + devices.beta.cert_der + devices.alpha.cert_der
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for guess in range(count, count + 10000):
            mac = hmac.HMAC(b"%06d" % (guess % 1000000), hashes.SHA256())
            mac.update(message)
            mac.finalize()
        count += 10000
    rate = count / (time.perf_counter() - start)
    return {"guesses_per_s": round(rate), "message_bytes": len(message),
            "six_digit_keyspace_s": round(1e6 / rate, 2)}


def environment() -> Figure:
    """What the figures were measured on."""
    import platform

    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "openssl": ssl.OPENSSL_VERSION}


__all__ = ["Devices", "cpace_ms_per_side", "environment", "hmac_guesses_per_second",
           "pair_vs_tls", "round_trips"]
