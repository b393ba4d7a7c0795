"""Decisions with one owner (issue 26): dispatch tables of functions, enums matched
explicitly, an error's meaning in a field, one commit sequence for both drivers. Each
test is the one that catches the break the old string-based shapes let through."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from certpair.codes import Mode
from certpair.errors import PairingFailed
from certpair.identity import create_identity, fingerprint
from certpair.net.commit import commit_on_paired
from certpair.profile import CertificateRefused, ProfileRule
from certpair.protocol.events import Failed, FailureReason, Paired
from certpair.protocol.frames import FrameType
from certpair.protocol.rotation import SyncSession
from certpair.protocol.session import JoinerSession, OffererSession
from certpair.protocol.sync_frames import SyncResult
from certpair.store import Peer, Refusal, StoreUnusable, open_store
from tests.helpers import (
    JOINER_CERT,
    make_joiner,
    make_offer,
    make_offerer,
    make_secret,
    split_frames,
)


@pytest.mark.parametrize("machine", [JoinerSession, OffererSession, SyncSession])
def test_every_transition_is_a_function_of_its_own_machine(machine: type) -> None:
    table: dict[tuple[object, object], object] = dict(vars(machine)["_table"])
    for transition, handler in table.items():
        assert inspect.isfunction(handler), (transition, handler)
        assert getattr(machine, handler.__name__) is handler, handler.__name__


def test_every_store_refusal_of_a_successor_has_its_answer_on_the_wire() -> None:
    from certpair.rotation.exchange import _ANSWER

    assert set(_ANSWER) == set(Refusal)
    assert all(isinstance(answer, SyncResult) for answer in _ANSWER.values())
    assert _ANSWER[Refusal.CONFLICT] is SyncResult.CONFLICT


def test_the_burned_code_hint_follows_the_errors_field_not_its_wording() -> None:
    from certpair.cli.join_run import _explain

    secret = make_secret(Mode.CPACE)
    reworded = PairingFailed("the proof did not check", wrong_secret=True)
    assert "code is now burned" in str(_explain(reworded, secret))
    lookalike = PairingFailed("pairing failed: wrong secret, says an unrelated error")
    assert _explain(lookalike, secret) is lookalike


def _paired_offerer() -> tuple[OffererSession, list[Paired]]:
    """An offerer session whose joiner has just proven the code (hmac: one frame)."""
    secret = make_secret(Mode.HMAC)
    offerer = make_offerer(make_offer(secret))
    joiner = make_joiner(secret)
    joiner.start()
    events = offerer.receive_data(joiner.data_to_send(), now=0.0)
    assert [type(e) for e in events] == [Paired]
    return offerer, [e for e in events if isinstance(e, Paired)]


def test_commit_tells_the_session_before_anything_is_sent_when_the_store_fails() -> None:
    offerer, events = _paired_offerer()
    assert offerer.data_to_send() == b""  # nothing before the commit's outcome

    def store_fails(paired: Paired) -> Peer:
        raise StoreUnusable("disk full")

    done = commit_on_paired(offerer, list(events), store_fails)
    assert isinstance(done.error, StoreUnusable) and done.peer is None
    assert done.events == [Failed(reason=FailureReason.STORE_FAILED, remote=False)]
    (error,) = split_frames(offerer.data_to_send())
    assert error.type is FrameType.ERROR and error.body == bytes([FailureReason.STORE_FAILED])


def test_commit_of_a_racing_duplicate_is_refused_like_a_failed_store() -> None:
    offerer, events = _paired_offerer()

    def racing(paired: Paired) -> Peer:
        raise CertificateRefused(ProfileRule.NAME_COLLISION, "stored meanwhile")

    done = commit_on_paired(offerer, list(events), racing)
    assert isinstance(done.error, CertificateRefused)
    assert [f.type for f in split_frames(offerer.data_to_send())] == [FrameType.ERROR]


def test_commit_then_the_sessions_word_when_the_store_succeeds() -> None:
    offerer, events = _paired_offerer()
    stored: list[Paired] = []

    def store_ok(paired: Paired) -> Peer:
        stored.append(paired)
        return Peer(name=paired.peer_name, fingerprint="sha256:" + "00" * 32,
                    cert_der=paired.peer_cert_der, mode="hmac", paired_at="now",
                    confirmed=False)

    done = commit_on_paired(offerer, list(events), store_ok)
    assert stored == events and done.peer is not None and done.error is None
    assert [f.type for f in split_frames(offerer.data_to_send())] == [FrameType.HMAC_RESPONSE]


def test_the_store_says_whether_a_pairing_is_new_from_inside_its_commit(
    tmp_path: Path,
) -> None:
    create_identity(tmp_path / "alpha", "alpha")
    with open_store(tmp_path / "alpha") as mine, open_store(tmp_path / "alpha") as other:
        first = mine.commit_pairing_result(name="joiner", cert_der=JOINER_CERT, mode="hmac",
                                           role="offerer", remote="test")
        assert first.created and first.peer.fingerprint == fingerprint(JOINER_CERT)
        # Another process's handle, which never read it, still hears it is not new.
        again = other.commit_pairing_result(name="joiner", cert_der=JOINER_CERT, mode="hmac",
                                            role="offerer", remote="test")
        assert not again.created and again.peer.device_id == first.peer.device_id


async def test_a_peer_another_process_stores_during_the_offerers_commit_is_not_taken_as_new(
    tmp_path: Path,
) -> None:
    # The offerer undoes a new pairing when the joiner then fails to store it; whether
    # the peer was new must come from the commit itself. Another process stores the
    # same certificate at the offerer's first touch of the store for this commit, after
    # whatever it read: a check before the commit (the old shape) misses it.
    from certpair.net.offer import _Offerer
    from certpair.net.offer_outcome import Run

    identity = create_identity(tmp_path / "alpha", "alpha")
    with open_store(tmp_path / "alpha") as store, open_store(tmp_path / "alpha") as other:
        raced: list[bool] = []

        def race() -> None:
            if not raced:
                raced.append(True)
                other.commit_pairing(name="joiner", cert_der=JOINER_CERT, mode="hmac",
                                     role="offerer", remote="another run")

        read, commit = store.peer, store.commit_pairing_result

        def peer_then_race(*args: Any, **kwargs: Any) -> Any:
            found = read(*args, **kwargs)
            race()
            return found

        def race_then_commit(*args: Any, **kwargs: Any) -> Any:
            race()
            return commit(*args, **kwargs)

        store.peer = peer_then_race  # type: ignore[method-assign]
        store.commit_pairing_result = race_then_commit  # type: ignore[method-assign]
        offerer = _Offerer(identity=identity, store=store, mode=Mode.HMAC, ttl=300.0,
                           digits=9, bits=80, once=True, on_event=lambda event: None,
                           clock=lambda: 0.0, wall_clock=lambda: 0.0, secret=None,
                           relay=None)
        session, events = _paired_offerer()
        run = Run(remote="127.0.0.1:1")
        offerer.commit(session, list(events), run)
        assert raced and run.peer is not None
        assert run.existed  # so a failure after this commit leaves the peer stored
