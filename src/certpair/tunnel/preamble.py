"""The tunnel preamble: one byte each way before the stream, so that the connecting side
learns the truth (docs/PROTOCOL.md §9, docs/TUNNEL.md).

Only on connections whose ALPN is ``certpair/1-tunnel`` (``tunnel connect`` offers it
first and ``tunnel serve`` selects it): on a connection without ALPN (curl, openssl, an
older certpair) the stream starts at once, as before, so those keep working.

* The client sends one **intent** byte right after its handshake (with its first data,
  no round trip is added): ``DATA`` (carry a stream), ``SYNC`` (run the key-rotation
  sync exchange of §8, then close) or ``CHECK`` (only the status, then close: how a
  client finds out why a connection was cut).
* The server sends one **status** byte once it has judged the device (and, for
  ``DATA``, reached its service), before any byte of the service: ``READY`` (the
  stream follows; bit ``0x80`` set: the server has a rotation statement for this
  device, which the client fetches on a ``SYNC`` connection), ``SERVICE_UNAVAILABLE``,
  ``NOT_ALLOWED`` (paired, but not in ``--allow``) or ``NOT_PAIRED``; any status but
  ``READY`` is followed by close_notify. The client strips the status byte: the
  application's bytes are carried unchanged.
"""

from __future__ import annotations

import enum
import select
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from certpair.ports import ALPN_TUNNEL, alpn_offer
from certpair.store import Peer, TrustStore
from certpair.tunnel.link import TlsLink, wait_for

__all__ = [
    "ROTATION_FLAG",
    "Intent",
    "KeySync",
    "LinkStream",
    "Status",
    "client_protocols",
    "read_exactly",
    "refused_text",
    "speaks_preamble",
    "status_text",
]

ROTATION_FLAG = 0x80


class Intent(enum.IntEnum):
    """What the client asks of this connection."""

    DATA = 0x00
    SYNC = 0x01
    CHECK = 0x02


class Status(enum.IntEnum):
    """The server's verdict on this connection (without :data:`ROTATION_FLAG`)."""

    READY = 0x00
    SERVICE_UNAVAILABLE = 0x01
    NOT_ALLOWED = 0x02
    NOT_PAIRED = 0x03


# run(recv, send, peer, peer_cert, store, remote) -> (told, heard): result names or None.
SyncRun = Callable[[Callable[[int], bytes], Callable[[bytes], None], Peer, bytes, TrustStore,
                    str], tuple[str | None, str | None]]


@dataclass(frozen=True, kw_only=True)
class KeySync:
    """How a tunnel carries the key-rotation sync of docs/PROTOCOL.md §8, given by the
    caller (``certpair.rotation`` sits beside the tunnel, not below it).

    ``run`` runs the exchange on a connection whose peer was verified (raising a
    ``CertpairError`` or ``OSError`` on failure); ``to_tell(peer, store)`` says whether
    this device has a pending rotation ``peer``'s device has not acknowledged (cheap
    when none is pending: it is asked on every connection).
    """

    run: SyncRun
    to_tell: Callable[[Peer, TrustStore], bool]


def client_protocols() -> list[str]:
    """What a tunnel client offers (docs/PROTOCOL.md §2): its own name first, so that a
    port of another kind names itself."""
    return alpn_offer(ALPN_TUNNEL)


def speaks_preamble(link: TlsLink) -> bool:
    """Whether this connection negotiated the preamble."""
    return link.tls.selected_alpn_protocol() == ALPN_TUNNEL


def status_text(code: int, peer: str) -> str | None:
    """What a status byte means for the connecting side (None: ready).

    Args:
        code: the status byte (the rotation flag is ignored).
        peer: the serving device's name.
    """
    status = code & ~ROTATION_FLAG
    if status == Status.READY:
        return None
    if status == Status.SERVICE_UNAVAILABLE:
        return (f"service unavailable: {peer}'s tunnel could not reach the service it "
                "forwards to (is it running there?)")
    if status == Status.NOT_ALLOWED:
        return (f"{peer}'s tunnel does not let this device through (its --allow list "
                "leaves it out): ask there")
    if status == Status.NOT_PAIRED:
        return refused_text(peer)
    return f"{peer}'s tunnel answered an unknown status {code:#04x}"


def refused_text(peer: str, hint: str = "") -> str:
    """This device refused by ``peer`` because it no longer trusts it, with what to do."""
    return (f"{peer} refused this device: it does not trust it (unpaired there, or the "
            f"pairing never completed there{hint}); pair again to reach it")


def read_exactly(link: TlsLink, size: int, deadline: float) -> bytes:
    """Read ``size`` bytes of the TLS stream (blocking, bounded by ``deadline``).

    Returns:
        The bytes; fewer only if the other side closed first.

    Raises:
        ssl.SSLError: TLS failed (an alert: the other side refused).
        TimeoutError: the deadline passed.
        OSError: the connection broke.
    """
    got = b""
    while len(got) < size:
        try:
            data = link.tls.read(size - len(got))
        except ssl.SSLWantReadError:
            link.flush(deadline)
            if link.raw_eof:
                raise ssl.SSLEOFError("the connection closed") from None
            wait_for(link.sock, select.POLLIN, deadline)
            link.receive()
            continue
        except ssl.SSLZeroReturnError:
            return got
        if not data:
            return got
        got += data
    return got


class LinkStream:
    """``recv``/``send`` over a :class:`TlsLink`, for the sync exchange (each call bounded
    by the deadline)."""

    def __init__(self, link: TlsLink, deadline: float) -> None:
        self.link, self.deadline = link, deadline

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end."""
        while True:
            try:
                return self.link.tls.read(size)
            except ssl.SSLWantReadError:
                self.link.flush(self.deadline)
                if self.link.raw_eof:
                    return b""
                wait_for(self.link.sock, select.POLLIN, self.deadline)
                self.link.receive()
            except ssl.SSLZeroReturnError:
                return b""

    def send(self, data: bytes) -> None:
        """Write all of ``data`` and flush it."""
        self.link.tls.write(data)
        self.link.flush(self.deadline)
