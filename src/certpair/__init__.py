"""certpair: make two devices with self-signed TLS certificates trust each other.

Device A shows a short secret, the user types it on device B, B connects to A over
mutual TLS, both prove knowledge of the secret bound to the certificates they
observed, and each adds the other to its trust store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from certpair import exceptions
    from certpair.codes import Mode, Secret, generate_code, generate_hmac_key, parse_secret
    from certpair.errors import (
        BadInput,
        CertpairError,
        Expired,
        LocalStateError,
        NetworkError,
        PairingFailed,
    )
    from certpair.identity import Identity, KeyType, create_identity, fingerprint, load_identity
    from certpair.net import Listening, PeerPaired, ProofRejected, run_join, run_offer
    from certpair.rotation.fleet import sync_all, sync_with
    from certpair.rotation.pending import PendingRotation, start_rotation
    from certpair.rotation.status import RotationStatus, rotation_status
    from certpair.rotation.status import abort as abort_rotation
    from certpair.rotation.status import finish as finish_rotation
    from certpair.store import Event, Peer, TrustStore, open_store
    from certpair.trusted import (
        NotPaired,
        client_context,
        connect,
        make_server,
        open_connection,
        peer_of,
        server_context,
        start_server,
        why_refused,
    )

__version__ = "0.1.0"

# Imported on first use, so that `certpair --version` does not load cryptography,
# pyOpenSSL and asyncio.
_LAZY = {
    "certpair.codes": ["Mode", "Secret", "generate_code", "generate_hmac_key", "parse_secret"],
    "certpair.errors": ["BadInput", "CertpairError", "Expired", "LocalStateError",
                        "NetworkError", "PairingFailed"],
    "certpair.identity": ["Identity", "KeyType", "create_identity", "fingerprint",
                          "load_identity"],
    "certpair.net": ["Listening", "PeerPaired", "ProofRejected", "run_join",
                             "run_offer"],
    "certpair.rotation.fleet": ["sync_all", "sync_with"],
    "certpair.rotation.pending": ["PendingRotation", "start_rotation"],
    "certpair.rotation.status": ["RotationStatus", "rotation_status"],
    "certpair.store": ["Event", "Peer", "TrustStore", "open_store"],
    "certpair.trusted": ["NotPaired", "client_context", "connect", "make_server",
                         "open_connection", "peer_of", "server_context", "start_server",
                         "why_refused"],
}
_WHERE = {name: (module, name) for module, names in _LAZY.items() for name in names}
_WHERE |= {
    "abort_rotation": ("certpair.rotation.status", "abort"),
    "finish_rotation": ("certpair.rotation.status", "finish"),
    "exceptions": ("certpair.exceptions", ""),
}


if not TYPE_CHECKING:
    # Hidden from type checkers: they see the imports above, so a misspelt name is an
    # error in mypy instead of an ``Any`` that fails at run time.
    def __getattr__(name: str) -> Any:
        where = _WHERE.get(name)
        if where is None:
            raise AttributeError(f"module 'certpair' has no attribute {name!r}")
        module = importlib.import_module(where[0])
        value = getattr(module, where[1]) if where[1] else module
        globals()[name] = value
        return value

__all__ = [
    "BadInput",
    "CertpairError",
    "Event",
    "Expired",
    "Identity",
    "KeyType",
    "Listening",
    "LocalStateError",
    "Mode",
    "NetworkError",
    "NotPaired",
    "PairingFailed",
    "Peer",
    "PeerPaired",
    "PendingRotation",
    "ProofRejected",
    "RotationStatus",
    "Secret",
    "TrustStore",
    "__version__",
    "abort_rotation",
    "client_context",
    "connect",
    "create_identity",
    "exceptions",
    "fingerprint",
    "finish_rotation",
    "generate_code",
    "generate_hmac_key",
    "load_identity",
    "make_server",
    "open_connection",
    "open_store",
    "parse_secret",
    "peer_of",
    "rotation_status",
    "run_join",
    "run_offer",
    "server_context",
    "start_rotation",
    "start_server",
    "sync_all",
    "sync_with",
    "why_refused",
]
