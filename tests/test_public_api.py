"""The public API is exactly ``certpair.__all__`` (README, "As a library").

The list is pinned here so that an export added or removed by accident fails a test; a
deliberate change edits this list, the README and the commit message together.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

import certpair

_README: Final = Path(certpair.__file__).parent.parent.parent / "README.md"

PUBLIC_API: Final = frozenset(
    {
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
        "finish_rotation",
        "fingerprint",
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
    }
)


def test_all_is_the_pinned_public_api() -> None:
    assert len(certpair.__all__) == len(set(certpair.__all__)), "a name listed twice"
    assert set(certpair.__all__) == PUBLIC_API


@pytest.mark.parametrize("name", sorted(PUBLIC_API))
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(certpair, name)
    assert value is not None
    if name != "__version__":
        assert value.__doc__, f"certpair.{name} has no docstring"


def test_lazy_exports_are_exactly_all() -> None:
    # certpair.__getattr__ serves the names of _LAZY: one missing from __all__ would be an
    # unlisted export, one missing from _LAZY a listed name that does not resolve.
    assert set(certpair._WHERE) == PUBLIC_API - {"__version__"}
    with pytest.raises(AttributeError):
        getattr(certpair, "Channel")  # public in certpair.protocol, not here


def test_readme_library_section_uses_only_public_names() -> None:
    text = _README.read_text(encoding="utf-8")
    section = text.split("## As a library", 1)[1].split("\n## ", 1)[0]
    used = set(re.findall(r"\bcertpair\.([A-Za-z_]\w*)", section))
    used -= {"protocol"}  # the sans-I/O core, documented as the lower layer
    assert used, "the README's library section names no API"
    assert used <= PUBLIC_API
