"""Addresses: how ``HOST:PORT`` is written and read, and this host's own addresses.

:func:`format_address` and :func:`parse_address` are the one writer and the one reader
of ``HOST:PORT`` / ``[V6]:PORT`` in certpair: every report, log row and argument goes
through them, so an IPv6 address (with or without a zone, ``fe80::1%eth0``) keeps its
brackets and reads back as the same host and port.

This host's addresses are read from the interfaces (``ifaddr``) without sending
anything: IPv4 (pairing's discovery uses only these) and IPv6 (the announcements of
``serve`` and ``tunnel serve`` listening on an IPv6 address). A link-local IPv6 address
means something only with its interface: :func:`with_zone` writes it as
``fe80::1%eth0``, which :func:`parse_address`, :func:`format_address` and the resolver
all read. ``ifaddr`` is imported inside the functions, so that the CLI starts fast.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Sequence

from certpair.errors import BadInput

__all__ = [
    "best_local_address", "check_interfaces", "format_address", "host_of",
    "local_ipv4_addresses", "local_ipv6_addresses", "parse_address", "with_zone",
]

_MAX_PORT_DIGITS = 5
_NOT_IN_HOST = frozenset(" \t/\\@?#[]")


def format_address(host: str, port: int | None = None) -> str:
    """Write ``HOST:PORT``, with an IPv6 host in brackets (``[::1]:4491``).

    Args:
        host: a host name or an IP address (an IPv6 one without brackets, a zone allowed).
        port: the port, or None for the host alone (an IPv6 host is then bracketed
            too, so that the text never reads as a host with a port stuck on).

    Returns:
        The text :func:`parse_address` reads back as ``(host, port)``.
    """
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _port(text: str, port_text: str, lowest: int) -> int:
    # str.isdigit() also accepts other scripts' digits (e.g. Arabic-Indic), which int()
    # reads as a port: only ASCII digits are a port here.
    if (not port_text.isascii() or not port_text.isdigit()
            or len(port_text) > _MAX_PORT_DIGITS or not lowest <= int(port_text) <= 65535):
        raise BadInput(f"bad port in {text!r}: a port is {lowest} to 65535, in ASCII digits")
    return int(port_text)


def parse_address(text: str, default_port: int | None, *,
                  allow_zero: bool = False) -> tuple[str, int]:
    """Read ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``.

    An IPv6 address without brackets is accepted without a port (``::1``); with a port
    it must be bracketed (``[::1]:4490``).

    Args:
        text: the address as written (by a user or by :func:`format_address`).
        default_port: the port when none is given; None if one is required.
        allow_zero: accept port 0 (a listen address: any free port).

    Returns:
        ``(host, port)``; an IPv6 host without its brackets.

    Raises:
        BadInput: empty host, a character no host has, a ``:`` with no port after it, a
            port outside 1..65535 or not in ASCII digits, no port where one is
            required, or an unbracketed IPv6-like text that is not an IPv6 address.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadInput(f"bad address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise BadInput(f"bad address {text!r}: only ':PORT' may follow ']'")
        port_text: str | None = rest[1:] if rest else None
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise BadInput(f"bad address {text!r}: give HOST:PORT, or [IPV6]:PORT for an "
                           "IPv6 address") from None
        host, port_text = text, None
    elif ":" in text:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host:
        raise BadInput(f"bad address {text!r}: no host")
    if any(ch in _NOT_IN_HOST or not ch.isprintable() for ch in host):
        raise BadInput(f"bad address {text!r}: not a host name or IP address")
    if port_text is None:
        if default_port is None:
            raise BadInput(f"bad address {text!r}: give HOST:PORT")
        return host, default_port
    if not port_text:
        drop = ("" if default_port is None
                else f" (drop the ':' for the default port {default_port})")
        raise BadInput(f"bad address {text!r}: no port after ':'{drop}")
    return host, _port(text, port_text, 0 if allow_zero else 1)


def host_of(remote: str) -> str:
    """The host of ``remote`` (``HOST:PORT``, ``[V6]:PORT`` or a bare host), for logs:
    ``10.0.0.5:4433`` and ``[::1]:4433`` give ``10.0.0.5`` and ``::1``; text that is no
    address is returned as it is."""
    try:
        return parse_address(remote, 0)[0]
    except BadInput:
        return remote


def local_ipv4_addresses(*, include_loopback: bool = False) -> list[tuple[str, int]]:
    """List this host's IPv4 addresses with their prefix lengths.

    Args:
        include_loopback: also list 127.0.0.0/8 addresses.

    Returns:
        ``(address, prefix)`` pairs in the order the system reports them.
    """
    import ifaddr  # noqa: PLC0415  # zeroconf's dependency; loaded only for discovery

    found: list[tuple[str, int]] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue
            address = ipaddress.IPv4Address(ip.ip)
            if address.is_loopback and not include_loopback:
                continue
            if (ip.ip, ip.network_prefix) not in found:
                found.append((ip.ip, ip.network_prefix))
    return found


def local_ipv6_addresses(*, include_loopback: bool = False) -> list[tuple[str, int, int]]:
    """List this host's IPv6 addresses with their prefix lengths and interfaces.

    Args:
        include_loopback: also list ``::1``.

    Returns:
        ``(address, prefix, interface index)`` triples, the address without a zone, in
        the order the system reports them.
    """
    import ifaddr  # noqa: PLC0415  # zeroconf's dependency; loaded only for discovery

    found: list[tuple[str, int, int]] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                continue
            try:
                address = ipaddress.IPv6Address(ip.ip[0].split("%", 1)[0])
            except ValueError:
                continue
            if address.is_loopback and not include_loopback:
                continue
            entry = (str(address), ip.network_prefix, int(adapter.index or 0))
            if entry not in found:
                found.append(entry)
    return found


def with_zone(address: str, interface: int | str | None) -> str:
    """``address`` as a host to connect to: a link-local IPv6 address gets its
    interface as a zone (``fe80::1%eth0``; by name when the index has one); any other
    address is returned as it is (without a zone it did not need)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if not isinstance(ip, ipaddress.IPv6Address) or not ip.is_link_local:
        return str(ip) if "%" in address else address
    zone = str(interface) if interface not in (None, "", 0, "0") else ""
    if zone.isdigit():
        with contextlib.suppress(OSError):
            zone = socket.if_indextoname(int(zone))
    return f"{ip}%{zone}" if zone else str(ip)


def best_local_address() -> str | None:
    """Guess the address another device on the LAN can reach this one at.

    Best effort, without sending anything: the first non-loopback, non-link-local IPv4
    address of an interface.

    Returns:
        The address, or None if this host has none.
    """
    for address, _ in local_ipv4_addresses():
        if not ipaddress.IPv4Address(address).is_link_local:
            return address
    return None


def check_interfaces(addresses: Sequence[str]) -> list[str]:
    """Validate ``--interface`` values: IPv4 addresses this host has.

    Args:
        addresses: the addresses given.

    Returns:
        The addresses, normalised.

    Raises:
        BadInput: one is not an IPv4 address of this host.
    """
    if not addresses:
        return []
    local = {a for a, _ in local_ipv4_addresses(include_loopback=True)}
    checked = []
    for text in addresses:
        try:
            address = str(ipaddress.IPv4Address(text))
        except ValueError:
            raise BadInput(f"--interface takes an IPv4 address, not {text!r}") from None
        if address not in local:
            raise BadInput(f"no interface of this host has the address {address}")
        checked.append(address)
    return checked
