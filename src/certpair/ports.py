"""Default TCP ports (a module of its own so the CLI can show them without imports)."""

from __future__ import annotations

__all__ = ["PAIRING_PORT", "TUNNEL_PORT"]

PAIRING_PORT = 47820
TUNNEL_PORT = 47822
