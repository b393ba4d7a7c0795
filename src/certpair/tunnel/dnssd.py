"""``tunnel serve`` on the local network: its DNS-SD service (:mod:`certpair.announce`,
which ``serve`` shares), and finding it by fingerprint."""

from __future__ import annotations

from collections.abc import Sequence

from certpair.announce import (
    TUNNEL_SERVICE_TYPE,
    Advertisement,
    find_service,
    service_properties,
)

__all__ = ["TUNNEL_SERVICE_TYPE", "TunnelAdvertisement", "find_tunnel", "tunnel_properties"]

tunnel_properties = service_properties


class TunnelAdvertisement(Advertisement):
    """The service of one ``tunnel serve``, from :meth:`start` until :meth:`close`."""

    def __init__(self, *, name: str, fingerprint: str, port: int, listen_host: str) -> None:
        """Describe it; nothing is sent before :meth:`start`."""
        super().__init__(service_type=TUNNEL_SERVICE_TYPE, name=name, fingerprint=fingerprint,
                         port=port, listen_host=listen_host)


def find_tunnel(fingerprint: str, *, timeout: float,
                interfaces: Sequence[str] = ()) -> tuple[str, int] | None:
    """The first address of the ``tunnel serve`` whose certificate has ``fingerprint``."""
    found = find_service(TUNNEL_SERVICE_TYPE, fingerprint, timeout=timeout,
                         interfaces=interfaces)
    return found[0] if found else None
