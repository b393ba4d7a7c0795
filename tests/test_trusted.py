"""Trusted connections after pairing: the contexts, their refresh, peer_of and helpers.

Every handshake here is real TLS over loopback or memory BIOs; pairing is simulated by
committing each other's certificate (the pairing itself is tested elsewhere).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import queue
import socket
import sqlite3
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certpair.errors import BadInput, Expired, NetworkError
from certpair.identity import Identity, create_identity, fingerprint
from certpair.store import Peer, open_store
from certpair.trusted import (
    NotPaired,
    client_context,
    connect,
    connection_error,
    make_server,
    measure_handshake,
    open_connection,
    peer_of,
    server_context,
    start_server,
)
from tests.test_store import self_signed_certs

TIMEOUT = 10.0


@dataclass
class Devices:
    """alpha and beta are paired with each other; gamma trusts alpha, nobody trusts gamma."""

    root: Path
    ids: dict[str, Identity]

    def home(self, name: str) -> Path:
        return self.root / name

    def trust(self, who: str, whom: str) -> None:
        with open_store(self.home(who)) as store:
            store.commit_pairing(name=whom, cert_der=self.ids[whom].cert_der, mode="cpace",
                                 role="offerer", remote="test")

    def forget(self, who: str, whom: str) -> None:
        with open_store(self.home(who)) as store:
            store.remove_peer(self.ids[whom].fingerprint)

    def fp(self, name: str) -> str:
        return self.ids[name].fingerprint


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    found = Devices(tmp_path, {n: create_identity(tmp_path / n, n)
                               for n in ("alpha", "beta", "gamma")})
    found.trust("alpha", "beta")
    found.trust("beta", "alpha")
    found.trust("gamma", "alpha")
    return found


@dataclass
class Outcome:
    """What each side of one handshake saw: the other's fingerprint, or the error."""

    server: str | BaseException
    client: str | BaseException
    session: ssl.SSLSession | None = None

    @property
    def ok(self) -> bool:
        return isinstance(self.server, str) and isinstance(self.client, str)


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
              session: ssl.SSLSession | None = None) -> Outcome:
    """One connection over loopback; the server says "ok" once it accepted the client."""
    result: dict[str, str | BaseException] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    result["server"] = fingerprint(tls.getpeercert(binary_form=True) or b"")
                    tls.sendall(b"ok")
            except OSError as exc:
                result["server"] = exc

        thread = threading.Thread(target=serve)
        thread.start()
        got: ssl.SSLSession | None = None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
                    client_ctx.wrap_socket(raw, session=session) as tls:
                # TLS 1.3: the server's verdict on our certificate arrives with its data.
                answer = tls.recv(2)
                got = tls.session
                result["client"] = (fingerprint(tls.getpeercert(binary_form=True) or b"")
                                    if answer == b"ok" else ConnectionError(answer))
        except OSError as exc:
            result["client"] = exc
        thread.join()
    return Outcome(server=result["server"], client=result["client"], session=got)


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


def _memory_handshake(server: ssl.SSLObject, client: ssl.SSLObject,
                      wires: tuple[ssl.MemoryBIO, ...]) -> BaseException | None:
    s_in, s_out, c_in, c_out = wires
    for _ in range(6):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if side is server:
                    return exc
                raise
            s_in.write(c_out.read())
            c_in.write(s_out.read())
    return None


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
    assert isinstance(_memory_handshake(server, client, wires), ssl.SSLCertVerificationError)


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
    assert server.context is not server_ctx  # the rebuilt one
    assert _memory_handshake(server, client, wires) is None
    assert server.selected_alpn_protocol() == "certpair-test"


# -- third-party code with the raw contexts ------------------------------------------------


@pytest.fixture
def https_server(devices: Devices) -> Iterator[tuple[str, list[str]]]:
    """http.server behind alpha's server context; it answers with the peer's name."""
    home = devices.home("alpha")
    served: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert isinstance(self.request, ssl.SSLSocket)
            served.append(peer_of(self.request, home).name)
            body = served[-1].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = server_context(home).wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/", served
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


def fetch(url: str, context: ssl.SSLContext) -> str:
    with urllib.request.urlopen(url, context=context, timeout=TIMEOUT) as response:
        return str(response.read().decode())


def test_http_server_and_urllib_with_the_contexts_talk_between_paired_devices(
    devices: Devices, https_server: tuple[str, list[str]]
) -> None:
    url, served = https_server
    assert fetch(url, client_context(devices.home("beta"))) == "beta"
    assert served == ["beta"]


def test_http_server_refuses_an_unpaired_client_and_urllib_an_unpaired_server(
    devices: Devices, https_server: tuple[str, list[str]]
) -> None:
    url, served = https_server
    # TLS 1.3: the client finishes its handshake first, then reads the server's alert
    # (or, as http.server closes at once, sometimes only the reset that follows it).
    with pytest.raises(OSError):  # noqa: PT011  # SSLError or URLError, both refusals
        fetch(url, client_context(devices.home("gamma")))
    devices.forget("beta", "alpha")
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(url, client_context(devices.home("beta")))
    assert served == []


def test_http_server_refuses_a_removed_peer_on_the_next_request_without_a_restart(
    devices: Devices, https_server: tuple[str, list[str]]
) -> None:
    url, served = https_server
    client_ctx = client_context(devices.home("beta"))
    assert fetch(url, client_ctx) == "beta"
    devices.forget("alpha", "beta")
    with pytest.raises(OSError):  # noqa: PT011  # SSLError or URLError, both refusals
        fetch(url, client_ctx)
    assert served == ["beta"]


# -- peer_of and the helpers ---------------------------------------------------------------


def test_peer_of_names_the_stored_peer_and_refuses_an_unknown_certificate(
    devices: Devices,
) -> None:
    wires = tuple(ssl.MemoryBIO() for _ in range(4))
    server = server_context(devices.home("alpha")).wrap_bio(wires[0], wires[1], server_side=True)
    client = client_context(devices.home("beta")).wrap_bio(wires[2], wires[3])
    assert _memory_handshake(server, client, wires) is None
    assert peer_of(server, devices.home("alpha")).name == "beta"
    with open_store(devices.home("beta")) as store:
        assert peer_of(client, store).fingerprint == devices.fp("alpha")
    assert peer_of(client).fingerprint == devices.fp("alpha")  # the context's own store
    devices.forget("alpha", "beta")
    with pytest.raises(NotPaired, match="not a paired device"):
        peer_of(server, devices.home("alpha"))
    with pytest.raises(NotPaired):
        peer_of(server)


def test_peer_of_needs_a_home_for_a_connection_made_with_another_context(
    devices: Devices,
) -> None:
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    identity = devices.ids["alpha"]
    plain.load_cert_chain(identity.cert_path, identity.key_path)
    plain.verify_mode = ssl.CERT_REQUIRED
    plain.load_verify_locations(cadata=devices.ids["beta"].cert_der)
    wires = tuple(ssl.MemoryBIO() for _ in range(4))
    server = plain.wrap_bio(wires[0], wires[1], server_side=True)
    client = client_context(devices.home("beta")).wrap_bio(wires[2], wires[3])
    assert _memory_handshake(server, client, wires) is None
    with pytest.raises(BadInput):
        peer_of(server)
    assert peer_of(server, devices.home("alpha")).name == "beta"


async def test_async_helpers_connect_paired_devices_and_report_the_peer(
    devices: Devices,
) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   peer: Peer) -> None:
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.write(peer.name.encode() + b":" + line)
        await writer.drain()

    server = await start_server(echo, "127.0.0.1", 0, devices.home("alpha"))
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer, peer = await open_connection("127.0.0.1", port, devices.home("beta"))
        writer.write(b"hello\n")
        answer = await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.close()
    assert (peer.fingerprint, answer) == (devices.fp("alpha"), b"beta:hello\n")


async def test_async_server_reports_an_unpaired_client_as_refused(devices: Devices) -> None:
    refused: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    peer: Peer) -> None:
        raise AssertionError(f"{peer.name} got through")

    server = await start_server(never, "127.0.0.1", 0, devices.home("alpha"),
                                on_refused=lambda remote, why: refused.set_result((remote, why)))
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer, _ = await open_connection("127.0.0.1", port, devices.home("gamma"))
        writer.write(b"hello\n")
        # asyncio closes a failed server handshake without the TLS alert: the client
        # sees the connection end.
        with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), TIMEOUT)
        remote, why = await asyncio.wait_for(refused, TIMEOUT)
        writer.close()
    assert remote.startswith("127.0.0.1:") and why == "not a paired device"


async def test_async_client_refuses_an_unpaired_server(devices: Devices) -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   peer: Peer) -> None:
        pass

    devices.trust("gamma", "beta")
    server = await start_server(idle, "127.0.0.1", 0, devices.home("gamma"))
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(NotPaired, match="is not a paired device"):
            await open_connection("127.0.0.1", port, devices.home("beta"))


@pytest.fixture
def sync_server(devices: Devices) -> Iterator[tuple[int, queue.Queue[tuple[str, str]]]]:
    """make_server on alpha: answers each line with the peer's name; reports refusals."""
    refusals: queue.Queue[tuple[str, str]] = queue.Queue()

    def answer(tls: ssl.SSLSocket, peer: Peer) -> None:
        with tls.makefile("rb") as reader:
            line = reader.readline()
            tls.sendall(peer.name.encode() + b":" + line)

    server = make_server(answer, "127.0.0.1", 0, devices.home("alpha"), timeout=TIMEOUT,
                         on_refused=lambda remote, why: refusals.put((remote, why)))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_address[1], refusals
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_sync_helpers_connect_paired_devices_and_refuse_an_unpaired_one(
    devices: Devices, sync_server: tuple[int, queue.Queue[tuple[str, str]]]
) -> None:
    port, refusals = sync_server
    tls, peer = connect("127.0.0.1", port, devices.home("beta"), timeout=TIMEOUT)
    with tls:
        tls.sendall(b"hi\n")
        assert tls.recv(100) == b"beta:hi\n"
        assert tls.gettimeout() == TIMEOUT  # every later read is bounded
    assert peer.fingerprint == devices.fp("alpha")
    tls, _ = connect("127.0.0.1", port, devices.home("gamma"), timeout=TIMEOUT)
    with tls, pytest.raises(ssl.SSLError) as refused:
        tls.sendall(b"hi\n")
        tls.recv(100)
    assert isinstance(connection_error(refused.value, "alpha"), NotPaired)
    remote, why = refusals.get(timeout=TIMEOUT)
    assert remote.startswith("127.0.0.1:") and why == "not a paired device"
    assert refusals.empty()


def test_connect_reports_an_unreachable_port_as_a_network_error(tmp_path: Path,
                                                                 devices: Devices) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(NetworkError, match="cannot reach"):
        connect("127.0.0.1", port, devices.home("beta"), timeout=TIMEOUT)


def test_connect_times_out_on_a_silent_server(devices: Devices) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(Expired):
            connect("127.0.0.1", port, devices.home("beta"), timeout=0.2)


def test_measure_handshake_times_a_full_verified_connection(
    devices: Devices, sync_server: tuple[int, queue.Queue[tuple[str, str]]]
) -> None:
    port, _ = sync_server
    context = client_context(devices.home("beta"))
    start = time.perf_counter()
    took = measure_handshake("127.0.0.1", port, context, timeout=TIMEOUT)
    assert 0 < took <= time.perf_counter() - start
    with pytest.raises(NotPaired):
        measure_handshake("127.0.0.1", port, client_context(devices.home("gamma")))


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


async def test_open_connection_pinned_to_one_device_refuses_another(devices: Devices) -> None:
    devices.trust("gamma", "beta")
    devices.trust("beta", "gamma")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      peer: Peer) -> None:
        writer.write(b"x")
        await writer.drain()

    server = await start_server(handler, "127.0.0.1", 0, devices.home("beta"))
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NotPaired):
            await open_connection("127.0.0.1", port, devices.home("gamma"), peer="alpha")
        _, writer, peer = await open_connection("127.0.0.1", port, devices.home("gamma"),
                                                peer="beta")
        writer.close()
        assert peer.fingerprint == devices.fp("beta")
    finally:
        server.close()
