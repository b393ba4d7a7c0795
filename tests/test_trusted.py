"""Trusted connections after pairing: the contexts, how they follow the store, and a
large store.

Every handshake here is real TLS over loopback or memory BIOs; pairing is simulated by
committing each other's certificate (the pairing itself is tested elsewhere). peer_of,
the helpers and third-party servers are in ``test_trusted_helpers.py``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from certpair.trusted import (
    NotPaired,
    client_context,
    connection_error,
    server_context,
)
from tests.test_store import self_signed_certs
from tests.trustedutil import Devices, handshake, make_devices, memory_handshake


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    return make_devices(tmp_path)


# -- the contexts -------------------------------------------------------------------------


@pytest.mark.parametrize(("server", "client"), [("alpha", "beta"), ("beta", "alpha")])
def test_paired_devices_connect_both_ways_and_each_sees_the_other(
    devices: Devices, server: str, client: str
) -> None:
    outcome = handshake(server_context(devices.home(server)),
                        client_context(devices.home(client)))
    assert (outcome.server, outcome.client) == (devices.fp(client), devices.fp(server))


def test_server_context_refuses_an_unpaired_client(devices: Devices) -> None:
    outcome = handshake(server_context(devices.home("alpha")),
                        client_context(devices.home("gamma")))
    assert isinstance(outcome.server, ssl.SSLCertVerificationError)
    assert not isinstance(outcome.client, str)
    assert isinstance(connection_error(outcome.client, "alpha"), NotPaired)


def test_client_context_refuses_an_unpaired_server(devices: Devices) -> None:
    devices.trust("gamma", "beta")  # gamma would accept beta; beta does not trust gamma
    outcome = handshake(server_context(devices.home("gamma")),
                        client_context(devices.home("beta")))
    assert isinstance(outcome.client, ssl.SSLCertVerificationError)
    assert not isinstance(outcome.server, str)


def test_a_client_without_a_certificate_is_refused(devices: Devices) -> None:
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.verify_mode = ssl.CERT_NONE
    outcome = handshake(server_context(devices.home("alpha")), bare)
    assert isinstance(outcome.server, ssl.SSLError)
    assert outcome.server.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


def test_contexts_speak_only_tls13(devices: Devices) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    identity = devices.ids["beta"]
    old.load_cert_chain(identity.cert_path, identity.key_path)
    outcome = handshake(server_context(devices.home("alpha")), old)
    assert isinstance(outcome.server, ssl.SSLError) and not isinstance(outcome.client, str)


@pytest.mark.parametrize("factory", [server_context, client_context])
def test_anchors_are_exactly_the_stored_peers_and_no_system_roots(
    devices: Devices, factory: Callable[[Path], ssl.SSLContext]
) -> None:
    context = factory(devices.home("alpha"))
    # Nothing is loaded up front (the anchors are looked up in the directory per
    # handshake), and the directory holds exactly the one stored peer.
    assert context.cert_store_stats() == {"crl": 0, "x509": 0, "x509_ca": 0}
    assert context.get_ca_certs() == []
    anchors = devices.home("alpha") / "anchors"
    assert [p.read_text() for p in anchors.glob("*.0")] == [
        ssl.DER_cert_to_PEM_cert(devices.ids["beta"].cert_der)]
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.verify_mode is ssl.CERT_REQUIRED and not context.check_hostname
    assert context.verify_flags & ssl.VERIFY_X509_STRICT


# -- following the store -------------------------------------------------------------------


@pytest.mark.parametrize("side", ["server", "client"])
def test_a_removed_peer_is_refused_on_the_next_connection_by_the_same_context(
    devices: Devices, side: str
) -> None:
    server_ctx = server_context(devices.home("alpha"))
    client_ctx = client_context(devices.home("beta"))
    assert handshake(server_ctx, client_ctx).ok
    if side == "server":
        devices.forget("alpha", "beta")
    else:
        devices.forget("beta", "alpha")
    refused = handshake(server_ctx, client_ctx)
    loser = refused.server if side == "server" else refused.client
    assert isinstance(loser, ssl.SSLCertVerificationError)


def test_a_peer_paired_later_is_accepted_by_an_existing_context(devices: Devices) -> None:
    server_ctx = server_context(devices.home("alpha"))
    client_ctx = client_context(devices.home("gamma"))
    assert not handshake(server_ctx, client_ctx).ok
    devices.trust("alpha", "gamma")
    assert handshake(server_ctx, client_ctx).server == devices.fp("gamma")


def test_a_peer_removed_and_paired_again_is_accepted_again(devices: Devices) -> None:
    server_ctx = server_context(devices.home("alpha"))
    client_ctx = client_context(devices.home("beta"))
    devices.forget("alpha", "beta")
    assert not handshake(server_ctx, client_ctx).ok
    devices.trust("alpha", "beta")
    assert handshake(server_ctx, client_ctx).ok


def test_the_client_hello_callback_applies_a_removal_made_after_wrapping(
    devices: Devices,
) -> None:
    # Code that creates its TLS object before the change (or bypasses wrap_bio) is
    # still covered: the server swaps in the fresh context when the ClientHello arrives.
    server_ctx = server_context(devices.home("alpha"))
    client_ctx = client_context(devices.home("beta"))
    wires = tuple(ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(wires[0], wires[1], server_side=True)
    client = client_ctx.wrap_bio(wires[2], wires[3])
    devices.forget("alpha", "beta")
    assert isinstance(memory_handshake(server, client, wires), ssl.SSLCertVerificationError)


def test_server_issues_no_session_tickets_so_a_removed_peer_cannot_resume(
    devices: Devices,
) -> None:
    server_ctx = server_context(devices.home("alpha"))
    client_ctx = client_context(devices.home("beta"))
    first = handshake(server_ctx, client_ctx)
    assert first.ok and first.session is not None
    assert not first.session.has_ticket
    devices.forget("alpha", "beta")
    assert isinstance(handshake(server_ctx, client_ctx, first.session).server, ssl.SSLError)


def test_settings_made_on_a_context_survive_a_rebuild(devices: Devices) -> None:
    server_ctx = server_context(devices.home("alpha"))
    client_ctx = client_context(devices.home("beta"))
    server_ctx.set_alpn_protocols(["certpair-test"])
    client_ctx.set_alpn_protocols(["certpair-test"])
    devices.trust("alpha", "gamma")
    server_ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)  # sees gamma
    devices.forget("alpha", "gamma")  # a removal: alpha's context is rebuilt
    wires = tuple(ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(wires[0], wires[1], server_side=True)
    client = client_ctx.wrap_bio(wires[2], wires[3])
    assert memory_handshake(server, client, wires) is None
    assert server.context is not server_ctx  # the rebuilt one (from the ClientHello on)
    assert server.selected_alpn_protocol() == "certpair-test"


# -- a large store -------------------------------------------------------------------------


def test_a_store_of_2000_peers_accepts_the_right_peer_and_refuses_an_unknown_one(
    devices: Devices,
) -> None:
    # Rows written by plain SQL (no subject hash): the next open files them.
    fillers = self_signed_certs(1_999)
    with sqlite3.connect(devices.home("alpha") / "trust.db") as db:
        db.executemany(
            "INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
            " VALUES (?, ?, ?, 'cpace', '2026-01-01T00:00:00Z')",
            [("sha256:" + hashlib.sha256(der).hexdigest(), f"filler-{i}", der)
             for i, der in enumerate(fillers)],
        )
    server_ctx = server_context(devices.home("alpha"))
    assert len(list((devices.home("alpha") / "anchors").glob("*.[0-9]"))) == 2_000
    assert handshake(server_ctx, client_context(devices.home("beta"))).server == devices.fp("beta")
    refused = handshake(server_ctx, client_context(devices.home("gamma")))
    assert isinstance(refused.server, ssl.SSLCertVerificationError)


def test_a_removal_is_not_served_from_openssl_s_cache_of_looked_up_anchors(
    devices: Devices,
) -> None:
    # OpenSSL keeps every anchor it looked up in the context's store; the context that
    # takes over after a change starts empty, so OpenSSL itself refuses the removed peer
    # (an OpenSSL verify error, before certpair's own check would run).
    server_ctx = server_context(devices.home("alpha"))
    client_ctx = client_context(devices.home("beta"))
    assert handshake(server_ctx, client_ctx).ok
    devices.forget("alpha", "beta")
    refused = handshake(server_ctx, client_ctx)
    assert isinstance(refused.server, ssl.SSLCertVerificationError)
    assert refused.server.verify_code != 0  # OpenSSL's verdict, not PeerRefused (0)
