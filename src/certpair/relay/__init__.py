"""Reaching the other end through a magic-wormhole transit relay (a transport, like TCP).

``address`` (where the relay is, the tokens and sides), ``connect`` (meet the other
end: asyncio and blocking), ``race`` (direct first, the relay after a short wait),
``waiting`` (the ends that wait at the relay: an offerer, a server). The package
itself loads only ``address`` (the CLI parses ``--relay`` at start-up).
"""

from __future__ import annotations

from certpair.relay.address import (
    CONNECTING_SIDE,
    RELAY_ENV,
    WAITING_SIDE,
    RelayAddress,
    Route,
    pairing_token,
    parse_relay,
    relay_from_env,
    service_token,
)

__all__ = [
    "CONNECTING_SIDE",
    "RELAY_ENV",
    "WAITING_SIDE",
    "RelayAddress",
    "Route",
    "pairing_token",
    "parse_relay",
    "relay_from_env",
    "service_token",
]
