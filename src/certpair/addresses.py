"""This host's own network addresses: what another device on the LAN may reach it at.

Read from the interfaces (``ifaddr``) without sending anything. IPv4 only, like
discovery. ``ifaddr`` is imported inside the functions, so that the CLI starts fast.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from certpair.errors import BadInput

__all__ = ["best_local_address", "check_interfaces", "local_ipv4_addresses"]


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
