"""certpair: make two devices with self-signed TLS certificates trust each other.

Device A shows a short secret, the user types it on device B, B connects to A over
mutual TLS, both prove knowledge of the secret bound to the certificates they
observed, and each adds the other to its trust store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from certpair.net.pairing import Listening, PeerPaired, ProofRejected, run_join, run_offer
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
    "certpair.net.pairing": ["Listening", "PeerPaired", "ProofRejected", "run_join",
                             "run_offer"],
    "certpair.store": ["Event", "Peer", "TrustStore", "open_store"],
    "certpair.trusted": ["NotPaired", "client_context", "connect", "make_server",
                         "open_connection", "peer_of", "server_context", "start_server"],
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'certpair' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
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
    "ProofRejected",
    "Secret",
    "TrustStore",
    "__version__",
    "client_context",
    "connect",
    "create_identity",
    "fingerprint",
    "generate_code",
    "generate_hmac_key",
    "load_identity",
    "make_server",
    "open_connection",
    "open_store",
    "parse_secret",
    "peer_of",
    "run_join",
    "run_offer",
    "server_context",
    "start_server",
]
