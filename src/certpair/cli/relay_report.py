"""Reaching a paired device's service through a relay (``ping --relay``, ``sync
--relay``): one of the connections its ``serve --relay`` keeps waiting there."""

from __future__ import annotations

import socket

from certpair.relay import RelayAddress
from certpair.store import Peer

__all__ = ["reach_relayed"]


def reach_relayed(peer: Peer, service: str, relay: RelayAddress,
                  timeout: float) -> socket.socket:
    """A paired device's ``service`` (``serve``, ``tunnel``) through the relay, at one of
    its waiting connections (``--relay`` on ping and sync).

    Raises:
        NetworkError: nothing answered in time, or the relay failed (in words).
    """
    import time  # noqa: PLC0415

    from certpair.errors import NetworkError  # noqa: PLC0415
    from certpair.relay.serving import dial_service  # noqa: PLC0415
    from certpair.trusted import connection_error  # noqa: PLC0415

    try:
        return dial_service(relay, peer.fingerprint, service,
                            deadline=time.monotonic() + timeout)
    except TimeoutError:
        raise NetworkError(f"{peer.name} did not answer at the relay {relay} within "
                           f"{timeout:g} s: is `certpair {service} --relay {relay}` running "
                           "there?") from None
    except OSError as exc:
        raise connection_error(exc, f"relay {relay}") from exc
