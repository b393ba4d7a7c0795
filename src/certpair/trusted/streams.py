"""Connections and servers for paired devices over asyncio streams.

Every connection is checked against the store after the handshake (``peer_of``), as the
blocking helpers (:mod:`~certpair.trusted.client`, :mod:`~certpair.trusted.server`) do;
failures are reported through :func:`~certpair.trusted.failures.connection_error` and
:func:`~certpair.trusted.failures.refusal_reason`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from certpair.addresses import format_address
from certpair.errors import CertpairError
from certpair.ports import cannot_listen
from certpair.store import Peer
from certpair.trusted.client import HANDSHAKE_TIMEOUT, client_side, expect_peer, remote_name
from certpair.trusted.contexts import REFUSALS, NotPaired, server_context
from certpair.trusted.cuts import OpenConnections
from certpair.trusted.failures import connection_error, refusal_reason
from certpair.trusted.peers import _store_of, peer_of

__all__ = ["AsyncHandler", "open_connection", "start_server"]

AsyncHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]


async def open_connection(
    host: str, port: int, home: Path, *, context: ssl.SSLContext | None = None,
    timeout: float = HANDSHAKE_TIMEOUT, peer: str | Peer | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Peer]:
    """Connect to a paired device over mutual TLS.

    In TLS 1.3 the server judges this device's certificate after the client's side of
    the handshake is done, so a server that refuses this device makes the *first read*
    (or ``drain``) raise :class:`NotPaired` ("... refused this device: it is not paired
    there"); any other TLS or socket failure met while reading is a certpair error too.
    Bound your reads, e.g. with ``asyncio.timeout``.

    Args:
        host: the device's address.
        port: its port.
        home: certpair's home directory.
        context: a client context to reuse (default: a new one).
        timeout: seconds for connecting and the handshake.
        peer: accept only this paired device as the server (name, fingerprint or
            prefix, or a Peer); without ``context`` the handshake itself is pinned.

    Returns:
        The streams and the verified peer.

    Raises:
        NotPaired: the server is not a paired device (or not ``peer``).
        PeerNotFound, AmbiguousPeer: ``peer`` names no paired device, or several.
        Expired: the connection or handshake timed out.
        NetworkError: the device cannot be reached or the handshake failed.
    """
    context, remote = client_side(host, port, home, context, peer)
    loop = asyncio.get_running_loop()
    reader = _TrustedReader(remote, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: protocol, host, port, ssl=context, ssl_handshake_timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise connection_error(exc, remote) from exc
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    try:
        found = peer_of(writer.get_extra_info("ssl_object"), _store_of(context, home))
        return reader, writer, expect_peer(found, peer, context, home)
    except CertpairError:
        writer.close()
        raise


async def start_server(
    handler: AsyncHandler, host: str, port: int, home: Path, *,
    context: ssl.SSLContext | None = None, timeout: float = HANDSHAKE_TIMEOUT,
    on_refused: Callable[[str, str], None] | None = None,
) -> asyncio.Server:
    """Listen for paired devices; call ``handler(reader, writer, peer)`` for each one.

    A refused client receives the TLS alert, so its first read fails with
    :class:`NotPaired`. A device that is unpaired while its connection is open is cut:
    the handler's next read raises :class:`NotPaired` ("... was unpaired").

    Args:
        handler: coroutine run per accepted connection; the writer is closed after it.
        host: address to listen on.
        port: TCP port; 0 picks a free one (see ``server.sockets``).
        home: certpair's home directory.
        context: a server context to reuse (default: a new one).
        timeout: seconds allowed for each handshake.
        on_refused: called with the remote address and :func:`refusal_reason` for
            each connection that is not let through. (asyncio sends no TLS alert.)

    Returns:
        The listening server.

    Raises:
        NetworkError: cannot listen.
    """
    tls = context or server_context(home)
    store = _store_of(tls, home)
    opened = OpenConnections(store)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote = remote_name(writer.get_extra_info("peername"))
        refusals: list[BaseException] = []
        REFUSALS.set(refusals)  # this task's own context: see contexts._CheckedObject
        try:
            try:
                async with asyncio.timeout(timeout):
                    await writer.start_tls(tls)
                peer = peer_of(writer.get_extra_info("ssl_object"), store)
            except (OSError, TimeoutError, NotPaired) as exc:
                if on_refused is not None:
                    on_refused(remote, refusal_reason(refusals[0] if refusals else exc))
                return
            loop = asyncio.get_running_loop()

            def cut(why: NotPaired) -> None:  # called from the watch's thread
                loop.call_soon_threadsafe(_cut_stream, reader, writer, why)

            with opened.track(peer, cut):
                await handler(reader, writer, peer)
        except asyncio.CancelledError:
            return  # the server is shutting down: nothing to report
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    try:
        server = await asyncio.start_server(accept, host, port)
    except OSError as exc:
        raise cannot_listen(format_address(host, port), exc) from exc
    opened.start_polling(server.is_serving)
    return server


def _cut_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                why: NotPaired) -> None:
    """End an open asyncio connection: the handler's next read raises ``why``."""
    reader.set_exception(why)
    writer.transport.abort()


class _TrustedReader(asyncio.StreamReader):
    """A stream reader whose TLS and socket failures are certpair's verdicts: a server's
    refusal after the TLS 1.3 handshake reads as :class:`NotPaired`, not as an
    ``ssl.SSLError`` (or nothing at all)."""

    def __init__(self, remote: str, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._remote = remote

    def set_exception(self, exc: Exception) -> None:
        """Store the verdict on ``exc`` for the next read to raise."""
        if isinstance(exc, OSError):
            exc = connection_error(exc, self._remote)
        super().set_exception(exc)
