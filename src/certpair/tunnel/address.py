"""Where ``tunnel connect`` finds PEER when no ``--to`` is given.

First the address PEER was paired from: the store keeps no address per peer, but its
audit log does (every pairing row holds the other device's address as this device saw
it); the newest successful pairing with PEER gives the host, the port is the tunnel's
default. Else DNS-SD: the ``tunnel serve`` advertising PEER's fingerprint
(:mod:`certpair.tunnel.dnssd`).
"""

from __future__ import annotations

from collections.abc import Sequence

from certpair.errors import BadInput
from certpair.ports import TUNNEL_PORT
from certpair.store import Peer, TrustStore
from certpair.tunnel.targets import split_host_port

__all__ = ["remembered_host", "resolve_far_end"]


def remembered_host(store: TrustStore, peer: Peer) -> str | None:
    """The host of the newest successful pairing with ``peer``, or None (found by its
    device: the pairing row holds the fingerprint it had then, before any rotation)."""
    known = (set(store.device_fingerprints(peer.device_id)) if peer.device_id else set())
    known.add(peer.fingerprint)
    for event in store.events():
        if (event.kind == "pairing" and event.outcome == "paired"
                and event.peer_fingerprint in known and event.remote):
            try:
                host, _ = split_host_port(event.remote, TUNNEL_PORT)
            except BadInput:
                continue
            return host
    return None


def resolve_far_end(
    store: TrustStore, peer: Peer, to: str | None, *, discovery_timeout: float = 0.0,
    interfaces: Sequence[str] = (),
) -> tuple[str, int, str]:
    """Where to reach ``peer``'s ``tunnel serve``.

    Args:
        store: the trust store.
        peer: the paired device.
        to: ``--to HOST[:PORT]``, or None.
        discovery_timeout: seconds to look for it with DNS-SD (0: do not).
        interfaces: IPv4 addresses of the interfaces to browse; empty means all.

    Returns:
        ``(host, port, source)``; source is ``--to``, ``pairing`` or ``dns-sd``.

    Raises:
        BadInput: ``to`` is malformed, or there is no address to use.
    """
    if to is not None:
        host, port = split_host_port(to, TUNNEL_PORT)
        return host, port, "--to"
    host_ = remembered_host(store, peer)
    if host_ is not None:
        return host_, TUNNEL_PORT, "pairing"
    if discovery_timeout > 0:
        from certpair.tunnel.dnssd import find_tunnel  # noqa: PLC0415  # zeroconf is slow

        found = find_tunnel(peer.fingerprint, timeout=discovery_timeout, interfaces=interfaces)
        if found is not None:
            return found[0], found[1], "dns-sd"
    raise BadInput(f"no address known for {peer.name} and no tunnel of it found on the "
                   f"local network: give --to HOST[:PORT]")
