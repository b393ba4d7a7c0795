"""Browsing the DNS-SD announcements of paired devices' services (:mod:`certpair.announce`).

One :class:`Browser` watches one service type (``serve``'s or ``tunnel serve``'s) for as
long as it is open and keeps every announcement it sees, by service name: the
fingerprint, the port and the addresses, IPv4 and IPv6 (a link-local IPv6 address with
the interface it was heard on as its zone, ``fe80::1%eth0``: without it the address
cannot be used). Many lookups share it: :meth:`Browser.find` waits until a service with
one of a device's fingerprints is announced (``sync --all`` asks for every peer at once
over one browse; a running ``tunnel connect`` keeps one open and is told of every new
announcement through ``on_seen``).

What it finds is a hint and nothing more: anyone on the link can announce anything, so
each field is checked for shape only, and the connection to an address found here must
still present the device's certificate. ``zeroconf`` is imported inside the methods.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from certpair.addresses import with_zone

if TYPE_CHECKING:
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

__all__ = ["Browser", "Sighting", "find_service"]

_RESOLVE_MS = 1500
_FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_STOP_CHECK = 0.05  # seconds between looks at a caller's stop event while waiting


@dataclass(frozen=True, kw_only=True)
class Sighting:
    """One announced service: whose certificate it claims, where, and under which name."""

    fingerprint: str
    name: str
    port: int
    addresses: tuple[str, ...]


def _sighting(properties: dict[bytes, bytes | None], port: int | None,
              addresses: list[str]) -> Sighting | None:
    fp, name = properties.get(b"fp"), properties.get(b"name")
    if properties.get(b"v") != b"1" or not port or not addresses or fp is None:
        return None
    try:
        fingerprint = fp.decode("ascii")
        device = (name or b"").decode("utf-8")[:255]
    except UnicodeDecodeError:
        return None
    if not _FINGERPRINT_RE.fullmatch(fingerprint):
        return None
    return Sighting(fingerprint=fingerprint, name=device, port=int(port),
                    addresses=tuple(addresses))


def _ordered(scoped: list[str]) -> list[str]:
    """IPv4 first, then IPv6 with its zone written as the interface's name."""
    v4 = [a for a in scoped if ":" not in a]
    v6 = []
    for address in scoped:
        if ":" in address:
            bare, _, zone = address.partition("%")
            v6.append(with_zone(bare, zone or None))
    return [*dict.fromkeys(v4), *dict.fromkeys(v6)]


class Browser:
    """The announcements of one service type, from :meth:`start` until :meth:`close`."""

    def __init__(self, service_type: str, *, interfaces: Collection[str] = (),
                 on_seen: Callable[[Sighting], None] | None = None) -> None:
        """Describe the browse; nothing is sent before :meth:`start`.

        Args:
            service_type: ``_certpair-serve._tcp.local.`` or ``_certpair-tunnel._tcp.local.``.
            interfaces: IPv4 addresses of the interfaces to use (then IPv4 only); empty:
                every interface, IPv4 and IPv6.
            on_seen: called (in the browser's thread) with each announcement seen or
                changed.
        """
        self.service_type = service_type
        self.interfaces = list(interfaces)
        self.on_seen = on_seen
        self._seen: dict[str, Sighting] = {}
        self._changed = threading.Condition()
        self._zeroconf: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None

    def start(self) -> str | None:
        """Start browsing.

        Returns:
            None, or why multicast DNS cannot be used here (then nothing is found).
        """
        from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, Zeroconf  # noqa: PLC0415

        versions = [IPVersion.V4Only] if self.interfaces else [IPVersion.All,
                                                               IPVersion.V4Only]
        problem = "no interface"
        for version in versions:  # IPv6 may be off on this host: then IPv4 alone
            try:
                self._zeroconf = Zeroconf(interfaces=self.interfaces or InterfaceChoice.All,
                                          ip_version=version)
                break
            except (OSError, RuntimeError) as exc:
                problem = f"cannot use multicast DNS here: {exc}"
        else:
            return problem
        assert self._zeroconf is not None
        self._browser = ServiceBrowser(self._zeroconf, [self.service_type],
                                       handlers=[self._on_change])
        return None

    def _on_change(self, *, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        from zeroconf import IPVersion, ServiceInfo  # noqa: PLC0415

        if state_change.name == "Removed":
            with self._changed:
                self._seen.pop(name, None)
            return
        try:
            info = ServiceInfo(service_type, name)
            if not info.request(zeroconf, _RESOLVE_MS):
                return
            seen = _sighting(info.properties, info.port,
                             _ordered(info.parsed_scoped_addresses(IPVersion.All)))
        except (ValueError, UnicodeError, OSError, RuntimeError):
            return  # a malformed announcement is no hint at all
        if seen is None:
            return
        with self._changed:
            same = self._seen.get(name) == seen
            self._seen[name] = seen
            self._changed.notify_all()
        if not same and self.on_seen is not None:
            with contextlib.suppress(Exception):  # the browse goes on whatever it does
                self.on_seen(seen)

    def seen(self) -> list[Sighting]:
        """Every announcement seen and not withdrawn."""
        with self._changed:
            return list(self._seen.values())

    def find(self, fingerprints: Collection[str], *, timeout: float,
             stop: threading.Event | None = None) -> list[tuple[str, int]]:
        """Wait until a service with one of ``fingerprints`` is announced.

        Args:
            fingerprints: the device's certificates (its current one, a pending successor).
            timeout: seconds to wait at most.
            stop: set by the caller when the answer is no longer needed.

        Returns:
            ``(address, port)`` of each address of the matching services (empty: none
            within ``timeout``).
        """
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [(address, s.port) for s in self._seen.values()
                         if s.fingerprint in fingerprints for address in s.addresses]
                left = end - time.monotonic()
                if found or left <= 0 or self._zeroconf is None or (stop and stop.is_set()):
                    return list(dict.fromkeys(found))
                self._changed.wait(min(left, _STOP_CHECK) if stop is not None else left)

    def close(self) -> None:
        """Stop browsing and release the sockets; idempotent."""
        browser, self._browser = self._browser, None
        zc, self._zeroconf = self._zeroconf, None
        with self._changed:
            self._changed.notify_all()
        with contextlib.suppress(Exception):
            if browser is not None:
                browser.cancel()
        with contextlib.suppress(Exception):
            if zc is not None:
                zc.close()


def find_service(service_type: str, fingerprints: Collection[str], *, timeout: float,
                 interfaces: Collection[str] = (),
                 stop: threading.Event | None = None) -> list[tuple[str, int]]:
    """One lookup on a browse of its own: ``(address, port)`` of the services of
    ``service_type`` announced with one of ``fingerprints`` (empty: none within
    ``timeout``, or multicast DNS cannot be used here)."""
    browser = Browser(service_type, interfaces=interfaces)
    if browser.start() is not None:
        return []
    try:
        return browser.find(fingerprints, timeout=timeout, stop=stop)
    finally:
        browser.close()
