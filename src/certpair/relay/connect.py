"""A connection through a transit relay: connect, say the token, wait for ``ok``.

What comes back is an ordinary stream (asyncio reader and writer, or a blocking
socket) already glued to the other end, so the TLS code above it does not know
which transport it got. Nothing here waits forever unless the caller wants it to
(a waiting end at the relay has no deadline: its partner comes when it comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from certpair.errors import NetworkError
from certpair.ports import cannot_reach
from certpair.relay.address import RelayAddress, handshake_line

__all__ = ["RelayClosed", "RelayError", "connect_relay", "open_relay"]

_OK = b"ok\n"


class RelayError(NetworkError):
    """The relay could not be reached, or it is not a transit relay."""


class RelayClosed(RelayError):
    """The relay ended the connection before another end arrived (it restarted, or a
    second waiting end with the same token was dropped when the first was glued)."""


def _unreachable(relay: RelayAddress, exc: OSError) -> RelayError:
    return RelayError(str(cannot_reach(f"the relay {relay}", exc, relay=True)))


def _check_answer(relay: RelayAddress, answer: bytes) -> None:
    if answer != _OK:
        raise RelayError(f"{relay} did not accept the relay handshake: is it a "
                         "magic-wormhole transit relay?")


async def open_relay(
    relay: RelayAddress, token: str, side: str,
    on_sent: Callable[[], None] = lambda: None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Meet the other end at the relay (asyncio); the caller bounds the wait.

    Args:
        relay: the relay.
        token: the meeting token (64 hex digits, made of public values only).
        side: this end's side (``WAITING_SIDE`` or ``CONNECTING_SIDE``).
        on_sent: called once the relay has taken the handshake (it is now waiting).

    Returns:
        A reader and writer that now carry the other end's bytes.

    Raises:
        RelayError: the relay cannot be reached or refused the handshake.
        RelayClosed: it closed the connection before the other end came.
    """
    try:
        reader, writer = await asyncio.open_connection(relay.host, relay.port)
    except OSError as exc:
        raise _unreachable(relay, exc) from exc
    try:
        writer.write(handshake_line(token, side))
        await writer.drain()
        on_sent()
        answer = await reader.readexactly(len(_OK))
        _check_answer(relay, answer)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        writer.close()
        raise RelayClosed(f"the relay {relay} closed the connection before the other "
                          "device came") from exc
    except BaseException:
        writer.close()
        raise
    return reader, writer


def connect_relay(
    relay: RelayAddress, token: str, side: str, *, timeout: float | None,
    sock: socket.socket | None = None, on_sent: Callable[[], None] = lambda: None,
) -> socket.socket:
    """Meet the other end at the relay (blocking).

    Args:
        relay: the relay.
        token: the meeting token (64 hex digits, made of public values only).
        side: this end's side.
        timeout: seconds for connecting and for the other end to come; None waits
            (a waiting server end; ``shutdown()`` from another thread ends the wait).
        sock: a socket already connected to the relay (the caller keeps a handle on
            it to end the wait), else one is made here.
        on_sent: called once the relay has taken the handshake.

    Returns:
        A connected socket in blocking mode that now carries the other end's bytes.

    Raises:
        RelayError: the relay cannot be reached or refused the handshake.
        RelayClosed: it closed the connection before the other end came.
        TimeoutError: nobody came within ``timeout``.
    """
    if sock is None:
        try:
            sock = socket.create_connection((relay.host, relay.port), timeout=timeout)
        except TimeoutError:
            raise
        except OSError as exc:
            raise _unreachable(relay, exc) from exc
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(handshake_line(token, side))
        on_sent()
        answer = b""
        # Exactly three bytes: what follows belongs to the other end (TLS).
        while len(answer) < len(_OK):
            chunk = sock.recv(len(_OK) - len(answer))
            if not chunk:
                raise RelayClosed(f"the relay {relay} closed the connection before the "
                                  "other device came")
            answer += chunk
        _check_answer(relay, answer)
        sock.settimeout(None)
    except TimeoutError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise RelayClosed(f"the relay {relay} closed the connection before the other "
                          "device came") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock
