"""``certpair tunnel``: any TCP service behind the pairing, paired devices only.

``tunnel serve`` (:func:`serve_tunnel`) accepts mutual-TLS connections from paired
devices and carries each one to a service on this host; ``tunnel connect``
(:func:`connect_tunnel`) listens locally and carries each connection to one paired
device's ``tunnel serve``. Trust follows the store live: an unpairing cuts that
device's open connections within a second. Design and figures: docs/TUNNEL.md.

This package builds on :mod:`certpair.trusted` and :mod:`certpair.store` only; it does
not use the pairing drivers (:mod:`certpair.net`).
"""

from __future__ import annotations

from certpair.tunnel.address import far_end_candidates, resolve_far_end
from certpair.tunnel.connect import ConnectOptions, connect_tunnel
from certpair.tunnel.events import (
    Advertised,
    Announced,
    Closed,
    Failed,
    Listening,
    OnEvent,
    Opened,
    PassedOver,
    Refused,
    Stopped,
    Stopping,
    Synced,
    TargetDown,
    TunnelEvent,
)
from certpair.tunnel.preamble import KeySync
from certpair.tunnel.serve import ServeOptions, serve_tunnel
from certpair.tunnel.targets import Target, parse_listen, parse_target

__all__ = [
    "Advertised",
    "Announced",
    "Closed",
    "ConnectOptions",
    "Failed",
    "KeySync",
    "Listening",
    "OnEvent",
    "Opened",
    "PassedOver",
    "Refused",
    "ServeOptions",
    "Stopped",
    "Stopping",
    "Synced",
    "Target",
    "TargetDown",
    "TunnelEvent",
    "connect_tunnel",
    "far_end_candidates",
    "parse_listen",
    "parse_target",
    "resolve_far_end",
    "serve_tunnel",
]
