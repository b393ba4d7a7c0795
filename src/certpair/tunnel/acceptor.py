"""The accept loop both tunnel ends share: the listener, the connection limit, each
connection run by the thread that accepted it (tunnel/threads.py), and the stop on
SIGINT/SIGTERM (stop accepting, drain the open connections for a bounded time, cut the
rest).

With :class:`~certpair.trusted.handshakes.HandshakeSlots` (``tunnel serve``), a
connection first holds an unproven slot, bounded per source and in total and expiring
with the handshake's deadline; the handler leaves it once the peer is proven and takes
one of ``--max-connections`` then. So idle sockets of an unpaired host never take the
places of paired devices. Without (``tunnel connect``, whose clients are local), the
connection takes its slot at the accept.

The listener may also come from systemd socket activation (``LISTEN_FDS``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from certpair.addresses import format_address, host_of
from certpair.ports import cannot_listen
from certpair.trusted.handshakes import HandshakeSlots, Slot
from certpair.tunnel.events import Failed, OnEvent, Stopped, Stopping, TunnelEvent
from certpair.tunnel.link import reset
from certpair.tunnel.threads import Acceptors, Workers
from certpair.tunnel.watch import Connections, Refusals, TrustWatch

__all__ = ["Handler", "Stop", "address_of", "listen", "run_acceptor", "systemd_listener"]

# handle(sock, remote); with HandshakeSlots, HandshakeSlots.slot_for(sock) is its slot.
Handler = Callable[[socket.socket, str], TunnelEvent | None]
# A relayed connection's (settle, budget): told once whether it proved itself, and how
# many unproven slots connections under its label may hold (their own, never an
# address's: certpair.trusted.handshakes).
Relayed = tuple[Callable[[bool], None], int]
# admit(sock, remote, relayed): take in a connection from another source than accept().
Admit = Callable[[socket.socket, str, Relayed], None]

_BACKLOG = 1024
_SD_LISTEN_FDS_START = 3


class Stop(Exception):  # a control-flow signal, not an error
    """Raised in the main thread by SIGINT/SIGTERM to end the accept loop."""


def address_of(address: object) -> str:
    """``host:port`` (``[v6]:port``) of a socket address, for reports."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return format_address(host, address[1])
    return "local"


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0: a free one).

    Raises:
        NetworkError: the address cannot be used.
    """
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=_BACKLOG,
                                    reuse_port=False)
    except OSError as exc:
        raise cannot_listen(address_of((host, port)), exc) from exc


def systemd_listener() -> socket.socket | None:
    """The listening socket systemd passed (socket activation), or None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or not os.environ.get("LISTEN_FDS"):
        return None
    if int(os.environ["LISTEN_FDS"]) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=_SD_LISTEN_FDS_START)


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """In the main thread, turn SIGINT and SIGTERM into :class:`Stop`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise Stop

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def run_acceptor(
    listener: socket.socket, handle: Handler, *,
    connections: Connections, refusals: Refusals, watch: TrustWatch, on_event: OnEvent,
    drain_timeout: float, handshakes: HandshakeSlots | None = None,
    feed: Callable[[Admit], Callable[[], None]] | None = None,
) -> None:
    """Accept until a signal, each connection in the thread that accepted it, then drain
    and stop.

    Args:
        listener: the listening socket (closed on return).
        handle: ``handle(sock, remote)`` runs in the connection's thread; it owns the
            socket, and may return a last event to report once its slot is free. With
            ``handshakes`` its slot is ``handshakes.slot_for(sock)``: it must
            :meth:`Slot.leave` it before closing the socket and take a slot of
            ``connections`` once the peer is proven.
        connections: the limit and the open connections.
        refusals: where a connection over a limit is counted.
        watch: the trust watch, started here and stopped on return.
        on_event: receives :class:`Stopping` and :class:`Stopped`.
        drain_timeout: seconds open connections get to finish after the signal.
        handshakes: slots for connections not proven yet (see the module docs).
        feed: another source of connections (a relay's waiting connections): called
            with ``admit(sock, remote, (settle, budget))``, which takes them in under the
            same limits (their unproven slots under ``remote``, at most ``budget``; each
            one's ``settle`` told whether it proved itself), and returns the function
            that stops it (called before the drain).
    """
    workers = Workers()  # for connections fed from elsewhere (a relay)

    def admitted(sock: socket.socket, host: str, remote: str,
                 relayed: Relayed | None) -> Callable[[], None] | None:
        """The connection's run, under its slot; None: refused (reset and counted)."""
        slot = _admit(sock, host if relayed is None else remote, connections, handshakes,
                      relayed)
        if isinstance(slot, str):
            reset(sock)
            refusals.add(host, slot)
            if relayed is not None:
                relayed[0](False)
            return None
        if slot is None and relayed is not None:
            relayed[0](True)  # no unproven slots here: nothing to wait for
        connections.handling(+1)
        return functools.partial(_run_one, handle, connections, on_event, sock, remote, slot)

    def admit(sock: socket.socket, remote: str, relayed: Relayed | None = None) -> None:
        job = admitted(sock, host_of(remote), remote, relayed)
        if job is not None:
            workers.submit(job)

    def run(sock: socket.socket, address: object) -> None:
        """One accepted connection, in the thread that accepted it."""
        remote = address_of(address)
        job = admitted(sock, str(address[0]) if isinstance(address, tuple) else remote,
                       remote, None)
        if job is not None:
            job()

    acceptors = Acceptors(listener, run, connections, watch)
    # The watch may end the tunnel (its peer unpaired here): that stops the accepting.
    watch.on_end = acceptors.stop
    watch.start()
    stop_feed = None if feed is None else feed(admit)
    with _signals_stop():
        try:
            acceptors.start()
            acceptors.wait()
        except Stop:
            pass
        finally:
            acceptors.close()  # no thread accepts any more; the listener is closed
        if stop_feed is not None:
            stop_feed()
        if handshakes is not None:
            handshakes.cut_all("shutdown")
            handshakes.stop()
        if acceptors.error is not None:
            watch.stop()
            raise acceptors.error
        _drain(connections, refusals, watch, on_event, drain_timeout)


def _run_one(handle: Handler, connections: Connections, on_event: OnEvent,
             sock: socket.socket, remote: str, slot: Slot | None) -> None:
    """One connection in its worker thread; its slot is given back at the end."""
    last: TunnelEvent | None = None
    try:
        last = handle(sock, remote)
    except Exception as exc:  # e.g. the store became unusable
        if slot is not None:
            slot.leave()
        sock.close()
        last = Failed(remote=remote, reason=f"internal error: {exc}")
    finally:
        if slot is None:
            connections.release_slot()
        else:
            slot.leave()
    try:
        if last is not None:  # reported once the slot is free again
            on_event(last)
    finally:
        connections.handling(-1)


def _admit(sock: socket.socket, host: str, connections: Connections,
           handshakes: HandshakeSlots | None,
           relayed: Relayed | None = None) -> Slot | str | None:
    """An unproven slot (or None: a slot of ``connections`` taken), or why not."""
    if handshakes is not None:
        if relayed is not None:  # under its label, with a budget of its own
            return handshakes.admit(host, sock, per_source=relayed[1], on_free=relayed[0])
        return handshakes.admit(host, sock)
    return None if connections.take_slot() else "too many connections"


def _drain(connections: Connections, refusals: Refusals, watch: TrustWatch,
           on_event: OnEvent, drain_timeout: float) -> None:
    """Let open connections finish for ``drain_timeout`` seconds, then cut the rest."""
    cut = 0
    try:
        on_event(Stopping(open=connections.busy, drain_timeout=drain_timeout))
        if not connections.wait_idle(time.monotonic() + drain_timeout):
            cut = connections.cut_unless(lambda _: False, "shutdown")
            connections.wait_idle(time.monotonic() + 2.0)
    except Stop:  # a second signal: stop draining
        cut = connections.cut_unless(lambda _: False, "shutdown")
        connections.wait_idle(time.monotonic() + 2.0)
    finally:
        watch.stop()
        refusals.flush(everything=True)
    on_event(Stopped(cut=cut))
