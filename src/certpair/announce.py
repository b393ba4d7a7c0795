"""A paired device's services on the local network: DNS-SD announcements, found by fingerprint.

``serve`` publishes one ``_certpair-serve._tcp.local.`` service and ``tunnel serve`` one
``_certpair-tunnel._tcp.local.`` while they run; the TXT record holds exactly ``v``
(``1``), ``name`` (device name) and ``fp`` (its certificate fingerprint): nothing
secret, and nothing TLS does not show anyone who connects. ``ping``, ``sync`` and
``tunnel connect`` look for the service whose ``fp`` is the peer's; what they find is
only a candidate (an address-book hint): the connection still has to present exactly
the peer's certificate.

Where it is published follows the listen address, as for pairing
(:mod:`certpair.discovery`): a specific IPv4 address on that interface only; ``0.0.0.0``
on every IPv4 interface. IPv4 only. ``zeroconf`` is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from certpair.addresses import local_ipv4_addresses

if TYPE_CHECKING:
    from zeroconf import ServiceStateChange, Zeroconf

__all__ = [
    "SERVE_SERVICE_TYPE", "TUNNEL_SERVICE_TYPE", "Advertised", "Advertisement", "find_service",
    "service_properties",
]

SERVE_SERVICE_TYPE = "_certpair-serve._tcp.local."
TUNNEL_SERVICE_TYPE = "_certpair-tunnel._tcp.local."
_VERSION = "1"
_TTL = 120
_RESOLVE_MS = 1500
_ANY = frozenset({"", "0.0.0.0", "::"})  # noqa: S104  # compared, not bound


def service_properties(*, name: str, fingerprint: str) -> dict[str, str]:
    """The whole TXT record of a service's advertisement."""
    return {"v": _VERSION, "name": name, "fp": fingerprint}


def _scope(listen_host: str) -> tuple[list[str] | None, list[str]]:
    """(interfaces or None for all, addresses to publish); ValueError if not IPv4."""
    if listen_host in _ANY:
        return None, [a for a, _ in local_ipv4_addresses()]
    address = str(ipaddress.IPv4Address(listen_host))
    return [address], [address]


@dataclass(frozen=True, kw_only=True)
class Advertised:
    """The event of ``serve`` and ``tunnel serve`` alike: their DNS-SD service is
    published, or ``problem`` says why it is not (they serve all the same)."""

    problem: str | None = None


class Advertisement:
    """The service of one ``serve`` or ``tunnel serve``, from :meth:`start` until
    :meth:`close`."""

    def __init__(self, *, service_type: str, name: str, fingerprint: str, port: int,
                 listen_host: str) -> None:
        """Describe it; nothing is sent before :meth:`start`."""
        self.service_type = service_type
        self.name, self.port, self.listen_host = name, port, listen_host
        self.properties = service_properties(name=name, fingerprint=fingerprint)
        self._zeroconf: Zeroconf | None = None

    def start(self) -> str | None:
        """Announce the service.

        Returns:
            None, or why it could not be published (the tunnel works without it).
        """
        from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf  # noqa: PLC0415

        try:
            interfaces, addresses = _scope(self.listen_host)
        except ValueError:
            return f"only IPv4 listen addresses are advertised, not {self.listen_host!r}"
        if not addresses:
            return "this host has no IPv4 address to advertise"
        kind = self.service_type
        label = (self.name.replace(".", "-").encode()[:63].decode(errors="ignore").strip()
                 or "certpair")
        info = ServiceInfo(
            kind, f"{label}.{kind}", port=self.port,
            properties=self.properties, server=f"certpair-{secrets.token_hex(6)}.local.",
            host_ttl=_TTL, other_ttl=_TTL, parsed_addresses=addresses)
        try:
            self._zeroconf = Zeroconf(
                interfaces=InterfaceChoice.All if interfaces is None else interfaces,
                ip_version=IPVersion.V4Only)
            self._zeroconf.register_service(info, allow_name_change=True)
        except (OSError, RuntimeError) as exc:
            self.close()
            return f"cannot advertise on the local network: {exc}"
        return None

    def close(self) -> None:
        """Withdraw the service (goodbye packets); idempotent."""
        zc, self._zeroconf = self._zeroconf, None
        if zc is not None:
            with contextlib.suppress(Exception):
                zc.unregister_all_services()
                zc.close()


def find_service(service_type: str, fingerprint: str, *, timeout: float,
                 interfaces: Sequence[str] = (),
                 stop: threading.Event | None = None) -> list[tuple[str, int]]:
    """Look for the services of ``service_type`` whose certificate has ``fingerprint``.

    Args:
        service_type: :data:`SERVE_SERVICE_TYPE` or :data:`TUNNEL_SERVICE_TYPE`.
        fingerprint: the peer's fingerprint.
        timeout: seconds to wait at most.
        interfaces: IPv4 addresses of the interfaces to use; empty means all.
        stop: set by the caller when the answer is no longer needed.

    Returns:
        ``(address, port)`` of each address of the first match (empty: none found).
    """
    from zeroconf import (  # noqa: PLC0415
        InterfaceChoice,
        IPVersion,
        ServiceBrowser,
        ServiceInfo,
        Zeroconf,
    )

    found: list[tuple[str, int]] = []
    done = stop or threading.Event()

    def on_change(*, zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if done.is_set() or state_change.name == "Removed":
            return
        info = ServiceInfo(service_type, name)
        if not info.request(zeroconf, _RESOLVE_MS):
            return
        fp = info.properties.get(b"fp")
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if fp == fingerprint.encode() and addresses and info.port and not found:
            found.extend((address, int(info.port)) for address in addresses)
            done.set()

    try:
        zc = Zeroconf(interfaces=list(interfaces) or InterfaceChoice.All,
                      ip_version=IPVersion.V4Only)
    except (OSError, RuntimeError):
        return []
    try:
        browser = ServiceBrowser(zc, [service_type], handlers=[on_change])
        try:
            done.wait(timeout)
        finally:
            browser.cancel()
    finally:
        zc.close()
    return list(found)
