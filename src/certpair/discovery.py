"""Find offerers on the local network: DNS-SD over multicast DNS, with ``zeroconf``.

While a secret is active, ``certpair pair`` publishes one ``_certpair._tcp.local.``
service whose TXT record holds exactly ``v`` (protocol version), ``mode``, ``name``
(device name) and ``fp`` (certificate fingerprint). Everything in it is readable by
anyone on the link, so it never carries the secret nor anything derived from it: a
hash of a 27-bit code falls to brute force in seconds. The host name in the SRV record
is random per run. The service is withdrawn (mDNS goodbye) when pairing ends.

Discovery only finds candidates; it proves nothing. An impostor can advertise too, so
the joiner never tries one secret against several offerers (each try is a guess given
away): with more than one candidate it stops and lets the user choose.

IPv4 only. ``zeroconf`` and ``ifaddr`` are imported inside the functions that need
them, so that the CLI starts fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from certpair.addresses import (
    best_local_address,
    check_interfaces,
    format_address,
    local_ipv4_addresses,
)
from certpair.codes import Mode
from certpair.errors import BadInput, Expired, NetworkError
from certpair.names import check_name

if TYPE_CHECKING:
    from zeroconf import ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

__all__ = [
    "PROTOCOL_VERSION",
    "RECORD_TTL",
    "SERVICE_TYPE",
    "Advertisement",
    "AmbiguousOfferers",
    "DiscoveredOfferer",
    "DiscoveryError",
    "NoOfferer",
    "advertisement_properties",
    "best_local_address",
    "browse",
    "check_interfaces",
    "choose_offerer",
    "local_ipv4_addresses",
]

SERVICE_TYPE = "_certpair._tcp.local."
PROTOCOL_VERSION = "1"
# Seconds other hosts may cache our records: a pairing is short, and a crashed offerer
# (no goodbye sent) should not linger in browsers for the usual 75 minutes.
RECORD_TTL = 120
_RESOLVE_MS = 1500
_FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_log = logging.getLogger(__name__)
_ANY_ADDRESSES = frozenset({"", "0.0.0.0", "::"})  # noqa: S104  # compared, not bound


class DiscoveryError(NetworkError):
    """Multicast DNS could not be used (no interface, socket refused, bad address)."""


class NoOfferer(Expired):
    """No matching offerer answered before the discovery timeout."""


class AmbiguousOfferers(BadInput):
    """More than one offerer matches; the user must choose (never one guess each)."""

    def __init__(self, message: str, candidates: Sequence[DiscoveredOfferer]) -> None:
        """Keep the ``candidates`` so that the caller can list them with the ``message``."""
        super().__init__(message)
        self.candidates = tuple(candidates)


@dataclass(frozen=True, kw_only=True)
class DiscoveredOfferer:
    """An offerer seen on the network: a candidate, not a proven identity."""

    instance: str
    name: str
    addresses: tuple[str, ...]
    port: int
    mode: Mode
    version: str
    fingerprint: str | None

    @property
    def host(self) -> str:
        """The address to connect to: one on a local subnet if there is one."""
        return self.addresses[0]


def advertisement_properties(*, name: str, mode: Mode, fingerprint: str) -> dict[str, str]:
    """The TXT record of an offerer: all of it, and nothing about the secret.

    Args:
        name: the device name.
        mode: the pairing mode of the active secret.
        fingerprint: the offerer's certificate fingerprint (public: TLS shows it too).

    Returns:
        The TXT key/value pairs.
    """
    return {"v": PROTOCOL_VERSION, "mode": mode.value, "name": name, "fp": fingerprint}


def _instance_label(name: str) -> str:
    # Dots are legal in DNS-SD instance names but not every browser escapes them.
    label = name.replace(".", "-").encode("utf-8")[:63].decode("utf-8", errors="ignore")
    return label.strip() or "certpair"


class Advertisement:
    """One offerer's DNS-SD service, published from :meth:`start` until :meth:`close`.

    Where it is published follows the listen address: a specific IPv4 address is
    advertised on that interface only; ``0.0.0.0`` on every IPv4 interface, with every
    non-loopback address.
    """

    def __init__(
        self, *, name: str, mode: Mode, port: int, fingerprint: str, listen_host: str
    ) -> None:
        """Describe the service (device name, mode, TCP port, certificate fingerprint,
        listen address); nothing is sent before :meth:`start`."""
        self.properties = advertisement_properties(name=name, mode=mode, fingerprint=fingerprint)
        self.port = port
        self.listen_host = listen_host
        self.instance = _instance_label(name)
        self._zeroconf: AsyncZeroconf | None = None
        self._closed = False

    def _scope(self) -> tuple[list[str] | None, list[str]]:
        """(interfaces or None for all, addresses to publish)."""
        if self.listen_host in _ANY_ADDRESSES:
            addresses = [a for a, _ in local_ipv4_addresses()]
            if not addresses:
                raise DiscoveryError("this host has no IPv4 address to advertise")
            return None, addresses
        try:
            address = ipaddress.IPv4Address(self.listen_host)
        except ValueError:
            raise DiscoveryError(
                f"only IPv4 listen addresses are advertised, not {self.listen_host!r}"
            ) from None
        return [str(address)], [str(address)]

    def where(self) -> str:
        """Where the service is announced, in words (for the user)."""
        try:
            interfaces, addresses = self._scope()
        except DiscoveryError:
            return "nowhere"
        if interfaces is None:
            return "every IPv4 interface of this host (" + ", ".join(addresses) + ")"
        if ipaddress.IPv4Address(addresses[0]).is_loopback:
            return f"{addresses[0]} only: this machine, not the local network"
        return f"{addresses[0]} only"

    async def start(self) -> str:
        """Probe for a unique instance name and announce the service.

        Returns:
            The instance name in use (``alpha``, or ``alpha-2`` if taken).

        Raises:
            DiscoveryError: multicast DNS is unavailable here.
        """
        from zeroconf import InterfaceChoice, IPVersion  # noqa: PLC0415
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf  # noqa: PLC0415

        if self._closed:
            raise DiscoveryError("the advertisement was already closed")
        interfaces, addresses = self._scope()
        info = AsyncServiceInfo(
            SERVICE_TYPE, f"{self.instance}.{SERVICE_TYPE}", port=self.port,
            properties=self.properties, server=f"certpair-{secrets.token_hex(6)}.local.",
            host_ttl=RECORD_TTL, other_ttl=RECORD_TTL, parsed_addresses=addresses,
        )
        try:
            self._zeroconf = AsyncZeroconf(
                interfaces=InterfaceChoice.All if interfaces is None else interfaces,
                ip_version=IPVersion.V4Only,
            )
            await self._zeroconf.async_register_service(info, allow_name_change=True)
        except (OSError, RuntimeError) as exc:
            raise DiscoveryError(f"cannot advertise on the local network: {exc}") from exc
        self.instance = info.name[: -len(SERVICE_TYPE) - 1]
        return self.instance

    async def close(self) -> None:
        """Withdraw the service (goodbye packets) and release the sockets; idempotent."""
        self._closed = True
        zc, self._zeroconf = self._zeroconf, None
        if zc is not None:
            with contextlib.suppress(Exception):
                await zc.async_close()


def _text(properties: dict[bytes, bytes | None], key: bytes) -> str | None:
    value = properties.get(key)
    if value is None or len(value) > 255:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _rank(addresses: list[str]) -> tuple[str, ...]:
    """Addresses on one of this host's subnets first."""
    networks = [ipaddress.IPv4Network(f"{a}/{p}", strict=False)
                for a, p in local_ipv4_addresses(include_loopback=True)]

    def on_link(address: str) -> bool:
        return any(ipaddress.IPv4Address(address) in net for net in networks)

    return tuple(sorted(addresses, key=lambda a: not on_link(a)))


def _offerer(info: AsyncServiceInfo) -> DiscoveredOfferer | None:
    """Read an advertisement defensively: anyone can send one."""
    from zeroconf import IPVersion  # noqa: PLC0415

    props = info.properties
    version, mode_text = _text(props, b"v"), _text(props, b"mode")
    name, fp = _text(props, b"name"), _text(props, b"fp")
    addresses = info.parsed_addresses(IPVersion.V4Only)
    if (version != PROTOCOL_VERSION or mode_text not in {m.value for m in Mode} or name is None
            or not info.port or not addresses or fp is None
            or not _FINGERPRINT_RE.fullmatch(fp)):
        # Without a well-formed fingerprint join could not pin the offerer it found.
        return None
    try:
        check_name(name)
    except BadInput:
        return None
    return DiscoveredOfferer(
        instance=info.name[: -len(SERVICE_TYPE) - 1], name=name, addresses=_rank(addresses),
        port=info.port, mode=Mode(mode_text), version=version,
        fingerprint=fp,
    )


def _remember(found: dict[tuple[str, str | None], DiscoveredOfferer], service: str,
              offerer: DiscoveredOfferer) -> None:
    """Keep an offerer under its service name *and* fingerprint: two advertisements of
    one instance name with different fingerprints are two candidates, never merged
    (one of them may be an impostor)."""
    found[(service, offerer.fingerprint)] = offerer


def _forget(found: dict[tuple[str, str | None], DiscoveredOfferer], service: str) -> None:
    for key in [key for key in found if key[0] == service]:
        del found[key]


async def browse(
    *, timeout: float, settle: float | None = None, interfaces: Sequence[str] = ()
) -> list[DiscoveredOfferer]:
    """Look for offerers currently pairing.

    Args:
        timeout: the longest to wait, in seconds.
        settle: once the first offerer is found, wait only this much longer for others
            (None: always wait the whole ``timeout``).
        interfaces: IPv4 addresses of the interfaces to use; empty means all.

    Returns:
        The offerers found (version 1, well-formed), sorted by name; possibly none.

    Raises:
        DiscoveryError: multicast DNS is unavailable here.
    """
    from zeroconf import (  # noqa: PLC0415
        BadTypeInNameException,
        InterfaceChoice,
        IPVersion,
        ServiceStateChange,
    )
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    changes: asyncio.Queue[tuple[str, ServiceStateChange]] = asyncio.Queue()

    def on_change(*, zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        del zeroconf, service_type
        loop.call_soon_threadsafe(changes.put_nowait, (name, state_change))

    try:
        azc = AsyncZeroconf(interfaces=list(interfaces) or InterfaceChoice.All,
                            ip_version=IPVersion.V4Only)
    except (OSError, RuntimeError) as exc:
        raise DiscoveryError(f"cannot use multicast DNS here: {exc}") from exc
    found: dict[tuple[str, str | None], DiscoveredOfferer] = {}
    skipped: set[str] = set()
    end = loop.time() + timeout
    try:
        browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
        try:
            while (remaining := end - loop.time()) > 0:
                try:
                    name, change = await asyncio.wait_for(changes.get(), remaining)
                except TimeoutError:
                    break
                if change is ServiceStateChange.Removed:
                    _forget(found, name)
                    continue
                try:
                    info = AsyncServiceInfo(SERVICE_TYPE, name)
                    if not await info.async_request(azc.zeroconf, _RESOLVE_MS):
                        continue
                    offerer = _offerer(info)
                except (BadTypeInNameException, ValueError, UnicodeError) as exc:
                    # Anyone on the link can announce any name: a malformed one (a control
                    # character, say) is skipped, and said once per browse, not per packet.
                    if not skipped:
                        _log.warning("ignored a malformed DNS-SD advertisement: %s",
                                     ascii(str(exc))[:200])
                    skipped.add(name)
                    continue
                if offerer is None:
                    continue
                if not found and settle is not None:
                    end = min(end, loop.time() + settle)
                _remember(found, name, offerer)
        finally:
            await browser.async_cancel()
    finally:
        await azc.async_close()
    return sorted(found.values(), key=lambda o: (o.name, o.instance))


def choose_offerer(
    offerers: Sequence[DiscoveredOfferer], *, mode: Mode, peer_name: str | None,
    waited: float,
) -> DiscoveredOfferer:
    """Pick the one offerer a secret is meant for, or refuse.

    Only offerers in the secret's mode are candidates (the mode still comes from the
    secret alone); ``peer_name`` narrows by device or instance name.

    Args:
        offerers: what :func:`browse` found.
        mode: the mode of the secret the user typed.
        peer_name: the name the user asked for, or None.
        waited: seconds spent browsing, for the message.

    Returns:
        The single matching offerer.

    Raises:
        NoOfferer: none matches.
        AmbiguousOfferers: several match; nothing was tried.
    """
    candidates = [o for o in offerers if o.mode is mode]
    if peer_name is not None:
        candidates = [o for o in candidates if peer_name in (o.name, o.instance)]
    if not candidates:
        what = f"named {peer_name!r} " if peer_name is not None else ""
        others = len(offerers)
        seen = f" ({others} other offerer{'s' if others != 1 else ''} seen)" if others else ""
        raise NoOfferer(
            f"no device {what}offering {mode.value} pairing was found on the local network "
            f"within {waited:g} s{seen}; give its address: join HOST[:PORT] SECRET"
        )
    if len(candidates) > 1:
        names = ", ".join(f"{o.instance} ({format_address(o.host, o.port)})" for o in candidates)
        hint = ("several share that name (one may be an impostor); give the address instead"
                if peer_name is not None else "choose one with --peer-name NAME")
        raise AmbiguousOfferers(
            f"{len(candidates)} devices are offering {mode.value} pairing: {names}; {hint}",
            candidates,
        )
    return candidates[0]
