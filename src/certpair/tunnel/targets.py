"""Where a tunnel's bytes go and where it listens: parsing and the loopback rule.

The service behind ``tunnel serve`` must be on this host (a loopback address or a Unix
socket) unless the user says otherwise: past the tunnel the bytes travel in clear,
and the service sees every connection coming from this host. A name is resolved once,
when the target is read, and every connection goes to the addresses it had then: a name
re-pointed later cannot send the bytes elsewhere. A client-side listener
is loopback by default for the same reason the other way round: whoever can reach it
speaks to the paired device with this device's identity.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from certpair.addresses import format_address, parse_address
from certpair.errors import BadInput

__all__ = ["Target", "is_loopback", "parse_listen", "parse_target", "split_host_port"]


def split_host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """Split ``HOST:PORT``, ``[V6]:PORT`` (or ``HOST`` with a default port): the one
    reader, :func:`certpair.addresses.parse_address`.

    Raises:
        BadInput: no host, no port where one is needed, or a port outside 1..65535.
    """
    return parse_address(text, default_port)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address of this host.

    Raises:
        BadInput: the name does not resolve.
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    return _all_loopback(_resolve(host, None))


Address = tuple[int, tuple[Any, ...]]


def _resolve(host: str, port: int | None) -> list[Address]:
    """Every (family, socket address) ``host`` names, in the resolver's order."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BadInput(f"cannot resolve {host!r}: {exc.strerror or exc}") from exc
    return [(family, address) for family, _, _, _, address in found
            if isinstance(address[0], str)]  # IPv4 and IPv6 (their address is a string)


def _all_loopback(found: list[Address]) -> bool:
    return bool(found) and all(
        ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback for _, address in found)


@dataclass(frozen=True, kw_only=True)
class Target:
    """The service a ``tunnel serve`` forwards to: TCP ``host:port`` or a Unix socket."""

    host: str = ""
    port: int = 0
    path: str = ""
    # The addresses the host resolved to when the target was read; empty: resolve the
    # name for each connection (only with --unsafe-target, which allows any address).
    addresses: tuple[Address, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return format_address(self.host, self.port)

    def dial(self, timeout: float) -> socket.socket:
        """Connect to the service (blocking, bounded by ``timeout``).

        Raises:
            OSError: the service cannot be reached.
        """
        if self.path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            return sock
        if not self.addresses:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        else:
            sock = _connect_first(self.addresses, timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def _connect_first(addresses: tuple[Address, ...], timeout: float) -> socket.socket:
    """Connect to the first of ``addresses`` that answers (as create_connection does for
    a name, without resolving it again)."""
    error: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError("no address to connect to")


def parse_target(text: str, *, unsafe: bool) -> Target:
    """Read ``--to HOST:PORT`` or ``--to unix:PATH``.

    Args:
        text: the option's value.
        unsafe: ``--unsafe-target``: allow a host that is not loopback.

    Returns:
        The target.

    Raises:
        BadInput: malformed, or not on this host without ``unsafe``.
    """
    if text.startswith("unix:"):
        if not text[5:]:
            raise BadInput("--to unix: needs a path")
        return Target(path=text[5:])
    host, port = split_host_port(text, None)
    if unsafe:
        return Target(host=host, port=port)
    # Resolved once, here: the loopback rule holds for the addresses connected to, not
    # only for what the name meant when the tunnel started.
    found = _resolve(host, port)
    if not _all_loopback(found):
        raise BadInput(
            f"the target {text} is not on this host; past the tunnel its bytes travel in "
            "clear, so only loopback or unix: targets are allowed (--unsafe-target if "
            "the network to it is trusted)")
    return Target(host=host, port=port, addresses=tuple(found))


def parse_listen(text: str, *, unsafe: bool, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Read ``tunnel connect --listen [ADDR:]PORT``.

    Args:
        text: the option's value (``PORT`` alone listens on ``default_host``).
        unsafe: ``--unsafe-listen``: allow an address that is not loopback.
        default_host: the address for a bare port.

    Returns:
        ``(host, port)``; port 0 picks a free one.

    Raises:
        BadInput: malformed, or not loopback without ``unsafe``.
    """
    if text.isdigit():
        host, port = default_host, int(text)
        if port > 65535:
            raise BadInput(f"bad port {text!r}")
    else:
        try:
            host, port = parse_address(text, None, allow_zero=True)
        except BadInput:
            raise BadInput(f"bad listen address {text!r}: give [ADDR:]PORT") from None
    if not unsafe and not is_loopback(host):
        raise BadInput(
            f"listening on {host} would let anyone who reaches it use this device's "
            "identity; only loopback is allowed (--unsafe-listen to do it anyway)")
    return host, port
