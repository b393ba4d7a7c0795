"""certpair's sans-I/O protocol core: frames, the two pairing modes, state machines.

Nothing here touches a socket, a file, the clock or a random source: callers pass
bytes, certificates, channel values, ``now`` and scalars in, and get bytes and events
out.
"""

from __future__ import annotations

from certpair.protocol.events import (
    Channel,
    Confirmed,
    Failed,
    FailureReason,
    Paired,
    Role,
    Unconfirmed,
)
from certpair.protocol.frames import Frame, FrameType, ProtocolError
from certpair.protocol.offer import Offer, OfferState
from certpair.protocol.session import JoinerSession, OffererSession, SessionState

__all__ = [
    "Channel",
    "Confirmed",
    "Failed",
    "FailureReason",
    "Frame",
    "FrameType",
    "JoinerSession",
    "Offer",
    "OfferState",
    "OffererSession",
    "Paired",
    "ProtocolError",
    "Role",
    "SessionState",
    "Unconfirmed",
]
