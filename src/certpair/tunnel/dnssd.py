"""``tunnel serve`` on the local network: its DNS-SD service (:mod:`certpair.announce`,
which ``serve`` shares), and finding it by fingerprint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from certpair.announce import TUNNEL_SERVICE_TYPE, Advertisement, service_properties
from certpair.browsing import find_service

__all__ = ["TUNNEL_SERVICE_TYPE", "TunnelAdvertisement", "find_tunnel", "tunnel_properties"]

tunnel_properties = service_properties


class TunnelAdvertisement(Advertisement):
    """The service of one ``tunnel serve``, from :meth:`start` until :meth:`close`."""

    def __init__(self, *, name: str, fingerprint: str, port: int, listen_host: str,
                 home: Path | None = None) -> None:
        """Describe it; nothing is sent before :meth:`start` (see
        :class:`~certpair.announce.Advertisement` for ``home``)."""
        super().__init__(service_type=TUNNEL_SERVICE_TYPE, name=name, fingerprint=fingerprint,
                         port=port, listen_host=listen_host, home=home)


def find_tunnel(fingerprint: str, *, timeout: float,
                interfaces: Sequence[str] = ()) -> tuple[str, int] | None:
    """The first address of the ``tunnel serve`` whose certificate has ``fingerprint``."""
    found = find_service(TUNNEL_SERVICE_TYPE, {fingerprint}, timeout=timeout,
                         interfaces=interfaces)
    return found[0] if found else None
