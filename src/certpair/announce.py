"""A paired device's services on the local network: DNS-SD announcements, found by fingerprint.

``serve`` publishes one ``_certpair-serve._tcp.local.`` service and ``tunnel serve`` one
``_certpair-tunnel._tcp.local.`` while they run; the TXT record holds exactly ``v``
(``1``), ``name`` (device name) and ``fp`` (its certificate fingerprint): nothing
secret, and nothing TLS does not show anyone who connects. ``ping``, ``sync`` and
``tunnel connect`` look for the service whose ``fp`` is the peer's
(:mod:`certpair.browsing`); what they find is only a candidate (an address-book hint):
the connection still has to present exactly the peer's certificate.

Where it is published follows the listen address: a specific address (IPv4 or IPv6) on
that address's interface only; ``0.0.0.0`` every IPv4 address of every interface;
``::`` every IPv6 address (link-local ones too: a browser hears them with the interface
as their zone). The announcement follows the device while it runs
(:meth:`Advertisement.run`): when this device's key changes (``rotate --finish``), its
name, or the host's addresses, the service is withdrawn and published again with the
new record. ``zeroconf`` is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from certpair.addresses import local_ipv4_addresses, local_ipv6_addresses

if TYPE_CHECKING:
    from zeroconf import IPVersion, Zeroconf

__all__ = [
    "REFRESH_INTERVAL", "SERVE_SERVICE_TYPE", "TUNNEL_SERVICE_TYPE", "Advertised",
    "Advertisement", "service_properties",
]

SERVE_SERVICE_TYPE = "_certpair-serve._tcp.local."
TUNNEL_SERVICE_TYPE = "_certpair-tunnel._tcp.local."
REFRESH_INTERVAL = 2.0  # seconds between looks at this device's key and addresses
_VERSION = "1"
_TTL = 120
_ANY_V4 = frozenset({"", "0.0.0.0"})  # noqa: S104  # compared, not bound
_ANY_V6 = "::"


def service_properties(*, name: str, fingerprint: str) -> dict[str, str]:
    """The whole TXT record of a service's advertisement."""
    return {"v": _VERSION, "name": name, "fp": fingerprint}


def _scope(listen_host: str) -> tuple[list[str] | list[int] | None, list[str], bool]:
    """(interfaces or None for all, addresses to publish, IPv6); ValueError if the
    listen address is no IP address."""
    if listen_host in _ANY_V4:
        return None, [a for a, _ in local_ipv4_addresses()], False
    if listen_host == _ANY_V6:
        return None, [a for a, _, _ in local_ipv6_addresses()], True
    address = ipaddress.ip_address(listen_host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv4Address):
        return [str(address)], [str(address)], False
    index = [i for a, _, i in local_ipv6_addresses(include_loopback=True) if a == str(address)]
    return index[:1] or None, [str(address)], True


@dataclass(frozen=True, kw_only=True)
class Advertised:
    """The event of ``serve`` and ``tunnel serve`` alike: their DNS-SD service is
    published, or ``problem`` says why it is not (they serve all the same); ``again``:
    published anew while running, and why (this device's key or the host's addresses
    changed)."""

    problem: str | None = None
    again: str | None = None


class Advertisement:
    """The service of one ``serve`` or ``tunnel serve``, from :meth:`start` until
    :meth:`close`."""

    def __init__(self, *, service_type: str, name: str, fingerprint: str, port: int,
                 listen_host: str, home: Path | None = None) -> None:
        """Describe it; nothing is sent before :meth:`start`. With ``home``,
        :meth:`run` follows this device's identity there (its key and name)."""
        self.service_type = service_type
        self.name, self.port, self.listen_host = name, port, listen_host
        self.properties = service_properties(name=name, fingerprint=fingerprint)
        self.home = home
        self.addresses: list[str] = []
        self._zeroconf: Zeroconf | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def _version(self, ipv6: bool) -> IPVersion:
        from zeroconf import IPVersion  # noqa: PLC0415

        return IPVersion.V6Only if ipv6 else IPVersion.V4Only

    def start(self) -> str | None:
        """Announce the service.

        Returns:
            None, or why it could not be published (serving works without it).
        """
        from zeroconf import InterfaceChoice, ServiceInfo, Zeroconf  # noqa: PLC0415

        try:
            interfaces, addresses, ipv6 = _scope(self.listen_host)
        except ValueError:
            return f"only IP listen addresses are advertised, not {self.listen_host!r}"
        self.addresses = addresses
        if not addresses:
            return f"this host has no IPv{6 if ipv6 else 4} address to advertise"
        kind = self.service_type
        label = (self.name.replace(".", "-").encode()[:63].decode(errors="ignore").strip()
                 or "certpair")
        info = ServiceInfo(
            kind, f"{label}.{kind}", port=self.port,
            properties=self.properties, server=f"certpair-{secrets.token_hex(6)}.local.",
            host_ttl=_TTL, other_ttl=_TTL, parsed_addresses=addresses)
        with self._lock:
            if self._closed.is_set():
                return "stopped"
            try:
                zc = self._zeroconf = Zeroconf(
                    interfaces=InterfaceChoice.All if interfaces is None else interfaces,
                    ip_version=self._version(ipv6))
            except (OSError, RuntimeError) as exc:
                return f"cannot advertise on the local network: {exc}"
        try:  # probing takes seconds: not under the lock, so close() never waits for it
            zc.register_service(info, allow_name_change=True)
        except Exception as exc:  # closed meanwhile, or the network refused
            with self._lock:
                if self._zeroconf is zc:
                    self._withdraw()
            if self._closed.is_set():
                return "stopped"
            if isinstance(exc, OSError | RuntimeError):
                return f"cannot advertise on the local network: {exc}"
            raise
        return None

    def _own(self) -> tuple[int, ...]:
        """What identifies this device's certificate file (a rotation replaces it)."""
        if self.home is None:
            return ()
        try:
            stat = os.stat(self.home / "identity" / "cert.pem")
        except OSError:
            return ()  # mid-replacement: looked at again next time
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _record(self) -> dict[str, str] | None:
        """The TXT record this device's identity calls for now (None: unreadable)."""
        from certpair.errors import CertpairError  # noqa: PLC0415
        from certpair.identity import load_identity  # noqa: PLC0415

        assert self.home is not None
        try:
            identity = load_identity(self.home)
        except (CertpairError, OSError, ValueError):
            return None
        return service_properties(name=identity.name, fingerprint=identity.fingerprint)

    def _why_again(self, own: tuple[int, ...], known: tuple[int, ...]) -> str | None:
        """Why the announcement is no longer right (None: it is)."""
        if own and own != known and (record := self._record()) is not None \
                and record != self.properties:
            old, self.properties, self.name = self.properties, record, record["name"]
            if record["fp"] != old["fp"]:
                return f"this device's key changed ({record['fp']})"
            return f"this device's name changed ({record['name']})"
        try:
            addresses = _scope(self.listen_host)[1]
        except ValueError:
            return None
        if addresses != self.addresses:
            return f"this host's addresses changed ({', '.join(addresses) or 'none'})"
        return None

    def run(self, report: Callable[[str | None, str | None], None]) -> None:
        """Announce the service, then keep it right until :meth:`close` (blocking: run
        it in a thread of its own).

        Every :data:`REFRESH_INTERVAL` seconds: when this device's identity (with
        ``home``) or the host's addresses changed, withdraw the service and announce it
        again. ``report(problem, why)`` is called after each announcement (``why`` is
        None the first time).
        """
        own = self._own()
        report(self.start(), None)
        while not self._closed.wait(REFRESH_INTERVAL):
            now = self._own()
            why = self._why_again(now, own)
            own = now
            if why is None:
                continue
            with self._lock:
                self._withdraw()
            problem = self.start()
            if not self._closed.is_set():
                report(problem, why)

    def _withdraw(self) -> None:
        zc, self._zeroconf = self._zeroconf, None
        if zc is not None:
            with contextlib.suppress(Exception):
                zc.unregister_all_services()
                zc.close()

    def close(self) -> None:
        """Withdraw the service (goodbye packets) and stop following; idempotent."""
        self._closed.set()
        with self._lock:
            self._withdraw()
