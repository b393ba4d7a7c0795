"""Key rotation: a pending key and certificate, and the sync that tells the peers.

``pending`` keeps this device's next key and certificate beside its identity;
``exchange`` runs one sync over a trusted connection (the sans-I/O machine is
:mod:`certpair.protocol.rotation`); ``fleet`` syncs with many peers at once.
"""

from __future__ import annotations
