"""What a running tunnel reports: frozen events, rendered by the CLI (``--json``).

Directions are named from the service's point of view, the same on both ends:
``bytes_up`` went from the client towards the service, ``bytes_down`` came back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from certpair.announce import Advertised
from certpair.store import Peer

__all__ = [
    "Advertised",
    "Announced",
    "Closed",
    "Failed",
    "Listening",
    "OnEvent",
    "Opened",
    "PassedOver",
    "Refused",
    "Stopped",
    "Stopping",
    "Synced",
    "TargetDown",
    "TunnelEvent",
]


@dataclass(frozen=True, kw_only=True)
class Listening:
    """The tunnel accepts connections on ``host:port``; ``details`` says what it carries."""

    host: str
    port: int
    details: dict[str, object]


@dataclass(frozen=True, kw_only=True)
class Opened:
    """A connection passed every check and is being carried.

    On the connecting side ``far`` is the far end's address that answered and
    ``far_from`` where that address came from (the address book's source).
    """

    id: int
    remote: str
    peer: Peer
    far: str | None = None
    far_from: str | None = None


@dataclass(frozen=True, kw_only=True)
class Closed:
    """A carried connection ended; ``reason`` is ``done`` for a normal end."""

    id: int
    remote: str
    peer: Peer
    bytes_up: int
    bytes_down: int
    duration: float
    reason: str


@dataclass(frozen=True, kw_only=True)
class Failed:
    """An accepted connection could not be carried (far end or service unreachable)."""

    remote: str
    reason: str
    peer: Peer | None = None


@dataclass(frozen=True, kw_only=True)
class Refused:
    """``count`` connections from ``remote`` were refused for ``reason`` (aggregated)."""

    remote: str
    reason: str
    count: int


@dataclass(frozen=True, kw_only=True)
class Stopping:
    """A signal arrived: no new connections; ``open`` are being drained."""

    open: int
    drain_timeout: float


@dataclass(frozen=True, kw_only=True)
class Stopped:
    """The tunnel ended; ``cut`` connections were still open after the drain time."""

    cut: int


@dataclass(frozen=True, kw_only=True)
class TargetDown:
    """At start, nothing listened at ``tunnel serve``'s service (a warning: the tunnel
    serves all the same, and tells each connecting device "service unavailable")."""

    target: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Synced:
    """A key-rotation sync (docs/PROTOCOL.md §8) ran over the tunnel with ``peer``.

    ``told`` is the peer's answer to this device's rotation, ``heard`` the answer this
    device gave to the peer's (result names such as ``ACCEPTED``; None: nothing to say),
    ``error`` why the exchange failed.
    """

    remote: str
    peer: Peer
    told: str | None = None
    heard: str | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Announced:
    """``tunnel connect``: PEER's ``tunnel serve`` is announced at ``addresses`` (new to
    this run); the next connection tries them first."""

    peer: Peer
    addresses: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class PassedOver:
    """``tunnel connect``: another device answered at one of PEER's addresses (``reason``
    names it); the connection went on to the next address."""

    peer: Peer
    reason: str


TunnelEvent = (Listening | Advertised | Opened | Closed | Failed | Refused | Stopping | Stopped
               | TargetDown | Synced | Announced | PassedOver)
OnEvent = Callable[[TunnelEvent], None]
