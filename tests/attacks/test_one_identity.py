"""One device, one identity (issue 19): no path around the collision rule.

At every moment no two certificates this device trusts (paired peers, their pending
successors, and this device's own current and pending certificate) share a subject or
a name, and no two peers' names read the same to a person. Each test is an adversary
against the real drivers over real TLS, a real ``certpair serve``, or the store as two
processes would use it; each fails on the code before the identity index.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certpair.codes import Mode, parse_secret
from certpair.errors import PairingFailed
from certpair.identity import create_identity, fingerprint
from certpair.net import JoinerRefused
from certpair.net.admission import check_new_peer
from certpair.profile import CertificateRefused, ProfileRule, certificate_names
from certpair.protocol.events import FailureReason
from certpair.protocol.frames import FrameType
from certpair.protocol.session import JoinerSession
from certpair.protocol.sync_frames import SyncResult
from certpair.store import open_store
from tests.attacks.forged_certs import copy_names, forge_cert, identity_with, write_identity
from tests.attacks.honest import MakeDevice, join
from tests.attacks.mitm import client_tls, connect_leg
from tests.attacks.policies import FrameSplitter, frame_body, frame_type
from tests.attacks.test_rotation_attacks import new_cert, statement, successors
from tests.cliutil import Offerer, run
from tests.netutil import running_offer
from tests.rotation_util import Fleet, RawSync, ServeProc, fleet

__all__ = ["fleet"]

CYRILLIC_A = "\u0430"


def _tell_successor(fleet: Fleet, who: str, to: str) -> bytes:
    """``who`` rotates honestly and tells ``to`` (a real serve); the new certificate."""
    server = fleet.serve(to)
    key, cert = new_cert(who)
    raw = RawSync(fleet.home(who), server.port)
    assert raw.tell(statement(raw, fleet.ids[who].key, key, cert)) is SyncResult.ACCEPTED
    raw.close()
    return cert


async def test_a_device_carrying_a_peers_pending_successors_names_cannot_pair(
    fleet: Fleet, tmp_path: Path
) -> None:
    # Successor squat: alpha's rotation is pending at beta (alpha's serve shows the new
    # certificate to anyone); mallory pairs with beta under that certificate's names.
    successor = _tell_successor(fleet, "alpha", "beta")
    mallory_key, mallory_der = copy_names(successor)
    mallory = identity_with(create_identity(tmp_path / "mallory", "mallory"), mallory_der,
                            mallory_key)
    beta_identity = fleet.reload("beta")
    with open_store(fleet.home("beta")) as beta_store, \
            open_store(tmp_path / "mallory") as mallory_store:
        async with running_offer(beta_identity, beta_store, Mode.CPACE, once=True) as offer:
            with pytest.raises(PairingFailed):
                await join((mallory, mallory_store), offer.listening.port,
                           parse_secret(offer.listening.code))
            refused = await offer.next_event()
        assert isinstance(refused, JoinerRefused)
        assert ProfileRule.NAME_COLLISION.value in refused.reason
        assert fingerprint(mallory_der) not in {p.fingerprint for p in beta_store.peers()}
        # alpha completes its rotation: its names are still alpha's alone.
        completed = beta_store.admit(fingerprint(successor))
        assert completed is not None and completed.name == "alpha"
        names = certificate_names(successor)
        held = [p for p in beta_store.peers()
                if certificate_names(p.cert_der).names & names.names]
        assert [p.fingerprint for p in held] == [fingerprint(successor)]


def test_racing_pairings_cannot_both_store_one_devices_names(tmp_path: Path) -> None:
    # mallory passes the handshake-time check, stalls; the user pairs gamma in another
    # run (another process: another store handle); then mallory's commit comes.
    beta = create_identity(tmp_path / "beta", "beta")
    gamma = create_identity(tmp_path / "gamma", "gamma")
    _, mallory_der = copy_names(gamma.cert_der)
    with open_store(tmp_path / "beta") as first_run, open_store(tmp_path / "beta") as other:
        check_new_peer(first_run, beta, mallory_der)  # nothing holds gamma's names yet
        other.commit_pairing(name="gamma", cert_der=gamma.cert_der, mode="cpace",
                             role="offerer", remote="192.0.2.7:1")
        with pytest.raises(CertificateRefused) as caught:
            first_run.commit_pairing(name="mallory", cert_der=mallory_der, mode="cpace",
                                     role="offerer", remote="192.0.2.66:1")
        assert caught.value.rule is ProfileRule.NAME_COLLISION
        assert [p.fingerprint for p in first_run.peers()] == [gamma.fingerprint]
        assert not [e for e in first_run.events() if e.peer_name == "mallory"]


def test_a_peer_cannot_rotate_onto_this_devices_own_names(fleet: Fleet) -> None:
    # alpha (paired with beta) tells beta a successor carrying beta's own subject and
    # name: beta would then trust a certificate a name-checking client takes for beta.
    server = fleet.serve("beta")
    key, cert = copy_names(fleet.ids["beta"].cert_der)
    raw = RawSync(fleet.home("alpha"), server.port)
    assert raw.tell(statement(raw, fleet.ids["alpha"].key, key, cert)) is SyncResult.CONFLICT
    raw.close()
    assert successors(fleet.home("beta")) == []


def test_a_peer_cannot_rotate_onto_this_devices_pending_certificates_names(
    fleet: Fleet,
) -> None:
    from certpair.rotation.pending import start_rotation

    _, pending = start_rotation(fleet.home("beta"))
    server = fleet.serve("beta")
    key, cert = copy_names(pending.cert_der)
    raw = RawSync(fleet.home("alpha"), server.port)
    assert raw.tell(statement(raw, fleet.ids["alpha"].key, key, cert)) is SyncResult.CONFLICT
    raw.close()
    assert successors(fleet.home("beta")) == []


def test_a_look_alike_of_a_paired_devices_name_is_stored_distinguishably(
    tmp_path: Path,
) -> None:
    look_alike = f"y{CYRILLIC_A}nkee"
    assert look_alike != "yankee"
    first, second = (create_identity(tmp_path / n, n) for n in ("one", "two"))
    (tmp_path / "hub").mkdir()
    with open_store(tmp_path / "hub") as store:
        store.commit_pairing(name="yankee", cert_der=first.cert_der, mode="cpace",
                             role="offerer", remote="192.0.2.1:1")
        peer = store.commit_pairing(name=look_alike, cert_der=second.cert_der, mode="cpace",
                                    role="offerer", remote="192.0.2.2:1")
        assert peer.name == f"{look_alike} (2)" and peer.given_name == look_alike
        logged = next(e for e in store.events() if e.peer_fingerprint == second.fingerprint)
        assert "taken" in logged.reason


# -- two rotations signed by one key: the signature of a stolen key ---------------------


def test_two_different_rotations_signed_by_one_key_mark_the_device_everywhere_one_looks(
    fleet: Fleet,
) -> None:
    # alpha's owner rotates and tells beta; a thief holding alpha's old key tells beta
    # another rotation. beta keeps the first and must say, where its user looks, that
    # alpha's key signed both: unpair alpha and pair again.
    server = fleet.serve("beta")
    owner_key, owner_cert = new_cert("alpha")
    thief_key, thief_cert = new_cert("alpha")
    raw = RawSync(fleet.home("alpha"), server.port)
    assert raw.tell(statement(raw, fleet.ids["alpha"].key, owner_key, owner_cert)) \
        is SyncResult.ACCEPTED
    raw.close()
    raw = RawSync(fleet.home("alpha"), server.port)
    assert raw.tell(statement(raw, fleet.ids["alpha"].key, thief_key, thief_cert)) \
        is SyncResult.CONFLICT
    raw.close()
    said = [server.next_event()]  # the running serve says it at once
    while said[-1].get("warning") != "key_conflict":
        said.append(server.next_event())
    assert said[-2]["event"] == "sync" and said[-2]["heard"] == "conflict", said
    # peers: the device is marked, in text and JSON.
    alpha_fp = fleet.ids["alpha"].fingerprint
    listed = {p["fingerprint"]: p for p in fleet.json_lines("beta", "peers")}
    assert listed[alpha_fp]["key_conflict"]["kept_successor"] == fingerprint(owner_cert)
    assert listed[alpha_fp]["key_conflict"]["refused_successor"] == fingerprint(thief_cert)
    text = fleet.run("beta", "peers")
    assert "KEY CONFLICT" in text.stdout and "unpair" in text.stderr
    # serve (at start), ping and sync: one line saying what happened and what to do.
    again = ServeProc(fleet.home("beta"))
    try:
        warning = again.next_event()
        assert warning["warning"] == "key_conflict" and "pair again" in warning["advice"]
        assert warning["peer"]["fingerprint"] == alpha_fp
    finally:
        again.kill()
    alpha_serve = fleet.serve("alpha")
    for command in (["ping", alpha_serve.address], ["sync", alpha_serve.address]):
        lines = fleet.json_lines("beta", *command)
        warned = [line for line in lines if line.get("warning") == "key_conflict"]
        assert len(warned) == 1 and warned[0]["peer"]["fingerprint"] == alpha_fp, lines
        plain = fleet.run("beta", *command[:1], alpha_serve.address)
        assert plain.returncode == 0, plain.stderr
        assert "two different key rotations" in plain.stderr and "pair again" in plain.stderr


# -- names a person can tell apart, names a device may claim ----------------------------


def test_a_name_mixing_scripts_is_marked_in_peers(fleet: Fleet, tmp_path: Path) -> None:
    look_alike = create_identity(tmp_path / "look", "look")
    with open_store(fleet.home("beta")) as store:
        store.commit_pairing(name=f"g{CYRILLIC_A}mma", cert_der=look_alike.cert_der,
                             mode="cpace", role="offerer", remote="192.0.2.9:1")
    listed = {p["fingerprint"]: p for p in fleet.json_lines("beta", "peers")}
    assert listed[look_alike.fingerprint]["mixed_script"] is True
    assert listed[fleet.ids["gamma"].fingerprint]["mixed_script"] is False
    rows = [line for line in fleet.run("beta", "peers", "--wide").stdout.splitlines()
            if look_alike.fingerprint in line]
    assert rows and "MIXES SCRIPTS" in rows[0]
    narrow = [line for line in fleet.run("beta", "peers").stdout.splitlines()
              if look_alike.fingerprint[:20] in line]
    assert narrow and narrow[0].endswith("MIXED SCRIPTS")  # 80 columns keep the mark


def test_pairing_says_which_dns_names_a_device_claims_beyond_its_name(
    homes: tuple[Path, Path],
) -> None:
    a, b = homes
    key = ec.generate_private_key(ec.SECP256R1())
    claims = forge_cert(key, common_name="beta", dns=["localhost", "www.example.com"])
    write_identity(b, claims, key)
    offerer = Offerer(a, advertise=False)
    joined = run(b, "join", offerer.address, offerer.code)
    assert joined.returncode == 0, joined.stderr
    code, rest, err = offerer.finish()
    assert code == 0, err
    assert rest[0]["peer"]["extra_dns_names"] == ["localhost", "www.example.com"]


def test_no_export_recipe_trusts_a_bundle_of_several_devices_unpinned(fleet: Fleet) -> None:
    out = fleet.home("beta") / "out"
    found = json.loads(fleet.run("beta", "export", "--out", str(out), "--json").stdout)
    assert len(found["devices"]) == 2
    assert found["recipes"] == {}
    text = fleet.run("beta", "export", "--out", str(out)).stdout
    assert "s_client" not in text and "curl" not in text
    assert "certpair export --peer" in text
    one = json.loads(fleet.run("beta", "export", "--peer", "alpha", "--out", str(out),
                               "--json").stdout)
    assert "--pinnedpubkey" in one["recipes"]["curl"]
    assert "Fingerprint=" in one["recipes"]["openssl"]


async def test_a_racing_pairing_over_real_tls_is_refused_at_the_commit_and_the_joiner_told(
    make_device: MakeDevice, tmp_path: Path,
) -> None:
    # The same race through the real offerer: mallory (gamma's names) passes the
    # handshake check, holds its last CPace message while gamma is paired in another
    # run, then sends it. The offerer's commit refuses, the joiner hears STORE_FAILED.
    beta, beta_store = make_device("beta")
    gamma = create_identity(tmp_path / "gamma", "gamma")
    mallory_key, mallory_der = copy_names(gamma.cert_der)
    mallory = identity_with(create_identity(tmp_path / "mallory", "mallory"), mallory_der,
                            mallory_key)
    async with running_offer(beta, beta_store, Mode.CPACE, once=True) as offer:
        secret = parse_secret(offer.listening.code)
        leg = await connect_leg(client_tls(mallory), offer.listening.port)
        session = JoinerSession(secret=secret, channel=leg.channel, name="mallory",
                                scalar=secrets.token_bytes(32))
        session.start()
        splitter = FrameSplitter()
        for frame in splitter.feed(session.data_to_send()):
            await leg.send_frame(frame)
        answer = await leg.read_frame()  # the offerer checked us and answered: we stall
        assert answer is not None and frame_type(answer) == FrameType.CPACE_SHARE_B
        with open_store(beta_store.path.parent) as other_run:
            other_run.commit_pairing(name="gamma", cert_der=gamma.cert_der, mode="cpace",
                                     role="offerer", remote="192.0.2.7:1")
        assert session.receive_data(answer) == []
        for frame in splitter.feed(session.data_to_send()):
            await leg.send_frame(frame)
        told = await leg.read_frame()
        await leg.close()
        with pytest.raises(CertificateRefused):
            await asyncio.wait_for(offer.task, 10)
    assert told is not None and frame_type(told) == FrameType.ERROR
    assert frame_body(told) == bytes([FailureReason.STORE_FAILED])
    assert [p.fingerprint for p in beta_store.peers()] == [gamma.fingerprint]
