"""Two or three devices that trust each other by store rows, and one real TLS handshake
between two contexts: the fixtures of the trusted-connection tests."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from certpair.identity import Identity, create_identity, fingerprint
from certpair.store import open_store

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


def make_devices(tmp_path: Path) -> Devices:
    """alpha, beta and gamma in ``tmp_path``: alpha and beta paired, gamma trusts alpha."""
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


def asyncio_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[bytes, bool]:
    """One connection to an asyncio server over loopback (asyncio drives the server's
    ``SSLObject`` itself): what the client read (``welcome``, or nothing when refused),
    and whether the server's handler ran at all."""
    served: list[bool] = []

    async def run() -> bytes:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            served.append(True)
            writer.write(b"welcome\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
            try:
                async with asyncio.timeout(TIMEOUT):
                    return await reader.read(100)
            except (OSError, ssl.SSLError):
                return b""
            finally:
                writer.close()
        finally:
            server.close()
            await server.wait_closed()

    read = asyncio.run(run())
    return read, bool(served)


def memory_handshake(server: ssl.SSLObject, client: ssl.SSLObject,
                      wires: tuple[ssl.MemoryBIO, ...]) -> BaseException | None:
    """Drive two memory-BIO ends to the end of their handshake; the server's error, if any."""
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
