"""`serve --relay` through a relay: a bounded set of waiting connections, each replaced
when used, nothing readable in what crosses the relay (no name, no certificate, no
fingerprint), and mutual TLS deciding who gets in exactly as on the listening port.

The relay here is the tests' own (same protocol as the transit relay), so the test can
count what waits at it and record what crosses it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certpair.relay import service_token
from certpair.relay.serving import SLOTS, dial_service
from certpair.trusted import NotPaired, client_context, connect
from tests.cliutil import Proc, certpair_argv, peers, run
from tests.relayutil import HostileRelay, real_relay
from tests.trustedutil import Devices, make_devices


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    return make_devices(tmp_path)


def _ping_through(relay: object, devices: Devices, who: str, server: str) -> str:
    """Reach ``server``'s serve through the relay as ``who``; its answer's peer name."""
    from certpair.relay import RelayAddress

    assert isinstance(relay, RelayAddress)
    sock = dial_service(relay, devices.fp(server), "serve", deadline=time.monotonic() + 10)
    tls, _ = connect(relay.host, relay.port, devices.home(who),
                     context=client_context(devices.home(who)), timeout=10, sock=sock)
    with tls:
        tls.sendall(b"ping\n")
        answer = tls.recv(4096)
        if not answer:
            raise NotPaired("closed without answering")
    return str(json.loads(answer)["peer"])


async def test_serve_keeps_a_bounded_set_of_waiting_connections_and_replaces_each_used_one(
    devices: Devices,
) -> None:
    hostile = HostileRelay()
    relay = await hostile.start()
    serve = Proc(certpair_argv(devices.home("alpha"), "serve", "--listen", "127.0.0.1",
                               "--port", "0", "--relay", str(relay), "--json"))
    try:
        tokens = [service_token(devices.fp("alpha"), "serve", n) for n in range(SLOTS)]
        for token in tokens:
            await asyncio.wait_for(hostile.wait_for(token), 20)
        assert sorted(hostile.tokens) == sorted(tokens)  # exactly one per slot
        for _ in range(3):
            assert await asyncio.to_thread(_ping_through, relay, devices, "beta",
                                           "alpha") == "beta"
        for token in tokens:  # every used slot went back to the relay
            await asyncio.wait_for(hostile.wait_for(token), 20)
        waiting = sum(len(hostile.waiting.get(token, [])) for token in tokens)
        assert waiting == SLOTS
        assert len(hostile.tokens) == SLOTS + 3 + 3  # + the 3 clients + 3 replacements
        # Three answers naming both devices crossed it: it read none of them.
        capture = bytes(hostile.capture)
        assert len(capture) > 3000
        for who in ("alpha", "beta"):
            cert = x509.load_pem_x509_certificate(
                (devices.home(who) / "identity" / "cert.pem").read_bytes())
            for forbidden in (who.encode(), cert.subject.public_bytes(),
                              cert.public_bytes(Encoding.DER), devices.fp(who).encode()):
                assert forbidden not in capture
    finally:
        serve.kill()
        await hostile.close()


async def test_an_unpaired_device_reaching_serve_through_the_relay_is_refused(
    devices: Devices,
) -> None:
    hostile = HostileRelay()
    relay = await hostile.start()
    serve = Proc(certpair_argv(devices.home("alpha"), "serve", "--listen", "127.0.0.1",
                               "--port", "0", "--relay", str(relay), "--json"))
    try:
        assert serve.next_event()["event"] == "listening"
        # gamma trusts alpha, but alpha does not trust gamma: mutual TLS keeps it out.
        with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):  # alpha's alert: unknown
            await asyncio.to_thread(_ping_through, relay, devices, "gamma", "alpha")
        while (event := serve.next_event())["event"] != "connection":
            pass
        assert event["outcome"] == "refused"
        capture = bytes(hostile.capture)
        for name in (b"alpha", b"beta", b"gamma"):
            assert name not in capture
    finally:
        serve.kill()
        await hostile.close()


def test_serve_at_a_relay_follows_its_own_key_rotation_without_a_restart(
    devices: Devices,
) -> None:
    """alpha rotates while its `serve --relay` runs: beta reaches it through the relay
    before the rotation, while it is pending, and again and again after it ended (the
    waiting connections move to the new key's meeting points; beta tries a learned
    successor's first)."""
    with real_relay() as relay:
        serve = Proc(certpair_argv(devices.home("alpha"), "serve", "--listen", "127.0.0.1",
                                   "--port", "0", "--relay", relay.arg, "--json"))
        try:
            assert serve.next_event()["event"] == "listening"
            while serve.next_event()["event"] != "relay":
                pass

            def ping() -> dict[str, object]:
                done = run(devices.home("beta"), "ping", "--relay", relay.arg, "alpha",
                           "--json", "--timeout", "10")
                assert done.returncode == 0, done.stderr
                reply = json.loads(done.stdout.splitlines()[0])
                assert reply["remote"] == f"relay {relay.arg}"
                return dict(reply)

            ping()
            started = run(devices.home("alpha"), "rotate", "--json")
            assert started.returncode == 0, started.stderr
            successor = json.loads(started.stdout.splitlines()[0])["fingerprint"]
            ping()  # beta learns alpha's successor (pending) from serve's statement
            finished = run(devices.home("alpha"), "rotate", "--finish", "--json")
            assert finished.returncode == 0, finished.stderr
            for _ in range(2):  # the first completes the rotation at beta; the next
                ping()          # looks alpha up under its new key alone
            assert [p["fingerprint"] for p in peers(devices.home("beta"))
                    if p["name"] == "alpha"] == [successor]
        finally:
            serve.kill()
