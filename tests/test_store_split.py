"""The store's parts (issue 26 §2): every method has one owner, so the order in which
:class:`~certpair.store.TrustStore` lists its bases decides nothing."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

import certpair.store
from certpair.identity import create_identity
from certpair.store import TrustStore, open_store


def test_every_store_method_is_defined_by_exactly_one_part() -> None:
    parts = [c for c in TrustStore.__mro__ if c is not object]
    owners: dict[str, list[str]] = {}
    for part in parts:
        for name, value in vars(part).items():
            if callable(value) and not (name.startswith("__") and name != "__init__"):
                owners.setdefault(name, []).append(part.__name__)
    shared = {name: where for name, where in owners.items() if len(where) > 1}
    assert shared == {}, f"defined by more than one part (order would decide): {shared}"


def test_no_store_part_holds_a_stub_for_another_to_override() -> None:
    package = Path(certpair.store.__file__).parent
    stubs = [path.name for path in package.glob("*.py")
             if "raise NotImplementedError" in path.read_text()]
    assert stubs == []


def test_a_store_with_its_parts_in_reverse_order_commits_and_follows_the_anchors(
    tmp_path: Path,
) -> None:
    reordered = type("Reordered", tuple(reversed(TrustStore.__bases__)), {})
    assert inspect.getmro(reordered)[1:] != inspect.getmro(TrustStore)[1:]
    peer = create_identity(tmp_path / "peer", "peer")
    (tmp_path / "home").mkdir()
    open_store(tmp_path / "home").close()
    path = tmp_path / "home" / "trust.db"
    store = reordered(sqlite3.connect(path, check_same_thread=False), path)
    with store:
        store.commit_pairing(name="peer", cert_der=peer.cert_der, mode="cpace",
                             role="offerer", remote="t")
        assert [p.fingerprint for p in store.peers()] == [peer.fingerprint]
        assert len(list(store.anchors.iterdir())) >= 1
