"""Confirmation means the peer admitted this device (issue 19).

An unconfirmed pairing says "this device does not know whether the other one stored
it". It may be settled only by proof that the other side accepted this device: on a
server, the client sending application data over the accepted connection; on a client,
the server answering. A client that completes its TLS 1.3 handshake proves nothing:
OpenSSL's ``s_client`` finishes the handshake after a verify error, and any client may
finish it and then hang up. Real ``serve`` and ``tunnel serve`` processes; the clients
are the real ``openssl`` binary and Python's ``ssl`` module, presenting the paired
device's real certificate and key.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.store import open_store
from tests.cliutil import LOOPBACK
from tests.test_cli_trust import NEEDS_OPENSSL, OPENSSL, WAIT, Devices, devices, run_json
from tests.tunnelutil import Devices as TunnelDevices
from tests.tunnelutil import Service, echo, make_devices

__all__ = ["devices"]


def _unconfirm(home: Path, name: str, cert_der: bytes) -> None:
    with open_store(home) as store:
        store.commit_pairing(name=name, cert_der=cert_der, mode="cpace", role="joiner",
                             remote="test", confirmed=False)


def _confirmed(home: Path, fingerprint: str) -> bool:
    with open_store(home) as store:
        peer = store.peer(fingerprint)
    assert peer is not None
    return peer.confirmed


def _handshake_then_hang_up(port: int, home: Path, *, send: bytes = b"") -> bytes:
    """A client with the paired device's certificate that accepts any server certificate
    (it does not check it), completes the handshake, sends ``send`` and leaves."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(home / "identity" / "cert.pem", home / "identity" / "key.pem")
    answer = b""
    with socket.create_connection((LOOPBACK, port), timeout=WAIT) as raw, \
            context.wrap_socket(raw) as tls:
        if send:
            tls.sendall(send)
            answer = tls.recv(4096)
    return answer


@NEEDS_OPENSSL
def test_s_client_that_fails_verification_leaves_the_pairing_unconfirmed(
    devices: Devices,
) -> None:
    _unconfirm(devices.home("alpha"), "beta", devices.ids["beta"].cert_der)
    serving = devices.serve("alpha")
    beta = devices.home("beta") / "identity"
    # gamma's certificate as the only CA: alpha's certificate fails verification, and
    # s_client (without -verify_return_error) finishes the handshake all the same.
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, "s_client", "-connect", serving.address, "-tls1_3", "-cert",
         str(beta / "cert.pem"), "-key", str(beta / "key.pem"), "-CAfile",
         str(devices.home("gamma") / "identity" / "cert.pem")],
        input="", capture_output=True, text=True, timeout=WAIT, check=False)
    assert "Verify return code: 0" not in done.stdout, done.stdout  # it did reject alpha
    event = serving.next_event()
    assert event["event"] == "connection" and event["outcome"] == "probe", event
    assert not _confirmed(devices.home("alpha"), devices.fp("beta"))


def test_python_client_that_hangs_up_after_the_handshake_leaves_it_unconfirmed(
    devices: Devices,
) -> None:
    _unconfirm(devices.home("alpha"), "beta", devices.ids["beta"].cert_der)
    serving = devices.serve("alpha")
    _handshake_then_hang_up(serving.port, devices.home("beta"))
    event = serving.next_event()
    assert (event["event"], event["outcome"]) == ("connection", "probe"), event
    assert event["peer"]["fingerprint"] == devices.fp("beta")
    assert not _confirmed(devices.home("alpha"), devices.fp("beta"))
    # The control: the same client sending a request is an admission, and settles it.
    assert _handshake_then_hang_up(serving.port, devices.home("beta"), send=b"hello\n")
    assert serving.next_event()["event"] == "note"
    assert serving.next_event()["outcome"] == "accepted"
    assert _confirmed(devices.home("alpha"), devices.fp("beta"))


@pytest.fixture
def tunnel_devices(tmp_path: Path) -> Iterator[TunnelDevices]:
    found = make_devices(tmp_path)
    yield found
    for tunnel in found.started:
        if tunnel.proc.poll() is None:
            tunnel.stop()


def test_tunnel_serve_confirms_on_data_never_on_a_bare_handshake(
    tunnel_devices: TunnelDevices,
) -> None:
    devices = tunnel_devices
    _unconfirm(devices.home("alpha"), "beta", devices.ids["beta"].cert_der)
    service = Service(echo)
    try:
        server = devices.serve(service.address)
        _handshake_then_hang_up(server.port, devices.home("beta"))
        server.event("closed")
        assert not _confirmed(devices.home("alpha"), devices.fp("beta"))
        # The control: data over the accepted connection settles it.
        assert _handshake_then_hang_up(server.port, devices.home("beta"), send=b"hi")
        server.event("closed")
        assert _confirmed(devices.home("alpha"), devices.fp("beta"))
    finally:
        service.close()


def test_ping_still_confirms_both_sides(devices: Devices) -> None:
    _unconfirm(devices.home("alpha"), "beta", devices.ids["beta"].cert_der)
    _unconfirm(devices.home("beta"), "alpha", devices.ids["alpha"].cert_der)
    serving = devices.serve("alpha")
    lines = run_json(devices.home("beta"), "ping", serving.address)
    assert [line["event"] for line in lines] == ["confirmed", "reply"]
    assert _confirmed(devices.home("alpha"), devices.fp("beta"))
    assert _confirmed(devices.home("beta"), devices.fp("alpha"))
